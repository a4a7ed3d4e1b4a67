"""Matrix-vector-threshold unit (MVTU): ``R x C`` binary weights folded on ``pe x simd``.

Stream contract (``NF = R / pe`` neuron folds, ``SF = C / simd`` synapse folds):

- input, per output pixel: ``SF`` beats of ``simd`` elements (the sliding window's output,
  or the flat feature vector of a dense layer), element ``i`` at bits ``[i * E, (i + 1) *
  E)``; ``E`` is 1 for binary inputs, 8 for uint8 pixels;
- output, per pixel: ``NF`` beats of ``pe`` results, lane ``i`` of beat ``nf`` is channel
  ``nf * pe + i``: one bit ``acc >= T[cls][channel]`` for a threshold layer, a 2-bit code
  ``sum_k (acc >= T[cls][channel][k])`` for a layer with three thresholds per channel
  (``rtl_gen.threshold``; lane ``i`` at bits ``[2i, 2i + 2)``), or the signed score
  (``score_shape``, two's complement) for the last layer;
- accumulator: binary inputs ``acc = popcount(xnor(x, w))`` over all ``C`` columns (score
  ``2 * acc - C``); uint8 inputs ``acc = sum x * (2w - 1)`` (the score is ``acc``);
- border class ``cls = row_class[oy] * NX + col_class[ox]`` over the ``OH x OW = P``
  output pixels (row-major), one class by default. Images follow each other back to back.

Datapath (FINN's MVAU): the input vector of a pixel is used ``NF`` times; the unit does one
``(nf, sf)`` step per cycle. Each step, every PE XNORs ``simd`` inputs with its weights
(``rtl_gen.weight_memory``, word ``nf * SF + sf``) and counts them with a compressor-tree
popcount (``rtl_gen.popcount``). uint8 inputs use no multiplier: ``sum x * (2w - 1) = 2 *
sum(w ? x : 0) - sum(x)``, two operand-sum trees of gated pixels (the ``sum(x)`` tree is
shared by all PEs). Accumulation runs across the ``SF`` steps; the threshold unit
(``rtl_gen.threshold``) compares.

Input buffering. With ``NF == 1`` each beat is used once and streams straight through, in
step with ``i_stream``. With ``NF > 1`` the input goes through a ping-pong buffer of two
banks of ``SF`` words: the write side stores a pixel's beats in one bank as they arrive
while the steps replay the previous pixel from the other bank, so input arrival and
compute overlap. The write side runs at most one pixel ahead (it waits while both banks
hold beats still needed); a step reads its beat from the buffer once it is stored, so
when the unit waits for its input the steps follow the arriving beats one cycle behind.
The two sides meet only through registers: no combinational path links ``i_stream`` to
the compute pipeline. The buffer's and the weight memory's read data are registered once
more before the XNORs (stage 2), so no block RAM output drives logic in the same cycle.

Cycle model: at steady state a pixel takes ``max(A, NF * SF)`` cycles, ``A`` being the
cycles its ``SF`` input beats take to arrive (``SF`` at full rate): ``cycles_per_image =
P * NF * SF`` when the input keeps up (``A <= NF * SF``), ``P * A`` when it is the
bottleneck; never the sum of the two.

Backpressure: every pipeline register has one clock enable, ``~acc_valid | acc_ready``,
so the whole pipeline stalls while its last stage holds a result nobody takes; no beat is
lost or duplicated. With ``NF == 1``, ``i_stream.ready`` follows ``o_stream.ready``
combinationally (through that enable); with ``NF > 1`` it comes from registers (low only
while both banks are full) and the buffer keeps accepting beats while the output stalls.

Latency (no stalls): a pixel's first output beat can be taken ``latency`` cycles
(``MVTUParams.latency``) after the edge that accepts its last input beat, when the unit
waits for its input (a slow input, or an idle unit): the input register (the buffer's
write and read with ``NF > 1``, one cycle more), the register after the memories, the
trees, the accumulator and the threshold unit's register. A pixel whose beats arrived
early, while the previous pixel was still being computed, starts when that pixel's last
step is done and its first output beat comes ``latency - 1`` cycles after its step
``(nf, sf) = (0, SF - 1)``.

Run-time weights (``runtime_writable``): a ``cfg`` stream writes the weight memory
(``sel`` 0, words of ``matrix_words``) and the threshold memory (``sel`` 1, words of
:meth:`MVTUParams.threshold_words`); format in ``rtl_gen.weight_memory``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory

from bnnhw import numerics as nx
from bnnhw.packing import fold_counts, matrix_words
from bnnhw.validate import ParameterError, bit_array, choice, positive_fields

from .block import StreamBlock, paced, range_shape
from .popcount import OperandSum, Popcount, tree_latency
from .threshold import Threshold, ThresholdParams, check_classes
from .weight_memory import FoldedMemory, FoldedMemoryParams, MemSel

__all__ = ["MVTU", "FoldedMatrix", "MVTUParams", "MatrixShape"]


class MatrixShape:
    """The folding figures every matrix unit (this MVTU, ``rtl_gen.gated_mvtu``,
    ``rtl_gen.tiled_mvtu``) derives from its dataclass's ``rows``, ``cols``, ``pe``,
    ``simd``, ``input_kind``, ``thresholds`` and ``levels_per_stage``; a unit with another
    arithmetic overrides what differs."""

    @property
    def nf(self) -> int:
        """Neuron folds: output beats per pixel, ``rows / pe``."""
        return self.rows // self.pe

    @property
    def sf(self) -> int:
        """Synapse folds: input beats per pixel, ``cols / simd``."""
        return self.cols // self.simd

    @property
    def elem_width(self) -> int:
        """Bits per input element."""
        return nx.ELEMENT_BITS[self.input_kind]

    @property
    def is_scores(self) -> bool:
        """Whether this is a last layer (signed scores, no thresholds)."""
        return self.thresholds is None

    @property
    def acc_range(self) -> tuple[int, int]:
        """Smallest and largest accumulator value."""
        return nx.acc_range(self.input_kind, self.cols)

    @property
    def acc_shape(self):
        return range_shape(*self.acc_range)

    @property
    def score_shape(self):
        """Shape of one score lane of the last layer: ``2 * acc - C`` for binary inputs."""
        return range_shape(*nx.dot_range(self.input_kind, self.cols))

    @property
    def i_width(self) -> int:
        """Input beat width: ``simd`` elements."""
        return self.simd * self.elem_width

    @property
    def tree_latency(self) -> int:
        """Pipeline stages of the popcount (or operand-sum) trees."""
        return tree_latency(self.simd, self.elem_width, self.levels_per_stage, 3)


class FoldedMatrix(MatrixShape):
    """What every matrix unit built on the MVTU's folded weight words shares (this MVTU and
    ``rtl_gen.gated_mvtu``): the weight memory, the threshold unit on ``acc_range`` and the
    ``cfg`` words of both. Its dataclass provides ``name``, ``rows``, ``pe``, ``simd``,
    ``weights``, ``thresholds``, ``pixels``, the border classes, ``runtime_writable`` and
    ``acc_range``."""

    @property
    def weight_memory(self) -> FoldedMemoryParams:
        return FoldedMemoryParams(width=self.pe * self.simd,
                                  init=tuple(matrix_words(self.weights, self.pe, self.simd)),
                                  sel=MemSel.WEIGHTS, writable=self.runtime_writable,
                                  name=f"{self.name}.weights")

    @property
    def threshold_params(self) -> ThresholdParams | None:
        """The threshold unit's parameters (``None`` for the last layer)."""
        if self.thresholds is None:
            return None
        lo, hi = self.acc_range
        return ThresholdParams(name=self.name, channels=self.rows, pe=self.pe, acc_min=lo,
                               acc_max=hi, thresholds=self.thresholds, pixels=self.pixels,
                               row_class=self.row_class, col_class=self.col_class,
                               runtime_writable=self.runtime_writable)

    def weight_words(self, weights=None) -> list[int]:
        """Weight memory words of ``weights`` (default: this unit's), for ``cfg_beats``."""
        w = self.weights if weights is None else np.asarray(weights)
        if w.shape != self.weights.shape:
            raise ValueError(f"{self.name}: weights must have shape {self.weights.shape}, "
                             f"not {w.shape}")
        return matrix_words(w, self.pe, self.simd)

    def threshold_words(self, thresholds=None) -> list[int]:
        """Threshold memory words (clamped, folded), for ``cfg_beats``."""
        if self.thresholds is None:
            raise ValueError(f"{self.name}: the last layer has no thresholds")
        return self.threshold_params.threshold_words(thresholds)


@dataclass(frozen=True, eq=False, kw_only=True)
class MVTUParams(FoldedMatrix):
    """One matrix-vector-threshold unit (see the module docstring).

    ``weights`` is ``[rows, cols]`` bits; ``thresholds`` ``int[NY, NX, rows]`` (1-bit
    outputs), ``int[NY, NX, rows, 3]`` (2-bit codes: three ascending thresholds per
    channel), or ``None`` for the last (scores) layer; ``pixels`` output pixels per image with border classes
    ``row_class[OH]``/``col_class[OW]`` (``OH * OW == pixels``; default one class);
    ``levels_per_stage`` compressor levels between pipeline registers of the popcount.
    """

    name: str
    rows: int
    cols: int
    pe: int
    simd: int
    weights: np.ndarray
    input_kind: str = "binary"
    pixels: int = 1
    thresholds: np.ndarray | None = None
    row_class: np.ndarray | None = None
    col_class: np.ndarray | None = None
    runtime_writable: bool = False
    levels_per_stage: int = 2

    def __post_init__(self):
        n = self.name
        if not isinstance(n, str) or not n:
            raise ParameterError(f"MVTU name must be a non-empty string, not {n!r}")
        positive_fields(n, self, "rows", "cols", "pe", "simd", "pixels", "levels_per_stage")
        fold_counts(self.rows, self.cols, self.pe, self.simd, n)
        # frac2 inputs go to the precision-gated unit (rtl_gen.gated_mvtu)
        choice(n, "input_kind", self.input_kind, ("binary", "uint8"))
        object.__setattr__(self, "weights", bit_array(n, "weights", self.weights,
                                                      shape=(self.rows, self.cols)))
        if self.thresholds is None:
            rc, cc = check_classes(n, self.pixels, self.row_class, self.col_class, 1, 1)
            object.__setattr__(self, "row_class", rc)
            object.__setattr__(self, "col_class", cc)
        else:
            tp = self.threshold_params  # validates thresholds and classes
            for what in ("thresholds", "row_class", "col_class"):
                object.__setattr__(self, what, getattr(tp, what))
        _ = self.weight_memory  # validates the memory size of a writable unit

    @property
    def out_bits(self) -> int:
        """Bits per output lane: 1 or 2 (``ThresholdParams.out_bits``), or the score width
        for the last layer."""
        return self.score_shape.width if self.is_scores else self.threshold_params.out_bits

    @property
    def o_width(self) -> int:
        """Output beat width: ``pe`` lanes of ``out_bits``."""
        return self.pe * self.out_bits

    @property
    def latency(self) -> int:
        """Cycles from the edge that accepts a pixel's last input beat to the first edge at
        which its first output beat can be taken, when the unit waits for that beat (no
        stalls; see the module docstring): the input register, one more cycle through the
        input buffer when ``NF > 1``, the register after the memories, the trees, the
        accumulator, and the threshold unit's register."""
        return (2 + self.tree_latency + 1 + (0 if self.is_scores else 1)
                + (1 if self.nf > 1 else 0))

    @property
    def cycles_per_image(self) -> int:
        """``P * NF * SF``: one ``(nf, sf)`` step per cycle (docs/architecture.md, "Cycle
        model"), with an input
        that delivers a pixel's ``SF`` beats within ``NF * SF`` cycles; a slower input sets
        the pace instead (``P`` times its arrival time per pixel)."""
        return self.pixels * self.nf * self.sf

    def beat_times(self, t_in):
        """Output beats of one image from its input beats' edges (``rtl_gen.block``): one
        step per cycle, a pixel's step ``(0, sf)`` once its beat is there (the edge that
        accepts it with ``NF == 1``, one later through the buffer), its output beat ``nf``
        ``latency`` cycles after step ``(nf, SF - 1)`` less the buffer's cycle."""
        t_in = np.asarray(t_in, dtype=np.int64).reshape(self.pixels, self.sf)
        buffered = self.nf > 1
        avail = np.full((self.pixels, self.nf, self.sf), np.iinfo(np.int64).min // 2)
        avail[:, 0, :] = t_in + (1 if buffered else 0)
        steps = paced(avail.reshape(-1)).reshape(self.pixels, self.nf, self.sf)
        return steps[:, :, -1].reshape(-1) + self.latency - (1 if buffered else 0)

    @property
    def input_buffer_words(self) -> int:
        """Words of ``simd * E`` bits in the input buffer: ``2 * SF`` (two banks) when
        ``NF > 1``, none when the input streams through."""
        return 2 * self.sf if self.nf > 1 else 0


class MVTU(StreamBlock):
    """Matrix-vector-threshold unit (see the module docstring).

    Ports: ``i_stream`` (``simd * E`` bits), ``o_stream`` (``pe * out_bits`` bits: 1 or 2
    per lane, or ``score_shape.width`` for the last layer) and, when ``runtime_writable``, ``cfg``
    (64-bit configuration beats, always ready).
    """

    Params = MVTUParams

    def elaborate(self, platform):
        m = Module()
        p = self.params
        pe, simd, nf_count, sf_count = p.pe, p.simd, p.nf, p.sf
        ew = p.elem_width

        m.submodules.weights = wmem = FoldedMemory(p.weight_memory)
        acc_out = stream.Signature(pe * p.acc_shape.width).create(path=("acc",))
        en = Signal()  # clock enable of the whole pipeline
        m.d.comb += en.eq(~acc_out.valid | acc_out.ready)

        # Stage 0: step counters. A step (nf, sf) fires when the pipeline moves (en) and
        # its input beat is there.
        sf = Signal(range(sf_count))
        nf = Signal(range(nf_count))
        step = Signal(range(nf_count * sf_count))
        available = Signal()
        fire = Signal()
        last_step = (sf == sf_count - 1) & (nf == nf_count - 1)
        m.d.comb += [fire.eq(en & available), wmem.rd.addr.eq(step), wmem.rd.en.eq(en)]
        with m.If(fire):
            m.d.sync += [sf.eq(sf + 1), step.eq(step + 1)]
            with m.If(sf == sf_count - 1):
                m.d.sync += [sf.eq(0), nf.eq(nf + 1)]
                with m.If(nf == nf_count - 1):
                    m.d.sync += [nf.eq(0), step.eq(0)]

        # Stage 1: input vector and weight word of the step.
        valid1, first1, last1 = Signal(name="valid1"), Signal(name="first1"), Signal(name="last1")
        with m.If(en):
            m.d.sync += [valid1.eq(fire), first1.eq(sf == 0), last1.eq(sf == sf_count - 1)]
        if nf_count == 1:
            # Each beat is used once: stream straight through, in step with the input.
            x = Signal(p.i_width)
            with m.If(en):
                m.d.sync += x.eq(self.i_stream.payload)
            m.d.comb += [available.eq(self.i_stream.valid), self.i_stream.ready.eq(en)]
        else:
            x = self._input_buffer(m, p, en, fire, available, sf, last_step)
        # Stage 2: the input vector and the weight word registered again. A block RAM's
        # clock-to-output (about 6 ns on an ECP5 without its output register) cannot also
        # take the XNORs and the first compressor levels in one 10 ns cycle; this register
        # cuts that path, so the trees start from plain flip-flops.
        xs = Signal(p.i_width, name="x2")
        w = Signal(p.pe * simd, name="w2")
        valid2, first2, last2 = Signal(name="valid2"), Signal(name="first2"), Signal(name="last2")
        with m.If(en):
            m.d.sync += [xs.eq(x), w.eq(wmem.rd.data),
                         valid2.eq(valid1), first2.eq(first1), last2.eq(last1)]

        # Stage 2 .. 2 + L: one tree per PE (plus the shared sum(x) tree for uint8).
        sums = []
        for i in range(pe):
            wi = w[i * simd:(i + 1) * simd]
            if p.input_kind == "binary":
                tree = Popcount(simd, levels_per_stage=p.levels_per_stage, fanin=3)
                m.d.comb += tree.i_data.eq(~(xs ^ wi))
            else:
                tree = OperandSum(simd, ew, levels_per_stage=p.levels_per_stage, fanin=3)
                gated = [xs[j * ew:(j + 1) * ew] & wi[j].replicate(ew) for j in range(simd)]
                m.d.comb += tree.i_data.eq(Cat(*gated))
            assert tree.latency == p.tree_latency
            m.submodules[f"pe{i}"] = tree
            m.d.comb += tree.en.eq(en)
            sums.append(tree.o_data)
        if p.input_kind == "uint8":
            m.submodules.xsum = xsum = OperandSum(simd, ew, levels_per_stage=p.levels_per_stage,
                                                  fanin=3)
            assert xsum.latency == p.tree_latency
            m.d.comb += [xsum.en.eq(en), xsum.i_data.eq(xs)]
            sums = [(s << 1) - xsum.o_data for s in sums]

        flags = Cat(valid2, first2, last2)
        for k in range(p.tree_latency):
            delayed = Signal(3, name=f"flags{k + 3}")
            with m.If(en):
                m.d.sync += delayed.eq(flags)
            flags = delayed
        valid_l, first_l, last_l = flags[0], flags[1], flags[2]

        # Accumulate across the SF steps; the accumulators are the output register.
        accs = [Signal(p.acc_shape, name=f"acc{i}") for i in range(pe)]
        with m.If(en):
            m.d.sync += acc_out.valid.eq(valid_l & last_l)
            with m.If(valid_l):
                for acc, s in zip(accs, sums):
                    m.d.sync += acc.eq(Mux(first_l, 0, acc) + s)
        m.d.comb += acc_out.payload.eq(Cat(*accs))

        if p.is_scores:
            scores = []
            for acc in accs:
                score = Signal(p.score_shape)
                if p.input_kind == "binary":
                    m.d.comb += score.eq((acc << 1) - Const(p.cols))
                else:
                    m.d.comb += score.eq(acc)
                scores.append(score)
            m.d.comb += [self.o_stream.payload.eq(Cat(*scores)),
                         self.o_stream.valid.eq(acc_out.valid),
                         acc_out.ready.eq(self.o_stream.ready)]
        else:
            m.submodules.threshold = th = Threshold(p.threshold_params)
            wiring.connect(m, acc_out, th.i_stream)
            wiring.connect(m, th.o_stream, wiring.flipped(self.o_stream))

        if p.runtime_writable:
            targets = [wmem.cfg] + ([] if p.is_scores else [th.cfg])
            for t in targets:  # every memory is always ready: plain fan-out
                m.d.comb += [t.payload.eq(self.cfg.payload), t.valid.eq(self.cfg.valid)]
            m.d.comb += self.cfg.ready.eq(1)
        return m

    def _input_buffer(self, m, p, en, fire, available, sf, last_step):
        """Ping-pong input buffer of two banks of ``SF`` words (see the module docstring).

        Pixels are numbered modulo 4 on both sides: ``wp`` is the pixel the write side is
        filling (bank ``wp % 2``), ``rp`` the one the steps read (bank ``rp % 2``). The
        writer may run one pixel ahead (``wp - rp`` is 0, 1 or 2; 2 means both banks hold
        beats still needed). Returns the stage-1 input vector, straight from the buffer's
        read port (stage 2 registers it before the XNORs)."""
        sf_count = p.sf
        wsf = Signal(range(sf_count))
        wp, rp = Signal(2), Signal(2)
        ahead = Signal(2)
        m.d.comb += [ahead.eq(wp - rp), self.i_stream.ready.eq(ahead != 2)]
        accept = self.i_stream.valid & self.i_stream.ready
        with m.If(accept):
            m.d.sync += wsf.eq(wsf + 1)
            with m.If(wsf == sf_count - 1):
                m.d.sync += [wsf.eq(0), wp.eq(wp + 1)]
        with m.If(fire & last_step):
            m.d.sync += rp.eq(rp + 1)
        # On the same pixel the steps never overtake the writer (sf <= wsf): beat sf is
        # stored once wsf has moved past it. Only registers decide, so the steps follow a
        # waited-for beat one cycle after it is accepted.
        m.d.comb += available.eq((ahead != 0) | (sf != wsf))

        def addr(bank, index):
            return Mux(bank, sf_count + index, index)

        m.submodules.input_buffer = buf = Memory(shape=p.i_width, depth=2 * sf_count, init=[])
        wr, rd = buf.write_port(), buf.read_port()
        m.d.comb += [wr.addr.eq(addr(wp[0], wsf)), wr.data.eq(self.i_stream.payload),
                     wr.en.eq(accept), rd.addr.eq(addr(rp[0], sf)), rd.en.eq(en)]
        return rd.data
