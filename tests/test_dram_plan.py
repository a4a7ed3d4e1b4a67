"""Weights in DRAM, the software side: the folding's tile heights, the DRAM layout, the
manifest's DRAM target and its beats, and the default folding of a network too large for
the chip."""

from __future__ import annotations

import numpy as np
import pytest

from bnnhw.errors import BnnhwError
from bnnhw.folding import (
    DEFAULT_ON_CHIP_BITS,
    Fold,
    TiledShape,
    can_tile,
    default_folding,
    dram_folds,
    dram_layout,
    load_folding,
    matrix_layers,
    save_folding,
    tiled_shape,
)
from bnnhw.frontend import compile_model
from bnnhw.manifest import Manifest
from bnnhw.nn.zoo import get_spec
from bnnhw.optimiser import shape_graph
from bnnhw.packing import CFG_BEAT, MemSel, words_to_matrix
from tests.bnn_cases import zoo_model


@pytest.fixture(scope="module")
def tiny():
    return compile_model(zoo_model("tiny", seed=0))


def _dram_folds(graph):
    folds = default_folding(graph)
    name = [n.name for n in graph.nodes if n.name in folds][1]
    f = folds[name]
    folds[name] = Fold(f.pe, f.simd, graph[name].rows // 2)
    return folds, name


def test_fold_checks_tile_rows(tiny):
    layer = matrix_layers(tiny)[1]
    layer.check(Fold(4, 8, 8))
    with pytest.raises(BnnhwError, match="tile_rows must be a multiple of pe"):
        layer.check(Fold(8, 8, 4))
    with pytest.raises(BnnhwError, match="tile_rows"):
        layer.check(Fold(4, 8, 64))


def test_folding_file_keeps_tile_rows(tiny, tmp_path):
    folds, name = _dram_folds(tiny)
    save_folding(tmp_path / "f.json", folds)
    assert load_folding(tmp_path / "f.json", matrix_layers(tiny)) == folds
    assert "tile_rows" not in (tmp_path / "f.json").read_text().split(name)[0]


def test_dram_image_round_trips_and_packs_lines():
    rng = np.random.default_rng(0)
    shape = TiledShape(rows=24, cols=40, pe=4, simd=10, tile_rows=8, pixels=1, in_beats=4)
    w = rng.integers(0, 2, (24, 40))
    image = shape.dram_image(w)
    assert len(image) == shape.dram_words == 3 * 3   # 3 tiles of 2*4=8 40-bit words, 3/line
    folded = []
    for t in range(3):
        words = []
        for line in image[t * 3:(t + 1) * 3]:
            words += [(line >> (40 * s)) & ((1 << 40) - 1) for s in range(3)]
        folded.append(words_to_matrix(words[:8], 8, 40, 4, 10))
    assert np.array_equal(np.concatenate(folded), w)
    w2 = w.copy()
    w2[9, 3] ^= 1   # a planted difference shows in the image
    assert shape.dram_image(w2) != image


def test_manifest_dram_target_and_beats(tiny):
    folds, name = _dram_folds(tiny)
    m = Manifest.of(tiny, folds)
    kinds = [t.kind for t in m.targets]
    assert kinds[-1] == "dram" and kinds.count("dram") == 1
    layout = dram_layout(tiny, folds)
    assert list(layout) == [name] and m.doc["dram"][name] == {"base": 0,
                                                              "words": layout[name][1]}
    assert m.doc["folding"][name]["tile_rows"] == tiny[name].rows // 2
    beats = m.target_beats(tiny, len(m.targets) - 1)
    words = {}
    for b in beats:
        f = CFG_BEAT.from_bits(b)
        assert f["sel"] == MemSel.WEIGHTS and 0 <= f["chunk"] < 4
        words[f["addr"]] = words.get(f["addr"], 0) | (int(f["data"]) << (32 * f["chunk"]))
    image = tiled_shape(tiny[name], folds[name]).dram_image(tiny[name].weights)
    assert [words[a] for a in range(len(image))] == image
    # the tiled layer's own target writes its thresholds, regrouped per tile
    index = [t.name for t in m.targets].index(name)
    (mem,) = m.targets[index].memories
    assert mem.sel == MemSel.THRESHOLDS
    assert len(m.target_beats(tiny, index)) == mem.depth * -(-mem.width // 32)
    # the same network on chip has no DRAM target and the same digest as before
    on_chip = Manifest.of(tiny, default_folding(tiny))
    assert "dram" not in on_chip.doc and on_chip.digest != m.digest


def test_default_folding_puts_the_seed_vgg_largest_layers_in_dram():
    g = shape_graph(get_spec("vgg", width=1.0))
    folds = default_folding(g)
    nodes = [n for n in g.nodes if n.name in folds]
    assert sum(n.rows * n.cols for n in nodes) == 14_022_016
    on_chip = sum(n.rows * n.cols for n in nodes if not folds[n.name].in_dram)
    assert on_chip <= DEFAULT_ON_CHIP_BITS
    in_dram = [n for n in nodes if folds[n.name].in_dram]
    assert in_dram and all(can_tile(n) for n in in_dram)
    assert not folds[nodes[0].name].in_dram       # the pixel layer stays on chip
    # a small network is left alone
    small = shape_graph(get_spec("tfc"))
    assert dram_folds(small, default_folding(small)) == default_folding(small)
