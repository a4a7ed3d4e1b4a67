"""Threshold unit: per accumulator, one output bit ``acc >= T[cls][channel]`` or a 2-bit
code ``sum_k (acc >= T[cls][channel][k])`` over three ascending thresholds.

Input: per output pixel (row-major over ``OH x OW``), ``NF = R / pe`` beats of ``pe``
accumulators (lane ``i`` of beat ``nf`` is channel ``nf * pe + i``), each ``acc_width``
bits, two's complement when ``acc_min < 0``. Output: the same beats with ``out_bits`` bits
per lane (lane ``i`` at bits ``[i * out_bits, (i + 1) * out_bits)``): with thresholds
``T[NY, NX, R]`` one bit ``acc >= T[row_class[oy], col_class[ox], channel]``; with
``T[NY, NX, R, 3]`` (``T0 <= T1 <= T2``) the code ``q = [acc >= T0] + [acc >= T1] + [acc >=
T2]`` in ``0..3``, LSB first (a fractional activation: its LSB plane bit at ``2i``, its MSB
plane bit at ``2i + 1``). Images follow each other back to back; the unit counts beats
itself.

Thresholds are signed integers and may lie outside the accumulator range (a constant
channel). The memory stores them clamped to ``[acc_min, acc_max + 1]``, which keeps every
comparison's result and bounds the word width; it holds one word per ``(cls, nf)`` at
address ``cls * NF + nf`` (``bnnhw.packing.table_words``), ``cls = row_class[oy] * NX +
col_class[ox]``; lane ``i``'s ``levels`` thresholds sit at entries ``i * levels + k`` of
the word (``T_k`` of a lane at ``k``). Rewriting them at run time goes through ``cfg``
(see ``rtl_gen.weight_memory``) with words from :meth:`ThresholdParams.threshold_words`.

Timing: a result can be taken one cycle after its accumulators are accepted; one beat per cycle
(``cycles_per_image = P * NF``), whatever ``levels``. ``i_stream.ready`` is ``~o_stream.valid
| o_stream.ready``, except in the first cycle after a reset (the memory is read one beat
ahead, and the first word needs one edge: see the code).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring

from bnnhw.packing import table_words
from bnnhw.validate import ParameterError, divides, int_array, integer

from .block import StreamBlock, output_register, range_shape
from .weight_memory import FoldedMemory, FoldedMemoryParams, MemSel

__all__ = ["Threshold", "ThresholdParams", "check_ascending", "check_classes"]

LEVELS = (1, 3)
"""Thresholds per channel: one (an output bit) or three (a 2-bit code)."""


def check_classes(name: str, pixels: int, row_class, col_class, ny: int, nx: int,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Validated border-class tables ``(row_class[OH], col_class[OW])``, ``OH * OW ==
    pixels``, values below ``NY``/``NX``; both ``None`` means one class for every pixel."""
    if (row_class is None) != (col_class is None):
        raise ParameterError(f"{name}: give both row_class and col_class, or neither")
    if row_class is None:
        row_class, col_class = np.zeros(pixels, np.int64), np.zeros(1, np.int64)
    rc = int_array(name, "row_class", row_class, ndim=1, low=0, high=ny - 1)
    cc = int_array(name, "col_class", col_class, ndim=1, low=0, high=nx - 1)
    if rc.size * cc.size != pixels:
        raise ParameterError(f"{name}: row_class ({rc.size}) x col_class ({cc.size}) must "
                             f"cover the {pixels} output pixels")
    return rc, cc


def check_ascending(name: str, t: np.ndarray) -> None:
    """``t[NY, NX, R, 3]`` must hold ``T0 <= T1 <= T2`` in every class and channel; else a
    ``ParameterError`` naming the unit, the first offending channel and its values."""
    bad = np.argwhere((t[..., 0] > t[..., 1]) | (t[..., 1] > t[..., 2]))
    if len(bad):
        y, x, r = (int(v) for v in bad[0])
        t0, t1, t2 = (int(v) for v in t[y, x, r])
        raise ParameterError(f"{name}: the three thresholds of channel {r} (border class "
                             f"{y}, {x}) must ascend, T0 <= T1 <= T2, not {t0}, {t1}, {t2}")


@dataclass(frozen=True, eq=False, kw_only=True)
class ThresholdParams:
    """One threshold unit (see the module docstring).

    ``thresholds`` is ``int[NY, NX, R]`` (one output bit per lane) or ``int[NY, NX, R, 3]``
    (three ascending thresholds per channel, a 2-bit code per lane); ``acc_min..acc_max``
    is the range the accumulators can take (it sets their width and signedness); ``pixels``
    output pixels per image, ``row_class[OH]``/``col_class[OW]`` their border classes
    (default: one class).
    """

    name: str
    channels: int
    pe: int
    acc_min: int
    acc_max: int
    thresholds: np.ndarray
    pixels: int = 1
    row_class: np.ndarray | None = None
    col_class: np.ndarray | None = None
    runtime_writable: bool = False

    def __post_init__(self):
        n = self.name
        integer(n, "channels", self.channels, 1)
        integer(n, "pixels", self.pixels, 1)
        divides(n, "pe", self.pe, self.channels, "output channels")
        integer(n, "acc_min", self.acc_min)
        integer(n, "acc_max", self.acc_max, self.acc_min)
        ndim = np.ndim(self.thresholds)
        if ndim not in (3, 4):
            raise ParameterError(f"{n}: thresholds must have 3 dimension(s), not shape "
                                 f"{list(np.shape(self.thresholds))} (or 4, [NY, NX, R, 3], "
                                 f"for three thresholds per channel)")
        t = int_array(n, "thresholds", self.thresholds, ndim=ndim)
        want = [self.channels] + ([] if ndim == 3 else [3])
        if list(t.shape[2:]) != want or 0 in t.shape:
            dims = ", ".join(str(d) for d in want)
            raise ParameterError(f"{n}: thresholds must have shape [NY, NX, {dims}], not "
                                 f"{list(t.shape)}")
        if ndim == 4:
            check_ascending(n, t)
        object.__setattr__(self, "thresholds", t)
        rc, cc = check_classes(n, self.pixels, self.row_class, self.col_class, *t.shape[:2])
        object.__setattr__(self, "row_class", rc)
        object.__setattr__(self, "col_class", cc)
        _ = self.memory  # validates the memory size of a writable unit

    @property
    def nf(self) -> int:
        """Neuron folds: beats per pixel."""
        return self.channels // self.pe

    @property
    def levels(self) -> int:
        """Thresholds per channel: 1, or 3 for a 2-bit code."""
        return 1 if self.thresholds.ndim == 3 else 3

    @property
    def out_bits(self) -> int:
        """Bits per output lane: 1, or 2 for a 2-bit code."""
        return 1 if self.levels == 1 else 2

    @property
    def classes(self) -> tuple[int, int]:
        """``(NY, NX)``."""
        return self.thresholds.shape[0], self.thresholds.shape[1]

    @property
    def acc_shape(self):
        """Shape of one accumulator lane."""
        return range_shape(self.acc_min, self.acc_max)

    @property
    def threshold_shape(self):
        """Shape of one stored (clamped) threshold."""
        return range_shape(self.acc_min, self.acc_max + 1)

    @property
    def i_width(self) -> int:
        return self.pe * self.acc_shape.width

    @property
    def o_width(self) -> int:
        return self.pe * self.out_bits

    @property
    def cycles_per_image(self) -> int:
        return self.pixels * self.nf

    @property
    def latency(self) -> int:
        """Cycles from the edge accepting an input beat to the first edge at which its
        output beat can be taken."""
        return 1

    def threshold_words(self, thresholds=None) -> list[int]:
        """Memory words of ``thresholds`` (default: this unit's), clamped and folded, a
        lane's ``levels`` thresholds side by side; for ``cfg_beats(MemSel.THRESHOLDS, words,
        memory.width)``."""
        t = self.thresholds if thresholds is None else np.asarray(thresholds)
        if t.shape != self.thresholds.shape:
            raise ValueError(f"{self.name}: thresholds must have shape "
                             f"{self.thresholds.shape}, not {t.shape}")
        if self.levels > 1:
            check_ascending(self.name, t)
        t = np.clip(t.astype(np.int64), self.acc_min, self.acc_max + 1)
        # [NY, NX, R, L] -> [NY, NX, R * L]: lane i's thresholds at entries i * L + k
        t = t.reshape(*t.shape[:2], self.channels * self.levels)
        return table_words(t, self.pe * self.levels, self.threshold_shape.width)

    @property
    def memory(self) -> FoldedMemoryParams:
        """Parameters of the threshold memory."""
        return FoldedMemoryParams(width=self.pe * self.levels * self.threshold_shape.width,
                                  init=tuple(self.threshold_words()), sel=MemSel.THRESHOLDS,
                                  writable=self.runtime_writable,
                                  name=f"{self.name}.thresholds")


class Threshold(StreamBlock):
    """Threshold unit (see the module docstring).

    Ports: ``i_stream`` (``pe * acc_width`` bits), ``o_stream`` (``pe * out_bits`` bits)
    and, when ``runtime_writable``, ``cfg`` (64-bit configuration beats, ``sel`` 1).
    """

    Params = ThresholdParams

    @staticmethod
    def lane_code(compares):
        """A lane's output from its comparisons ``acc >= T_k``, ``k`` ascending: the bit
        itself, or the code ``sum_k`` (with ascending thresholds, the number of levels
        reached)."""
        if len(compares) == 1:
            return compares[0]
        return sum(compares)[:2]

    def elaborate(self, platform):
        m = Module()
        p = self.params
        nf_count, ny, nx = p.nf, *p.classes
        m.submodules.mem = mem = FoldedMemory(p.memory)
        if p.runtime_writable:
            wiring.connect(m, wiring.flipped(self.cfg), mem.cfg)

        accept = Signal()
        free = output_register(m, self.o_stream, accept)
        # The memory is read ahead (below): the first beat after a reset waits for one
        # edge that reads its word.
        primed = Signal()
        m.d.sync += primed.eq(1)
        m.d.comb += [self.i_stream.ready.eq(free & primed),
                     accept.eq(self.i_stream.valid & self.i_stream.ready)]

        # Address of the (cls, nf) word: row_class[oy] * NX * NF + col_class[ox] * NF + nf,
        # from two small constant tables (no multiplier). Counters whose table is constant
        # are left out. The memory is read one beat ahead, at the address of the next beat
        # to come (the counters' next state): its word then waits on the read port and is
        # copied into ``thr`` with the accumulators, so the comparators start from
        # flip-flops, not from a block RAM's slow clock-to-output.
        nf = Signal(range(nf_count))
        last_nf = nf == nf_count - 1
        nf_next = Signal.like(nf)
        m.d.comb += nf_next.eq(Mux(accept, Mux(last_nf, 0, nf + 1), nf))
        m.d.sync += nf.eq(nf_next)
        wrap = accept & last_nf  # the pixel's last beat: the next pixel's class
        addr = Signal(range(ny * nx * nf_count))
        terms = [nf_next]
        for what, table, scale in (("ox", p.col_class, nf_count), ("oy", p.row_class,
                                                                   nx * nf_count)):
            counter = Signal(range(len(table)), name=what)
            last = counter == len(table) - 1
            step = Signal(name=f"{what}_step")
            m.d.comb += step.eq(wrap)
            nxt = Signal.like(counter, name=f"{what}_next")
            m.d.comb += nxt.eq(Mux(step, Mux(last, 0, counter + 1), counter))
            m.d.sync += counter.eq(nxt)
            wrap = wrap & last  # the row's last pixel: the next row
            values = [int(v) * scale for v in table]
            if len(set(values)) > 1:
                terms.append(Array(Const(v, addr.shape()) for v in values)[nxt])
            elif values[0]:
                terms.append(Const(values[0], addr.shape()))
        m.d.comb += [addr.eq(sum(terms)), mem.rd.addr.eq(addr), mem.rd.en.eq(1)]

        acc = Signal(p.i_width)
        thr = Signal(mem.rd.data.shape(), name="thr")
        with m.If(accept):
            m.d.sync += [acc.eq(self.i_stream.payload), thr.eq(mem.rd.data)]

        aw, tw, levels = p.acc_shape.width, p.threshold_shape.width, p.levels
        signed = p.acc_shape.signed
        lanes = []
        for i in range(p.pe):
            a = acc[i * aw:(i + 1) * aw]
            compares = []
            for k in range(levels):
                t = thr[(i * levels + k) * tw:(i * levels + k + 1) * tw]
                if signed:
                    a, t = a.as_signed(), t.as_signed()
                compares.append(a >= t)
            code = self.lane_code(compares)
            assert len(code) == p.out_bits
            lanes.append(code)
        m.d.comb += self.o_stream.payload.eq(Cat(*lanes))
        return m
