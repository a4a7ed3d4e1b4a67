"""Weight-tiled matrix-vector-threshold unit: the weights stream in from DRAM, tile by tile.

A dataflow MVTU (``rtl_gen.mvtu``) reads its whole weight matrix once per output pixel,
which only an on-chip memory can feed. This unit reads each weight once per image: it
keeps the image's whole input map on chip and sweeps all pixels against one tile of
``tile_rows`` output channels at a time, the tile's weights loaded from DRAM into an
on-chip tile buffer.

Output stream, exactly as the MVTU's (binary inputs only; ``NF = R / pe``, ``SF = C /
simd``): per output pixel ``NF`` beats of ``pe`` results, lane ``i`` of beat ``nf`` is
channel ``nf * pe + i``, pixels row-major, images back to back; a result is one bit ``acc
>= T[cls][channel]`` (``acc = popcount(xnor(x, w))``) or, for the last layer, the signed
score ``2 * acc - C``.

Input stream, in one of two modes:

- window-fed (a dense layer, or a conv after ``rtl_gen.sliding_window``): as the MVTU's,
  per output pixel ``SF`` beats of ``simd`` bits;
- map mode (``in_shape = (H, W, C)``, ``kernel``, ``stride``, ``padding``, ``pad_bit``):
  the conv's raw input map, ``H * W * C / simd`` beats of ``simd`` elements per image,
  pixels row-major, channels innermost (what a width converter to ``simd`` gives the
  sliding window). The unit reads the windows from its stored map itself: step ``sf`` of
  output pixel ``(oy, ox)`` is the sliding window's beat ``sf`` of that pixel, ``(ky, kx,
  c)`` order with ``c`` (``C / simd`` words) fastest, i.e. word ``c`` of map pixel ``(oy
  * S - P + ky, ox * S - P + kx)``, and ``pad_bit`` in every element where that lies
  outside the map. So it needs no sliding window in front and stores the map's ``H * W *
  C`` bits per image instead of the windows' ``OH * OW * K * K * C`` (``K * K`` times
  less at stride 1); its results are bit for bit those of SlidingWindow -> this unit fed
  windows.

DRAM port ``dram`` (:func:`dram_read_signature`): ``cmd``, a stream of read commands (the
address of one 128-bit word), and ``rdata``, the stream of the words read, in command
order. ``rdata.ready`` is always 1: the unit only asks for words it has room for.

DRAM layout (:meth:`TiledMVTUParams.dram_image`). The ``T = R / tile_rows`` tiles follow
each other from ``base_addr``; tile ``t`` holds rows ``t * tile_rows ..`` folded as the
MVTU folds them (``bnnhw.packing.matrix_words``: ``TNF = tile_rows / pe`` neuron folds,
word ``nf * SF + sf`` of ``W = pe * simd`` bits). Those words are packed into *lines* of
``128 * k`` bits, ``k = ceil(W / 128)`` DRAM words (word ``i`` of a line holds its bits
``[128 i, 128 (i + 1))``), ``m = 128 k // W`` folded words per line (word ``s`` of a line
at bits ``[s W, (s + 1) W)``, unused bits 0). A tile takes ``ceil(TNF * SF / m)`` lines
and starts on a line.

Datapath:

- input buffer, two banks of ``I`` words of ``simd`` bits (``I`` =
  :attr:`TiledMVTUParams.in_beats`: ``H * W * C / simd`` in map mode, ``P * SF`` fed
  windows): one image is written while the previous one is computed; the compute side
  starts an image once all of it is stored. The read address is a register that moves by
  constants only (``+ 1`` along a window row, ``+ W * C / simd`` to the next one, back to
  the window's origin for the next ``nf``, on to the next pixel's origin), so it drives
  the block RAM straight from a flip-flop; with padding a window position ``(iy, ix)``
  moves alongside and a step outside the map is flagged, the flag travelling with the
  read data and the pad value put in in place of the word before the XNORs (a window-fed
  unit is the 1 x 1 kernel over a ``1 x P`` map of ``SF``-word pixels: the same
  generator);
- tile buffer, two banks of one tile's lines: the loader fills one bank (issuing the
  tile's read commands as soon as the bank is free) while the steps use the other;
- steps, one per cycle, in the order tile, pixel, ``nf`` of the tile, ``sf``; each XNORs
  the pixel's beat ``sf`` with the tile's word ``nf * SF + sf`` on ``pe`` compressor-tree
  popcounts (``rtl_gen.popcount``) and accumulates across the ``SF`` steps, as the MVTU
  does (the memories' read data registered once more before the XNORs);
- thresholds: a ``rtl_gen.threshold`` unit whose "pixels" are the ``T * P`` (tile, pixel)
  pairs in compute order, with the table regrouped per tile
  (:attr:`TiledMVTUParams.threshold_params`), so it counts its beats as usual; with
  ``runtime_writable`` a ``cfg`` port (``rtl_gen.weight_memory``, ``sel`` 1) rewrites
  that memory with the words of :meth:`TiledMVTUParams.threshold_words` (the regrouped
  table; the weights are in DRAM and not cfg-writable, and a last layer's ``cfg`` takes
  beats and ignores them);
- output: with one tile the results leave in compute order, which is the MVTU's; with
  more, a reorder buffer of two banks of ``P * NF`` results: results of an image are
  written at ``p * NF + t * TNF + nf`` and read out in order once the image is complete,
  while the next image fills the other bank.

Buffers (:attr:`TiledMVTUParams.buffers`, bits): input ``2 * I * simd`` (two maps: ``2 *
H * W * C`` in map mode), tile ``2 * ceil(TNF * SF / m) * 128 k``, reorder ``2 * P * R``
result lanes (none with one tile), and the threshold memory.

Backpressure: as in the MVTU, the compute pipeline has one clock enable, so it stalls
while its last stage holds a result nobody takes; the input and tile buffers keep
filling meanwhile.

Cycle model (:meth:`TiledMVTUParams.cycles_for_port`). A port is described by ``w``,
its words per cycle (at most 1: one command per cycle; commands are accepted at least
``1 / w`` cycles apart on average, back to back at exactly that rate), and its
``latency``: a word arrives ``latency`` cycles after the edge that accepted its command.
A tile's compute takes ``S = P * TNF * SF`` cycles and its ``D`` DRAM words take ``D /
w`` cycles of the port. Tile ``g + 1``'s commands start once tile ``g``'s are issued and
tile ``g - 1`` is computed (its bank is free), one edge after its last step; its compute
starts one edge after its last word is in, once tile ``g`` is computed. So two tiles take
at least ``(D - 1) / w + 1 + latency + S`` cycles (a load and a compute in turn on one
bank) and a tile takes, at steady state, ``max(S, D / w, ((D - 1) / w + 1 + latency + S)
/ 2)``: compute-bound, bandwidth-bound or latency-bound. ``cycles_per_image = max(ceil(T
* tile), I, P * NF)`` (the last two: the ``I`` input beats at full rate, ``H * W * C /
simd`` in map mode, and, with several tiles, the reorder buffer's read-out). When
latency-bound with an odd ``T``, consecutive images alternate around that mean. Compute
and load overlap: the read latency shows only when the third term is the largest, and
then only half of it per tile.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from bnnhw.folding import DRAM_WORD_BITS, TiledShape, port_rate
from bnnhw.packing import fold_counts, pack, words_to_matrix
from bnnhw.validate import (
    ParameterError,
    choice,
    divides,
    flag,
    integer,
    positive_fields,
    positive_shape,
)

from .block import StreamBlock
from .mvtu import MatrixShape
from .popcount import Popcount
from .sliding_window import SlidingWindowParams
from .threshold import Threshold, ThresholdParams, check_classes

__all__ = ["DRAM_WORD_BITS", "TiledMVTU", "TiledMVTUParams", "dram_read_signature",
           "port_rate"]

def dram_read_signature(addr_width: int) -> wiring.Signature:
    """The read side of a DRAM port, from the reader's side: ``cmd`` (out) carries word
    addresses, ``rdata`` (in) the 128-bit words read, in command order."""
    return wiring.Signature({"cmd": Out(stream.Signature(addr_width)),
                             "rdata": In(stream.Signature(DRAM_WORD_BITS))})


@dataclass(frozen=True, eq=False, kw_only=True)
class TiledMVTUParams(MatrixShape):
    """One weight-tiled unit (see the module docstring).

    Like ``MVTUParams`` without ``weights`` (they live in DRAM: :meth:`dram_image`):
    ``thresholds`` ``int[NY, NX, rows]`` or ``None`` for the last (scores) layer,
    ``pixels`` output pixels with border classes ``row_class``/``col_class``.
    ``tile_rows`` output channels per weight tile (a multiple of ``pe`` dividing
    ``rows``); ``base_addr`` the first 128-bit DRAM word of the layer's weights,
    ``addr_width`` the bits of a word address; ``images_per_load`` images per weight load
    (1: the weights are read once per image). ``dram_words_per_cycle``/``dram_latency``
    describe the port for :attr:`cycles_per_image`.

    Map mode (a conv fed its input map, not its windows): ``in_shape = (H, W, C)`` with
    ``kernel``, ``stride`` (default 1), ``padding`` (default 0) and ``pad_bit`` (default
    0), as in ``rtl_gen.sliding_window.SlidingWindowParams``; then ``cols = K * K * C``,
    ``pixels = OH * OW`` and the border classes, when given, have ``OH`` and ``OW``
    entries. A dense layer (or a unit fed windows) leaves all five ``None``.
    ``runtime_writable`` adds a ``cfg`` port writing the threshold memory
    (:meth:`threshold_words`; the weights are in DRAM).
    """

    name: str
    rows: int
    cols: int
    pe: int
    simd: int
    tile_rows: int
    input_kind: str = "binary"
    pixels: int = 1
    thresholds: np.ndarray | None = None
    row_class: np.ndarray | None = None
    col_class: np.ndarray | None = None
    base_addr: int = 0
    addr_width: int = 24
    images_per_load: int = 1
    dram_words_per_cycle: float = 1.0
    dram_latency: int = 20
    levels_per_stage: int = 2
    in_shape: tuple[int, int, int] | None = None
    kernel: int | None = None
    stride: int | None = None
    padding: int | None = None
    pad_bit: int | None = None
    runtime_writable: bool = False

    def __post_init__(self):
        n = self.name
        if not isinstance(n, str) or not n:
            raise ParameterError(f"tiled MVTU name must be a non-empty string, not {n!r}")
        positive_fields(n, self, "rows", "cols", "pe", "simd", "pixels", "tile_rows",
                        "addr_width", "levels_per_stage")
        fold_counts(self.rows, self.cols, self.pe, self.simd, n)
        divides(n, "tile_rows", self.tile_rows, self.rows, "output channels")
        if self.tile_rows % self.pe:
            raise ParameterError(f"{n}: tile_rows must be a multiple of pe ({self.pe}), "
                                 f"not {self.tile_rows}")
        choice(n, "input_kind", self.input_kind, ("binary",))
        flag(n, "runtime_writable", self.runtime_writable)
        self._check_geometry()
        integer(n, "images_per_load", self.images_per_load, 1, 1)
        integer(n, "base_addr", self.base_addr, 0)
        integer(n, "dram_latency", self.dram_latency, 0)
        wpc = self.dram_words_per_cycle
        if isinstance(wpc, bool) or not isinstance(wpc, (int, float, Fraction)) or \
                not 0 < wpc <= 1:
            raise ParameterError(f"{n}: dram_words_per_cycle must be a number in (0, 1], "
                                 f"not {wpc!r}")
        if self.base_addr + self.dram_words > 1 << self.addr_width:
            raise ParameterError(
                f"{n}: the weights ({self.dram_words} words from base_addr "
                f"{self.base_addr}) do not fit in a {self.addr_width}-bit address space; "
                f"lower base_addr or widen addr_width")
        if self.thresholds is None:
            rc, cc = check_classes(n, self.pixels, self.row_class, self.col_class, 1, 1)
            object.__setattr__(self, "row_class", rc)
            object.__setattr__(self, "col_class", cc)
        else:
            tp = ThresholdParams(name=n, channels=self.rows, pe=self.pe,
                                 acc_min=self.acc_range[0], acc_max=self.acc_range[1],
                                 thresholds=self.thresholds, pixels=self.pixels,
                                 row_class=self.row_class, col_class=self.col_class)
            for what in ("thresholds", "row_class", "col_class"):
                object.__setattr__(self, what, getattr(tp, what))
            _ = self.threshold_params  # validates the cfg size of a writable memory

    def _check_geometry(self):
        """Validate the map-mode fields (defaults filled in) and the border-class sizes."""
        n, geometry = self.name, ("kernel", "stride", "padding", "pad_bit")
        if self.in_shape is None:
            given = [g for g in geometry if getattr(self, g) is not None]
            if given:
                raise ParameterError(f"{n}: {', '.join(given)} describe a conv's input map; "
                                     f"give in_shape = (H, W, C) too, or leave them None")
            return
        shape = positive_shape(n, "in_shape", tuple(self.in_shape), (3,))
        object.__setattr__(self, "in_shape", shape)
        if self.kernel is None:
            raise ParameterError(f"{n}: in_shape needs a kernel size")
        for what, default in (("stride", 1), ("padding", 0), ("pad_bit", 0)):
            if getattr(self, what) is None:
                object.__setattr__(self, what, default)
        integer(n, "pad_bit", self.pad_bit, 0, 1)
        win = self.window  # validates kernel, stride, padding and simd | C
        c = shape[2]
        if self.cols != self.kernel ** 2 * c:
            raise ParameterError(f"{n}: cols must be kernel**2 * C = {self.kernel ** 2 * c} "
                                 f"for in_shape {shape} and kernel {self.kernel}, not "
                                 f"{self.cols}")
        oh, ow = win.out_height, win.out_width
        if self.pixels != oh * ow:
            raise ParameterError(f"{n}: pixels must be the {oh} x {ow} = {oh * ow} output "
                                 f"pixels of in_shape {shape}, kernel {self.kernel}, stride "
                                 f"{self.stride} and padding {self.padding}, not "
                                 f"{self.pixels}")
        if self.row_class is None and self.col_class is None:
            object.__setattr__(self, "row_class", np.zeros(oh, np.int64))
            object.__setattr__(self, "col_class", np.zeros(ow, np.int64))
        elif self.row_class is not None and self.col_class is not None and \
                (np.size(self.row_class), np.size(self.col_class)) != (oh, ow):
            raise ParameterError(f"{n}: row_class and col_class must have OH = {oh} and OW "
                                 f"= {ow} entries, not {np.size(self.row_class)} and "
                                 f"{np.size(self.col_class)}")

    # Input geometry.
    @property
    def window(self) -> SlidingWindowParams | None:
        """The sliding window whose beats the unit reads from its stored map (map mode),
        else ``None``."""
        if self.in_shape is None:
            return None
        h, w, c = self.in_shape
        return SlidingWindowParams(h, w, c, self.kernel, self.stride, self.padding,
                                   self.simd, self.elem_width, self.pad_bit, name=self.name)

    @property
    def geometry(self) -> tuple[int, int, int, int, int, int, int, int]:
        """``(H, W, CF, K, S, P, OH, OW)`` of the stored input, ``CF = C / simd`` words per
        input pixel. A unit fed windows stores them as a ``1 x pixels`` map of ``SF``-word
        pixels read with a 1 x 1 kernel, so both modes share one read-address generator."""
        win = self.window
        if win is None:
            return 1, self.pixels, self.sf, 1, 1, 0, 1, self.pixels
        return (win.height, win.width, win.beats_per_pixel, win.kernel, win.stride,
                win.padding, win.out_height, win.out_width)

    @property
    def in_beats(self) -> int:
        """Input beats per image, the words of one input-buffer bank: ``H * W * C / simd``
        in map mode, ``P * SF`` when fed windows."""
        h, w, cf = self.geometry[:3]
        return h * w * cf

    # Folding (``nf``, ``sf`` and the arithmetic's shapes: ``rtl_gen.mvtu.MatrixShape``).
    @property
    def tiles(self) -> int:
        """Weight tiles ``T = rows / tile_rows``."""
        return self.rows // self.tile_rows

    @property
    def tile_nf(self) -> int:
        """Neuron folds of one tile, ``tile_rows / pe``."""
        return self.tile_rows // self.pe

    @property
    def o_width(self) -> int:
        return self.pe * (self.score_shape.width if self.is_scores else 1)

    # DRAM layout.
    @property
    def shape(self) -> TiledShape:
        """The unit's layout, cycle and buffer figures (``bnnhw.folding.TiledShape``)."""
        return TiledShape(rows=self.rows, cols=self.cols, pe=self.pe, simd=self.simd,
                          tile_rows=self.tile_rows, pixels=self.pixels,
                          in_beats=self.in_beats,
                          out_bits=self.score_shape.width if self.is_scores else 1,
                          elem_width=self.elem_width)

    @property
    def word_width(self) -> int:
        return self.shape.word_width

    @property
    def line_words(self) -> int:
        return self.shape.line_words

    @property
    def line_width(self) -> int:
        return self.shape.line_width

    @property
    def line_slots(self) -> int:
        return self.shape.line_slots

    @property
    def tile_lines(self) -> int:
        return self.shape.tile_lines

    @property
    def tile_dram_words(self) -> int:
        return self.shape.tile_dram_words

    @property
    def dram_words(self) -> int:
        """128-bit DRAM words read per image (the whole matrix once, ``images_per_load``
        1) and the size of :meth:`dram_image`."""
        return self.shape.dram_words

    def dram_image(self, weights) -> list[int]:
        """The DRAM words (128-bit ints) of ``weights[rows, cols]`` (bits), to be written
        from ``base_addr`` on (see the module docstring)."""
        w = np.asarray(weights)
        if w.shape != (self.rows, self.cols):
            raise ValueError(f"{self.name}: weights must have shape {(self.rows, self.cols)},"
                             f" not {w.shape}")
        if w.size and (w.min() < 0 or w.max() > 1):
            raise ValueError(f"{self.name}: weights must be bits 0/1")
        return self.shape.dram_image(w)

    def weights_from_image(self, image) -> np.ndarray:
        """Inverse of :meth:`dram_image`: the ``[rows, cols]`` bits of a DRAM image."""
        if len(image) != self.dram_words:
            raise ValueError(f"{self.name}: a DRAM image has {self.dram_words} words, "
                             f"not {len(image)}")
        tiles = []
        k, per_tile = self.line_words, self.tile_nf * self.sf
        for t in range(self.tiles):
            folded = []
            for i in range(self.tile_lines):
                start = (t * self.tile_lines + i) * k
                line = pack(image[start:start + k], DRAM_WORD_BITS)
                mask = (1 << self.word_width) - 1
                folded += [(line >> (s * self.word_width)) & mask
                           for s in range(self.line_slots)]
            tiles.append(words_to_matrix(folded[:per_tile], self.tile_rows, self.cols,
                                         self.pe, self.simd))
        return np.concatenate(tiles)

    # Thresholds.
    def regroup(self, thresholds) -> np.ndarray:
        """A table ``[NY, NX, rows]`` regrouped per tile: ``[T * NY, NX, tile_rows]``, entry
        ``[t * NY + cy, cx, c] = thresholds[cy, cx, t * tile_rows + c]``."""
        return self.shape.tile_table(thresholds)

    @property
    def threshold_params(self) -> ThresholdParams | None:
        """The threshold unit, over the ``T * P`` (tile, pixel) pairs in compute order:
        "row" classes ``t * NY + row_class[oy]`` (``T * OH`` rows), the column classes as
        they are, and the table :meth:`regroup` of ``thresholds``; writable through ``cfg``
        when ``runtime_writable``."""
        if self.thresholds is None:
            return None
        ny = self.thresholds.shape[0]
        rc = np.concatenate([k * ny + self.row_class for k in range(self.tiles)])
        lo, hi = self.acc_range
        return ThresholdParams(name=self.name, channels=self.tile_rows, pe=self.pe,
                               acc_min=lo, acc_max=hi, thresholds=self.regroup(self.thresholds),
                               pixels=self.tiles * self.pixels, row_class=rc,
                               col_class=self.col_class,
                               runtime_writable=self.runtime_writable)

    def threshold_words(self, thresholds=None) -> list[int]:
        """Threshold memory words of a table ``[NY, NX, rows]`` in the layer's own layout
        (default: this unit's), regrouped per tile and folded: for ``cfg_beats(MemSel.
        THRESHOLDS, words, threshold_params.memory.width)``."""
        if self.thresholds is None:
            raise ValueError(f"{self.name}: the last layer has no thresholds")
        t = self.thresholds if thresholds is None else np.asarray(thresholds)
        if t.shape != self.thresholds.shape:
            raise ValueError(f"{self.name}: thresholds must have shape "
                             f"{self.thresholds.shape}, not {t.shape}")
        return self.threshold_params.threshold_words(self.regroup(t))

    # Cost model (``bnnhw.folding.TiledShape``).
    @property
    def tile_compute_cycles(self) -> int:
        """``S = P * TNF * SF``: one step per cycle."""
        return self.shape.tile_compute_cycles

    def tile_cycles(self, words_per_cycle: float, latency: int) -> Fraction:
        """Cycles per tile at steady state (module docstring, "Cycle model")."""
        return self.shape.tile_cycles(words_per_cycle, latency)

    def cycles_for_port(self, words_per_cycle: float, latency: int) -> int:
        """Cycles per image at steady state with a port delivering ``words_per_cycle``
        words (at most 1) ``latency`` cycles after their commands: ``max(T *
        tile_cycles, P * SF, P * NF)`` (module docstring, "Cycle model")."""
        return self.shape.cycles(words_per_cycle, latency)

    @property
    def cycles_per_image(self) -> int:
        """:meth:`cycles_for_port` of ``dram_words_per_cycle`` and ``dram_latency``."""
        return self.cycles_for_port(self.dram_words_per_cycle, self.dram_latency)

    @property
    def buffers(self) -> dict[str, int]:
        """Bits of each on-chip buffer: input (two maps), tile (two tiles), reorder (two
        maps of results, none with one tile) and threshold memory."""
        th = self.threshold_params
        return self.shape.buffers(0 if th is None else th.memory.bits)

    @property
    def buffer_bits(self) -> int:
        """All on-chip buffer bits (:attr:`buffers`), for the resource model."""
        return sum(self.buffers.values())


class TiledMVTU(StreamBlock):
    """Weight-tiled matrix-vector-threshold unit (see the module docstring).

    Ports: ``i_stream`` (``simd`` bits: windows, or the map in map mode), ``o_stream``
    (``pe`` bits, or ``pe * score_shape.width`` for the last layer), ``dram``
    (:func:`dram_read_signature`) and, when ``runtime_writable``, ``cfg`` (64-bit
    configuration beats, always ready, writing the threshold memory).
    """

    Params = TiledMVTUParams

    @classmethod
    def extra_members(cls, params):
        return super().extra_members(params) | {
            "dram": Out(dram_read_signature(params.addr_width))}

    def elaborate(self, platform):
        m = Module()
        p = self.params
        pe, simd = p.pe, p.simd
        tnf, tiles = p.tile_nf, p.tiles
        _, _, cf, ksize, _, _, oh, ow = p.geometry

        acc_out = stream.Signature(pe * p.acc_shape.width).create(path=("acc",))
        en = Signal()  # clock enable of the compute pipeline
        m.d.comb += en.eq(~acc_out.valid | acc_out.ready)

        # Stage 0: step counters (tile, pixel (oy, ox), nf, sf (ky, kx, c)), and the
        # buffers' sides. A window-fed unit has one row of pixels and a 1 x 1 kernel.
        c, kx, ky = Signal(range(cf), name="c"), Signal(range(ksize), name="kx"), \
            Signal(range(ksize), name="ky")
        nf, ox, oy = Signal(range(tnf)), Signal(range(ow), name="ox"), \
            Signal(range(oh), name="oy")
        tl = Signal(range(tiles))
        fire = Signal()
        ends = {"pixel_word": c == cf - 1}  # the last word of a map pixel
        ends["row"] = ends["pixel_word"] & (kx == ksize - 1)  # ... of a window row
        ends["sf"] = ends["row"] & (ky == ksize - 1)
        ends["pixel"] = ends["sf"] & (nf == tnf - 1)
        ends["ox"] = ends["pixel"] & (ox == ow - 1)
        ends["tile"] = ends["ox"] & (oy == oh - 1)
        ends["image"] = ends["tile"] & (tl == tiles - 1)
        image_ready, x, pad = self._input_buffer(m, p, en, fire, ends)
        tile_ready, w_line, slot = self._tile_buffer(m, p, en, fire, ends["pixel"],
                                                     ends["tile"])
        m.d.comb += fire.eq(en & image_ready & tile_ready)
        with m.If(fire):
            for counter, size, end in ((c, cf, Const(1)), (kx, ksize, ends["pixel_word"]),
                                       (ky, ksize, ends["row"]), (nf, tnf, ends["sf"]),
                                       (ox, ow, ends["pixel"]), (oy, oh, ends["ox"]),
                                       (tl, tiles, ends["tile"])):
                with m.If(end):  # the counters below it wrap: step this one
                    m.d.sync += counter.eq(Mux(counter == size - 1, 0, counter + 1))

        # Stage 1: the memories' read data (input beat, tile line) and the step's flags.
        valid1, first1, last1 = Signal(name="valid1"), Signal(name="first1"), Signal(name="last1")
        slot1, pad1 = Signal.like(slot, name="slot1"), Signal(name="pad1")
        with m.If(en):
            m.d.sync += [valid1.eq(fire), first1.eq((c == 0) & (kx == 0) & (ky == 0)),
                         last1.eq(ends["sf"]), slot1.eq(slot), pad1.eq(pad)]
        # Stage 2: registered again before the XNORs (no block RAM output drives logic).
        xs = Signal(p.i_width, name="x2")
        w = Signal(p.word_width, name="w2")
        valid2, first2, last2 = Signal(name="valid2"), Signal(name="first2"), Signal(name="last2")
        pad2 = Signal(name="pad2")
        word = w_line.word_select(slot1, p.word_width) if p.line_slots > 1 else \
            w_line[:p.word_width]
        with m.If(en):
            m.d.sync += [xs.eq(x), w.eq(word), valid2.eq(valid1), first2.eq(first1),
                         last2.eq(last1), pad2.eq(pad1)]
        # A window word outside the map is the pad value: per bit a function of pad2, the
        # stored bit and the weight bit, which the XNOR's LUT absorbs.
        pad_word = Const((1 << p.i_width) - 1 if p.pad_bit else 0, p.i_width)
        xin = Mux(pad2, pad_word, xs) if p.geometry[5] else xs

        sums = []
        for i in range(pe):
            tree = Popcount(simd, levels_per_stage=p.levels_per_stage, fanin=3)
            assert tree.latency == p.tree_latency
            m.submodules[f"pe{i}"] = tree
            m.d.comb += [tree.i_data.eq(~(xin ^ w[i * simd:(i + 1) * simd])), tree.en.eq(en)]
            sums.append(tree.o_data)
        flags = Cat(valid2, first2, last2)
        for k in range(p.tree_latency):
            delayed = Signal(3, name=f"flags{k + 3}")
            with m.If(en):
                m.d.sync += delayed.eq(flags)
            flags = delayed
        valid_l, first_l, last_l = flags[0], flags[1], flags[2]
        accs = [Signal(p.acc_shape, name=f"acc{i}") for i in range(pe)]
        with m.If(en):
            m.d.sync += acc_out.valid.eq(valid_l & last_l)
            with m.If(valid_l):
                for acc, s in zip(accs, sums):
                    m.d.sync += acc.eq(Mux(first_l, 0, acc) + s)
        m.d.comb += acc_out.payload.eq(Cat(*accs))

        # Results in compute order (tile, pixel, nf).
        res = stream.Signature(p.o_width).create(path=("res",))
        if p.is_scores:
            scores = [Signal(p.score_shape, name=f"score{i}") for i in range(pe)]
            m.d.comb += [s.eq((acc << 1) - Const(p.cols)) for s, acc in zip(scores, accs)]
            m.d.comb += [res.payload.eq(Cat(*scores)), res.valid.eq(acc_out.valid),
                         acc_out.ready.eq(res.ready)]
        else:
            m.submodules.threshold = th = Threshold(p.threshold_params)
            wiring.connect(m, acc_out, th.i_stream)
            m.d.comb += [res.payload.eq(th.o_stream.payload), res.valid.eq(th.o_stream.valid),
                         th.o_stream.ready.eq(res.ready)]
        if p.runtime_writable:
            if not p.is_scores:
                wiring.connect(m, wiring.flipped(self.cfg), th.cfg)
            else:  # nothing to write: beats are taken and ignored, as for any other sel
                m.d.comb += self.cfg.ready.eq(1)
        if tiles == 1:
            m.d.comb += [self.o_stream.payload.eq(res.payload),
                         self.o_stream.valid.eq(res.valid), res.ready.eq(self.o_stream.ready)]
        else:
            self._reorder_buffer(m, p, res)
        return m

    def _input_buffer(self, m, p, en, fire, ends):
        """Two banks of one image's input (:attr:`TiledMVTUParams.in_beats` words each).
        Images are numbered modulo 4 on both sides (``wp`` written, ``rp`` computed; ``wp -
        rp`` is 0, 1 or 2). Returns (an image is stored and may be computed, the stage-1
        input word, whether the current step's word lies outside the map)."""
        depth = p.in_beats
        waddr = Signal(range(depth))
        wp, rp, ahead = Signal(2), Signal(2), Signal(2)
        m.d.comb += [ahead.eq(wp - rp), self.i_stream.ready.eq(ahead != 2)]
        accept = self.i_stream.valid & self.i_stream.ready
        with m.If(accept):
            m.d.sync += waddr.eq(waddr + 1)
            with m.If(waddr == depth - 1):
                m.d.sync += [waddr.eq(0), wp.eq(wp + 1)]
        with m.If(fire & ends["image"]):
            m.d.sync += rp.eq(rp + 1)

        m.submodules.input_buffer = buf = Memory(shape=p.i_width, depth=2 * depth, init=[])
        wr, rd = buf.write_port(), buf.read_port()
        addr, pad = self._read_address(m, p, fire, ends, rp[0])
        m.d.comb += [wr.addr.eq(Mux(wp[0], depth + waddr, waddr)),
                     wr.data.eq(self.i_stream.payload), wr.en.eq(accept),
                     rd.addr.eq(addr[:len(rd.addr)]), rd.en.eq(en)]
        return ahead != 0, rd.data, pad

    def window_origin(self, p) -> tuple[int, int]:
        """Row and column of the first output pixel's window, ``(-P, -P)`` (a method so
        that a test can plant a fault here)."""
        pad = p.geometry[5]
        return -pad, -pad

    def _read_address(self, m, p, fire, ends, bank):
        """The input-buffer address of the current step's word, a register: word ``c`` of
        map pixel ``(iy, ix) = (oy * S - P + ky, ox * S - P + kx)`` of bank ``bank`` is
        ``bank * D + (iy * W + ix) * CF + c``. It advances by constants only: ``+ 1``
        within a window row (``c`` and then ``kx``), the next window row (``+ W * CF``),
        back to the pixel's window origin for the next ``nf``, and the next pixel's origin
        (``+ S * CF``, ``+ (S * W - (OW - 1) * S) * CF`` to the next output row, the
        bank's first origin for the next tile or image). With padding the window position
        ``(iy, ix)`` is tracked the same way and the step is a pad where it lies outside
        the map. Returns (address, may lie outside ``0 .. 2D`` on a pad; pad flag)."""
        h, w, cf, _, s, pad, ow, depth = (*p.geometry[:6], p.geometry[7], p.in_beats)
        row_words = w * cf
        y0, x0 = self.window_origin(p)
        origin = (y0 * w + x0) * cf
        lo, hi = min(origin, 0), 2 * depth + (pad + 1) * (row_words + cf)
        pix = Signal(range(lo, hi), init=origin, name="pix_addr")   # window origin
        row = Signal(range(lo, hi), init=origin, name="row_addr")   # window row start
        addr = Signal(range(lo, hi), init=origin, name="read_addr")
        pix_next = Signal.like(pix, name="pix_addr_next")
        with m.If(ends["image"]):
            m.d.comb += pix_next.eq(Mux(bank, origin, depth + origin))
        with m.Elif(ends["tile"]):
            m.d.comb += pix_next.eq(Mux(bank, depth + origin, origin))
        with m.Elif(ends["ox"]):
            m.d.comb += pix_next.eq(pix + (s * w - (ow - 1) * s) * cf)
        with m.Else():
            m.d.comb += pix_next.eq(pix + s * cf)
        with m.If(fire):
            with m.If(ends["pixel"]):
                m.d.sync += [pix.eq(pix_next), row.eq(pix_next), addr.eq(pix_next)]
            with m.Elif(ends["sf"]):
                m.d.sync += [row.eq(pix), addr.eq(pix)]
            with m.Elif(ends["row"]):
                m.d.sync += [row.eq(row + row_words), addr.eq(row + row_words)]
            with m.Else():
                m.d.sync += addr.eq(addr + 1)
        if not pad:
            return addr, Const(0)

        # Window position: (iy0, ix0) the pixel's origin, (iy, ix) the current word's pixel.
        span = range(-pad - 1, max(h, w) + pad + 1)
        iy0, ix0 = Signal(span, init=y0, name="iy0"), Signal(span, init=x0, name="ix0")
        iy, ix = Signal(span, init=y0, name="iy"), Signal(span, init=x0, name="ix")
        iy0_next, ix0_next = Signal.like(iy0), Signal.like(ix0)
        m.d.comb += [ix0_next.eq(Mux(ends["ox"], x0, ix0 + s)),
                     iy0_next.eq(Mux(ends["tile"], y0, Mux(ends["ox"], iy0 + s, iy0)))]
        with m.If(fire):
            with m.If(ends["pixel"]):
                m.d.sync += [iy0.eq(iy0_next), ix0.eq(ix0_next), iy.eq(iy0_next),
                             ix.eq(ix0_next)]
            with m.Elif(ends["sf"]):
                m.d.sync += [iy.eq(iy0), ix.eq(ix0)]
            with m.Elif(ends["row"]):
                m.d.sync += [iy.eq(iy + 1), ix.eq(ix0)]
            with m.Elif(ends["pixel_word"]):
                m.d.sync += ix.eq(ix + 1)
        return addr, (iy < 0) | (iy >= h) | (ix < 0) | (ix >= w)

    def _tile_buffer(self, m, p, en, fire, pixel_end, tile_end):
        """Two banks of one tile's lines, filled from DRAM. Tiles are numbered modulo 4:
        ``it`` whose commands are issued, ``dt`` whose words have all arrived, ``ct``
        computed; the loader issues a tile while ``it - ct < 2`` (its bank is free).
        Returns (a tile is loaded, the stage-1 line, the step's slot in its line)."""
        lines, k = p.tile_lines, p.line_words
        cmd, rdata = self.dram.cmd, self.dram.rdata
        it, dt, ct = Signal(2), Signal(2), Signal(2)

        # Command side: the layer's words in order, wrapping at its end.
        addr = Signal(p.addr_width, init=p.base_addr)
        cmd_i = Signal(range(p.tile_dram_words))
        issued_ahead = Signal(2)
        m.d.comb += [issued_ahead.eq(it - ct), cmd.valid.eq(issued_ahead != 2),
                     cmd.payload.eq(addr)]
        with m.If(cmd.valid & cmd.ready):
            m.d.sync += [addr.eq(Mux(addr == p.base_addr + p.dram_words - 1, p.base_addr,
                                     addr + 1)),
                         cmd_i.eq(cmd_i + 1)]
            with m.If(cmd_i == p.tile_dram_words - 1):
                m.d.sync += [cmd_i.eq(0), it.eq(it + 1)]

        # Data side: gather a line's k words (word 0 lowest), write it into bank dt % 2.
        m.submodules.tile_buffer = buf = Memory(shape=p.line_width, depth=2 * lines, init=[])
        wr, rd = buf.write_port(), buf.read_port()
        got = rdata.valid & rdata.ready
        line = Signal(range(lines))
        m.d.comb += rdata.ready.eq(1)
        if k == 1:
            line_done = got
            m.d.comb += wr.data.eq(rdata.payload)
        else:
            part = Signal(range(k))
            held = Signal((k - 1) * DRAM_WORD_BITS, name="line_parts")
            line_done = got & (part == k - 1)
            with m.If(got):
                m.d.sync += [held.eq(Cat(held[DRAM_WORD_BITS:], rdata.payload)),
                             part.eq(Mux(part == k - 1, 0, part + 1))]
            m.d.comb += wr.data.eq(Cat(held, rdata.payload))
        m.d.comb += [wr.addr.eq(Mux(dt[0], lines, 0) + line), wr.en.eq(line_done)]
        with m.If(line_done):
            m.d.sync += line.eq(line + 1)
            with m.If(line == lines - 1):
                m.d.sync += [line.eq(0), dt.eq(dt + 1)]

        # Compute side: the step's word j = nf * SF + sf of the tile is slot j % m of line
        # j // m; both counters restart with every pixel.
        rline, slot = Signal(range(lines)), Signal(range(p.line_slots))
        with m.If(fire):
            if p.line_slots > 1:
                m.d.sync += slot.eq(slot + 1)
                with m.If(slot == p.line_slots - 1):
                    m.d.sync += [slot.eq(0), rline.eq(rline + 1)]
            else:
                m.d.sync += rline.eq(rline + 1)
            with m.If(pixel_end):
                m.d.sync += [slot.eq(0), rline.eq(0)]
            with m.If(tile_end):
                m.d.sync += ct.eq(ct + 1)
        m.d.comb += [rd.addr.eq(Mux(ct[0], lines, 0) + rline), rd.en.eq(en)]
        return dt != ct, rd.data, slot

    def reorder_address(self, m, pixel_base, nf):
        """Reorder-buffer address of a result: ``pixel_base + nf``, ``pixel_base = p * NF +
        t * TNF`` (a method so that a test can plant a fault here)."""
        return pixel_base + nf

    def _reorder_buffer(self, m, p, res):
        """Two banks of ``P * NF`` results; images numbered modulo 4 (``ow`` written,
        ``orr`` read out)."""
        depth, tnf = p.pixels * p.nf, p.tile_nf
        ow, orr, ahead = Signal(2), Signal(2), Signal(2)
        m.d.comb += ahead.eq(ow - orr)
        # Write side, in compute order (tile, pixel, nf).
        nf, px, tl = Signal(range(tnf)), Signal(range(p.pixels)), Signal(range(p.tiles))
        tile_base, pixel_base = Signal(range(depth)), Signal(range(depth + p.nf))
        m.d.comb += res.ready.eq(ahead != 2)
        put = res.valid & res.ready
        with m.If(put):
            m.d.sync += nf.eq(nf + 1)
            with m.If(nf == tnf - 1):
                m.d.sync += [nf.eq(0), px.eq(px + 1), pixel_base.eq(pixel_base + p.nf)]
                with m.If(px == p.pixels - 1):
                    m.d.sync += [px.eq(0), tl.eq(tl + 1), tile_base.eq(tile_base + tnf),
                                 pixel_base.eq(tile_base + tnf)]
                    with m.If(tl == p.tiles - 1):
                        m.d.sync += [tl.eq(0), tile_base.eq(0), pixel_base.eq(0),
                                     ow.eq(ow + 1)]
        m.submodules.reorder_buffer = buf = Memory(shape=p.o_width, depth=2 * depth, init=[])
        wr, rd = buf.write_port(), buf.read_port()
        m.d.comb += [wr.addr.eq(Mux(ow[0], depth, 0) + self.reorder_address(m, pixel_base, nf)),
                     wr.data.eq(res.payload), wr.en.eq(put)]
        # Read side: a complete image, in order; the read port's data is the output beat
        # (held while en is low, so the payload stays while the beat waits).
        raddr = Signal(range(depth))
        advance = ~self.o_stream.valid | self.o_stream.ready
        issue = advance & (ahead != 0)
        with m.If(advance):
            m.d.sync += self.o_stream.valid.eq(issue)
        with m.If(issue):
            m.d.sync += raddr.eq(raddr + 1)
            with m.If(raddr == depth - 1):
                m.d.sync += [raddr.eq(0), orr.eq(orr + 1)]
        m.d.comb += [rd.addr.eq(Mux(orr[0], depth, 0) + raddr), rd.en.eq(advance),
                     self.o_stream.payload.eq(rd.data)]
