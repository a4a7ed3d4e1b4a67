"""Folding optimiser: the fastest design that fits a device, or the smallest that is fast
enough.

Given a lowered graph and a :class:`bnnhw.resources.Budget`, :func:`optimise` chooses
``pe``/``simd`` per matrix layer, a style per weight and threshold memory (``block`` or
``logic``; ``block`` or ``lutram`` when the memories are run-time writable) and the
pixels per beat of the top, estimating every candidate with the resource model
(``bnnhw.resources``):

- without a target it minimises the initiation interval (II) under the budget, LUTs and
  FFs kept ``margin`` below the device (block RAM and DSP counts are exact, so they may
  fill the device);
- with ``target_ii`` (or ``target_rate`` images/s at ``clock_hz``) it returns the
  smallest design (least utilisation of its most used resource) that reaches it.

For a candidate II every layer gets the folds that meet it (for each ``pe`` the least
``simd``, for each ``simd`` the least ``pe``): the layers are balanced by construction,
the network's II being its slowest engine's. Costs add up block by block; a layer's width
converter depends on the previous layer's ``pe``, so the layers are chosen together by
dynamic programming over the layer chain, minimising ``LUT/LUT_max + lambda *
BRAM/BRAM_max + FF/(4 FF_max) + DSP/DSP_max`` for a sweep of ``lambda`` (how dear block
RAM is against LUTs); each memory takes, for that ``lambda``, the cheaper of its styles.
The II is found by bisection over the IIs the layers can take.

The result (:class:`Choice`) carries the folding, the styles, the pixels per beat, the
estimate, and a plain explanation of what binds: the most used resource against the
budget and what the next faster II would have needed. A budget nothing fits is refused
with the figures of the smallest design (``DoesNotFit``); a network whose weights alone
exceed what the device's block RAM and LUTs can hold is refused before any search, the
message naming the figures, the devices that would hold them and the width that would
fit (:func:`largest_width` finds it for the zoo's ``vgg``).

On a board the host link takes its share (``link``, a ``bnnhw.resources.Link``: UART,
frame receiver with two banks of ``max_payload`` bytes, dispatcher, transmitter); its
frame buffer is shrunk when block RAM binds (``shrink_payload``), and the link feeds one
pixel per beat (``max_pixels_per_beat=1``). A user folding (``folds``) is kept: only the
memory styles are chosen.

A budget with DRAM (``Budget.dram``, a ``bnnhw.resources.DramPort``) lets every layer that
``bnnhw.folding.can_tile`` admits (binary inputs, binary outputs or scores) keep its
weights there instead, streamed in
tiles (``Fold.tile_rows``, ``rtl_gen.tiled_mvtu``): per layer and II the options are then
the on-chip folds and, per ``pe``/``simd``, the smallest tile (``tile_rows`` from ``pe``
doubling) whose unit meets the II on the port (``TiledShape.cycles`` at its
``words_per_cycle`` and ``latency``) and one tile of all rows. The dynamic programme
carries whether a layer is in DRAM yet (the controller's fixed cost is paid by the first)
and the DRAM words so far: the one shared port must deliver them all within the II
(``II >= words / words_per_cycle``; a path whose words exceed it is dropped, so the
search keeps, per fold, the cheapest path that fits). Every weight is placed on chip
first, exactly as without DRAM; the design with DRAM layers is taken only when it is
faster, or when nothing fits on chip (a target met on chip keeps the on-chip design). :func:`shape_graph` gives a graph of a spec's shapes without
torch or training, which is all the optimiser needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import ir
from . import resources as rs
from .errors import BnnhwError
from .folding import Fold, TiledShape, can_tile, matrix_layers, port_rate, tiled_shape
from .validate import ParameterError

__all__ = ["Choice", "DoesNotFit", "largest_width", "optimise", "shape_graph"]

LAMBDAS = (0.0, *(0.02 * 1.3 ** i for i in range(30)))  # 0.02 .. about 40
MAX_PE = 128
MAX_SIMD = 1024
SAMPLE_STEP = 1.5
BITS_PER_LUT = {"xc7": 64, "ecp5": 16, "ice40": 16}   # a ROM word per address of one LUT
BRAM_BITS = rs.BRAM_BITS


class DoesNotFit(BnnhwError):
    """No design of the graph fits the budget; ``figures`` has the smallest one's."""

    def __init__(self, message: str, figures: Mapping[str, float] | None = None):
        super().__init__(message)
        self.figures = dict(figures or {})


@dataclass(frozen=True)
class Choice:
    """The optimiser's design.

    ``folds`` (``{layer: Fold}``), ``memory_styles`` (``{memory: style}``, the names of
    ``rtl_gen.network.NetworkParams.memories``) and ``pixels_per_beat`` are what
    ``rtl_gen.network.NetworkParams`` takes (``network_kwargs``); ``ii`` its cycles per
    image; ``estimate`` the resource model's (``bnnhw.resources.Estimate``, the link
    included when there is one), ``total`` its sum; ``budget`` and ``margin`` what it was
    chosen for; ``binding`` the most used resource (``LUT``, ``FF``, ``BRAM`` or
    ``DSP``); ``explanation`` plain lines: the II and its slowest engine, the use of each
    resource, what binds and what the next faster II would have needed, the memory
    styles, the largest LUT consumers; ``stages_ii`` each engine's cycles per image;
    ``link`` the host link the design was sized with (its ``max_payload`` possibly
    shrunk), None without one; ``runtime_writable`` whether the memories are."""

    folds: dict[str, Fold]
    memory_styles: dict[str, str]
    pixels_per_beat: int
    ii: int
    estimate: rs.Estimate
    budget: rs.Budget
    margin: float
    binding: str
    explanation: str
    stages_ii: dict[str, int] = field(default_factory=dict)
    link: rs.Link | None = None
    runtime_writable: bool = False
    dram: rs.DramPort | None = None
    dram_shapes: dict[str, TiledShape] = field(default_factory=dict)

    @property
    def total(self) -> rs.Resources:
        return self.estimate.total

    @property
    def dram_layers(self) -> list[str]:
        """The layers whose weights are in DRAM (folds with ``tile_rows``), in order."""
        return [name for name, f in self.folds.items() if f.in_dram]

    def dram_summary(self, clock_hz: float) -> dict[str, Any]:
        """The DRAM traffic at ``clock_hz``: per DRAM layer its ``tile_rows``, words read
        per image and cycles per image (``TiledShape.cycles`` at the port's rate and
        latency); the words and bytes per image (each weight read once per image), the
        bandwidth that takes at the design's images/s, what the port offers
        (``words_per_cycle`` 16-byte words per cycle) and the share used."""
        ips = self.rate(clock_hz)
        layers, words = {}, 0
        for name, ts in self.dram_shapes.items():
            layers[name] = {"tile_rows": ts.tile_rows, "words_per_image": ts.dram_words,
                            "cycles": ts.cycles(self.dram.words_per_cycle,
                                                self.dram.latency)}
            words += ts.dram_words
        used = words * 16 * ips / 1e6
        avail = (float(port_rate(self.dram.words_per_cycle)) * 16 * clock_hz / 1e6
                 if self.dram is not None else 0.0)
        return {"layers": layers, "words_per_image": words, "bytes_per_image": words * 16,
                "bandwidth_mb_s": used, "available_mb_s": avail,
                "share": used / avail if avail else 0.0, "images_per_second": ips}

    def rate(self, clock_hz: float) -> float:
        """Images per second at ``clock_hz``."""
        return clock_hz / self.ii

    def network_kwargs(self) -> dict[str, Any]:
        """Keywords of ``rtl_gen.network.NetworkParams`` besides the graph."""
        out = {"folds": dict(self.folds), "memory_styles": dict(self.memory_styles),
               "pixels_per_beat": self.pixels_per_beat,
               "runtime_writable": self.runtime_writable}
        if self.dram is not None:  # the port the tiled units' cycles were planned for
            out.update(dram_words_per_cycle=self.dram.words_per_cycle,
                       dram_latency=self.dram.latency, dram_addr_width=self.dram.addr_bits)
        return out

    def dominant(self, n: int = 3) -> list[tuple[str, float]]:
        """The ``n`` largest LUT consumers: ``(what, LUTs)`` by block kind and memory role
        (``Estimate.by_kind``), LUT RAM sites included."""
        kinds = self.estimate.by_kind()
        if self.estimate.top.lut:
            kinds["top"] = self.estimate.top
        ranked = sorted(((k, r.lut_sites) for k, r in kinds.items()), key=lambda kv: -kv[1])
        return ranked[:n]


# -- helpers ---------------------------------------------------------------------------------


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


ICE40_FF_CELLS = 0.55
"""iCE40 logic cells a flip-flop adds beside the LUT4s: a cell holds one LUT4 and one
flip-flop, and most of a design's flip-flops (pipeline registers, resettable enables)
find no LUT of their own to share a cell with. Measured on two UP5K board designs (zoo
tiny: 3,254 LUT4 + 2,463 FF in 4,773 cells; zoo TFC: 3,519 + 2,757 in 5,027)."""
ICE40_PLACE_MARGIN = 0.08
"""nextpnr-ice40 failed to place a UP5K design at 95% of its cells and placed one at 90%."""


def lut_cells(r: rs.Resources, family: str) -> float:
    """What a design takes of a budget's LUTs: LUT sites (LUT RAM included), and on the
    iCE40 the logic cells its flip-flops add (``ICE40_FF_CELLS``)."""
    return r.lut_sites + (ICE40_FF_CELLS * r.ff if family == "ice40" else 0.0)


def _lut_margin(budget: rs.Budget, margin: float) -> float:
    return max(margin, ICE40_PLACE_MARGIN) if budget.family == "ice40" else margin


def _usage(r: rs.Resources, budget: rs.Budget, margin: float) -> dict[str, float]:
    """Use of each resource as a fraction of what the budget allows (LUT and FF less the
    margin; on the iCE40, logic cells: ``lut_cells``, less at least
    ``ICE40_PLACE_MARGIN``)."""
    def frac(used: float, cap: float) -> float:
        return used / cap if cap > 0 else (0.0 if used <= 0 else math.inf)

    return {"LUT": frac(lut_cells(r, budget.family),
                        budget.lut * (1 - _lut_margin(budget, margin))),
            "FF": frac(r.ff, budget.ff * (1 - margin)),
            "BRAM": frac(r.bram, budget.bram), "DSP": frac(r.dsp, budget.dsp)}


def _describe(r: rs.Resources, budget: rs.Budget, margin: float) -> dict[str, str]:
    unit = rs.BRAM_NAME[budget.family]
    m = _lut_margin(budget, margin)
    if budget.family == "ice40":
        lut = (f"logic cells: {lut_cells(r, budget.family):,.0f} of {budget.lut:,.0f} "
               f"({r.lut_sites:,.0f} LUT4 and {r.ff:,.0f} FF; {m:.0%} margin: "
               f"{budget.lut * (1 - m):,.0f})")
    else:
        lut = (f"LUT: {r.lut_sites:,.0f} of {budget.lut:,.0f} ({r.lutram:,.0f} of them "
               f"LUT RAM; {m:.0%} margin: {budget.lut * (1 - m):,.0f})")
    return {"LUT": lut,
            "FF": f"FF: {r.ff:,.0f} of {budget.ff:,.0f}",
            "BRAM": f"BRAM: {r.bram:g} of {budget.bram:g} {unit}",
            "DSP": f"DSP: {r.dsp:g} of {budget.dsp:g}"}


@dataclass
class _Layer:
    """One matrix node and the non-matrix nodes after it (pools, up to the next)."""

    node: ir.Conv | ir.Dense
    after: list[ir.Node]
    index: int


class _Problem:
    """A graph cut into layers, with the cost of every option cached."""

    def __init__(self, graph: ir.Graph, budget: rs.Budget, margin: float, writable: bool,
                 max_pe: int, max_simd: int, cal: Mapping[str, Any],
                 link: rs.Link | None = None, max_k: int | None = None,
                 forced: Mapping[str, Fold] | None = None, use_dram: bool = False,
                 clock_hz: float = 100e6):
        self.graph, self.budget, self.margin, self.writable = graph, budget, margin, writable
        # the DRAM port when layers may keep their weights there, and those layers
        self.dram = budget.dram if use_dram else None
        self.clock_hz = clock_hz  # for the explanation's DRAM bandwidth
        self.link, self.forced = link, dict(forced) if forced else None
        self.family, self.cal = budget.family, cal
        self.max_pe, self.max_simd = max_pe, max_simd
        self.layers: list[_Layer] = []
        for node in graph.nodes[1:]:
            if isinstance(node, (ir.Conv, ir.Dense)):
                self.layers.append(_Layer(node, [], len(self.layers)))
            elif self.layers:
                self.layers[-1].after.append(node)
            else:  # pragma: no cover - lowered graphs start with a matrix node
                raise ParameterError(f"optimiser: {node.name} comes before any matrix layer")
        self.shapes = {m.name: m for m in matrix_layers(graph)}
        self.eligible = {layer.node.name for layer in self.layers
                         if self.dram is not None and can_tile(layer.node)}
        self.styles = ("block", "lutram") if writable else ("block", "logic")
        if writable and family_has_no_lutram(self.family):
            self.styles = ("block",)
        self._body: dict[tuple[int, Fold], tuple[int, list[tuple[str, dict[str,
                                                                          rs.Resources]]],
                                                 rs.Resources]] = {}
        self._conv: dict[tuple[int, int, int], tuple[rs.Resources, int]] = {}
        self._options: dict[tuple[int, int], list[Fold]] = {}
        self._tiled: dict[tuple[int, Fold], tuple[TiledShape, int]] = {}
        h, w, _ = graph.input.in_shape
        self.pixels = h * w
        self.ks = [k for k in _divisors(self.pixels) if max_k is None or k <= max_k]

    # cost pieces -------------------------------------------------------------------

    def _estimate(self, blocks: Sequence[rs.Block]) -> rs.Resources:
        return rs.estimate(blocks, self.family, self.cal).total

    def body(self, i: int, fold: Fold):
        """``(cycles, memories, rest)`` of layer ``i`` at ``fold`` without its input
        converter: ``memories`` lists per styleable memory its resources per style."""
        key = (i, fold)
        if key in self._body:
            return self._body[key]
        layer = self.layers[i]
        flow = _flow_into(self, i, fold)
        # the engines' logic as with the styles the optimiser gives (never auto, whose ROM
        # merges differently); the memories are costed per style below
        own = self.styles[-1]
        styled = {f"{layer.node.name}.weights": own, f"{layer.node.name}.thresholds": own}
        shape = self.shapes[layer.node.name]
        density = shape.item_density(fold.pe) if shape.gated else None
        blocks, out = rs.node_blocks(layer.node, fold, flow, styled, 4, self.writable,
                                     density, self.dram)
        blocks = [b for b in blocks if b.kind != "convert" or b.name.endswith("_gather")]
        for node in layer.after:
            more, out = rs.node_blocks(node, None, out, None, 4, self.writable)
            blocks += more
        cycles = max(b.cycles for b in blocks)
        mems: list[tuple[str, dict[str, rs.Resources]]] = []
        rest = rs.Resources()
        for b in blocks:
            est = rs.estimate([b], self.family, self.cal).blocks[0]
            rest = rest + est.logic
            for m in est.memories:
                if b.kind == "mvtu" and m.memory.role in ("weights", "thresholds"):
                    per = {}
                    for style in self.styles:
                        styled = rs.Memory(m.memory.name, m.memory.depth, m.memory.width,
                                           m.memory.kind, style, m.memory.granularity,
                                           m.memory.role)
                        per[style] = rs.map_memory(styled, self.family, self.cal).resources
                    mems.append((m.memory.name.replace("_mvtu.", ".", 1), per))
                else:
                    rest = rest + m.resources
        self._body[key] = (cycles, mems, rest)
        return self._body[key]

    def converter(self, i: int, per_beat: int, fold: Fold) -> tuple[rs.Resources, int]:
        """The width converter in front of layer ``i`` (fed ``per_beat`` elements)."""
        key = (i, per_beat, fold.simd)
        if key not in self._conv:
            layer = self.layers[i]
            flow = _flow_into(self, i, fold, per_beat)
            blocks, _ = rs.node_blocks(layer.node, fold, flow, None, 4, self.writable,
                                       dram=self.dram)
            conv = [b for b in blocks if b.kind == "convert" and b.name.endswith("_convert")]
            self._conv[key] = (self._estimate(conv), max((b.cycles for b in conv), default=0))
        return self._conv[key]

    def options(self, i: int, ii: int) -> list[Fold]:
        """The folds of layer ``i`` that meet ``ii``: per ``pe`` the least ``simd`` and per
        ``simd`` the least ``pe``."""
        key = (i, ii)
        if key not in self._options:
            self._options[key] = self._find_options(i, ii)
        return self._options[key]

    def _find_options(self, i: int, ii: int) -> list[Fold]:
        m = self.shapes[self.layers[i].node.name]
        if self.forced is not None:
            f = self.forced[m.name]
            return [f] if m.cycles(f) <= ii and self.body(i, f)[0] <= ii else []
        pes = [p for p in _divisors(m.rows) if p <= self.max_pe]
        simds = [s for s in _divisors(m.simd_base) if s <= self.max_simd]
        found: set[Fold] = set()

        def meets(f: Fold) -> bool:
            return m.cycles(f) <= ii and self.body(i, f)[0] <= ii

        dram = m.name in self.eligible
        for on_chip in (True, False) if dram else (True,):
            def pick(pe: int, simd: int, on_chip: bool = on_chip) -> list[Fold]:
                if on_chip:
                    f = Fold(pe, simd)
                    return [f] if meets(f) else []
                return self.dram_folds(i, pe, simd, ii)

            for pe in pes:
                for simd in simds:
                    got = pick(pe, simd)
                    if got:
                        found.update(got)
                        break
            for simd in simds:
                for pe in pes:
                    got = pick(pe, simd)
                    if got:
                        found.update(got)
                        break
        return sorted(found, key=lambda f: (f.pe * f.simd, f.pe, f.tile_rows or 0))

    def tiled(self, i: int, fold: Fold) -> TiledShape:
        return self._tiled_entry(i, fold)[0]

    def dram_cycles(self, i: int, fold: Fold) -> int:
        """Cycles per image of layer ``i``'s tiled unit at ``fold`` on the budget's port."""
        return self._tiled_entry(i, fold)[1]

    def _tiled_entry(self, i: int, fold: Fold) -> tuple[TiledShape, int]:
        key = (i, fold)
        if key not in self._tiled:
            ts = tiled_shape(self.layers[i].node, fold)
            d = self.budget.dram
            self._tiled[key] = (ts, ts.cycles(d.words_per_cycle, d.latency))
        return self._tiled[key]

    def dram_folds(self, i: int, pe: int, simd: int, ii: int) -> list[Fold]:
        """The DRAM folds of layer ``i`` at ``pe``/``simd`` that meet ``ii``: the smallest
        tile (``tile_rows`` from ``pe`` doubling, dividing the rows) whose unit is not
        latency- or bandwidth-bound beyond ``ii``, and one tile of all rows (no reorder
        buffer) when that meets ``ii`` too."""
        m = self.shapes[self.layers[i].node.name]
        if m.cycles(Fold(pe, simd)) > ii:
            return []
        out: list[Fold] = []
        for t in _tile_candidates(m.rows, pe):
            f = Fold(pe, simd, t)
            if self.dram_cycles(i, f) <= ii and self.body(i, f)[0] <= ii:
                out.append(f)
                break
        whole = Fold(pe, simd, m.rows)
        if whole not in out and self.dram_cycles(i, whole) <= ii \
                and self.body(i, whole)[0] <= ii:
            out.append(whole)
        return out

    def fixed(self, k: int) -> tuple[rs.Resources, int]:
        """The encoder, the top's glue at ``k`` pixels per beat and the link if any."""
        blocks, _ = rs.input_blocks(self.graph, k)
        cycles = blocks[0].cycles
        if self.link is not None:
            blocks.append(self.link.block(self.graph))
        est = rs.estimate(blocks, self.family, self.cal, self.pixels // k)
        return est.total, cycles

    # search ------------------------------------------------------------------------

    def weights(self, lam: float) -> tuple[float, float, float, float]:
        b = self.budget
        return (1 / max(b.lut, 1), lam / max(b.bram, 1e-9) if b.bram else 1e6,
                0.25 / max(b.ff, 1), 1 / max(b.dsp, 1e-9) if b.dsp else 1e6)

    def scalar(self, r: rs.Resources, w: tuple[float, float, float, float]) -> float:
        return r.lut_sites * w[0] + r.bram * w[1] + r.ff * w[2] + r.dsp * w[3]

    def solve(self, ii: int, lam: float) -> tuple[dict[str, Fold], dict[str, str], int,
                                                 rs.Resources] | None:
        """The cheapest design at ``ii`` for ``lam`` (dynamic programming over layers)."""
        w = self.weights(lam)
        k = _pixels_per_beat(self, ii)
        if k is None:
            return None
        top, _ = self.fixed(k)
        first = self.graph.input
        in_per_beat = first.out_shape[2] * k
        # states: (fold of the previous layer, any layer in DRAM) -> (cost, resources,
        # folds, styles, DRAM words per image); the controller is paid by the first DRAM
        # layer, and the one shared port must deliver all DRAM words within the II
        limit = ii * port_rate(self.dram.words_per_cycle) if self.dram is not None else 0
        ctrl = self.dram.controller if self.dram is not None else rs.Resources()
        states: dict[Any, tuple[float, rs.Resources, list[Fold], dict[str, str], int]] = {
            (None, False): (self.scalar(top, w), top, [], {}, 0)}
        for i in range(len(self.layers)):
            opts = self.options(i, ii)
            if not opts:
                return None
            new: dict[Any, tuple[float, rs.Resources, list[Fold], dict[str, str], int]] = {}
            for f in opts:
                _, mems, rest = self.body(i, f)
                r, styles = rest, {}
                for name, per in mems:
                    style = min(per, key=lambda s: self.scalar(per[s], w))
                    styles[name] = style
                    r = r + per[style]
                words = self.tiled(i, f).dram_words if f.in_dram else 0
                # per input width: (the layer with its converter, its cost), and with the
                # controller when this is the first DRAM layer
                parts: dict[int, Any] = {}
                best: dict[Any, tuple] = {}
                for (prev, used), (cost, tot, folds, st, had) in states.items():
                    if had + words > limit and words:
                        continue
                    per_beat = in_per_beat if prev is None else prev.pe
                    if per_beat not in parts:
                        conv, conv_cycles = self.converter(i, per_beat, f)
                        if conv_cycles > ii:
                            parts[per_beat] = None
                        else:
                            base = r + conv
                            first = base + ctrl if f.in_dram else base
                            parts[per_beat] = ((base, self.scalar(base, w)),
                                               (first, self.scalar(first, w)))
                    got = parts[per_beat]
                    if got is None:
                        continue
                    extra, c = got[1] if f.in_dram and not used else got[0]
                    c = cost + c
                    key = (f, used or f.in_dram)
                    if key not in best or c < best[key][0]:
                        best[key] = (c, tot, extra, folds, st, had)
                for key, (c, tot, extra, folds, st, had) in best.items():
                    new[key] = (c, tot + extra, [*folds, f], {**st, **styles}, had + words)
            if not new:
                return None
            states = new
        cost, total, folds, styles, _ = min(states.values(), key=lambda s: s[0])
        styles, total = self.restyle(folds, styles, total)
        names = [layer.node.name for layer in self.layers]
        return dict(zip(names, folds, strict=True)), styles, k, total

    def restyle(self, folds: list[Fold], styles: dict[str, str], total: rs.Resources,
                ) -> tuple[dict[str, str], rs.Resources]:
        """The memory styles of ``folds`` re-chosen as a knapsack: every memory out of
        block RAM first, then into block RAM in the order of the most LUTs saved per
        block RAM spent, while the device's block RAM lasts (the lambda sweep alone
        misses designs that fill the block RAM)."""
        if "block" not in self.styles or len(self.styles) < 2:
            return styles, total
        other = next(s for s in self.styles if s != "block")
        per: dict[str, dict[str, rs.Resources]] = {}
        for i, f in enumerate(folds):
            for name, res in self.body(i, f)[1]:
                per[name] = res
        base = total
        for name, res in per.items():
            base = base + _minus(res[other], res[styles[name]])
        new = {name: other for name in per}

        def gain(name: str) -> float:
            b, o = per[name]["block"], per[name][other]
            spent = b.bram - o.bram
            saved = o.lut_sites - b.lut_sites
            return saved / spent if spent > 0 else (math.inf if saved > 0 else -math.inf)

        room = self.budget.bram - base.bram
        for name in sorted(per, key=gain, reverse=True):
            b, o = per[name]["block"], per[name][other]
            if o.lut_sites - b.lut_sites <= 0:
                continue
            if b.bram - o.bram <= room:
                room -= b.bram - o.bram
                base = base + _minus(b, o)
                new[name] = "block"
        old_use = max(_usage(total, self.budget, self.margin).values())
        new_use = max(_usage(base, self.budget, self.margin).values())
        return (new, base) if new_use < old_use else (styles, total)

    def best_at(self, ii: int, objective: str = "fit"):
        """The design at ``ii`` that fits with the least use of its most used resource,
        or, if none fits, the one closest to fitting (``fits`` False)."""
        seen = []
        for lam in LAMBDAS:
            sol = self.solve(ii, lam)
            if sol is None:
                return None
            use = _usage(sol[3], self.budget, self.margin)
            seen.append((max(use.values()), sol))
        worst, sol = min(seen, key=lambda s: s[0])
        return worst <= 1.0, sol


def _minus(a: rs.Resources, b: rs.Resources) -> rs.Resources:
    """``a - b``, figure by figure."""
    return rs.Resources(a.lut - b.lut, a.ff - b.ff, a.lutram - b.lutram, a.bram - b.bram,
                        a.dsp - b.dsp, a.ramb18 - b.ramb18, a.ramb36 - b.ramb36)


def family_has_no_lutram(family: str) -> bool:
    return family == "ice40"


def _tile_candidates(rows: int, pe: int) -> list[int]:
    """``tile_rows`` to try at ``pe``: ``pe`` doubling while it divides ``rows``, and
    ``rows`` itself (one tile)."""
    out, t = [], pe
    while t <= rows and rows % t == 0:
        out.append(t)
        t *= 2
    return out if rows in out else [*out, rows]


def _flow_into(p: _Problem, i: int, fold: Fold, per_beat: int | None = None) -> rs.Flow:
    """The stream entering layer ``i`` (``per_beat`` from the previous layer's ``pe``, or
    ``fold.simd`` when only the body matters: then no converter is planned)."""
    graph = p.graph
    if i == 0:
        enc = graph.input
        h, w, c = enc.out_shape
        elem = 8 if enc.out_kind == "uint8" else 1
    else:
        prev = p.layers[i - 1]
        shape = prev.node.out_shape
        for node in prev.after:
            shape = node.out_shape
        if len(shape) == 3:
            h, w, c = shape
        else:
            h, w, c = 1, 1, shape[0]
        elem = 2 if prev.node.out_levels == 3 else 1  # a frac2 map's 2-bit codes
    return rs.Flow(h, w, c, fold.simd if per_beat is None else per_beat, elem)


def _pixels_per_beat(p: _Problem, ii: int) -> int | None:
    """The fewest pixels per beat that let the encoder meet ``ii`` (1 unless the first
    layer is dense: a window takes at most one pixel per cycle)."""
    for k in p.ks:
        if p.pixels // k <= ii:
            return k
        if isinstance(p.layers[0].node, ir.Conv):
            return None
    return None


def _dram_candidates(p: _Problem, vals: set[int], least: dict[str, int]) -> None:
    """The IIs DRAM folds add: each tiled unit's cycles (and the least per layer, for the
    floor), and the port's cycles for the fewest and the most words (folds whose words
    fill DRAM lines only in part) of every set of DRAM-eligible layers (their suffixes
    only, beyond 12 such layers): at the most, any folds of the set share the port."""
    dram = p.dram
    fewest, most = [], []
    for i, layer in enumerate(p.layers):
        name = layer.node.name
        if name not in p.eligible:
            continue
        m = p.shapes[name]
        fewest.append(-(-m.rows * m.cols // 128))
        most.append(fewest[-1])
        for pe in _divisors(m.rows):
            if pe > p.max_pe:
                continue
            for simd in _divisors(m.simd_base):
                if simd > p.max_simd:
                    continue
                for t in _tile_candidates(m.rows, pe):
                    c = p.dram_cycles(i, Fold(pe, simd, t))
                    vals.add(c)
                    least[name] = min(least[name], c)
                    most[-1] = max(most[-1], p.tiled(i, Fold(pe, simd, t)).dram_words)
    n = len(fewest)
    sets = [[j for j in range(n) if mask >> j & 1] for mask in range(1, 1 << n)] \
        if n <= 12 else [list(range(j, n)) for j in range(n)]
    for chosen in sets:
        for words in (fewest, most):
            vals.add(dram.port_cycles(sum(words[j] for j in chosen)))


def _ii_candidates(p: _Problem) -> list[int]:
    vals = set()
    for i in range(len(p.layers)):
        m = p.shapes[p.layers[i].node.name]
        for pe in _divisors(m.rows):
            if pe > p.max_pe:
                continue
            for simd in _divisors(m.simd_base):
                if simd <= p.max_simd:
                    vals.add(m.cycles(Fold(pe, simd)))
    for k in p.ks:
        vals.add(p.pixels // k)
    least = {layer.node.name: min(p.shapes[layer.node.name].cycles(Fold(pe, simd))
                                  for pe in _divisors(p.shapes[layer.node.name].rows)
                                  if pe <= p.max_pe
                                  for simd in _divisors(p.shapes[layer.node.name].simd_base)
                                  if simd <= p.max_simd) for layer in p.layers}
    if p.dram is not None:
        _dram_candidates(p, vals, least)
    floor = max(least.values())
    last = p.graph.nodes[-1]
    floor = max(floor, last.rows + 3)
    if isinstance(p.layers[0].node, ir.Conv):
        floor = max(floor, p.pixels)
    floor = max(floor, p.pixels // p.ks[-1])
    return sorted(v for v in vals if v >= floor) or [floor]


# -- entry points --------------------------------------------------------------------------


def _spec_name(graph: ir.Graph) -> str:
    return str(graph.meta.get("spec", {}).get("name") or "the network")


def _capacity_check(graph: ir.Graph, budget: rs.Budget, margin: float) -> bool:
    """Whether the weights could all be on chip: their bits within all the device's block
    RAM and its LUTs (less the margin) as ROM, the least any design could need. If not,
    a budget with DRAM takes the graph when the layers that must stay on chip fit that
    room and the others' weights fit the DRAM (False); any other graph is refused."""
    bits = sum(m.rows * m.cols for m in matrix_layers(graph))
    fam = budget.family

    def room(b: rs.Budget) -> float:
        return b.bram * BRAM_BITS[b.family] + b.lut * (1 - margin) * BITS_PER_LUT[b.family]

    have = room(budget)
    if bits <= have:
        return True
    if budget.dram is not None:
        nodes = [n for n in graph.nodes if isinstance(n, (ir.Conv, ir.Dense))]
        chip = sum(n.rows * n.cols for n in nodes if not can_tile(n))
        words = sum(-(-n.rows * n.cols // 128) for n in nodes if can_tile(n))
        if chip > have:
            raise DoesNotFit(
                f"{_spec_name(graph)} does not fit {budget.name}: the layers that must keep "
                f"their weights on chip (inputs or outputs not binary) have "
                f"{chip / 1e6:.2f} Mbit, more than the {have / 1e6:.2f} Mbit the device "
                f"could hold; use a bigger device or a smaller first layer",
                {"weight_bits": bits, "chip_bits": chip, "room_bits": have})
        if words > budget.dram.words:
            raise DoesNotFit(
                f"{_spec_name(graph)} does not fit {budget.name}: its weights take "
                f"{words:,} DRAM words of 128 bits, more than the {budget.dram.words:,} the "
                f"board's DRAM has; use a smaller network",
                {"weight_bits": bits, "dram_words": words, "room_words": budget.dram.words})
        return False
    bigger = [b.name for b in sorted(rs.BUDGETS.values(), key=lambda b: b.lut)
              if b.family == fam and room(b) >= bits]
    others = [b.name for b in sorted(rs.BUDGETS.values(), key=lambda b: b.lut)
              if b.family != fam and room(b) >= bits]
    spec = graph.meta.get("spec", {})
    width = spec.get("width")
    scale = math.sqrt(have / bits)  # weights grow with the square of the width
    widths = (f"a width of at most about {scale * width:.2g}" if width else
              f"about {scale:.2f} times its channels")
    boards_text = ", ".join(bigger or others) or (
        f"one with {bits / 1e6:.1f} Mbit of block RAM or more; none of "
        f"{', '.join(b.name for b in rs.BUDGETS.values())} has it")
    raise DoesNotFit(
        f"{_spec_name(graph)} does not fit {budget.name}: its {bits / 1e6:.2f} Mbit of binary "
        f"weights exceed the {have / 1e6:.2f} Mbit the device could hold at most "
        f"({budget.bram:g} {budget.bram_kind} of {budget.bram_bits // 1024} Kbit = "
        f"{budget.bram * BRAM_BITS[fam] / 1e6:.2f} Mbit, plus "
        f"{budget.lut * (1 - margin) * BITS_PER_LUT[fam] / 1e6:.2f} Mbit if its "
        f"{budget.lut:,} LUTs were all ROM). What would fit: a bigger device "
        f"({boards_text}), or a smaller network ({widths})",
        {"weight_bits": bits, "room_bits": have, "bram_bits": budget.bram * BRAM_BITS[fam],
         "lut_rom_bits": budget.lut * (1 - margin) * BITS_PER_LUT[fam],
         "width_scale": scale})


def optimise(graph: ir.Graph, budget: rs.Budget, *, target_ii: int | None = None,
             target_rate: float | None = None, clock_hz: float = 100e6, margin: float = 0.03,
             runtime_writable: bool = False, link: rs.Link | None = None,
             shrink_payload: bool = True, max_pixels_per_beat: int | None = None,
             folds: Mapping[str, Fold] | None = None, max_pe: int = MAX_PE,
             max_simd: int = MAX_SIMD, cal: Mapping[str, Any] | None = None) -> Choice:
    """The design of ``graph`` for ``budget`` (see the module docstring).

    ``link`` (a ``bnnhw.resources.Link``) puts the board's host link in the budget; with
    ``shrink_payload`` its ``max_payload`` is halved (down to what one image needs,
    ``bnnhw.resources.least_payload``) while that lets a faster design fit, and the
    choice's ``link`` says which was taken. ``max_pixels_per_beat`` caps the pixels per
    input beat (1 for a board: the link feeds one pixel per beat). ``folds`` is the user's
    folding: it is kept (only the memory styles are chosen) and refused if it does not
    fit or misses a target."""
    if not 0 <= margin < 1:
        raise ParameterError(f"optimiser: margin must be in 0..1, not {margin!r}")
    if target_rate is not None:
        if target_ii is not None:
            raise ParameterError("optimiser: give target_ii or target_rate, not both")
        if not target_rate > 0:
            raise ParameterError(f"optimiser: target_rate must be positive, not {target_rate}")
        target_ii = max(1, int(clock_hz // target_rate))
    if target_ii is not None and (isinstance(target_ii, bool) or not isinstance(target_ii, int)
                                  or target_ii < 1):
        raise ParameterError(f"optimiser: target_ii must be a positive integer, "
                             f"not {target_ii!r}")
    cal = cal or rs.calibration()
    on_chip = _capacity_check(graph, budget, margin)
    if folds is not None and any(f.in_dram for f in folds.values()) and budget.dram is None:
        raise ParameterError(f"optimiser: the folding puts weights in DRAM (tile_rows) but "
                             f"{budget.name} has no DRAM port; give folds without tile_rows")

    def run(lk):
        return _optimise_placed(graph, budget, target_ii, margin, runtime_writable, lk,
                                max_pixels_per_beat, folds, max_pe, max_simd, cal, on_chip,
                                clock_hz)

    if link is None or not shrink_payload:
        return run(link)
    least = rs.least_payload(graph)
    payloads = [link.max_payload]
    while payloads[-1] // 2 >= least:
        payloads.append(payloads[-1] // 2)
    if payloads[-1] > least:
        payloads.append(least)
    best: Choice | None = None
    refusal: DoesNotFit | None = None
    for payload in payloads:
        lk = rs.Link(payload, link.clock_hz, link.baud, link.timeout_cycles)
        try:
            got = run(lk)
        except DoesNotFit as e:
            refusal = refusal or e
            continue
        if best is None or got.ii < best.ii:
            best = got
        if target_ii is not None or folds is not None:
            break  # the smallest design meeting the target with the largest payload
        if got.binding != "BRAM" and best is got:
            break  # block RAM does not bind: a smaller frame buffer would not help
    if best is None:
        assert refusal is not None
        raise refusal
    if best.link is not None and best.link.max_payload != link.max_payload:
        best = _with_note(best, f"max_payload {link.max_payload:,} -> "
                                f"{best.link.max_payload:,} bytes: the frame buffer's "
                                f"block RAM was what bound")
    return best


def _with_note(choice: Choice, note: str) -> Choice:
    from dataclasses import replace

    return replace(choice, explanation=choice.explanation + "\n" + note)


def _optimise_placed(graph, budget, target_ii, margin, writable, link, max_k, folds, max_pe,
                     max_simd, cal, on_chip: bool, clock_hz: float) -> Choice:
    """Every weight on chip when ``on_chip`` (today's design), then, on a budget with DRAM,
    the layers free to keep their weights on chip or in DRAM: that design is taken only if
    it is faster, or meets the target when the on-chip one does not, or nothing fits on
    chip. A user folding is placed as it says."""
    args = (graph, budget, target_ii, margin, writable, link, max_k, folds, max_pe,
            max_simd, cal)
    given_dram = folds is not None and any(f.in_dram for f in folds.values())
    chip: Choice | None = None
    refusal: DoesNotFit | None = None
    if on_chip and not given_dram:
        try:
            chip = _optimise(*args, use_dram=False, clock_hz=clock_hz)
        except DoesNotFit as e:
            refusal = e
    if budget.dram is None or (folds is not None and not given_dram) or \
            not any(can_tile(n) for n in graph.nodes[1:]):
        if chip is None:
            assert refusal is not None
            raise refusal
        return chip
    if chip is not None and target_ii is not None:
        return chip  # the on-chip design meets the target
    try:
        placed = _optimise(*args, use_dram=True, clock_hz=clock_hz,
                           faster_than=None if chip is None or folds is not None else chip.ii)
    except DoesNotFit:
        if chip is not None:
            return chip
        if refusal is not None:
            raise refusal from None
        raise
    return placed if chip is None or placed.ii < chip.ii else chip


def _forced_ii(p: _Problem, folds: Mapping[str, Fold]) -> tuple[int, int]:
    """The II of a user folding and the fewest pixels per beat that reach it."""
    best: tuple[int, int] | None = None
    for k in p.ks:
        blocks = rs.plan_blocks(p.graph, folds, pixels_per_beat=k, runtime_writable=p.writable,
                                dram=p.dram)
        ii = max(b.cycles for b in blocks)
        if p.dram is not None:
            ii = max(ii, p.dram.port_cycles(sum(p.tiled(i, f).dram_words for i, f in
                                                 enumerate(folds[layer.node.name]
                                                           for layer in p.layers)
                                                 if f.in_dram)))
        if best is None or ii < best[0]:
            best = (ii, k)
    assert best is not None
    return best


def _optimise(graph, budget, target_ii, margin, writable, link, max_k, folds, max_pe,
              max_simd, cal, *, use_dram: bool = False, clock_hz: float = 100e6,
              faster_than: int | None = None) -> Choice:
    """The design at the fastest II (below ``faster_than`` if given), the smallest at the
    target, or the given folding's (see ``optimise``)."""
    p = _Problem(graph, budget, margin, writable, max_pe, max_simd, cal, link, max_k, folds,
                 use_dram, clock_hz)
    if folds is not None:
        missing = [m.name for m in matrix_layers(graph) if m.name not in folds]
        if missing:
            raise ParameterError(f"optimiser: the folding gives no pe/simd for "
                                 f"{', '.join(missing)}")
        for m in matrix_layers(graph):
            m.check(folds[m.name])  # validates pe, simd and tile_rows
            if folds[m.name].in_dram and m.name not in p.eligible:
                raise ParameterError(f"optimiser: layer {m.name} must keep its weights on "
                                     f"chip (its inputs or outputs are not binary); give it no "
                                     f"tile_rows")
        ii, _ = _forced_ii(p, folds)
        if target_ii is not None and ii > target_ii:
            raise DoesNotFit(f"the given folding takes {ii:,} cycles per image, more than "
                             f"the target II {target_ii:,}", {"ii": ii})
        found = p.best_at(ii)
        if found is None or not found[0]:
            _refuse(p, ii, found, "with the given folding")
        return _choice(p, ii, found[1], faster=None, mode="given")
    cands = _ii_candidates(p)
    if faster_than is not None:
        cands = [c for c in cands if c < faster_than]
        if not cands:
            raise DoesNotFit(f"no folding reaches an II below {faster_than:,}",
                             {"ii": faster_than})
    if target_ii is not None:
        usable = [c for c in cands if c <= target_ii]
        if not usable:
            raise DoesNotFit(f"the network cannot reach II {target_ii:,}: its fastest "
                             f"folding within pe <= {max_pe}, simd <= {max_simd} takes "
                             f"{cands[0]:,} cycles per image", {"ii": cands[0]})
        # the smallest design meeting the target: the slowest usable II that fits, and
        # of the IIs that fit the least used
        ii = usable[-1]
        found = p.best_at(ii)
        if found is None or not found[0]:
            _refuse(p, ii, found, f"at the target II {target_ii:,}")
        return _choice(p, ii, found[1], faster=None, mode="target")
    # fastest that fits: the candidate IIs sampled about every factor SAMPLE_STEP from the
    # fastest; the first sample that fits, then bisection between it and the faster
    # sample before it (fitting is monotone in the II but near the slowest foldings, whose
    # one-bit-wide memories pack block RAM badly)
    samples, last = [], None
    for i, c in enumerate(cands):
        if last is None or c >= last * SAMPLE_STEP or i == len(cands) - 1:
            samples.append(i)
            last = c
    closest, hi, best = None, None, None
    prev = -1
    for i in samples:
        found = p.best_at(cands[i])
        if found is not None and found[0]:
            hi, best = i, found
            break
        if found is not None and (closest is None or _worst(p, found) < _worst(p, closest[1])):
            closest = (cands[i], found)
        prev = i
    if hi is None:
        if closest is None:
            _refuse(p, cands[-1], None, "at any folding")
        _refuse(p, closest[0], closest[1], "at any folding")
    lo = prev + 1
    while lo < hi:
        mid = (lo + hi) // 2
        found = p.best_at(cands[mid])
        if found is not None and found[0]:
            hi, best = mid, found
        else:
            lo = mid + 1
    faster = p.best_at(cands[hi - 1]) if hi > 0 else None
    return _choice(p, cands[hi], best[1], faster=(cands[hi - 1], faster) if hi > 0 else None,
                   mode="fastest")


def _worst(p: _Problem, found) -> float:
    return max(_usage(found[1][3], p.budget, p.margin).values())


def _refuse(p: _Problem, ii: int, found, when: str) -> None:
    if found is None:
        raise DoesNotFit(f"no folding of the network meets II {ii:,} within pe <= "
                         f"{p.max_pe}, simd <= {p.max_simd}")
    total = found[1][3]
    use = _usage(total, p.budget, p.margin)
    text = _describe(total, p.budget, p.margin)
    over = [text[k] for k, v in sorted(use.items(), key=lambda kv: -kv[1]) if v > 1]
    raise DoesNotFit(f"the network does not fit {p.budget.name} {when}: the smallest design "
                     f"found (II {ii:,}) needs " + "; ".join(over),
                     {"ii": ii, **total.rounded()})


def _choice(p: _Problem, ii: int, sol, faster, mode: str) -> Choice:
    folds, styles, k, _ = sol
    blocks = rs.plan_blocks(p.graph, folds, pixels_per_beat=k, memory_styles=styles,
                            runtime_writable=p.writable, dram=p.dram)
    shapes = {layer.node.name: p.tiled(i, folds[layer.node.name])
              for i, layer in enumerate(p.layers) if folds[layer.node.name].in_dram}
    if shapes:
        blocks.append(p.dram.block(sum(t.dram_words for t in shapes.values())))
    engines = list(blocks)
    if p.link is not None:
        blocks.append(p.link.block(p.graph))
    est = rs.estimate(blocks, p.family, p.cal, p.pixels // k)
    total = est.total
    use = _usage(total, p.budget, p.margin)
    text = _describe(total, p.budget, p.margin)
    binding_key = max(use, key=lambda k_: use[k_])
    binding = text[binding_key]
    real_ii = max(b.cycles for b in engines)
    slowest = max(engines, key=lambda b: b.cycles)
    goal = {"fastest": "fastest that fits", "target": "smallest meeting the target",
            "given": "the given folding"}[mode]
    lines = [(f"II {real_ii:,} cycles per image (slowest engine {slowest.name}), {goal} "
              f"on {p.budget.name}"),
             "use: " + "; ".join(text[k_] for k_ in ("LUT", "FF", "BRAM", "DSP")),
             f"binds: {binding} ({use[binding_key]:.0%} of what the budget allows)"]
    if faster is not None:
        fii, ffound = faster
        if ffound is None:
            lines.append(f"II {fii:,} is out of reach of pe <= {p.max_pe}, "
                         f"simd <= {p.max_simd}")
        else:
            ft = ffound[1][3]
            fuse = _usage(ft, p.budget, p.margin)
            ftext = _describe(ft, p.budget, p.margin)
            over = [ftext[k_] for k_, v in sorted(fuse.items(), key=lambda kv: -kv[1])
                    if v > 1]
            lines.append(f"the next faster II {fii:,} would need " + "; ".join(over))
    kinds = {s: sum(1 for v in styles.values() if v == s) for s in set(styles.values())}
    lines.append("memories: " + ", ".join(f"{n} {s}" for s, n in sorted(kinds.items()))
                 + (f"; {k} pixels per beat" if k > 1 else ""))
    lines.append("LUTs: " + ", ".join(f"{what} {n:,.0f}" for what, n in _ranked(est)))
    choice = Choice(folds, styles, k, real_ii, est, p.budget, p.margin, binding_key,
                    "\n".join(lines), {b.name: b.cycles for b in engines}, p.link, p.writable,
                    p.dram if shapes else None, shapes)
    if p.budget.dram is None:
        return choice
    return _with_note(choice, "\n".join(_dram_lines(choice, p.clock_hz)))


def _dram_lines(choice: Choice, clock_hz: float) -> list[str]:
    """Where each layer's weights live and the DRAM bandwidth the design takes."""
    chip = [n for n, f in choice.folds.items() if not f.in_dram]
    if not choice.dram_layers:
        return [f"weights: all on chip ({', '.join(chip)}); the DRAM is unused"]
    d = choice.dram_summary(clock_hz)
    c = choice.dram.controller
    where = ", ".join(f"{n} (tile_rows {v['tile_rows']}, {v['words_per_image']:,} words, "
                      f"{v['cycles']:,} cycles)" for n, v in d["layers"].items())
    return [f"weights on chip: {', '.join(chip) or 'none'}",
            f"weights in DRAM: {where}",
            (f"DRAM: {d['words_per_image']:,} words ({d['bytes_per_image'] / 1e6:.2f} MB) per "
             f"image, {d['bandwidth_mb_s']:,.0f} MB/s of {d['available_mb_s']:,.0f} MB/s "
             f"({d['share']:.0%}) at {d['images_per_second']:,.0f} images/s, "
             f"{clock_hz / 1e6:g} MHz; controller {c.lut_sites:,.0f} LUT, {c.ff:,.0f} FF, "
             f"{c.bram:g} {choice.budget.bram_kind}")]


def _ranked(est: rs.Estimate, n: int = 4) -> list[tuple[str, float]]:
    kinds = est.by_kind()
    return sorted(((k, r.lut_sites) for k, r in kinds.items()), key=lambda kv: -kv[1])[:n]


# -- shape-only graphs and the width search -------------------------------------------------


def shape_graph(spec: Mapping[str, Any]) -> ir.Graph:
    """A lowered graph with the shapes of normalised model ``spec`` and all-zero weights
    and thresholds (node names as ``bnnhw.frontend`` gives them): enough for the resource
    model and the optimiser, without building or compiling the model."""
    import numpy as np

    from . import numerics as nx

    inp = spec["input"]
    c, h, w = inp["shape"]
    nodes: list[ir.Node] = [ir.InputEncoder("input", (h, w, c), inp["encoding"],
                                            inp["threshold"], inp["levels"], ("encoder",))]
    shape: tuple[int, ...] = nodes[0].out_shape
    kind = nodes[0].out_kind
    layers = spec["layers"]
    j, flat = 0, False
    for i, lay in enumerate(layers):
        last = i == len(layers) - 1
        if lay["type"] == "conv":
            pool_next = i + 1 < len(layers) and layers[i + 1]["type"] == "maxpool" \
                and layers[i + 1].get("before_bn", False)
            hh, ww, cc = shape
            k, s, pad = lay["kernel"], lay.get("stride", 1), lay.get("padding", 0)
            r = lay["out"]
            oh, ow = nx.conv_out_size(hh, k, s, pad), nx.conv_out_size(ww, k, s, pad)
            zero = pad > 0 and kind == "binary" and lay.get("pad_value", 0) == 0
            ny = nxc = 1
            if zero:
                ny = len({tuple(t for t in range(k) if not 0 <= o * s + t - pad < hh)
                          for o in range(oh)})
                nxc = len({tuple(t for t in range(k) if not 0 <= o * s + t - pad < ww)
                           for o in range(ow)})
            rc = np.zeros(oh, np.int64)
            cl = np.zeros(ow, np.int64)
            if zero:
                rc = _classes(hh, k, s, pad)
                cl = _classes(ww, k, s, pad)
            nodes.append(ir.Conv(
                f"conv{j}", (hh, ww, cc), k, np.zeros((r, k * k * cc), np.uint8),
                np.ones(r), np.zeros(r), stride=s, padding=pad,
                pad_bit=1 if lay.get("pad_value", 0) == 1 and kind == "binary" else 0,
                zero_padding=zero, input_kind=kind,
                thresholds=np.zeros((ny, nxc, r), np.int64), row_class=rc, col_class=cl,
                source=(f"layers.{j}",)))
            j += 1 if pool_next else 3
            shape, kind = (oh, ow, r), "binary"
        elif lay["type"] == "maxpool":
            hh, ww, cc = shape
            k, s = lay["kernel"], lay.get("stride") or lay["kernel"]
            nodes.append(ir.MaxPool(f"pool{j}", shape, k, s, np.zeros(cc, np.uint8),
                                    (f"layers.{j}",)))
            j += 3 if lay.get("before_bn", False) else 1
            shape = (nx.conv_out_size(hh, k, s), nx.conv_out_size(ww, k, s), cc)
        else:
            if not flat:
                j += 1  # Flatten
                flat = True
            r, f = lay["out"], int(np.prod(shape))
            extra: dict[str, Any] = {}
            if last:
                extra = {"class_scale": np.ones(r, np.int64),
                         "class_offset": np.arange(r, dtype=np.int64) - r // 2}
            else:
                extra = {"thresholds": np.zeros((1, 1, r), np.int64)}
            nodes.append(ir.Dense(f"dense{j}", shape, np.zeros((r, f), np.uint8), np.ones(r),
                                  np.zeros(r), input_kind=kind, source=(f"layers.{j}",),
                                  **extra))
            j += 2 if last else 3
            shape, kind = (r,), "binary"
    return ir.Graph(tuple(nodes), {"spec": dict(spec)})


def _classes(size: int, k: int, s: int, pad: int):
    import numpy as np

    out = (size + 2 * pad - k) // s + 1
    sets: list[tuple[int, ...]] = []
    cls = np.empty(out, np.int64)
    for o in range(out):
        taps = tuple(t for t in range(k) if not 0 <= o * s + t - pad < size)
        if taps not in sets:
            sets.append(taps)
        cls[o] = sets.index(taps)
    return cls


def largest_width(make_spec, widths: Sequence[float], budget: rs.Budget, **kwargs: Any
                  ) -> tuple[float, Choice]:
    """The largest width of ``widths`` whose model (``make_spec(width)``, a normalised
    spec, e.g. ``lambda w: bnnhw.nn.zoo.get_spec("vgg", width=w)``) fits ``budget``, and
    the optimiser's choice for it (``optimise`` keywords in ``kwargs``); ``DoesNotFit``
    with the smallest width's figures when none does. Bisection: widths that fit are
    assumed to be a prefix of the sorted ``widths``."""
    ws = sorted(set(widths))
    if not ws:
        raise ParameterError("largest_width: give at least one width")

    def attempt(w: float) -> Choice | DoesNotFit:
        try:
            return optimise(shape_graph(make_spec(w)), budget, **kwargs)
        except DoesNotFit as e:
            return e

    first = attempt(ws[0])
    if isinstance(first, DoesNotFit):
        raise DoesNotFit(f"width {ws[0]:g} already does not fit: {first}", first.figures)
    lo, hi, best = 0, len(ws) - 1, (ws[0], first)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        got = attempt(ws[mid])
        if isinstance(got, DoesNotFit):
            hi = mid - 1
        else:
            lo, best = mid, (ws[mid], got)
    return best
