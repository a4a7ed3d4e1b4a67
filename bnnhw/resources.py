"""Resource model of the generated hardware: LUT, FF, LUT RAM, block RAM and DSP per block.

Every engine of a network (``rtl_gen.network.NetworkParams.stages``) becomes a
:class:`Block`: its kind, the figures its logic scales with and its memories (weights,
thresholds and class map, with their style, and the line buffers, input buffers and FIFO
storage the blocks build themselves). :func:`plan_blocks` makes the same blocks from a
graph, a folding, the memory styles and the pixels per beat without building the
hardware (fast, amaranth-free: the optimiser calls it thousands of times);
:func:`blocks_of_stages` reads them off real stage parameters (the tests hold the two
equal).

The estimate of a block (:func:`estimate`) has two parts:

- its **memories**, mapped the way Yosys maps them (:func:`map_memory`): a style other
  than ``auto`` forces the kind; ``auto`` takes the cheapest candidate by the cost model of
  Yosys' ``memory_libmap`` (logic at a cost per bit, LUT RAM and block RAM at a cost per
  unit plus the read multiplexers), with the geometry search over the family's block RAM
  aspect ratios (xc7: RAMB18 16Kx1 .. 512x36 and RAMB36 32Kx1 .. 512x72; ECP5: DP16KD
  16Kx1 .. 1Kx18 and its 512x36 simple dual-port mode; iCE40: 4 Kbit EBR 2Kx2 .. 256x16).
  Block RAM counts follow from the packing alone; a ROM in logic costs LUTs per bit from a
  table measured per family (random contents), LUT RAM costs its cells and read muxes;
- its **logic**: a linear function of structural features (XNOR/popcount lanes and the
  counter outputs and pipeline registers of the compressor trees, accumulator, comparator
  and score bits, gating lanes of 8-bit inputs, shift-register bits of width converters,
  window and pool datapaths, counters), with coefficients per family and block kind fitted
  to Yosys synthesis of isolated blocks (``bench/calibrate_resources.py``, which writes
  ``resource_calibration.json`` beside this module).

A layer whose weights are in DRAM (a fold with ``tile_rows``) is a ``tiled`` block
(:func:`tiled_block`: the MVTU's compute and coefficients, the tiled unit's buffers as
memories, its steering estimated); the DRAM controller is a ``dram`` block of fixed figures
(``DramPort.block``), counted once, whose cycles are the shared port's for all the DRAM
words of an image.

LUTs are logic LUTs (LUT6 on xc7, LUT4 on ECP5 and iCE40, an ECP5 CCU2C counting two);
``lutram`` counts the LUT sites that hold RAM (four per RAM32M/RAM64M, six per ECP5
DPR16X4); a budget's LUTs cover both. ``bram`` counts the family's blocks: RAMB36
equivalents on xc7 (a RAMB18 is a half), DP16KD on ECP5, EBR on iCE40. The calibration is
for flattened synthesis (``synth_xilinx -flatten``; ``synth_ecp5`` and ``synth_ice40``
flatten by default), which the board flows use.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources as _pkg
from typing import Any

from . import compressor, ir
from . import numerics as nx
from .compressor import tree_latency
from .folding import (
    DEFAULT_DRAM_LATENCY,
    DEFAULT_DRAM_WORDS_PER_CYCLE,
    Fold,
    TiledShape,
    can_tile,
    gated_buffers,
    gated_extra,
    layer_density,
    port_rate,
    tiled_shape,
)
from .validate import ParameterError

__all__ = [
    "BUDGETS",
    "FAMILIES",
    "Block",
    "Budget",
    "DramPort",
    "Estimate",
    "Link",
    "Memory",
    "Resources",
    "blocks_of_stages",
    "calibration",
    "estimate",
    "image_bytes",
    "least_payload",
    "map_memory",
    "plan_blocks",
]

FAMILIES = ("xc7", "ecp5", "ice40")
STYLES = ("auto", "block", "lutram", "logic")
CFG_DATA_BITS = 32  # bnnhw.packing.CFG_DATA_BITS: a writable word of several chunks is
#                     written a chunk at a time, one chunk wide at its own width


# -- figures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resources:
    """Resource figures (see the module docstring for the units)."""

    lut: float = 0.0
    ff: float = 0.0
    lutram: float = 0.0
    bram: float = 0.0
    dsp: float = 0.0
    ramb18: int = 0
    ramb36: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.lut + other.lut, self.ff + other.ff, self.lutram + other.lutram,
                         self.bram + other.bram, self.dsp + other.dsp,
                         self.ramb18 + other.ramb18, self.ramb36 + other.ramb36)

    @property
    def lut_sites(self) -> float:
        """LUTs plus the LUT sites used as RAM: what a budget's LUT count covers."""
        return self.lut + self.lutram

    def rounded(self) -> dict[str, float]:
        return {"lut": round(self.lut), "ff": round(self.ff), "lutram": round(self.lutram),
                "bram": self.bram, "dsp": round(self.dsp)}


BRAM_NAME = {"xc7": "RAMB36", "ecp5": "DP16KD", "ice40": "EBR"}
BRAM_BITS = {"xc7": 36 * 1024, "ecp5": 18 * 1024, "ice40": 4 * 1024}
DSP_NAME = {"xc7": "DSP48E1", "ecp5": "MULT18X18D", "ice40": "SB_MAC16"}
LUT_INPUTS = {"xc7": 6, "ecp5": 4, "ice40": 4}
SPRAM_BITS = 256 * 1024  # iCE40 UltraPlus SB_SPRAM256KA


LITEDRAM_ARTY = Resources(4_986, 3_585, 0, 13.5, 4, 21, 3)
"""LiteDRAM's DDR3 controller for the Arty (1:4 PHY, MT41K128M16) with the VexRiscv that
initialises and levels it, alone, by Yosys ``synth_xilinx`` on the XC7A35T
(``bench/dram_yosys.py --core cpu``): 4,986 LUT sites, 3,585 FF, 3 RAMB36 and 21 RAMB18
(the CPU's BIOS ROM and SRAM and the controller's buffers), 4 DSP48E1."""
DRAM_LINK_SIDE = Resources(250, 650, 300, 0, 0, 0, 0)
"""The design-side logic of the DRAM port, estimated, not measured: the three clock-crossing
``AsyncFIFO``s of ``rtl_gen.dram_controller`` (16 deep: commands 25 bits, write data 144,
read data 128: 25 RAM32M of 4 LUT sites each for 297 bits, their output registers and Gray
pointers with two-flop synchronisers, about 470 FF and 120 LUT) and the arbiter that shares
the port among the tiled units (a command multiplexer of 24 address bits over up to eight
units, a 16-deep FIFO of unit numbers routing the read data back in command order: about 130
LUT and 180 FF)."""


@dataclass(frozen=True)
class DramPort:
    """A board's DRAM as the optimiser sees it: ``words`` 128-bit words of the device,
    ``words_per_cycle`` the sustained read rate of sequential reads in design-clock cycles
    (at most 1: one command per cycle), ``latency`` the cycles from a read command to its
    data, and ``controller`` the fixed cost of the controller and its design-side logic,
    paid once when any layer keeps its weights there (:meth:`block`)."""

    words: int
    words_per_cycle: float = DEFAULT_DRAM_WORDS_PER_CYCLE
    latency: int = DEFAULT_DRAM_LATENCY
    controller: Resources = field(default_factory=lambda: LITEDRAM_ARTY + DRAM_LINK_SIDE)

    def __post_init__(self) -> None:
        for what, least in (("words", 1), ("latency", 0)):
            v = getattr(self, what)
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise ParameterError(f"DRAM port: {what} must be an integer >= {least}, "
                                     f"not {v!r}")
        try:
            port_rate(self.words_per_cycle)
        except (TypeError, ValueError):
            raise ParameterError(f"DRAM port: words_per_cycle must be a number in (0, 1], "
                                 f"not {self.words_per_cycle!r}") from None
        if not isinstance(self.controller, Resources):
            raise ParameterError("DRAM port: controller must be a bnnhw.resources.Resources")

    @property
    def addr_bits(self) -> int:
        """Bits of a word address."""
        return _bits(self.words)

    def port_cycles(self, words: int) -> int:
        """Cycles per image the shared port needs to deliver ``words`` words."""
        return math.ceil(words / port_rate(self.words_per_cycle))

    def block(self, words_per_image: int = 0) -> Block:
        """The controller as a block (kind ``dram``: its figures fixed, no memories); its
        cycles are what the one shared port takes to read ``words_per_image``."""
        return Block("dram", "dram", {"resources": self.controller,
                                      "words": words_per_image}, (),
                     self.port_cycles(words_per_image))


@dataclass(frozen=True)
class Budget:
    """What a device offers (the one budget of bnnhw: boards fill it, the optimiser reads
    it): ``lut`` LUTs of the family's ``lut_inputs`` inputs (sites, LUT RAM included),
    ``ff`` flip-flops, ``bram`` blocks of ``bram_kind`` (RAMB36 on xc7, DP16KD on ECP5, EBR
    on iCE40; ``bram_bits`` each), ``dsp`` blocks of ``dsp_kind``, ``spram`` SPRAM blocks
    of ``spram_bits`` (iCE40 UltraPlus), ``dram`` the board's DRAM (:class:`DramPort`;
    None without one: every weight then lives on chip). ``name`` is the device's; budgets
    compare by the device's figures (a board's DRAM is not the device's)."""

    name: str
    family: str
    lut: int
    ff: int
    bram: int
    dsp: int
    spram: int = 0
    dram: DramPort | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ParameterError(f"budget {self.name}: family must be one of "
                                 f"{', '.join(FAMILIES)}, not {self.family!r}")
        for what in ("lut", "ff", "bram", "dsp", "spram"):
            v = getattr(self, what)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ParameterError(f"budget {self.name}: {what} must be a number >= 0, "
                                     f"not {v!r}")
        if self.dram is not None and not isinstance(self.dram, DramPort):
            raise ParameterError(f"budget {self.name}: dram must be a DramPort or None, "
                                 f"not {self.dram!r}")

    @property
    def lut_inputs(self) -> int:
        return LUT_INPUTS[self.family]

    @property
    def bram_kind(self) -> str:
        return BRAM_NAME[self.family]

    @property
    def bram_bits(self) -> int:
        return BRAM_BITS[self.family]

    @property
    def dsp_kind(self) -> str:
        return DSP_NAME[self.family]

    @property
    def spram_bits(self) -> int:
        return SPRAM_BITS if self.spram else 0

    @property
    def bram_total_bits(self) -> int:
        return int(self.bram * self.bram_bits)

    @property
    def spram_total_bits(self) -> int:
        return self.spram * self.spram_bits

    def as_dict(self) -> dict[str, int]:
        out = {"lut": self.lut, "ff": self.ff, "bram": self.bram, "dsp": self.dsp}
        if self.spram:
            out["spram"] = self.spram
        return out

    def scaled(self, lut: float = 1.0, bram: float = 1.0, **more: float) -> Budget:
        """The budget with ``lut``, ``bram`` (and ``ff``, ``dsp``) scaled (a synthetic
        budget for a test or a what-if)."""
        f = {"lut": lut, "bram": bram, "ff": more.pop("ff", 1.0), "dsp": more.pop("dsp", 1.0)}
        if more:
            raise ParameterError(f"budget: no resource {', '.join(more)} to scale")
        return Budget(f"{self.name} x{lut:g}", self.family, int(self.lut * f["lut"]),
                      int(self.ff * f["ff"]), int(self.bram * f["bram"]),
                      int(self.dsp * f["dsp"]), self.spram, self.dram)


BUDGETS = {
    "xc7a35t": Budget("XC7A35T", "xc7", 20_800, 41_600, 50, 90),
    "xc7a100t": Budget("XC7A100T", "xc7", 63_400, 126_800, 135, 240),
    "xc7z020": Budget("XC7Z020", "xc7", 53_200, 106_400, 140, 220),
    "ecp5-85f": Budget("LFE5U-85F", "ecp5", 83_640, 83_640, 208, 156),
    "ecp5-25f": Budget("LFE5U-25F", "ecp5", 24_288, 24_288, 56, 28),
    "ice40up5k": Budget("iCE40UP5K", "ice40", 5_280, 5_280, 30, 8, spram=4),
}
"""Budgets of common parts (LUTs, FFs, block RAMs, DSPs of the datasheets; the boards of
``boards`` use the same figures)."""



# -- blocks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """One memory of a block: ``depth`` words of ``width`` bits; ``kind`` ``rom`` (no
    write port, synchronous read), ``ram`` (one write and one synchronous read port) or
    ``ram_async`` (combinational read); ``granularity`` bits per write enable (0: one);
    ``style`` as ``rtl_gen.weight_memory.STYLES`` (``auto`` for the blocks' own buffers);
    ``role`` says what it holds (``weights``, ``thresholds``, ``class_map``, ``buffer``)."""

    name: str
    depth: int
    width: int
    kind: str = "rom"
    style: str = "auto"
    granularity: int = 0
    role: str = "buffer"

    @property
    def bits(self) -> int:
        return self.depth * self.width


@dataclass(frozen=True)
class Block:
    """One engine: ``kind`` (``encoder``, ``convert``, ``window``, ``mvtu``, ``tiled``,
    ``fifo``, ``pool``, ``classify``; ``link`` and ``dram`` around them), the figures its logic depends on, its memories and the
    cycles per image it takes."""

    name: str
    kind: str
    shape: Mapping[str, Any]
    memories: tuple[Memory, ...] = ()
    cycles: int = 0

    def __getitem__(self, key: str) -> Any:
        return self.shape[key]


def _bits(n: int) -> int:
    """Bits of a counter ``0..n-1`` (0 for a single value)."""
    return (n - 1).bit_length() if n > 1 else 0


def encoder_block(name: str, height: int, width: int, channels: int, encoding: str,
                  levels: int, elements: int) -> Block:
    cmps = {"binary": elements, "thermometer": elements * levels, "uint8": 0}[encoding]
    beats = height * width * channels // elements
    return Block(name, "encoder", {"encoding": encoding, "elements": elements,
                                   "comparators": cmps}, (), beats)


def convert_block(name: str, in_width: int, out_width: int, frame_bits: int,
                  capacity: int | None = None) -> Block:
    g = math.gcd(in_width, out_width, frame_bits)
    in_beats, out_beats = -(-frame_bits // in_width), -(-frame_bits // out_width)
    pad = out_beats * out_width - frame_bits
    wire = in_width == out_width and pad == 0
    cap = 0 if wire else out_width - g + in_width + pad
    if capacity is not None:
        cap = capacity
    # input bits are placed at any multiple of g below cap - in_width: every buffer bit
    # selects among that many input bits (the placement mux), plus the output shift
    places = 0 if wire else (cap - in_width) // g + 1
    sel = 0
    if not wire:
        for j in range(cap):
            lo, hi = max(0, -(-(j - in_width + 1) // g)), min(places - 1, j // g)
            sel += max(0, hi - lo + 1)
    return Block(name, "convert", {"in_width": in_width, "out_width": out_width,
                                   "wire": wire, "capacity": cap, "places": places,
                                   "select": sel, "frame_beats": max(in_beats, out_beats)},
                 (), max(in_beats, out_beats))


def _buffer_rows(h: int, k: int, s: int, p: int) -> int:
    oh = nx.conv_out_size(h, k, s, p)
    last_low = min(max((oh - 1) * s - p, 0), h)
    next_high = h + min(max(k - 1 - p, 0), h - 1)
    return max(k + s, next_high - last_low + 1)


def window_block(name: str, height: int, width: int, channels: int, kernel: int, stride: int,
                 padding: int, simd: int, elem_width: int, depth: int | None = None) -> Block:
    cf = channels // simd
    rows = _buffer_rows(height, kernel, stride, padding)
    depth = rows * width * cf if depth is None else depth
    beat = simd * elem_width
    oh = nx.conv_out_size(height, kernel, stride, padding)
    ow = nx.conv_out_size(width, kernel, stride, padding)
    counters = (_bits(oh) + _bits(ow) + 2 * _bits(kernel) + 2 * _bits(cf) + _bits(width)
                + 3 * _bits(depth))
    cycles = max(height * width * cf, oh * ow * kernel * kernel * cf)
    mem = Memory(f"{name}.line_buffer", depth, beat, "ram")
    return Block(name, "window", {"beat": beat, "depth": depth, "counters": counters,
                                  "padded": padding > 0}, (mem,), cycles)


@lru_cache(maxsize=4096)
def tree_costs(count: int, width: int = 1, levels_per_stage: int = 2, fanin: int = 3,
               ) -> tuple[int, int, int]:
    """``(counter outputs, pipeline register bits, output bits)`` of the compressor tree of
    ``rtl_gen.popcount`` summing ``count`` operands of ``width`` bits: the counters'
    output bits are the tree's LUTs, the registers sit every ``levels_per_stage`` levels
    (``bnnhw.compressor.tree_plan``, which the RTL builds)."""
    heights = [count] * width
    groups_of = compressor.tree_plan(heights, fanin)
    plan, cur = [], heights
    for groups in groups_of:
        plan.append((cur, groups))
        cur = compressor.apply_level(cur, groups)
    adder = int(max(cur, default=0) == 2)
    levels = len(plan) + adder
    outs = sum(g.bit_length() for _, groups in plan for gs in groups for g in gs if g > 1)
    regs, since = 0, 0
    for i, (_, groups) in enumerate(plan):
        since += 1
        heights = compressor.apply_level(plan[i][0], groups)
        if since == levels_per_stage and i + 1 < levels:
            regs += sum(heights) + 1
            since = 0
    out = (count * ((1 << width) - 1)).bit_length()
    return outs, regs, out + 1


def mvtu_block(name: str, rows: int, cols: int, pe: int, simd: int, input_kind: str,
               pixels: int, classes: int | None, writable: bool = False,
               weight_style: str = "auto", threshold_style: str = "auto",
               levels_per_stage: int = 2, levels: int = 1,
               density: float | None = None) -> Block:
    """``classes`` border classes of the thresholds (``None`` for the scores layer),
    ``levels`` thresholds per channel (3 for a frac2 output). A ``frac2`` input makes the
    precision-gated unit (``rtl_gen.gated_mvtu``): binary popcount trees on ``simd`` bits
    shared by both planes, two count accumulators and the combiner, its gate memory, input
    banks and result slots, and ``P * NF * SF * (1 + density)`` cycles (``density`` the
    item density, 1 when not measured). Its logic is costed with the MVTU's coefficients
    on those figures: no gated unit is in the calibration."""
    nf, sf = rows // pe, cols // simd
    gated = input_kind == "frac2"
    ew = 1 if gated else nx.ELEMENT_BITS[input_kind]
    lo, hi = nx.acc_range(input_kind, cols)
    acc_bits = nx.range_bits(lo, hi)[0]
    thr_bits = nx.range_bits(lo, hi + 1)[0] if classes is not None else 0
    score_bits = nx.range_bits(*nx.dot_range(input_kind, cols))[0] if classes is None else 0
    outs, regs, tree_out = tree_costs(simd, ew, levels_per_stage, 3)
    if input_kind == "uint8":  # per PE one gated-operand tree, plus the shared sum(x)
        tree_luts, tree_regs = (pe + 1) * outs, (pe + 1) * regs
    else:
        tree_luts, tree_regs = pe * outs, pe * regs
    mems = []
    kind = "ram" if writable else "rom"

    def stored(width: int) -> int:
        return _stored(width, writable)[0]

    def gran(width: int) -> int:
        return _stored(width, writable)[1]

    mems.append(Memory(f"{name}.weights", nf * sf, stored(pe * simd), kind, weight_style,
                       gran(pe * simd), "weights"))
    if classes is not None:
        width = pe * thr_bits * levels
        mems.append(Memory(f"{name}.thresholds", classes * nf, stored(width), kind,
                           threshold_style, gran(width), "thresholds"))
    acc, counters, x = pe * acc_bits, _bits(nf) + _bits(sf) + _bits(nf * sf), simd * ew
    cycles = pixels * nf * sf
    if gated:
        credits, banks = gated_buffers(nf, sf, tree_latency(simd, 1, levels_per_stage, 3))
        count = nx.unsigned_bits(cols)
        gate = nx.unsigned_bits(cols + 1) + 1
        mems.append(Memory(f"{name}.gates", nf, stored(pe * gate), kind, "auto",
                           gran(pe * gate), "gates"))
        mems += [Memory(f"{name}.input_buffer", banks * sf, 2 * simd, "ram"),
                 Memory(f"{name}.msb_results", credits, pe * (count + 1), "ram"),
                 Memory(f"{name}.lsb_results", credits, pe * count, "ram"),
                 Memory(f"{name}.lsb_queue", credits, _bits(banks) + _bits(nf), "ram")]
        acc += 2 * pe * count  # the two count accumulators besides the combiner
        counters = 2 * counters + 3 * _bits(banks) + 3 * _bits(credits + 1)
        x = 2 * simd
        cycles += gated_extra(cycles, 1.0 if density is None else density)
    elif nf > 1:
        mems.append(Memory(f"{name}.input_buffer", 2 * sf, simd * ew, "ram"))
    shape = {"pe": pe, "simd": simd, "nf": nf, "sf": sf, "input_kind": input_kind,
             "lanes": pe * simd, "gated": pe * simd * ew if input_kind == "uint8" else 0,
             "tree_luts": tree_luts, "tree_regs": tree_regs, "tree_out": tree_out,
             "acc": acc, "cmp": pe * thr_bits * levels, "scores": pe * score_bits,
             "x": x, "counters": counters,
             "classes": classes or 0, "buffered": nf > 1 or gated,
             "weights_const": nf * sf == 1, "thresholds_const": (classes or 0) * nf == 1}
    return Block(name, "mvtu", shape, tuple(mems), cycles)


def tiled_block(name: str, rows: int, cols: int, pe: int, simd: int, pixels: int,
                classes: int | None, tile_rows: int, in_beats: int, words_per_cycle: float,
                latency: int, addr_bits: int, writable: bool = False,
                window_counters: int = 0, levels_per_stage: int = 2) -> Block:
    """The weight-tiled unit (``rtl_gen.tiled_mvtu``, binary inputs): the MVTU's compute
    (lanes, popcount trees, accumulators, thresholds: :func:`mvtu_block`'s figures and
    coefficients) without its weight memory, with the buffers of
    ``bnnhw.folding.TiledShape.buffers`` as memories (input: two stored images of
    ``in_beats`` beats; tile: two tiles of ``128 k``-bit lines; reorder: two maps of
    results, with several tiles), mapped as the other buffers are (``auto``: block RAM
    counted by its width/depth packing, or LUT RAM where Yosys would take it for a shallow
    one), and the steering around them (kind ``tiled``, see
    :func:`tiled_steering`). ``window_counters`` are the bits of the window's address
    counters of a conv that reads its stored map itself (no sliding window block)."""
    base = mvtu_block(name, rows, cols, pe, simd, "binary", pixels, classes, writable,
                      levels_per_stage=levels_per_stage)
    out_bits = base["scores"] // pe if classes is None else 1
    ts = TiledShape(rows, cols, pe, simd, tile_rows, pixels, in_beats, out_bits, 1)
    mems = [m for m in base.memories if m.role == "thresholds"]
    mems.append(Memory(f"{name}.input_buffer", 2 * in_beats, simd, "ram"))
    mems.append(Memory(f"{name}.tile_buffer", 2 * ts.tile_lines, ts.line_width, "ram"))
    if ts.tiles > 1:
        mems.append(Memory(f"{name}.reorder_buffer", 2 * pixels * ts.nf, pe * out_bits,
                           "ram"))
    steer = (_bits(pixels) + _bits(ts.tiles) + 3 * _bits(2 * in_beats) + addr_bits
             + _bits(ts.tile_dram_words) + 3 * _bits(2 * ts.tile_lines)
             + _bits(ts.line_slots) + _bits(ts.line_words) + 2 * 2 * 3 + window_counters)
    if ts.tiles > 1:
        steer += (_bits(ts.tile_nf) + _bits(pixels) + _bits(ts.tiles) + 3 * _bits(
            2 * pixels * ts.nf + ts.nf) + 2 * 2)
    shape = {**base.shape, "buffered": True, "tile_rows": tile_rows, "tiles": ts.tiles,
             "word": ts.word_width, "line_slots": ts.line_slots,
             "gather": (ts.line_words - 1) * 128, "steer": steer,
             "dram_words": ts.dram_words}
    return Block(name, "tiled", shape, tuple(mems), ts.cycles(words_per_cycle, latency))


TILED_COUNTER_LUT, TILED_COUNTER_FF, TILED_CONTROL = 1.5, 1.0, (40, 24)
"""Steering of a tiled unit per counter bit (an adder bit and its share of the
comparisons and bank multiplexers, one flip-flop) and its fixed control (LUT, FF):
estimated, not fitted; no tiled unit is in the calibration yet."""


def tiled_steering(block: Block, family: str) -> Resources:
    """The logic a tiled unit adds to the MVTU's: its counters and pointers (``steer``
    bits), the slot multiplexer that picks a folded word of ``word`` bits out of a line of
    ``line_slots`` (its ``word`` register), and the register that gathers a line of
    several DRAM words (``gather`` bits)."""
    s = block.shape
    lut = (TILED_COUNTER_LUT * s["steer"] + TILED_CONTROL[0]
           + s["word"] * _mux_luts(s["line_slots"], family))
    ff = TILED_COUNTER_FF * s["steer"] + TILED_CONTROL[1] + s["word"] + s["gather"]
    return Resources(lut, ff)


def fifo_block(name: str, width: int, depth: int, beats: int) -> Block:
    mems = (Memory(f"{name}.storage", depth - 1, width, "ram"),) if depth > 1 else ()
    return Block(name, "fifo", {"width": width, "depth": depth}, mems,
                 beats * (1 if depth >= 3 else 2))


def pool_block(name: str, height: int, width: int, channels: int, kernel: int, stride: int,
               simd: int, elem: int = 1) -> Block:
    """``simd`` elements of ``elem`` bits (2 for a frac2 map's codes) per beat."""
    cf = channels // simd
    ow = nx.conv_out_size(width, kernel, stride)
    overlapping = kernel > stride
    mems: list[Memory] = []
    cycles = height * width * cf
    if overlapping:
        win = window_block(f"{name}.window", height, width, channels, kernel, stride, 0,
                           simd, elem)
        mems += list(win.memories)
        mems.append(Memory(f"{name}.partial", cf, simd * elem, "ram_async"))
        counters = win["counters"] + _bits(kernel * kernel) + _bits(cf)
        cycles = win.cycles
    else:
        mems.append(Memory(f"{name}.partial", ow * cf, simd * elem, "ram_async"))
        counters = (_bits(cf) + 2 * _bits(stride) + _bits(-(-width // stride))
                    + _bits(-(-height // stride)) + _bits(width) + _bits(height))
    return Block(name, "pool", {"simd": simd * elem, "counters": counters,
                                "overlapping": overlapping}, tuple(mems), cycles)


def _stored(width: int, writable: bool) -> tuple[int, int]:
    """Width and write granularity of a run-time writable memory's words as synthesis
    keeps them (``rtl_gen.weight_memory.FoldedMemory``): a word wider than one cfg chunk
    is padded to whole chunks, written a chunk at a time, but nothing reads the padding
    and Yosys drops those bits (the word keeps its width, a write enable per chunk); a
    narrower word is stored at its width with one write enable."""
    return width, CFG_DATA_BITS if writable and width > CFG_DATA_BITS else 0


def classify_block(name: str, classes: int, score_width: int, scan_bits: int,
                   scale_bits: int, logit_bits: int, multiplier: bool,
                   writable: bool = False) -> Block:
    width, gran = _stored(scan_bits, writable)
    mems = (Memory(f"{name}.class_map", classes, width, "ram" if writable else "rom", "auto",
                   gran, "class_map"),) if scan_bits else ()
    return Block(name, "classify", {"classes": classes, "scores": classes * score_width,
                                    "score_width": score_width, "logit": logit_bits,
                                    "multiplier": multiplier, "scale_bits": scale_bits},
                 mems, classes + 3)


def _classify_of(node: ir.Dense, writable: bool) -> Block:
    from .manifest import class_map_fields

    scales = [int(v) for v in node.class_scale]
    offsets = [int(v) for v in node.class_offset]
    sw = node.dot_bits
    if writable:
        sb, ob = class_map_fields(node)
        big = ((1 << sb) - 1) * node.dot_max + (1 << (ob - 1))
        logit, common = nx.signed_bits(-big, big), None
    else:
        common = scales[0] if len(set(scales)) == 1 else None
        sb = 0 if common is not None else nx.unsigned_bits(max(scales))
        has_off = len(set(offsets)) > 1
        ob = nx.signed_bits(min(offsets), max(offsets)) if has_off else 0
        b = offsets if has_off else [0] * len(scales)
        logit = nx.signed_bits(min(o - m * node.dot_max for m, o in zip(scales, b)),
                               max(o + m * node.dot_max for m, o in zip(scales, b)))
    scan = sb + ob
    multiplier = common is None or (common & (common - 1)) != 0
    return classify_block("classify", node.rows, sw, scan if node.rows > 1 or scan else 0,
                          sb, logit, multiplier, writable)


@dataclass(frozen=True)
class Link:
    """The host link around the network on a board (``rtl_gen.board_core`` and its UART,
    ``rtl_gen.board_top``): frame receiver (two banks of ``max_payload`` bytes),
    dispatcher, transmitter and UART at ``baud`` from ``clock_hz``. :meth:`block` is its
    block for a graph (kind ``link``: logic fitted like the engines', the frame buffer a
    memory)."""

    max_payload: int = 4096
    clock_hz: int = 100_000_000
    baud: int = 3_000_000
    timeout_cycles: int = 1 << 22

    def __post_init__(self) -> None:
        for what, lo in (("max_payload", 16), ("clock_hz", 1), ("baud", 1),
                         ("timeout_cycles", 1)):
            v = getattr(self, what)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ParameterError(f"link: {what} must be an integer >= {lo}, not {v!r}")

    @classmethod
    def of_core(cls, core: Any) -> Link:
        """The link of a ``rtl_gen.board_core.BoardCoreParams`` (read by attribute)."""
        return cls(core.max_payload, core.clock_hz, core.baud, core.timeout_cycles)

    def block(self, graph: ir.Graph) -> Block:
        h, w, c = graph.input.in_shape
        last = graph.nodes[-1]
        depth = 2 * self.max_payload
        mem = Memory("link.frame_buffer", depth, 8, "ram", "auto", 0, "frame_buffer")
        shape = {"addr": _bits(depth), "pixels": _bits(h * w), "channels": c,
                 "result": last.rows * last.dot_bits,
                 "uart": _bits(-(-self.clock_hz // self.baud)),
                 "timeout": _bits(self.timeout_cycles)}
        return Block("link", "link", shape, (mem,), 0)


def image_bytes(graph: ir.Graph) -> int:
    """Bytes of one image in an ``INFER`` frame (``bnnhw.manifest.Manifest.image_bytes``:
    a binary-encoded image travels one bit per value, else one byte)."""
    h, w, c = graph.input.in_shape
    n = h * w * c
    return -(-n // 8) if graph.input.encoding == "binary" else n


def least_payload(graph: ir.Graph) -> int:
    """The smallest ``max_payload`` that carries one image and its result
    (``bnnhw.manifest.Manifest.images_per_frame`` >= 1), at least 16."""
    last = graph.nodes[-1]
    result = (1 if last.rows <= 256 else 2) + last.rows * -(-last.dot_bits // 8)
    return max(16, image_bytes(graph) + 1, result + 3)


@dataclass(frozen=True)
class Flow:
    """The stream between two engines: the map ``h x w x c`` in beats of ``per_beat``
    elements of ``elem`` bits."""

    h: int
    w: int
    c: int
    per_beat: int
    elem: int


def input_blocks(graph: ir.Graph, pixels_per_beat: int = 1) -> tuple[list[Block], Flow]:
    """The encoder's block and the stream it gives the first layer."""
    enc = graph.input
    h, w, c = enc.in_shape
    block = encoder_block(f"{enc.name}_encoder", h, w, c, enc.encoding, enc.levels,
                          c * pixels_per_beat)
    oh, ow, oc = enc.out_shape
    return [block], Flow(oh, ow, oc, oc * pixels_per_beat, 8 if enc.out_kind == "uint8" else 1)


def _tiled_of(node: ir.Conv | ir.Dense, fold: Fold, dram: DramPort | None, classes,
              writable: bool) -> Block:
    if dram is None:
        raise ParameterError(f"layer {node.name}: its weights are in DRAM (tile_rows "
                             f"{fold.tile_rows}) but no DRAM port was given; pass dram= "
                             f"(the budget's DramPort)")
    if not can_tile(node):
        raise ParameterError(f"layer {node.name}: only a layer with binary inputs and "
                             f"binary outputs or scores can keep its weights in DRAM; give "
                             f"it no tile_rows")
    if isinstance(node, ir.Conv):
        h, w, c = node.in_shape
        oh, ow, _ = node.out_shape
        geometry = (h, w, c // fold.simd, node.kernel, node.stride, node.padding, oh, ow)
    else:
        geometry = (1, 1, node.cols // fold.simd, 1, 1, 0, 1, 1)
    return tiled_block(node.name + "_tiled", node.rows, node.cols, fold.pe, fold.simd,
                       node.out_pixels if isinstance(node, ir.Conv) else 1, classes,
                       fold.tile_rows, tiled_shape(node, fold).in_beats, dram.words_per_cycle,
                       dram.latency, dram.addr_bits, writable, window_bits(geometry))


def window_bits(geometry: Sequence[int]) -> int:
    """Counter bits of a tiled unit's read-address generator over its stored input
    (``rtl_gen.tiled_mvtu.TiledMVTUParams.geometry``: ``(H, W, CF, K, S, P, OH, OW)``; a
    unit fed windows or a dense one reads a ``1 x pixels`` map with a 1 x 1 kernel)."""
    h, w, cf, k, _, pad, oh, ow = geometry
    return (_bits(oh) + _bits(ow) + 2 * _bits(k) + _bits(cf) + 2 * _bits(h + 2 * pad)
            + _bits(h * w * cf))


def node_blocks(node: ir.Node, fold: Fold | None, flow: Flow,
                memory_styles: Mapping[str, str] | None = None, fifo_depth: int = 4,
                runtime_writable: bool = False, density: float | None = None,
                dram: DramPort | None = None) -> tuple[list[Block], Flow]:
    """The blocks one IR node adds after ``flow``, and the stream it leaves (the order of
    ``rtl_gen.network.NetworkParams.stages``); ``density`` is a gated node's item density
    at ``fold.pe``. A fold with ``tile_rows`` makes the tiled unit (:func:`tiled_block`,
    the port ``dram``): a conv then has no sliding window, its width converter feeding
    the unit that stores the map."""
    styles = memory_styles or {}
    h, w, c, per_beat, elem = flow.h, flow.w, flow.c, flow.per_beat, flow.elem
    blocks: list[Block] = []

    def convert(name: str, to: int, frame: int, width: int = 1, role: str = "convert"):
        nonlocal per_beat
        if per_beat != to:
            blocks.append(convert_block(f"{name}_{role}", per_beat * width, to * width,
                                        frame * width))
            per_beat = to

    if isinstance(node, ir.Conv):
        assert fold is not None
        convert(node.name, fold.simd, h * w * c, elem)
        oh, ow, r = node.out_shape
        ny, nxc = node.border_classes
        out = 2 if node.out_levels == 3 else 1
        if fold.in_dram:
            blocks.append(_tiled_of(node, fold, dram, ny * nxc, runtime_writable))
            blocks.append(fifo_block(f"{node.name}_fifo", fold.pe, fifo_depth,
                                     oh * ow * r // fold.pe))
            return blocks, Flow(oh, ow, r, fold.pe, 1)
        blocks.append(window_block(f"{node.name}_window", h, w, c, node.kernel, node.stride,
                                   node.padding, fold.simd, elem))
        blocks.append(mvtu_block(
            node.name + "_mvtu", node.rows, node.cols, fold.pe, fold.simd, node.input_kind,
            oh * ow, ny * nxc, runtime_writable, styles.get(f"{node.name}.weights", "auto"),
            styles.get(f"{node.name}.thresholds", "auto"), levels=node.out_levels,
            density=density))
        blocks.append(fifo_block(f"{node.name}_fifo", fold.pe * out, fifo_depth,
                                 oh * ow * r // fold.pe))
        return blocks, Flow(oh, ow, r, fold.pe, out)
    if isinstance(node, ir.MaxPool):
        blocks.append(pool_block(f"{node.name}_pool", h, w, c, node.kernel, node.stride,
                                 per_beat, elem))
        oh, ow, oc = node.out_shape
        return blocks, Flow(oh, ow, oc, per_beat, elem)
    if isinstance(node, ir.Dense):
        assert fold is not None
        convert(node.name, fold.simd, node.cols, elem)
        thr = node.thresholds is not None
        out = 2 if node.out_levels == 3 else 1
        if fold.in_dram:
            blocks.append(_tiled_of(node, fold, dram, 1 if thr else None, runtime_writable))
        else:
            blocks.append(mvtu_block(
                node.name + "_mvtu", node.rows, node.cols, fold.pe, fold.simd,
                node.input_kind, 1, 1 if thr else None, runtime_writable,
                styles.get(f"{node.name}.weights", "auto"),
                styles.get(f"{node.name}.thresholds", "auto"),
                levels=max(1, node.out_levels), density=density))
        per_beat = fold.pe
        if thr:
            blocks.append(fifo_block(f"{node.name}_fifo", fold.pe * out, fifo_depth,
                                     node.rows // fold.pe))
        else:
            convert(node.name, node.rows, node.rows, node.dot_bits, role="gather")
            blocks.append(_classify_of(node, runtime_writable))
        return blocks, Flow(1, 1, node.rows, per_beat, out)
    raise TypeError(f"resources: unexpected node {node!r}")


def plan_blocks(graph: ir.Graph, folds: Mapping[str, Fold], *, pixels_per_beat: int = 1,
                memory_styles: Mapping[str, str] | None = None, fifo_depth: int = 4,
                runtime_writable: bool = False, dram: DramPort | None = None) -> list[Block]:
    """The blocks of ``rtl_gen.network.NetworkParams(graph, folds, ...)`` without building
    it (the same stages in the same order, see the module docstring); ``dram`` is the port
    of the layers whose folds have ``tile_rows``."""
    blocks, flow = input_blocks(graph, pixels_per_beat)
    for node in graph.nodes[1:]:
        fold = folds.get(node.name)
        density = None
        if isinstance(node, (ir.Conv, ir.Dense)) and node.gated and fold is not None:
            density = dict(layer_density(graph, node.name)).get(fold.pe)
        more, flow = node_blocks(node, fold, flow, memory_styles, fifo_depth,
                                 runtime_writable, density, dram)
        blocks += more
    return blocks


def blocks_of_stages(stages: Iterable[Any]) -> list[Block]:
    """The blocks of real stage parameters (``rtl_gen.network.NetworkParams.stages``),
    read by type name so this module imports no hardware code."""
    out = []
    for stage in stages:
        p = stage.params
        kinds = {c.__name__ for c in type(p).__mro__}
        if "InputEncoderParams" in kinds:
            out.append(encoder_block(stage.name, p.height, p.width, p.channels, p.encoding,
                                     p.levels, getattr(p, "elements", p.simd)))
        elif "WidthConverterParams" in kinds:
            out.append(convert_block(stage.name, p.in_width, p.out_width, p.frame_bits,
                                     p.capacity))
        elif "SlidingWindowParams" in kinds:
            out.append(window_block(stage.name, p.height, p.width, p.channels, p.kernel,
                                    p.stride, p.padding, p.simd, p.elem_width,
                                    p.memory_depth))
        elif "MVTUParams" in kinds or "GatedMVTUParams" in kinds:
            t = p.thresholds
            classes = None if t is None else int(t.shape[0] * t.shape[1])
            levels = 1 if t is None or t.ndim == 3 else int(t.shape[3])
            kind = "frac2" if "GatedMVTUParams" in kinds else p.input_kind
            out.append(mvtu_block(stage.name, p.rows, p.cols, p.pe, p.simd, kind,
                                  p.pixels, classes, p.runtime_writable,
                                  getattr(p, "weight_style", "auto"),
                                  getattr(p, "threshold_style", "auto"), p.levels_per_stage,
                                  levels, getattr(stage, "density", None)))
        elif "TiledMVTUParams" in kinds:
            t = p.thresholds
            out.append(tiled_block(stage.name, p.rows, p.cols, p.pe, p.simd, p.pixels,
                                   None if t is None else int(t.shape[0] * t.shape[1]),
                                   p.tile_rows, p.in_beats, p.dram_words_per_cycle,
                                   p.dram_latency, p.addr_width, p.runtime_writable,
                                   window_bits(p.geometry), p.levels_per_stage))
        elif "FifoParams" in kinds:
            out.append(fifo_block(stage.name, p.width, p.depth, p.beats_per_image))
        elif "MaxPoolParams" in kinds:
            out.append(pool_block(stage.name, p.height, p.width, p.channels, p.kernel,
                                  p.step, p.simd, getattr(p, "elem_width", 1)))
        elif "ClassifyParams" in kinds:
            common = p.common_scale
            multiplier = common is None or (common & (common - 1)) != 0
            out.append(classify_block(stage.name, p.classes, p.score_width,
                                      p.scan_bits if p.scan_bits and p.map_words else 0,
                                      p.scale_bits, p.logit_bits, multiplier,
                                      p.runtime_writable))
        elif "BoardCoreParams" in kinds:  # the link of a board core, its network apart
            out.append(Link.of_core(p).block(p.graph))
        else:
            raise TypeError(f"resources: no model for stage {stage.name} "
                            f"({type(p).__name__})")
    return out


# -- calibration ---------------------------------------------------------------------------

CALIBRATION_FILE = "resource_calibration.json"


@lru_cache(maxsize=1)
def calibration() -> dict[str, Any]:
    """The stored calibration (``bench/calibrate_resources.py`` writes it)."""
    text = _pkg.files("bnnhw").joinpath(CALIBRATION_FILE).read_text()
    return json.loads(text)


def _family(cal: Mapping[str, Any], family: str) -> Mapping[str, Any]:
    if family not in FAMILIES:
        raise ParameterError(f"resources: family must be one of {', '.join(FAMILIES)}, "
                             f"not {family!r}")
    fams = cal.get("families", {})
    if family not in fams:
        raise ParameterError(f"resources: the calibration has no family {family!r} "
                             f"(run bench/calibrate_resources.py --family {family})")
    return fams[family]


# -- memories ------------------------------------------------------------------------------

# Block and distributed RAM units as Yosys' memory libraries describe them: abits, data
# widths (the unit depth at width index i is 2 ** (abits - i)), cost, LUT sites.
_UNITS = {
    "xc7": {
        "block": [("RAMB18", 14, (1, 2, 4, 9, 18, 36), 129, 0, 9),
                  ("RAMB36", 15, (1, 2, 4, 9, 18, 36, 72), 257, 0, 9),
                  ("RAMB36x2", 16, (1, 2, 4, 9), 514, 0, 9)],
        "distributed": [("RAM32M", 5, (6,), 8, 7, 0), ("RAM64M", 6, (3,), 8, 7, 0),
                        ("RAM32X1D", 5, (4,), 8, 8, 0), ("RAM64X1D", 6, (2,), 8, 8, 0),
                        ("RAM128X1D", 7, (1,), 8, 8, 0)],
    },
    "ecp5": {
        "block": [("DP16KD", 14, (1, 2, 4, 9, 18, 36), 128, 0, 9)],
        "distributed": [("DPR16X4", 4, (4,), 4, 0, 0)],
    },
    "ice40": {
        "block": [("RAM4K", 11, (2, 4, 8, 16), 64, 0, 0)],
        "distributed": [],
    },
}
_LUT_SITES = {"RAM32M": 4, "RAM64M": 4, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4,
              "DPR16X4": 6}
_LOGIC_COST_ROM = {"xc7": 1 / 64, "ecp5": 1 / 16, "ice40": 1 / 16}


@dataclass(frozen=True)
class Mapping_:
    """How one memory maps: ``kind`` (``logic``, ``distributed``, ``block``), the cell
    type and count, and its resources."""

    memory: Memory
    kind: str
    cell: str
    units: int
    cost: float
    resources: Resources


def _mux_luts(n: int, family: str) -> int:
    """LUTs of an ``n``:1 multiplexer of one bit."""
    if n <= 1:
        return 0
    if family == "xc7":  # LUT6 4:1, MUXF7/F8 free up to 16:1
        return -(-n // 4) + max(0, -(-n // 16) - 1)
    return n - 1  # LUT4: a 2:1 mux per LUT (PFUMX/L6MUX21 help little on random data)


def _candidates(mem: Memory, family: str, emu: Mapping[str, float]):
    """Yosys' candidates for ``mem``: ``(kind, cell, cost, units, mult_a)``."""
    out = []
    w, d = mem.width, mem.depth
    for kind in ("block", "distributed"):
        if kind == "distributed" and mem.kind == "rom":
            continue  # prune_rom
        if kind == "block" and mem.kind == "ram_async":
            continue  # block RAM reads are synchronous
        for cell, abits, dbits, cost, wscale, byte in _UNITS[family][kind]:
            for i, unit in enumerate(dbits):
                if (family == "xc7" and cell == "RAMB18" and unit != 36 and mem.granularity
                        and mem.kind != "rom"):
                    # measured: a RAMB18 takes a memory with write enables only as 512 x 36
                    # (56 such memories, 300..4,096 deep, 40..150 bits: all but one
                    # reproduced; zoo vgg 0.35's 1,611 x 90 weights are 6 RAMB36)
                    continue
                depth_unit = 1 << (abits - i)
                mult_a = -(-d // depth_unit)
                if mem.granularity and mem.kind != "rom":
                    eb = byte if byte and byte <= unit else unit
                    chunks = -(-w // mem.granularity)
                    last = w - (chunks - 1) * mem.granularity
                    padded = (chunks - 1) * (-(-mem.granularity // eb) * eb) \
                        + -(-last // eb) * eb
                else:
                    padded = w
                repl = mult_a * -(-padded // unit)
                c = (cost - wscale) * repl + wscale * mult_a * w / unit
                c += 0.5 * (mult_a - 1) * w
                if mem.kind != "rom" and mult_a > 1:
                    wren = -(-w // mem.granularity) if mem.granularity else 1
                    c += 0.5 * mult_a * wren
                c += emu.get(f"{kind}_{mem.kind}", emu.get(kind, 2.0))
                out.append((kind, cell, c, repl, mult_a))
                if kind == "block" and mem.kind == "rom" and mult_a > 1:
                    # a ROM deeper than the unit may also lay its depth slices side by
                    # side in the unit's width, a multiplexer picking the slice
                    packed = -(-mult_a * w // unit)
                    if packed < repl:
                        c2 = (cost - wscale) * packed + wscale * mult_a * w / unit
                        c2 += 0.5 * (mult_a - 1) * w
                        c2 += emu.get(f"{kind}_{mem.kind}", emu.get(kind, 2.0))
                        out.append((kind, cell, c2, packed, mult_a))
    return out


def map_memory(mem: Memory, family: str, cal: Mapping[str, Any] | None = None) -> Mapping_:
    """How Yosys maps ``mem`` on ``family`` (see the module docstring)."""
    fam = _family(cal or calibration(), family)
    emu = fam.get("emulation", {})
    if mem.style == "lutram" and not _UNITS[family]["distributed"]:
        raise ParameterError(f"{mem.name}: {family} has no LUT RAM (style 'lutram')")
    if mem.style == "lutram" and mem.kind == "rom":
        raise ParameterError(f"{mem.name}: a read-only memory cannot be LUT RAM")
    if mem.style == "logic" and mem.kind != "rom":
        raise ParameterError(f"{mem.name}: a writable memory cannot be a ROM of LUTs")
    cands = _candidates(mem, family, emu)
    logic_cost = mem.bits * (_LOGIC_COST_ROM[family] if mem.kind == "rom" else 1.0)
    want = {"block": "block", "lutram": "distributed", "logic": "logic"}.get(mem.style)
    if want == "logic":
        best = ("logic", "", logic_cost, 0, 1)
    elif want is not None:
        best = min((c for c in cands if c[0] == want), key=lambda c: c[2])
    else:  # memory_libmap: logic unless a candidate costs less than its truncated cost
        best, lowest = ("logic", "", logic_cost, 0, 1), int(logic_cost)
        for c in cands:
            if c[2] < lowest:
                best, lowest = c, c[2]
    kind, cell, cost, units, mult_a = best
    return Mapping_(mem, kind, cell, units, cost, _memory_resources(mem, family, fam, kind,
                                                                     cell, units, mult_a))


def distinct_columns(depth: int, width: int) -> float:
    """Expected number of distinct bit columns of a ``depth x width`` ROM of random
    words: columns of few words repeat, and synthesis builds each function once."""
    if depth >= 12:
        return float(width)
    n = 2.0 ** depth
    return min(float(width), n * (1 - (1 - 1 / n) ** width))


def _rom_luts(table: Mapping[str, float], depth: int, width: int) -> float:
    """LUTs of a ``depth x width`` ROM of random words: LUTs per distinct column by depth
    (measured; a depth between two measured ones takes the deeper one's, a LUT holding a
    power of two of words; proportional beyond the table)."""
    if depth <= 1:
        return 0.0
    pts = sorted((int(k), float(v)) for k, v in table.items())
    if depth >= pts[-1][0]:
        per = pts[-1][1] * depth / pts[-1][0]
    else:  # LUTs per column step with the depth: the next measured depth's
        per = next(v for d, v in pts if d >= depth)
    return per * distinct_columns(depth, width)


def _memory_resources(mem: Memory, family: str, fam: Mapping[str, Any], kind: str, cell: str,
                      units: int, mult_a: int) -> Resources:
    w, d = mem.width, mem.depth
    abits = _bits(d)
    if kind == "logic":
        if mem.kind != "rom":  # flip-flops and a read mux per bit
            luts = w * _mux_luts(d, family) + d
            return Resources(luts, d * w + (w if mem.kind == "ram" else 0))
        if mem.style == "logic" and d > 1:  # address register, combinational ROM
            return Resources(_rom_luts(fam["rom_lut"], d, w), abits)
        luts = _rom_luts(fam["rom_lut"], d, w)  # the same LUTs, a data register
        return Resources(luts, w)
    sync = mem.kind in ("rom", "ram")
    if kind == "distributed":
        sites = units * _LUT_SITES[cell]
        luts = w * _mux_luts(mult_a, family) + (mult_a if mult_a > 1 else 0)
        return Resources(luts, w if sync else 0, sites)
    # block RAM: the read mux of a memory deeper than one unit, with its registered select
    luts = w * _mux_luts(mult_a, family) + (mult_a if mult_a > 1 and mem.kind != "rom" else 0)
    ff = _bits(mult_a)
    emu = fam.get("block_ram_overhead", {}).get(mem.kind)
    if emu:  # read-first emulation where the block RAM cannot do it itself
        luts += emu[0] * w + emu[1]
        ff += emu[2] * w + emu[3] + abits
    if family == "xc7":
        n18 = units if cell == "RAMB18" else 0
        n36 = units * (2 if cell == "RAMB36x2" else 1) if cell != "RAMB18" else 0
        return Resources(luts, ff, 0, n36 + n18 / 2, 0, n18, n36)
    return Resources(luts, ff, 0, units)


# -- logic ---------------------------------------------------------------------------------


def features(block: Block) -> dict[str, float]:
    """The structural figures a block's LUTs and FFs are fitted to (one per coefficient)."""
    s = block.shape
    k = block.kind
    if k == "encoder":
        return {"comparators": s["comparators"]}
    if k == "convert":
        if s["wire"]:
            return {}
        return {"capacity": s["capacity"], "select": s["select"], "out": s["out_width"],
                "counters": _bits(s["frame_beats"]) + _bits(s["places"] + 1), "one": 1}
    if k == "window":
        return {"beat": s["beat"], "counters": s["counters"], "one": 1}
    if k in ("mvtu", "tiled"):
        f = {"tree_luts": s["tree_luts"], "tree_regs": s["tree_regs"], "acc": s["acc"],
             "cmp": s["cmp"], "scores": s["scores"], "x": s["x"], "gated": s["gated"],
             "lanes": s["lanes"] if s["input_kind"] != "uint8" else 0,
             "pe": s["pe"], "counters": s["counters"], "one": 1,
             "buffer": s["x"] if s["buffered"] else 0,
             "classes": _bits(s["classes"]) * s["pe"] if s["classes"] > 1 else 0}
        return f
    if k == "fifo":
        return {"width": s["width"], "one": 1}
    if k == "pool":
        return {"simd": s["simd"], "counters": s["counters"], "one": 1}
    if k == "link":
        return {"one": 1, "addr": s["addr"], "result": s["result"], "pixels": s["pixels"],
                "uart": s["uart"]}
    if k == "dram":
        return {}
    if k == "classify":
        return {"scores": s["scores"], "logit": s["logit"], "index": _bits(s["classes"]),
                "mul": s["logit"] * s["scale_bits"] if s["multiplier"] else 0, "one": 1}
    raise ValueError(f"unknown block kind {k!r}")


def _dsp(block: Block, family: str, fam: Mapping[str, Any]) -> int:
    if block.kind == "link":  # the dispatcher's multipliers: a constant, measured
        return int(fam.get("link_dsp", 0))
    if block.kind != "classify" or not block["multiplier"] or family == "ice40":
        return 0
    a, b = block["score_width"], max(1, block["scale_bits"])
    if family == "xc7":
        return -(-a // 25) * -(-b // 18) if a > 1 and b > 1 else 0
    return -(-a // 18) * -(-b // 18) if a > 1 and b > 1 else 0


def logic_features(block: Block, family: str, fam: Mapping[str, Any]) -> dict[str, float]:
    """:func:`features` and, for an MVTU whose weights stay in logic, ``rom_merge`` (style
    ``logic``) or ``rom_auto`` (style ``auto``, Yosys keeping it in logic): the LUTs the
    memory model gives that ROM. Flattened, synthesis merges the ROM with the XNORs and
    the first counters of the trees, which costs more or less than the two apart: more on
    xc7 (much more for an ``auto`` ROM, whose data register goes), less with 4-input
    LUTs, where a weight bit's XNOR folds into the last LUT of its ROM column. The fitted
    coefficients are the extra (``rom_merge``, ``rom_auto``) or the saving
    (``rom_merge_less``, ``rom_shallow_less``, features of negative sign) per ROM LUT; a
    ROM no deeper than a LUT's inputs less one (address and input bit in one LUT) only
    saves. Thresholds left to synthesis (``auto``) and kept in logic, deeper than that,
    add ``thr_auto``: their data register goes into the comparators."""
    f = features(block)
    if block.kind == "mvtu":
        w = block.memories[0]
        if w.kind == "rom":
            m = map_memory(w, family, {"families": {family: fam}})
            if m.kind == "logic":  # a ROM left to synthesis (auto) merges worse
                if _bits(w.depth) + 1 <= LUT_INPUTS[family]:
                    # a word's address and its input bit fit one LUT: ROM and XNOR merge
                    f["rom_shallow_less"] = -m.resources.lut
                else:
                    key = "rom_auto" if w.style == "auto" else "rom_merge"
                    f[key] = m.resources.lut
                    if w.style == "logic":
                        f[key + "_less"] = -m.resources.lut
        t = block.memories[1] if len(block.memories) > 1 and \
            block.memories[1].role == "thresholds" else None
        if t is not None and t.kind == "rom" and t.style == "auto":
            m = map_memory(t, family, {"families": {family: fam}})
            if m.kind == "logic" and _bits(t.depth) + 1 > LUT_INPUTS[family]:
                # deeper than a LUT: its data register goes into the comparators
                f["thr_auto"] = m.resources.lut
    return f


MERGE_FEATURES = ("rom_merge", "rom_merge_less", "rom_auto", "rom_shallow_less", "thr_auto")


def _logic(block: Block, family: str, fam: Mapping[str, Any]) -> Resources:
    if block.kind == "dram":  # the controller: fixed figures
        return block["resources"]
    coef = fam.get("logic", {}).get("mvtu" if block.kind == "tiled" else block.kind, {})
    f = logic_features(block, family, fam)
    lut = sum(coef.get("lut", {}).get(n, 0.0) * v for n, v in f.items()
              if n not in MERGE_FEATURES)
    # the merge of a ROM with the lanes changes the block's LUTs by a share of the ROM's
    # (either sign): added after the logic's floor, the ROM's own LUTs stay in its memory
    merge = sum(coef.get("lut", {}).get(n, 0.0) * f[n] for n in MERGE_FEATURES if n in f)
    ff = sum(coef.get("ff", {}).get(n, 0.0) * v for n, v in f.items())
    out = Resources(max(0.0, lut) + merge, max(0.0, ff), 0, 0, _dsp(block, family, fam))
    return out + tiled_steering(block, family) if block.kind == "tiled" else out


@dataclass(frozen=True)
class BlockEstimate:
    block: Block
    logic: Resources
    memories: tuple[Mapping_, ...]

    @property
    def total(self) -> Resources:
        out = self.logic
        for m in self.memories:
            out = out + m.resources
        return out


@dataclass(frozen=True)
class Estimate:
    """A network's estimate on ``family``: per block and in total."""

    family: str
    blocks: tuple[BlockEstimate, ...]
    top: Resources = field(default_factory=Resources)

    @property
    def total(self) -> Resources:
        out = self.top
        for b in self.blocks:
            out = out + b.total
        return out

    def by_kind(self) -> dict[str, Resources]:
        """Totals per block kind, memories apart by role (``memory:weights``, ...)."""
        out: dict[str, Resources] = {}
        for b in self.blocks:
            out[b.block.kind] = out.get(b.block.kind, Resources()) + b.logic
            for m in b.memories:
                key = f"memory:{m.memory.role}"
                out[key] = out.get(key, Resources()) + m.resources
        return out

    def memory_table(self) -> list[tuple[str, str, int, int, str, str, int]]:
        """``(name, style, depth, width, kind, cell, units)`` of every memory."""
        return [(m.memory.name, m.memory.style, m.memory.depth, m.memory.width, m.kind,
                 m.cell, m.units) for b in self.blocks for m in b.memories]


def estimate(blocks: Sequence[Block], family: str,
             cal: Mapping[str, Any] | None = None, beats_per_image: int = 1) -> Estimate:
    """Estimate ``blocks`` (``plan_blocks`` or ``blocks_of_stages``) on ``family``;
    ``beats_per_image`` sizes the top's frame counter."""
    cal = cal or calibration()
    fam = _family(cal, family)
    out = []
    for b in blocks:
        mems = tuple(map_memory(m, family, cal) for m in b.memories)
        out.append(BlockEstimate(b, _logic(b, family, fam), mems))
    top = fam.get("top", {})
    bits = _bits(beats_per_image)
    glue = Resources(top.get("lut_one", 0) + top.get("lut_bit", 0) * bits,
                     top.get("ff_one", 0) + top.get("ff_bit", 0) * bits)
    return Estimate(family, tuple(out), glue)
