"""Precision-gated matrix engine: a matrix layer on 2-bit ("frac2") inputs whose LSB plane
is computed only for the neuron folds that need it.

Semantics (``R x N`` binary weights ``w``, input codes ``q = 2m + l``):
``pc_m = popcount(xnor(m, w))``, ``pc_l = popcount(xnor(l, w))``, gate ``g = (pc_m >= G[r])
XOR inv[r]`` and ``acc = 2 * (2 pc_m - N) + g * (2 pc_l - N)`` (``-3N .. 3N``); a threshold
layer compares ``acc`` (``rtl_gen.threshold``), the classifier outputs it as its score.

Stream contract (``NF = R / pe``, ``SF = N / simd``): per output pixel ``SF`` input beats
of ``simd`` codes (element ``i`` at bits ``[2i, 2i + 2)``, the LSB plane bit at ``2i``,
the MSB plane bit at ``2i + 1``), and ``NF`` output beats of ``pe`` lanes, exactly as the
MVTU's: the threshold unit's output, or ``pe`` signed scores. Images follow each other.

Datapath. One set of ``pe`` popcount trees and one weight memory (the MVTU's words,
``nf * SF + sf``) serve both planes: a step ``(kind, nf, sf)`` reads weight word ``nf * SF
+ sf`` and input word ``sf`` of a pixel's buffer bank, takes the MSB or the LSB bits of
it, and counts the XNOR in the trees. Two accumulators (MSB and LSB) sum a group's ``SF``
steps. When a group's MSB sum is complete its gates are computed against the gate memory
(word ``nf``: per lane ``G`` and the invert bit, run-time writable with
``MemSel.GATES``); the result ``(pc_m, g)`` enters the MSB result FIFO and, if any lane
is gated, a work item ``(bank, nf)`` enters the LSB queue. LSB sums enter the LSB result
FIFO. The combiner takes the MSB results in order, with the LSB result of the gated ones
(they complete in the same order), computes ``acc`` and loads it into the output register
(scores) or the threshold unit.

Schedule: one step per cycle. An LSB step of the queue's head item when there is one
(priority), else the next MSB step ``(pixel, nf, sf)`` when its input beat is stored and,
for ``sf == 0``, a result slot is free. ``credits`` slots bound the groups between their
first MSB step and their combination, so neither result FIFO nor the queue can overflow
and the pipeline never stalls; output backpressure only holds the combiner, which holds
the slots, which stops new MSB groups.

Input buffer: ``banks`` banks of ``SF`` words of ``2 * simd`` bits; the write side fills
a pixel's bank while one is free (``i_stream.ready`` from registers), a bank is freed when
the pixel's last group is combined. ``banks`` and ``credits`` are sized
(:attr:`GatedMVTUParams.banks`, :attr:`GatedMVTUParams.credits`) so that with the input
always valid and the output always ready no cycle is lost: from the first step to the
last MSB step a step issues on every cycle, so images take ``P * SF * (NF + G)`` cycles
each (``G`` the gated groups per pixel, averaged over the image), at most
:attr:`GatedMVTUParams.cycles_per_image` (every group gated), plus the pipeline's fill and
drain once. The LSB items interleave with the MSB steps with a period of their own, so the
distance between the last beats of two images can vary around that figure; the sum over
the images does not.

Timing of a step issued in cycle ``s`` (cycle ``t`` ends with clock edge ``t``): memory
read at edge ``s``, plane select into a register at ``s + 1``, the trees (``L`` stages),
the accumulator at edge ``s + 2 + L``; a group completed by its MSB step at ``s`` is gated
in cycle ``s + 3 + L`` and seen by the scheduler and the combiner from ``s + 4 + L``; the
LSB result of a last LSB step at ``s`` from ``s + 4 + L``; a group combined in cycle ``c``
leaves at edge ``c + 1`` (scores) or ``c + 2`` (threshold). :meth:`GatedMVTUParams.
beat_times` replays this schedule exactly.

``stats`` adds an output ``stats`` (``msb_steps``, ``lsb_steps``: 32-bit counters of the
steps issued since reset, wrapping).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

from bnnhw.folding import gated_buffers, gated_extra
from bnnhw.packing import fold_counts, table_words
from bnnhw.validate import ParameterError, bit_array, flag, int_array, positive_fields

from .block import StreamBlock, output_register, range_shape
from .mvtu import FoldedMatrix
from .popcount import Popcount, tree_latency
from .threshold import Threshold, check_classes
from .weight_memory import FoldedMemory, FoldedMemoryParams, MemSel

__all__ = ["STATS_LAYOUT", "GatedMVTU", "GatedMVTUParams"]

STATS_LAYOUT = data.StructLayout({"msb_steps": 32, "lsb_steps": 32})
"""The ``stats`` output of a unit built with ``stats=True``."""


@dataclass(frozen=True, eq=False, kw_only=True)
class GatedMVTUParams(FoldedMatrix):
    """One precision-gated matrix unit (see the module docstring).

    ``weights`` ``[rows, cols]`` bits; ``gate_thresholds`` ``int[rows]`` in ``0..cols + 1``
    (compared with ``pc_m``), ``gate_invert`` ``bits[rows]``; ``thresholds`` ``None`` for
    the classifier (signed scores), else the threshold array of ``ThresholdParams`` (on
    ``acc``, ``-3N .. 3N``); ``pixels`` output pixels per image with border classes
    ``row_class``/``col_class``; ``stats`` adds the step counters.
    """

    name: str
    rows: int
    cols: int
    pe: int
    simd: int
    weights: np.ndarray
    gate_thresholds: np.ndarray
    gate_invert: np.ndarray | None = None
    pixels: int = 1
    thresholds: np.ndarray | None = None
    row_class: np.ndarray | None = None
    col_class: np.ndarray | None = None
    runtime_writable: bool = False
    levels_per_stage: int = 2
    stats: bool = False

    def __post_init__(self):
        n = self.name
        if not isinstance(n, str) or not n:
            raise ParameterError(f"gated MVTU name must be a non-empty string, not {n!r}")
        positive_fields(n, self, "rows", "cols", "pe", "simd", "pixels", "levels_per_stage")
        fold_counts(self.rows, self.cols, self.pe, self.simd, n)
        flag(n, "runtime_writable", self.runtime_writable)
        flag(n, "stats", self.stats)
        object.__setattr__(self, "weights", bit_array(n, "weights", self.weights,
                                                      shape=(self.rows, self.cols)))
        object.__setattr__(self, "gate_thresholds", int_array(
            n, "gate_thresholds", self.gate_thresholds, shape=(self.rows,), low=0,
            high=self.cols + 1))
        inv = np.zeros(self.rows, np.int64) if self.gate_invert is None else self.gate_invert
        object.__setattr__(self, "gate_invert", bit_array(n, "gate_invert", inv,
                                                          shape=(self.rows,)))
        if self.thresholds is None:
            rc, cc = check_classes(n, self.pixels, self.row_class, self.col_class, 1, 1)
            object.__setattr__(self, "row_class", rc)
            object.__setattr__(self, "col_class", cc)
        else:
            tp = self.threshold_params  # validates thresholds and classes
            for what in ("thresholds", "row_class", "col_class"):
                object.__setattr__(self, what, getattr(tp, what))
        _ = self.weight_memory, self.gate_memory  # validate the memory sizes

    # -- shape ---------------------------------------------------------------------------
    @property
    def elem_width(self) -> int:
        """Bits per input element: a 2-bit code."""
        return 2

    @property
    def count_shape(self):
        """Shape of one plane's popcount ``0 .. N``."""
        return range_shape(0, self.cols)

    @property
    def gate_shape(self):
        """Shape of one stored gate threshold ``0 .. N + 1``."""
        return range_shape(0, self.cols + 1)

    @property
    def acc_range(self) -> tuple[int, int]:
        """Smallest and largest ``acc``: ``-3N .. 3N``."""
        return -3 * self.cols, 3 * self.cols

    @property
    def score_shape(self):
        """Shape of one score lane of the classifier: ``acc`` itself."""
        return self.acc_shape

    @property
    def o_width(self) -> int:
        """Output beat width: the threshold unit's, or ``pe`` scores."""
        if self.is_scores:
            return self.pe * self.score_shape.width
        return self.threshold_params.o_width

    @property
    def tree_latency(self) -> int:
        """Pipeline stages of the popcount trees."""
        return tree_latency(self.simd, 1, self.levels_per_stage, 3)

    # -- buffering -----------------------------------------------------------------------
    @property
    def credits(self) -> int:
        """Result slots: groups between their first MSB step and their combination
        (``bnnhw.folding.gated_buffers``).

        Without stalls a group holds its slot until ``L + 5`` cycles after its final step
        (its last LSB step, or its last MSB step when ungated); the scheduler can only run
        out of work while the LSB queue is empty, when every held slot belongs to a group
        whose final step came within that window, whose MSB sum is still in the pipeline
        (``L + 4`` cycles), or whose MSB steps are under way. Counting a final step every
        ``SF`` cycles of each kind bounds these, plus a margin of three."""
        return gated_buffers(self.nf, self.sf, self.tree_latency)[0]

    @property
    def banks(self) -> int:
        """Input buffer banks (a power of two, ``bnnhw.folding.gated_buffers``): a pixel's
        bank is held from its first beat until its last group is combined, at most ``2 (L +
        5) + SF * credits`` cycles after its last MSB step; the banks cover that tail with
        pixels of ``NF * SF`` MSB steps each, plus the pixel being computed and the one
        being written."""
        return gated_buffers(self.nf, self.sf, self.tree_latency)[1]

    @property
    def input_buffer_words(self) -> int:
        """Words of ``2 * simd`` bits in the input buffer."""
        return self.banks * self.sf

    # -- memories ------------------------------------------------------------------------
    @property
    def gate_lane_width(self) -> int:
        """Bits of one lane of a gate memory word: ``G`` then the invert bit."""
        return self.gate_shape.width + 1

    @property
    def gate_memory(self) -> FoldedMemoryParams:
        """The gate memory: word ``nf``, lane ``i`` = ``G | inv << gate_shape.width``."""
        return FoldedMemoryParams(width=self.pe * self.gate_lane_width,
                                  init=tuple(self.gate_words()), sel=MemSel.GATES,
                                  writable=self.runtime_writable, name=f"{self.name}.gates")

    def gate_words(self, gate_thresholds=None, gate_invert=None) -> list[int]:
        """Gate memory words (default: this unit's gates), for ``cfg_beats(MemSel.GATES,
        words, gate_memory.width)``."""
        g = self.gate_thresholds if gate_thresholds is None else int_array(
            self.name, "gate_thresholds", gate_thresholds, shape=(self.rows,), low=0,
            high=self.cols + 1)
        inv = self.gate_invert if gate_invert is None else bit_array(
            self.name, "gate_invert", gate_invert, shape=(self.rows,))
        lanes = g.astype(np.int64) | (inv.astype(np.int64) << self.gate_shape.width)
        return table_words(lanes, self.pe, self.gate_lane_width)

    # -- cycle model ---------------------------------------------------------------------
    @property
    def latency(self) -> int:
        """Cycles from the edge accepting a pixel's last input beat to the edge at which
        its first output beat is taken, when the unit waited for that beat and its first
        group is gated (the worst case): ``2 L + SF + 9``, one more with thresholds. An
        ungated first group takes :attr:`latency_ungated`."""
        return 2 * self.tree_latency + self.sf + 9 + (0 if self.is_scores else 1)

    @property
    def latency_ungated(self) -> int:
        """:attr:`latency` when the pixel's first group is not gated: ``L + 6``, one more
        with thresholds."""
        return self.tree_latency + 6 + (0 if self.is_scores else 1)

    @property
    def cycles_per_image(self) -> int:
        """Worst case at steady state (every group gated): ``2 * P * NF * SF``."""
        return self.cycles_for_density(1.0)

    def cycles_for_density(self, d: float) -> int:
        """Cycles per image at steady state when a fraction ``d`` of the ``(pixel, nf)``
        groups is gated: ``P * SF * NF * (1 + d)``, rounded."""
        base = self.pixels * self.sf * self.nf
        return base + gated_extra(base, d)

    def beat_times(self, t_in, gated=None) -> np.ndarray:
        """Edges at which an always-ready consumer takes the output beats of one image,
        from the edges ``t_in`` at which the unit (idle before) accepted its input beats
        (``rtl_gen.block``); ``gated`` ``bool[pixels, NF]`` says which groups have a gate
        (default: all). Replays the schedule of the module docstring cycle by cycle."""
        p_count, nf_count, sf_count = self.pixels, self.nf, self.sf
        t_in = np.asarray(t_in, dtype=np.int64).reshape(p_count, sf_count)
        gated = (np.ones((p_count, nf_count), bool) if gated is None
                 else np.asarray(gated, dtype=bool).reshape(p_count, nf_count))
        ready_at = t_in + 1   # a beat accepted at edge e can be read from cycle e + 1
        seen = self.tree_latency + 4  # from a final step's cycle to its result being seen
        out_delay = 1 if self.is_scores else 2
        lsb_queue: deque[int] = deque()   # cycles from which each LSB item is seen
        msb_results: deque[tuple[int, bool]] = deque()
        lsb_results: deque[int] = deque()
        out = []
        pix = nf = sf = lsf = inflight = 0
        t = 0
        while len(out) < p_count * nf_count:
            taken = 0
            if lsb_queue and lsb_queue[0] <= t:
                if lsf == sf_count - 1:
                    lsb_queue.popleft()
                    lsb_results.append(t + seen)
                    lsf = 0
                else:
                    lsf += 1
            elif pix < p_count and ready_at[pix, sf] <= t and (sf or inflight < self.credits):
                taken = int(sf == 0)
                if sf == sf_count - 1:
                    g = bool(gated[pix, nf])
                    msb_results.append((t + seen, g))
                    if g:
                        lsb_queue.append(t + seen)
                    sf = 0
                    nf += 1
                    if nf == nf_count:
                        nf, pix = 0, pix + 1
                else:
                    sf += 1
            if msb_results and msb_results[0][0] <= t:
                g = msb_results[0][1]
                if not g or (lsb_results and lsb_results[0] <= t):
                    msb_results.popleft()
                    if g:
                        lsb_results.popleft()
                    out.append(t + out_delay)
                    taken -= 1
            inflight += taken
            t += 1
        return np.array(out, dtype=np.int64)


class GatedMVTU(StreamBlock):
    """Precision-gated matrix unit (see the module docstring).

    Ports: ``i_stream`` (``2 * simd`` bits), ``o_stream`` (the threshold unit's beats, or
    ``pe`` scores), ``cfg`` when ``runtime_writable`` (``sel`` 0 weights, 1 thresholds, 3
    gates) and ``stats`` (``STATS_LAYOUT``) when ``stats``.
    """

    Params = GatedMVTUParams

    @classmethod
    def extra_members(cls, params):
        members = super().extra_members(params)
        if params.stats:
            members["stats"] = Out(STATS_LAYOUT)
        return members

    def elaborate(self, platform):
        m = Module()
        p = self.params
        pe, simd, nf_count, sf_count = p.pe, p.simd, p.nf, p.sf
        banks, credits = p.banks, p.credits
        cw = p.count_shape.width
        bank_bits = (banks - 1).bit_length()   # banks is a power of two, at least 2
        nf_bits = max(1, (nf_count - 1).bit_length())

        m.submodules.weights = wmem = FoldedMemory(p.weight_memory)
        m.submodules.gates = gmem = FoldedMemory(p.gate_memory)

        # Result FIFOs and the LSB work queue; the credits keep each below its depth.
        m.submodules.msb_fifo = mfifo = SyncFIFO(width=pe * (cw + 1) + 1, depth=credits)
        m.submodules.lsb_fifo = lfifo = SyncFIFO(width=pe * cw, depth=credits)
        m.submodules.lsb_queue = lqueue = SyncFIFO(width=bank_bits + nf_bits, depth=credits)

        # ---- Input buffer write side: pixels counted modulo 2 * banks.
        wp, fp = Signal(bank_bits + 1, name="wp"), Signal(bank_bits + 1, name="fp")
        wsf = Signal(range(sf_count), name="wsf")
        used = Signal(bank_bits + 1)
        m.d.comb += [used.eq(wp - fp), self.i_stream.ready.eq(used != banks)]
        accept = self.i_stream.valid & self.i_stream.ready
        with m.If(accept):
            m.d.sync += wsf.eq(wsf + 1)
            with m.If(wsf == sf_count - 1):
                m.d.sync += [wsf.eq(0), wp.eq(wp + 1)]
        m.submodules.input_buffer = buf = Memory(shape=p.i_width, depth=banks * sf_count,
                                                 init=[])
        wr, rd = buf.write_port(), buf.read_port()
        m.d.comb += [wr.addr.eq(wp[:bank_bits] * sf_count + wsf),
                     wr.data.eq(self.i_stream.payload), wr.en.eq(accept)]

        # ---- Scheduler: one step per cycle, LSB items first.
        rp = Signal(bank_bits + 1, name="rp")
        nf, sf = Signal(range(nf_count), name="nf"), Signal(range(sf_count), name="sf")
        lsf = Signal(range(sf_count), name="lsf")
        inflight = Signal(range(credits + 1))
        item = Signal(bank_bits + nf_bits)
        m.d.comb += item.eq(lqueue.r_data)
        item_bank, item_nf = item[:bank_bits], item[bank_bits:]
        lsb_go, msb_go = Signal(), Signal()
        available = (rp != wp) | (sf != wsf)
        m.d.comb += [lsb_go.eq(lqueue.r_rdy),
                     msb_go.eq(~lsb_go & available & ((sf != 0) | (inflight < credits)))]
        with m.If(lsb_go):
            m.d.sync += lsf.eq(Mux(lsf == sf_count - 1, 0, lsf + 1))
        m.d.comb += lqueue.r_en.eq(lsb_go & (lsf == sf_count - 1))
        with m.If(msb_go):
            m.d.sync += sf.eq(sf + 1)
            with m.If(sf == sf_count - 1):
                m.d.sync += [sf.eq(0), nf.eq(nf + 1)]
                with m.If(nf == nf_count - 1):
                    m.d.sync += [nf.eq(0), rp.eq(rp + 1)]
        s_nf = Mux(lsb_go, item_nf, nf)
        s_sf = Mux(lsb_go, lsf, sf)
        s_bank = Mux(lsb_go, item_bank, rp[:bank_bits])
        m.d.comb += [wmem.rd.addr.eq(s_nf * sf_count + s_sf), wmem.rd.en.eq(1),
                     rd.addr.eq(s_bank * sf_count + s_sf), rd.en.eq(1)]

        # Stage 1: memory data; the step's plane goes into the stage-2 register.
        flags1 = Signal(4, name="flags1")   # valid, lsb, first, last
        m.d.sync += flags1.eq(Cat(lsb_go | msb_go, lsb_go, s_sf == 0, s_sf == sf_count - 1))
        x2 = Signal(simd, name="x2")
        w2 = Signal(pe * simd, name="w2")
        flags2 = Signal(4, name="flags2")
        lsb_bits = Cat(*(rd.data[2 * j] for j in range(simd)))
        msb_bits = Cat(*(rd.data[2 * j + 1] for j in range(simd)))
        m.d.sync += [x2.eq(Mux(flags1[1], lsb_bits, msb_bits)), w2.eq(wmem.rd.data),
                     flags2.eq(flags1)]

        # Stage 2 .. 2 + L: one tree per PE, shared by both planes.
        sums = []
        for i in range(pe):
            tree = Popcount(simd, levels_per_stage=p.levels_per_stage, fanin=3)
            assert tree.latency == p.tree_latency
            m.submodules[f"pe{i}"] = tree
            m.d.comb += tree.i_data.eq(~(x2 ^ w2[i * simd:(i + 1) * simd]))
            sums.append(tree.o_data)
        flags = flags2
        for k in range(p.tree_latency):
            delayed = Signal(4, name=f"flags{k + 3}")
            m.d.sync += delayed.eq(flags)
            flags = delayed
        valid_l, lsb_l, first_l, last_l = flags[0], flags[1], flags[2], flags[3]

        # Accumulators, one per plane; a completed sum is flagged for one cycle.
        acc_m = [Signal(cw, name=f"acc_m{i}") for i in range(pe)]
        acc_l = [Signal(cw, name=f"acc_l{i}") for i in range(pe)]
        m_done, l_done = Signal(), Signal()
        m.d.sync += [m_done.eq(valid_l & ~lsb_l & last_l), l_done.eq(valid_l & lsb_l & last_l)]
        for accs, is_lsb in ((acc_m, 0), (acc_l, 1)):
            with m.If(valid_l & (lsb_l == is_lsb)):
                for acc, s in zip(accs, sums):
                    m.d.sync += acc.eq(Mux(first_l, 0, acc) + s)

        # Gates of a completed MSB sum. The gate memory is read one group ahead (at the
        # next state of the group counter), so its word waits on the read port.
        cnf = Signal(range(nf_count), name="gate_nf")
        cpix = Signal(bank_bits, name="gate_bank")
        cnf_next = Signal.like(cnf)
        m.d.comb += cnf_next.eq(Mux(m_done, Mux(cnf == nf_count - 1, 0, cnf + 1), cnf))
        m.d.sync += cnf.eq(cnf_next)
        with m.If(m_done & (cnf == nf_count - 1)):
            m.d.sync += cpix.eq(cpix + 1)
        m.d.comb += [gmem.rd.addr.eq(cnf_next), gmem.rd.en.eq(1)]
        gw, lw = p.gate_shape.width, p.gate_lane_width
        gates = []
        for i in range(pe):
            lane = gmem.rd.data[i * lw:(i + 1) * lw]
            gates.append((acc_m[i] >= lane[:gw]) ^ lane[gw])
        any_gate = Signal()
        m.d.comb += any_gate.eq(Cat(*gates).any())
        m.d.comb += [mfifo.w_data.eq(Cat(*acc_m, *gates, any_gate)), mfifo.w_en.eq(m_done),
                     lqueue.w_data.eq(Cat(cpix, cnf)),
                     lqueue.w_en.eq(m_done & any_gate),
                     lfifo.w_data.eq(Cat(*acc_l)), lfifo.w_en.eq(l_done)]

        # Combiner: acc = 2 (2 pc_m - N) + g (2 pc_l - N), in order.
        acc_out = stream.Signature(pe * p.acc_shape.width).create(path=("acc",))
        head = mfifo.r_data
        need_lsb = head[pe * (cw + 1)]
        combine = Signal()
        free = output_register(m, acc_out, combine)
        m.d.comb += [combine.eq(mfifo.r_rdy & (~need_lsb | lfifo.r_rdy) & free),
                     mfifo.r_en.eq(combine), lfifo.r_en.eq(combine & need_lsb)]
        n = p.cols
        accs = []
        for i in range(pe):
            pc_m = head[i * cw:(i + 1) * cw]
            g = head[pe * cw + i]
            pc_l = lfifo.r_data[i * cw:(i + 1) * cw]
            value = Signal(p.acc_shape, name=f"comb{i}")
            m.d.comb += value.eq((pc_m << 2) - 2 * n + Mux(g, (pc_l << 1) - n, 0))
            acc = Signal(p.acc_shape, name=f"acc{i}")
            with m.If(combine):
                m.d.sync += acc.eq(value)
            accs.append(acc)
        m.d.comb += acc_out.payload.eq(Cat(*accs))

        # Slots and banks are released by the combiner.
        opened = msb_go & (sf == 0)
        m.d.sync += inflight.eq(inflight + opened - combine)
        knf = Signal(range(nf_count), name="comb_nf")
        with m.If(combine):
            m.d.sync += knf.eq(Mux(knf == nf_count - 1, 0, knf + 1))
            with m.If(knf == nf_count - 1):
                m.d.sync += fp.eq(fp + 1)

        if p.is_scores:
            wiring.connect(m, acc_out, wiring.flipped(self.o_stream))
        else:
            m.submodules.threshold = th = Threshold(p.threshold_params)
            wiring.connect(m, acc_out, th.i_stream)
            wiring.connect(m, th.o_stream, wiring.flipped(self.o_stream))

        if p.runtime_writable:
            targets = [wmem.cfg, gmem.cfg] + ([] if p.is_scores else [th.cfg])
            for t in targets:  # every memory is always ready: plain fan-out
                m.d.comb += [t.payload.eq(self.cfg.payload), t.valid.eq(self.cfg.valid)]
            m.d.comb += self.cfg.ready.eq(1)

        if p.stats:
            msb_steps, lsb_steps = Signal(32), Signal(32)
            m.d.sync += [msb_steps.eq(msb_steps + msb_go), lsb_steps.eq(lsb_steps + lsb_go)]
            m.d.comb += [self.stats.msb_steps.eq(msb_steps),
                         self.stats.lsb_steps.eq(lsb_steps)]
        return m
