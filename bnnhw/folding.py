"""Folding: how many PE rows and SIMD columns each matrix layer gets, and what it costs.

A matrix layer (conv as a sliding-window matrix product, or dense) has ``rows`` output
channels, ``cols`` inputs per output pixel and ``pixels`` output pixels per image. Folded
onto ``pe`` rows and ``simd`` columns it takes ``pixels * (rows / pe) * (cols / simd)``
cycles per image (docs/architecture.md, "Cycle model"). ``simd`` must divide ``simd_base``
(the input channel count for a conv, whose window streams channel-innermost; ``cols`` for
a dense layer) and ``pe`` must divide ``rows``.

``fold_for_target`` gives each layer the cheapest folding (fewest ``pe * simd`` lanes)
that meets a target initiation interval; the network's II is then its slowest layer.

A precision-gated layer (frac2 input, FracBNN) runs an MSB pass over all of its steps and
an LSB pass over the neuron folds with an open gate only: ``pixels * NF * SF * (1 + d)``
cycles, ``d`` the item density at its ``pe`` (the fraction of (pixel, neuron fold) items
with at least one open gate), measured on data and stored in the graph's meta
(``bnnhw.gate_density``); without a measurement ``d`` is 1 (every gate open).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from math import ceil
from pathlib import Path

import numpy as np

from . import ir
from .errors import BnnhwError
from .validate import ParameterError, divides

DEFAULT_LANES = 256


@dataclass(frozen=True)
class MatrixLayer:
    """Shape of one matrix layer as the folding sees it."""

    name: str
    rows: int
    cols: int
    pixels: int
    simd_base: int
    gated: bool = False
    density: tuple[tuple[int, float], ...] = ()  # (pe, item density) pairs, measured

    def item_density(self, pe: int) -> float:
        """The measured item density of a gated layer at ``pe`` (1 when not measured)."""
        return dict(self.density).get(pe, 1.0) if self.gated else 0.0

    def cycles(self, fold: Fold) -> int:
        base = self.pixels * (self.rows // fold.pe) * (self.cols // fold.simd)
        return base + gated_extra(base, self.item_density(fold.pe)) if self.gated else base

    def check(self, fold: Fold) -> None:
        """Raise ``BnnhwError`` if ``fold`` does not divide this layer evenly."""
        what = "inputs" if self.simd_base == self.cols else "input channels"
        try:
            divides(f"layer {self.name}", "pe", fold.pe, self.rows, "output channels")
            divides(f"layer {self.name}", "simd", fold.simd, self.simd_base, what)
            if fold.in_dram:
                divides(f"layer {self.name}", "tile_rows", fold.tile_rows, self.rows,
                        "output channels")
                if fold.tile_rows % fold.pe:
                    raise ParameterError(f"layer {self.name}: tile_rows must be a multiple "
                                         f"of pe ({fold.pe}), not {fold.tile_rows}")
                if self.gated:
                    raise ParameterError(f"layer {self.name}: a precision-gated layer keeps "
                                         f"its weights on chip (no tile_rows)")
        except ParameterError as e:
            raise BnnhwError(str(e)) from None


def gated_extra(msb_cycles: int, density: float) -> int:
    """The LSB pass's cycles of a gated layer whose MSB pass takes ``msb_cycles``: the
    item density's share of it, rounded (as ``rtl_gen.gated_mvtu``)."""
    return round(msb_cycles * density)


def gated_buffers(nf: int, sf: int, tree_latency: int) -> tuple[int, int]:
    """``(credits, banks)`` of a gated unit (``rtl_gen.gated_mvtu``, which explains them):
    the result slots and the input buffer banks (a power of two) that lose no cycle at
    steady state, from its folds and its popcount trees' pipeline stages."""
    lat = tree_latency
    credits = 2 * -(-(lat + 5) // sf) + -(-(lat + 4) // sf) + 3
    tail = 2 * (lat + 5) + sf * credits
    need = 2 + -(-tail // (nf * sf))
    return credits, 1 << max(1, (need - 1).bit_length())


def layer_density(graph: ir.Graph, name: str) -> tuple[tuple[int, float], ...]:
    """The measured ``(pe, item density)`` pairs of gated node ``name`` (graph meta)."""
    entry = (graph.meta.get("gate_density") or {}).get("layers", {}).get(name) or {}
    return tuple(sorted((int(pe), float(d)) for pe, d in (entry.get("items") or {}).items()))


@dataclass(frozen=True)
class Fold:
    """A layer's folding: ``pe`` rows and ``simd`` columns; ``tile_rows`` set puts its
    weights in DRAM, streamed in tiles of that many output channels (``TiledShape``,
    ``rtl_gen.tiled_mvtu``), ``None`` keeps them on chip."""

    pe: int
    simd: int
    tile_rows: int | None = None

    @property
    def in_dram(self) -> bool:
        return self.tile_rows is not None


DRAM_WORD_BITS = 128


@dataclass(frozen=True)
class TiledShape:
    """The figures of a weight-tiled layer (``rtl_gen.tiled_mvtu`` explains them): its
    DRAM layout, cycle model and buffers, from its shape and folding alone.

    ``in_beats`` is the input beats of one image as the unit stores them (``pixels * SF``
    when it is fed windows, ``H * W * C / simd`` when it stores the map itself);
    ``out_bits`` the bits of one result lane (1, or a score's width for the last layer).
    """

    rows: int
    cols: int
    pe: int
    simd: int
    tile_rows: int
    pixels: int
    in_beats: int
    out_bits: int = 1
    elem_width: int = 1

    @property
    def nf(self) -> int:
        return self.rows // self.pe

    @property
    def sf(self) -> int:
        return self.cols // self.simd

    @property
    def tiles(self) -> int:
        return self.rows // self.tile_rows

    @property
    def tile_nf(self) -> int:
        return self.tile_rows // self.pe

    @property
    def word_width(self) -> int:
        """Bits of one folded weight word, ``pe * simd``."""
        return self.pe * self.simd

    @property
    def line_words(self) -> int:
        """DRAM words per tile-buffer line, ``k = ceil(W / 128)``."""
        return -(-self.word_width // DRAM_WORD_BITS)

    @property
    def line_width(self) -> int:
        return self.line_words * DRAM_WORD_BITS

    @property
    def line_slots(self) -> int:
        """Folded words per line, ``m = 128 k // W``."""
        return self.line_width // self.word_width

    @property
    def tile_lines(self) -> int:
        """Lines per tile, ``ceil(TNF * SF / m)``."""
        return -(-(self.tile_nf * self.sf) // self.line_slots)

    @property
    def tile_dram_words(self) -> int:
        return self.tile_lines * self.line_words

    @property
    def dram_words(self) -> int:
        """128-bit DRAM words of the whole matrix, read once per image."""
        return self.tiles * self.tile_dram_words

    @property
    def tile_compute_cycles(self) -> int:
        """``S = P * TNF * SF``: one step per cycle."""
        return self.pixels * self.tile_nf * self.sf

    def tile_cycles(self, words_per_cycle, latency: int) -> Fraction:
        """Cycles per tile at steady state, ``max(S, D / w, ((D - 1) / w + 1 + latency +
        S) / 2)``."""
        spacing = 1 / port_rate(words_per_cycle)
        d, s = self.tile_dram_words, self.tile_compute_cycles
        return max(Fraction(s), d * spacing, ((d - 1) * spacing + 1 + latency + s) / 2)

    def cycles(self, words_per_cycle, latency: int) -> int:
        """Cycles per image at steady state: ``max(T * tile_cycles, in_beats, P * NF)``
        (the last two: the input at full rate and, with several tiles, the read-out)."""
        per_image = ceil(self.tiles * self.tile_cycles(words_per_cycle, latency))
        out = self.pixels * self.nf if self.tiles > 1 else 0
        return max(per_image, self.in_beats, out)

    def buffers(self, threshold_bits: int = 0) -> dict[str, int]:
        """Bits of each on-chip buffer: input (two images), tile (two tiles), reorder
        (two maps of results, none with one tile) and thresholds."""
        return {
            "input": 2 * self.in_beats * self.simd * self.elem_width,
            "tile": 2 * self.tile_lines * self.line_width,
            "reorder": 2 * self.pixels * self.nf * self.pe * self.out_bits
            if self.tiles > 1 else 0,
            "thresholds": threshold_bits,
        }


    def dram_image(self, weights) -> list[int]:
        """The DRAM words (128-bit ints) of ``weights[rows, cols]`` (bits) in the tiled
        unit's layout: tile after tile, each tile's folded words (``packing.matrix_words``
        of its rows) packed ``line_slots`` to a line of ``line_words`` DRAM words."""
        from .packing import matrix_words, pack

        w = np.asarray(weights)
        if w.shape != (self.rows, self.cols):
            raise ValueError(f"weights must have shape {(self.rows, self.cols)}, not "
                             f"{w.shape}")
        mask = (1 << DRAM_WORD_BITS) - 1
        image: list[int] = []
        for t in range(self.tiles):
            folded = matrix_words(w[t * self.tile_rows:(t + 1) * self.tile_rows],
                                  self.pe, self.simd)
            folded += [0] * (self.tile_lines * self.line_slots - len(folded))
            for i in range(self.tile_lines):
                line = pack(folded[i * self.line_slots:(i + 1) * self.line_slots],
                            self.word_width)
                image += [(line >> (j * DRAM_WORD_BITS)) & mask
                          for j in range(self.line_words)]
        return image

    def tile_table(self, thresholds) -> np.ndarray:
        """A threshold table ``[NY, NX, rows]`` regrouped per tile as the tiled unit
        stores it: ``[T * NY, NX, tile_rows]``, entry ``[t * NY + cy, cx, c]`` =
        ``thresholds[cy, cx, t * tile_rows + c]``."""
        t = np.asarray(thresholds)
        ny, nxc, _ = t.shape
        t = t.reshape(ny, nxc, self.tiles, self.tile_rows)
        return np.moveaxis(t, 2, 0).reshape(self.tiles * ny, nxc, self.tile_rows)


def tiled_shape(node: ir.Conv | ir.Dense, fold: Fold) -> TiledShape:
    """The ``TiledShape`` of matrix node ``node`` with its weights in DRAM (``fold``'s
    ``tile_rows``): a conv's unit stores its input map (``H * W * C / simd`` beats), a
    dense one its input vector."""
    if not fold.in_dram:
        raise ValueError(f"layer {node.name}: its folding keeps the weights on chip")
    if isinstance(node, ir.Conv):
        h, w, c = node.in_shape
        in_beats = h * w * c // fold.simd
    else:
        in_beats = node.cols // fold.simd
    return TiledShape(rows=node.rows, cols=node.cols, pe=fold.pe, simd=fold.simd,
                      tile_rows=fold.tile_rows, pixels=node.out_pixels
                      if isinstance(node, ir.Conv) else 1, in_beats=in_beats,
                      out_bits=1 if node.thresholded else node.dot_bits)


def dram_layout(graph: ir.Graph, folds) -> dict[str, tuple[int, int]]:
    """Where each DRAM layer's weights live: ``{name: (first word, words)}``, the layers
    in graph order one after the other from word 0 (128-bit words)."""
    out, base = {}, 0
    for node in graph.nodes:
        fold = folds.get(node.name) if isinstance(node, (ir.Conv, ir.Dense)) else None
        if fold is not None and fold.in_dram:
            words = tiled_shape(node, fold).dram_words
            out[node.name] = (base, words)
            base += words
    return out


def port_rate(words_per_cycle) -> Fraction:
    """A port's words per cycle as an exact fraction (a float such as 0.1 means 1/10)."""
    w = Fraction(words_per_cycle).limit_denominator(1 << 16)
    if not 0 < w <= 1:
        raise ValueError(f"words per cycle must be in (0, 1], not {words_per_cycle!r}")
    return w


def matrix_layers(graph: ir.Graph) -> list[MatrixLayer]:
    """The folding's view of every matrix node (conv, dense) of a lowered graph."""
    layers = []
    for node in graph.nodes:
        if isinstance(node, (ir.Conv, ir.Dense)):
            gate = {"gated": True, "density": layer_density(graph, node.name)} \
                if node.gated else {}
            if isinstance(node, ir.Conv):
                layers.append(MatrixLayer(node.name, node.rows, node.cols, node.out_pixels,
                                          node.in_shape[2], **gate))
            else:
                layers.append(MatrixLayer(node.name, node.rows, node.cols, 1, node.cols,
                                          **gate))
    return layers


def default_target(graph: ir.Graph, lanes: int = DEFAULT_LANES) -> int:
    """A target II that spreads about ``lanes`` XNOR lanes over the layers, never below
    the input rate (one pixel per cycle)."""
    h, w, _ = graph.input.in_shape
    work = sum(layer.rows * layer.cols * layer.pixels for layer in matrix_layers(graph))
    return max(h * w, -(-work // lanes))


DEFAULT_ON_CHIP_BITS = 2_000_000
"""Weight bits the default folding keeps on chip at most (an Arty A7-35T's block RAM
holds 1.8 Mbit): beyond them it puts the largest layers' weights in DRAM."""
DEFAULT_DRAM_WORDS_PER_CYCLE = 0.88
"""Sustained 128-bit read words per cycle the cycle model assumes of a DRAM port unless
told: LiteDRAM's simulation core, measured with tiled units (``bench/dram_tiled_cycles.py``:
1,024 words in 1,152.5 cycles, 0.888 a cycle; 0.89 for plain sequential reads,
``bench/dram_bandwidth.py``)."""
DEFAULT_DRAM_LATENCY = 15
"""Cycles from a read command to its word the model assumes unless told: the latency that
fits the latency-bound tiles of ``bench/dram_tiled_cycles.py`` on the simulation core (an
idle single read takes 17-20; back to back reads overlap in its pipeline)."""
MAX_TILE_BUFFER_BITS = 1 << 16


def default_folding(graph: ir.Graph, target_ii: int | None = None) -> dict[str, Fold]:
    """The folding ``bnnhw verify``/``build`` use unless given one: ``fold_for_target``
    at ``target_ii`` (default ``default_target``), with the weights of the largest layers
    in DRAM while the others' exceed ``DEFAULT_ON_CHIP_BITS`` (``dram_folds``)."""
    folds = fold_for_target(matrix_layers(graph), target_ii or default_target(graph))
    return dram_folds(graph, folds)


def can_tile(node: ir.Node) -> bool:
    """Whether matrix node ``node`` may keep its weights in DRAM (``rtl_gen.tiled_mvtu``):
    binary inputs, and binary outputs or scores."""
    return (isinstance(node, (ir.Conv, ir.Dense)) and node.input_kind == "binary"
            and (not node.thresholded or node.out_levels == 1))


def best_tile_rows(node: ir.Conv | ir.Dense, fold: Fold,
                   words_per_cycle: float = DEFAULT_DRAM_WORDS_PER_CYCLE,
                   latency: int = DEFAULT_DRAM_LATENCY) -> int:
    """The tile height with the fewest cycles per image among the multiples of ``pe``
    dividing the rows whose two tile banks take at most ``MAX_TILE_BUFFER_BITS`` (the
    smallest such on a tie, ``pe`` itself when none is that small)."""
    options = [t for t in range(fold.pe, node.rows + 1, fold.pe) if node.rows % t == 0]
    best = None
    for t in options:
        shape = tiled_shape(node, Fold(fold.pe, fold.simd, t))
        if t != fold.pe and shape.buffers()["tile"] > MAX_TILE_BUFFER_BITS:
            break
        key = shape.cycles(words_per_cycle, latency)
        if best is None or key < best[0]:
            best = (key, t)
    return best[1]  # type: ignore[index]


def dram_folds(graph: ir.Graph, folds: dict[str, Fold],
               on_chip_bits: int = DEFAULT_ON_CHIP_BITS) -> dict[str, Fold]:
    """``folds`` with the largest tileable layers' weights moved to DRAM (each at
    ``best_tile_rows``) until the weights left on chip are at most ``on_chip_bits``."""
    nodes = [n for n in graph.nodes if isinstance(n, (ir.Conv, ir.Dense))]
    left = sum(n.rows * n.cols for n in nodes if not folds[n.name].in_dram)
    out = dict(folds)
    for node in sorted((n for n in nodes if can_tile(n) and not folds[n.name].in_dram),
                       key=lambda n: -n.rows * n.cols):
        if left <= on_chip_bits:
            break
        f = out[node.name]
        out[node.name] = Fold(f.pe, f.simd, best_tile_rows(node, f))
        left -= node.rows * node.cols
    return out


def two_foldings(graph: ir.Graph) -> dict[str, dict[str, Fold]]:
    """The default folding and a four times faster one, the pair regressions run."""
    default = default_folding(graph)
    layers = matrix_layers(graph)
    ii = initiation_interval(layers, default)
    return {"default": default, "fast": fold_for_target(layers, max(1, ii // 4))}


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def fold_for_target(layers: Sequence[MatrixLayer], target_ii: int,
                    max_simd: int = 64, max_pe: int = 64) -> dict[str, Fold]:
    """Cheapest folding of each layer whose cycles per image are at most ``target_ii``.

    A layer that cannot reach the target within ``max_pe x max_simd`` gets its fastest
    folding (it then sets the II). Ties in lanes prefer the larger ``simd`` (wider
    popcounts are cheaper per lane than more PEs).
    """
    folds = {}
    for layer in layers:
        options = [Fold(pe, simd)
                   for pe in _divisors(layer.rows) if pe <= max_pe
                   for simd in _divisors(layer.simd_base) if simd <= max_simd]
        meeting = [f for f in options if layer.cycles(f) <= target_ii]
        if meeting:
            best = min(meeting, key=lambda f: (f.pe * f.simd, -f.simd))
        else:
            best = min(options, key=lambda f: (layer.cycles(f), f.pe * f.simd))
        folds[layer.name] = best
    return folds


def initiation_interval(layers: Sequence[MatrixLayer], folds: dict[str, Fold]) -> int:
    """Cycles per image of the slowest matrix layer."""
    return max(layer.cycles(folds[layer.name]) for layer in layers)


def save_folding(path: str | Path, folds: dict[str, Fold]) -> None:
    """Write a folding as JSON: ``{"layers": {name: {"pe": .., "simd": ..}}}`` (atomically,
    replacing only a regular file)."""
    from .errors import write_together

    entries = {name: {k: v for k, v in asdict(f).items() if v is not None}
               for name, f in folds.items()}
    text = json.dumps({"layers": entries}, indent=2)
    write_together([(Path(path), lambda f: f.write((text + "\n").encode()))])


_FOLD_SHAPE = '{"layers": {name: {"pe": N, "simd": N}, ...}}'


def load_folding(path: str | Path, layers: Sequence[MatrixLayer]) -> dict[str, Fold]:
    """Read a folding file and check it against ``layers`` (one sentence on any error).

    Refused: a missing file or a folder, text that is not JSON or nests deeper than
    ``bnnhw.errors.MAX_DEPTH``, keys other than ``layers`` (and ``pe``/``simd`` in an
    entry), an entry that is not an object, unknown or missing layers, and ``pe``/``simd``
    that are not positive integers dividing the layer.
    """
    from .errors import read_json_text

    path = Path(path)
    text = read_json_text(path, f"folding file {path}", f"give a JSON file {_FOLD_SHAPE}")
    try:
        data = json.loads(text)
    except ValueError as e:
        raise BnnhwError(f"folding file {path} is not valid JSON ({e})") from None
    entries = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise BnnhwError(f"folding file {path} must hold an object {_FOLD_SHAPE}")
    extra = sorted(set(data) - {"layers"})
    if extra:
        raise BnnhwError(f"folding file {path} has an unknown key {extra[0]!r} (the only key "
                         f"is 'layers': {_FOLD_SHAPE})")
    names = [layer.name for layer in layers]
    unknown = sorted(set(entries) - set(names))
    if unknown:
        raise BnnhwError(f"folding file {path} names unknown layer {unknown[0]!r} "
                         f"(layers: {', '.join(names)})")
    folds = {}
    for layer in layers:
        entry = entries.get(layer.name)
        if entry is None:
            raise BnnhwError(f"folding file {path} has no entry for layer {layer.name}")
        if not isinstance(entry, dict):
            raise BnnhwError(f"folding file {path}: the entry of layer {layer.name} must be "
                             f'an object {{"pe": N, "simd": N}}, not {json.dumps(entry)}')
        extra = sorted(set(entry) - {"pe", "simd", "tile_rows"})
        if extra:
            raise BnnhwError(f"folding file {path}: layer {layer.name} has an unknown key "
                             f"{extra[0]!r} (the keys are 'pe', 'simd' and, for weights in "
                             f"DRAM, 'tile_rows')")
        pe, simd, tile = entry.get("pe"), entry.get("simd"), entry.get("tile_rows", 1)
        for key, v in (("pe", pe), ("simd", simd), ("tile_rows", tile)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise BnnhwError(f"folding file {path}: layer {layer.name} needs a positive "
                                 f"integer {key!r}, not {json.dumps(v)}")
        fold = Fold(pe, simd, entry.get("tile_rows"))
        try:
            layer.check(fold)
        except BnnhwError as e:
            raise BnnhwError(f"folding file {path}: {e}") from None
        folds[layer.name] = fold
    return folds
