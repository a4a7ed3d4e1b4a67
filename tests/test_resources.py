"""The resource model (``bnnhw.resources``): blocks planned without hardware equal the
blocks of the real stages, memories map as Yosys maps them (the grid measured by
``bench/calibrate_resources.py``), budgets, the link. No synthesis runs here: the
measured figures are the calibration's (``bnnhw/resource_calibration.json``);
``bench/resource_model.py`` compares whole networks with Yosys."""

from __future__ import annotations

import pytest

from bnnhw import resources as rs
from bnnhw.folding import Fold, default_folding, two_foldings
from bnnhw.frontend import compile_model
from rtl_gen.network import NetworkParams
from tests.bnn_cases import VERIFY_MODELS, zoo_model


def _graph(name):
    if name in VERIFY_MODELS:
        return compile_model(VERIFY_MODELS[name]())
    return compile_model(zoo_model(name, seed=0, calibration=2))


CASES = [
    ("tfc", "default", {}, 1, False),
    ("tfc", "fast", {"dense1.weights": "logic", "dense4.thresholds": "block"}, 16, False),
    ("sfc", "default", {}, 1, True),
    ("cnv", "default", {}, 1, False),
    ("cnv", "fast", {"conv1.weights": "block"}, 1, True),
    ("tiny", "fast", {}, 1, False),
    ("cnv_small", "default", {}, 1, False),
    ("padded_small", "default", {}, 1, True),
]


@pytest.mark.parametrize("name,folding,styles,k,writable", CASES,
                         ids=[f"{c[0]}-{c[1]}-k{c[3]}{'-w' if c[4] else ''}" for c in CASES])
def test_planned_blocks_are_the_stages_blocks(name, folding, styles, k, writable):
    graph = _graph(name)
    folds = two_foldings(graph)[folding]
    if writable:
        styles = {n: ("block" if s == "block" else "lutram") for n, s in styles.items()}
    styles = {n: s for n, s in styles.items()
              if n in NetworkParams(graph, folds).memories}
    params = NetworkParams(graph, folds, pixels_per_beat=k, memory_styles=styles,
                           runtime_writable=writable)
    planned = rs.plan_blocks(graph, folds, pixels_per_beat=k, memory_styles=styles,
                             runtime_writable=writable)
    assert planned == rs.blocks_of_stages(params.stages)
    assert max(b.cycles for b in planned) == params.cycles_per_image
    assert [b.name for b in planned] == [s.name for s in params.stages]
    styled = {m.name: m.style for b in planned for m in b.memories}
    for mem, style in styles.items():
        assert styled[mem.replace(".", "_mvtu.", 1)] == style


def test_a_changed_fold_changes_the_plan():
    graph = _graph("tfc")
    folds = default_folding(graph)
    other = {**folds, "dense1": Fold(folds["dense1"].pe * 2, folds["dense1"].simd)}
    params = NetworkParams(graph, other)
    assert rs.plan_blocks(graph, folds) != rs.blocks_of_stages(params.stages)


# -- memories ------------------------------------------------------------------------------

def _grid(family):
    grid = rs.calibration()["memory_grid"][family]
    assert len(grid) >= 40
    return grid


CALIBRATED = sorted(rs.calibration()["families"])


def test_every_family_is_calibrated():
    assert CALIBRATED == sorted(rs.FAMILIES)


@pytest.mark.parametrize("family", CALIBRATED)
def test_memory_mapping_follows_yosys(family):
    """Every memory of the measured grid: the model's block RAM count is Yosys' exactly,
    and its kind (block RAM, LUT RAM, logic) too."""
    bad = []
    for g in _grid(family):
        mem = rs.Memory(g["name"], g["depth"], g["width"], g["kind"], g["style"],
                        g["granularity"])
        got = rs.map_memory(mem, family)
        measured = g["measured"]
        kind = ("block" if measured["bram"] else
                "distributed" if measured.get("lutram") else "logic")
        if got.resources.bram != measured["bram"] or got.kind != kind:
            bad.append((g["name"], measured["bram"], kind, got.resources.bram, got.kind))
    assert not bad


def test_memory_styles_force_the_kind():
    deep = rs.Memory("w", 2048, 9, "rom", "auto", 0, "weights")
    assert rs.map_memory(deep, "xc7").kind == "block"  # Yosys' own choice (the grid)
    assert rs.map_memory(rs.Memory("w", 2048, 9, "rom", "logic"), "xc7").kind == "logic"
    shallow = rs.Memory("w", 72, 512, "rom")
    assert rs.map_memory(shallow, "xc7").kind == "logic"
    assert rs.map_memory(rs.Memory("w", 72, 512, "rom", "block"), "xc7").kind == "block"
    block = rs.map_memory(rs.Memory("w", 8, 64, "rom", "block"), "xc7")
    assert (block.kind, block.resources.bram) == ("block", 1)  # 64 bits wide: one RAMB36
    ram = rs.Memory("t", 300, 64, "ram", "lutram", 32)
    assert rs.map_memory(ram, "xc7").kind == "distributed"
    with pytest.raises(ValueError, match="ice40 has no LUT RAM"):
        rs.map_memory(ram, "ice40")
    with pytest.raises(ValueError, match="a read-only memory cannot be LUT RAM"):
        rs.map_memory(rs.Memory("w", 64, 8, "rom", "lutram"), "xc7")


def test_block_ram_packing_by_family():
    """Block RAM counts follow the aspect ratios: a 1024 x 36 memory is one RAMB36
    (1K x 36), two DP16KD (1K x 18 each) or nine EBRs (256 x 16)."""
    mem = rs.Memory("m", 1024, 36, "rom", "block")
    assert rs.map_memory(mem, "xc7").resources.bram == 1
    assert rs.map_memory(mem, "ice40").resources.bram == 9
    if "ecp5" in CALIBRATED:
        assert rs.map_memory(mem, "ecp5").resources.bram == 2


# -- budgets and the link ------------------------------------------------------------------

def test_budgets():
    b = rs.BUDGETS["xc7a35t"]
    assert (b.lut, b.ff, b.bram, b.dsp, b.bram_kind, b.bram_bits, b.lut_inputs) == \
        (20_800, 41_600, 50, 90, "RAMB36", 36 * 1024, 6)
    up5k = rs.BUDGETS["ice40up5k"]
    assert (up5k.bram_kind, up5k.bram_total_bits, up5k.spram_total_bits) == \
        ("EBR", 30 * 4096, 4 * 256 * 1024)
    half = b.scaled(lut=0.5, bram=0.5)
    assert (half.lut, half.bram, half.ff) == (10_400, 25, 41_600)
    with pytest.raises(ValueError, match="budget X: family must be one of"):
        rs.Budget("X", "stratix", 1, 1, 1, 1)
    with pytest.raises(ValueError, match="budget X: lut must be a number >= 0"):
        rs.Budget("X", "xc7", -1, 1, 1, 1)


def test_link_block():
    graph = _graph("tfc")
    link = rs.Link(1024, 12_000_000, 3_000_000)
    block = link.block(graph)
    assert block.kind == "link"
    (buf,) = block.memories
    assert (buf.depth, buf.width, buf.kind) == (2048, 8, "ram")
    assert rs.map_memory(buf, "ice40").resources.bram == 4  # 2048 x 8 in 512 x 8 EBRs
    assert rs.image_bytes(graph) == 98 and rs.least_payload(graph) >= 99
    est = rs.estimate([block], "ice40")
    assert est.total.lut > 100 and est.total.bram == 4
    with pytest.raises(ValueError, match="link: max_payload must be an integer >= 16"):
        rs.Link(8)


def test_estimate_adds_up():
    graph = _graph("cnv")
    blocks = rs.plan_blocks(graph, default_folding(graph))
    est = rs.estimate(blocks, "xc7", beats_per_image=1024)
    total = est.total
    parts = est.top
    for b in est.blocks:
        parts = parts + b.total
    assert total == parts
    kinds = est.by_kind()
    assert abs(sum(r.lut for r in kinds.values()) + est.top.lut - total.lut) < 1e-6
    assert total.bram == sum(u.resources.bram for b in est.blocks for u in b.memories)


def test_writable_memories_at_their_read_width():
    graph = _graph("tfc")
    blocks = rs.plan_blocks(graph, default_folding(graph), runtime_writable=True)
    mems = {m.name: m for b in blocks for m in b.memories}
    cmap = mems["classify.class_map"]
    # the class map is rewritable: a RAM; words wider than a cfg chunk keep their width
    # (Yosys drops the unread padding) with a write enable per 32-bit chunk
    assert cmap.kind == "ram" and cmap.width > 32 and cmap.width % 32
    assert cmap.granularity == 32
    narrow = [m for m in mems.values() if m.role in ("weights", "thresholds")
              and m.width <= 32]
    wide = [m for m in mems.values() if m.role in ("weights", "thresholds") and m.width > 32]
    assert narrow and wide
    assert all(m.kind == "ram" and m.granularity == 0 for m in narrow)
    assert all(m.kind == "ram" and m.granularity == 32 for m in wide)
    fixed = rs.plan_blocks(graph, default_folding(graph))
    rom = {m.name: m for b in fixed for m in b.memories}["classify.class_map"]
    assert rom.kind == "rom" and rom.granularity == 0 and rom.width < cmap.width
    # 10 words of 41 bits in 256 x 16 EBRs: three, not the four of the padded 64 bits
    assert rs.map_memory(cmap, "ice40").resources.bram == -(-cmap.width // 16) == 3


def test_rom_merge_features_by_depth():
    cal = rs.calibration()
    # 8 words (3 address bits and the input bit: one LUT4) and 196 words
    shallow = rs.mvtu_block("m", 8, 64, 8, 8, "binary", 1, 1, weight_style="logic")
    deep = rs.mvtu_block("m", 64, 784, 16, 16, "binary", 1, 1, weight_style="logic")
    for fam in ("xc7", "ice40"):
        f = cal["families"][fam]
        fs, fd = rs.logic_features(shallow, fam, f), rs.logic_features(deep, fam, f)
        assert fs["rom_shallow_less"] < 0 and "rom_merge" not in fs
        assert "rom_shallow_less" not in fd and fd["rom_merge"] == -fd["rom_merge_less"] > 0
    # on iCE40 the deep ROM's merge is a saving: the block's logic is below that of the
    # same block with its weights in block RAM
    assert cal["families"]["ice40"]["logic"]["mvtu"]["lut"]["rom_merge_less"] > 0
    in_block = rs.mvtu_block("m", 64, 784, 16, 16, "binary", 1, 1, weight_style="block")
    logic = rs.estimate([deep], "ice40").blocks[0].logic.lut
    assert logic < rs.estimate([in_block], "ice40").blocks[0].logic.lut


def test_calibrated_designs_block_ram_exact_and_luts_within_15_percent():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import resource_model

    table = resource_model.rows(["xc7", "ice40"], None, {})
    byname = {(r["design"], r["family"]): r for r in table}
    assert byname[("tfc-board-default", "ice40")]["model"]["bram"] == \
        byname[("tfc-board-default", "ice40")]["yosys"]["bram"] == 35
    bad = [(r["design"], r["family"], r["lut_error"]) for r in table if not r["ok"]]
    assert not bad
    # the check can fail: a planted fault outside the tolerance
    planted = resource_model.rows(["xc7"], ["cnv-optimised"], {"cnv-optimised": 1.2})
    assert not planted[0]["ok"]


# -- weights in DRAM ---------------------------------------------------------------------


def _buffers_counted(block, shape):
    """A tiled unit's memories are exactly the buffers of its ``TiledShape`` (no weight
    memory; bits per buffer, thresholds included), and its block RAM is their packing."""
    mems = {m.name.rsplit(".", 1)[1]: m for m in block.memories}
    assert "weights" not in mems
    thr = mems["thresholds"].bits if "thresholds" in mems else 0
    want = {k: v for k, v in shape.buffers(thr).items() if v}
    assert {k.replace("_buffer", ""): m.bits for k, m in mems.items()} == want
    est = rs.estimate([block], "xc7").blocks[0]
    assert est.total.bram == sum(rs.map_memory(m, "xc7").resources.bram
                                 for m in block.memories)


def test_a_dram_layer_counts_its_buffers_and_the_mvtu_compute():
    """The seed VGG's conv17 with its weights in DRAM (pe 8, simd 32, tiles of 64 rows):
    no sliding window, the tiled unit's buffers packed into block RAM as any memory (the
    input map 2 x 1,024 x 32 bits: 2 RAMB36; the tile buffer 2 x 1,152 lines of 256 bits),
    and the logic of the MVTU's compute plus the tile steering."""
    from dataclasses import replace

    from bnnhw.folding import tiled_shape
    from bnnhw.nn.zoo import get_spec
    from bnnhw.optimiser import shape_graph

    graph = shape_graph(get_spec("vgg"))
    node = next(n for n in graph.nodes if n.name == "conv17")
    fold = Fold(8, 32, 64)
    port = rs.DramPort(16 << 20)
    flow = rs.Flow(8, 8, 512, 32, 1)
    blocks, out = rs.node_blocks(node, fold, flow, dram=port)
    assert [b.kind for b in blocks] == ["tiled", "fifo"] and out.per_beat == 8
    tiled = blocks[0]
    shape = tiled_shape(node, fold)
    assert shape.in_beats == 8 * 8 * 512 // 32 and shape.tile_lines == 1152
    assert tiled.cycles == shape.cycles(0.85, 24)
    _buffers_counted(tiled, shape)
    mems = {m.name.rsplit(".", 1)[1]: m for m in tiled.memories}
    assert (mems["input_buffer"].depth, mems["input_buffer"].width) == (2048, 32)
    assert rs.map_memory(mems["input_buffer"], "xc7").resources.bram == 2
    assert (mems["tile_buffer"].depth, mems["tile_buffer"].width) == (2304, 256)
    mvtu = rs.mvtu_block("conv17_tiled", node.rows, node.cols, 8, 32, "binary",
                         node.out_pixels, 9, weight_style="block", threshold_style="block")
    est = rs.estimate([tiled], "xc7").blocks[0]
    assert est.logic == rs.estimate([mvtu], "xc7").blocks[0].logic \
        + rs.tiled_steering(tiled, "xc7")
    # planted fault: a tile buffer one line short is caught
    short = replace(tiled, memories=tuple(
        replace(m, depth=m.depth - 1) if m.name.endswith("tile_buffer") else m
        for m in tiled.memories))
    with pytest.raises(AssertionError):
        _buffers_counted(short, shape)
    # the on-chip fold of the same layer has its window and its weights
    kinds = [b.kind for b in rs.node_blocks(node, Fold(8, 32), flow)[0]]
    assert kinds == ["window", "mvtu", "fifo"]


def test_dram_ports_and_their_refusals():
    port = rs.DramPort(16 << 20, 0.85, 24)
    assert port.addr_bits == 24 and port.port_cycles(85) == 100
    b = port.block(850)
    assert (b.kind, b.cycles) == ("dram", 1000)
    assert rs.estimate([b], "xc7").blocks[0].total == port.controller
    assert port.controller == rs.LITEDRAM_ARTY + rs.DRAM_LINK_SIDE and port.controller.bram == 13.5
    with pytest.raises(ValueError, match="words_per_cycle must be a number in"):
        rs.DramPort(16, 1.5)
    with pytest.raises(ValueError, match="DRAM port: words must be"):
        rs.DramPort(0)
    a35 = rs.BUDGETS["xc7a35t"]
    with_dram = rs.Budget("XC7A35T", "xc7", 20_800, 41_600, 50, 90, dram=port)
    assert with_dram == a35 and with_dram.scaled(lut=0.5).dram is port
    from bnnhw.nn.zoo import get_spec
    from bnnhw.optimiser import shape_graph

    graph = shape_graph(get_spec("vgg"))
    folds = {n: Fold(f.pe, f.simd) for n, f in default_folding(graph).items()}
    with pytest.raises(ValueError, match="conv17: its weights are in DRAM .* no DRAM port"):
        rs.plan_blocks(graph, {**folds, "conv17": Fold(8, 32, 64)})
    with pytest.raises(ValueError, match="conv0: only a layer with binary inputs"):
        rs.plan_blocks(graph, {**folds, "conv0": Fold(1, 3, 1)}, dram=port)


def test_a_tiled_stage_reads_as_the_planned_block():
    """``blocks_of_stages`` reads a real ``rtl_gen.tiled_mvtu`` stage as the block
    ``plan_blocks`` plans for a dense layer in DRAM (where both store ``cols / simd``
    input beats)."""
    from types import SimpleNamespace

    import numpy as np

    from rtl_gen.tiled_mvtu import TiledMVTUParams

    graph = _graph("tfc")
    node = graph.nodes[2]
    fold = Fold(2, 16, 4)
    port = rs.DramPort(16 << 20, 0.85, 24)
    planned = rs.node_blocks(node, fold, rs.Flow(1, 1, node.cols, 16, 1), dram=port)[0][0]
    params = TiledMVTUParams(name=planned.name, rows=node.rows, cols=node.cols, pe=2,
                             simd=16, tile_rows=4,
                             thresholds=np.asarray(node.thresholds), addr_width=24,
                             dram_words_per_cycle=0.85, dram_latency=24)
    (read,) = rs.blocks_of_stages([SimpleNamespace(name=planned.name, params=params)])
    assert read == planned
    assert read.cycles == params.cycles_per_image
