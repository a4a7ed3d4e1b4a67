"""The classifier's argmax: one image's class scores in, scores and class out.

Input: one beat per image holding ``classes`` signed scores of ``score_width`` bits (class
``i`` at bits ``[i * w, (i + 1) * w)``), the dot products of the last MVTU. Output: one
beat per image, ``{"scores": the same scores, "argmax": the class}`` (``bnnhw.beats.
TopFormat.out_layout``). The class is the first index of the largest integer logit
``class_scale[i] * score[i] + class_offset[i]`` (``bnnhw.ir.Dense``), so it is the golden
model's class, ties included.

Structure: the logits are computed one class per cycle by one multiply-add and compared
with the best so far by one comparator; an image is scanned in ``classes`` cycles, which
is tiny against any network's initiation interval. The scores sit in a register that
rotates by one score per cycle, so the class being scanned is always at the bottom (no
wide multiplexer), and the integer map is read from a small memory (one word per class:
multiplier and offset). What the map needs decides the hardware: one common multiplier
becomes a constant (a shift for a power of two, nothing for 1) and the memory holds only
offsets; equal offsets too leave no memory at all, the plain argmax of the scores.
Pipeline: rotate/read, multiply, add, compare: four registers deep (the multiply and the
add in one cycle, a DSP block's delay and a carry chain, would not fit 10 ns on an ECP5).

Timing: ``i_stream.ready`` is high while no image is being scanned and the output register
is free; a new image can be accepted in the cycle its predecessor's result is taken.
``cycles_per_image = classes + 4``; the result can be taken ``latency = classes + 4``
cycles after the edge that accepts the scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.hdl import Value
from amaranth.lib import wiring

from bnnhw.beats import TopFormat
from bnnhw.numerics import signed_bits, unsigned_bits
from bnnhw.packing import pack
from bnnhw.validate import ParameterError, int_array, integer

from .block import StreamBlock, output_register, paced, struct_layout
from .weight_memory import FoldedMemory, FoldedMemoryParams, MemSel

__all__ = ["Classify", "ClassifyParams"]


@dataclass(frozen=True, eq=False)
class ClassifyParams:
    """``classes`` scores of ``score_width`` signed bits, each within ``-dot_max..dot_max``,
    and the integer class map ``class_scale`` (>= 0) / ``class_offset``, one per class.

    ``writable`` (a pair ``(scale bits, offset bits)``, ``bnnhw.manifest.class_map_fields``)
    stores every class's multiplier and offset in fields of those widths, rewritable
    through ``cfg`` (select ``MemSel.CLASSES``, one word per class, multiplier in the low
    bits), so any model of the topology fits: the map is then never specialised.
    """

    classes: int
    score_width: int
    dot_max: int
    class_scale: tuple[int, ...]
    class_offset: tuple[int, ...]
    writable: tuple[int, int] | None = None
    name: str = "classify"

    def __post_init__(self):
        n = self.name
        integer(n, "classes", self.classes, 1)
        integer(n, "score_width", self.score_width, 2)
        integer(n, "dot_max", self.dot_max, 0, (1 << (self.score_width - 1)) - 1)
        m = int_array(n, "class_scale", self.class_scale, shape=(self.classes,), low=0)
        b = int_array(n, "class_offset", self.class_offset, shape=(self.classes,))
        object.__setattr__(self, "class_scale", tuple(int(v) for v in m))
        object.__setattr__(self, "class_offset", tuple(int(v) for v in b))
        if self.writable is not None:
            sb, ob = (integer(n, what, v, 1) for what, v in
                      zip(("scale bits", "offset bits"), self.writable, strict=True))
            if max(m) >= 1 << sb or not -(1 << (ob - 1)) <= min(b) <= max(b) < 1 << (ob - 1):
                raise ParameterError(f"{n}: the class map does not fit its {sb}-bit "
                                     f"multipliers and {ob}-bit offsets")
        if self.classes > 1 and self.scan_bits > 1 << 12:
            raise ParameterError(f"{n}: a class map word of {self.scan_bits} bits is too wide")

    @property
    def runtime_writable(self) -> bool:
        return self.writable is not None

    @property
    def common_scale(self) -> int | None:
        """The multiplier when every class has the same one (and the map is not
        writable), else ``None``."""
        if self.writable is None and len(set(self.class_scale)) == 1:
            return self.class_scale[0]
        return None

    @property
    def has_offsets(self) -> bool:
        """Whether offsets are stored (they differ, or the map is writable)."""
        return self.writable is not None or len(set(self.class_offset)) > 1

    @property
    def scale_bits(self) -> int:
        """Bits of a stored multiplier (0 with a common one)."""
        if self.writable is not None:
            return self.writable[0]
        return 0 if self.common_scale is not None else unsigned_bits(max(self.class_scale))

    @property
    def offset_bits(self) -> int:
        """Bits of a stored offset (0 when they are all equal)."""
        if self.writable is not None:
            return self.writable[1]
        if not self.has_offsets:
            return 0
        return signed_bits(min(self.class_offset), max(self.class_offset))

    @property
    def scan_bits(self) -> int:
        """Bits of one class-map memory word (multiplier, then offset)."""
        return self.scale_bits + self.offset_bits

    @property
    def logit_range(self) -> tuple[int, int]:
        if self.writable is not None:  # any multiplier and offset the fields can hold
            big = ((1 << self.scale_bits) - 1) * self.dot_max + (1 << (self.offset_bits - 1))
            return -big, big
        b = self.class_offset if self.has_offsets else (0,) * self.classes
        return (min(o - m * self.dot_max for m, o in zip(self.class_scale, b)),
                max(o + m * self.dot_max for m, o in zip(self.class_scale, b)))

    @property
    def logit_bits(self) -> int:
        return signed_bits(*self.logit_range)

    @property
    def map_words(self) -> list[int]:
        """The class-map memory, one word per class (empty when nothing is stored)."""
        if not self.scan_bits:
            return []
        return [pack([m], self.scale_bits) | pack([o], self.offset_bits) << self.scale_bits
                if self.scale_bits else pack([o], self.offset_bits)
                for m, o in zip(self.class_scale, self.class_offset)]

    @property
    def format(self) -> TopFormat:
        """Only its ``out_layout`` is used: scores and argmax."""
        return TopFormat(1, 1, 1, self.classes, self.score_width)

    @property
    def i_width(self) -> int:
        return self.classes * self.score_width

    @property
    def o_width(self):
        return struct_layout(self.format.out_layout)

    @property
    def cycles_per_image(self) -> int:
        return self.classes + 4

    @property
    def latency(self) -> int:
        return self.classes + 4

    def beat_times(self, t_in):
        """The result leaves ``latency`` cycles after the scores (``rtl_gen.block``)."""
        return paced(np.asarray(t_in, dtype=np.int64) + self.latency)


class Classify(StreamBlock):
    """Scores in, ``{scores, argmax}`` out (see the module docstring)."""

    Params = ClassifyParams

    def elaborate(self, platform):
        p = self.params
        m = Module()
        w, k = p.score_width, p.classes

        scores = Signal(p.i_width)         # rotates by one score per scanned class
        scan = Signal()                    # issuing classes
        c = Signal(range(k))               # class being issued
        v1, v2, v3 = Signal(), Signal(), Signal()
        last1, last2, last3 = Signal(), Signal(), Signal()
        idx1, idx2, idx3 = Signal(range(k)), Signal(range(k)), Signal(range(k))
        sel1 = Signal(signed(w))
        z3 = Signal(signed(p.logit_bits))
        best = Signal(signed(p.logit_bits))
        best_idx = Signal(range(k))

        done = Signal()
        free = output_register(m, self.o_stream, done)
        accept = Signal()
        m.d.comb += [
            self.i_stream.ready.eq(~scan & ~v1 & ~v2 & ~v3 & free),
            accept.eq(self.i_stream.valid & self.i_stream.ready),
        ]

        with m.If(accept):
            m.d.sync += [scores.eq(self.i_stream.payload), scan.eq(1), c.eq(0)]
        with m.Elif(scan):
            m.d.sync += [c.eq(c + 1), scores.eq(Cat(scores[w:], scores[:w]))]
            with m.If(c == k - 1):
                m.d.sync += scan.eq(0)

        # stage 1: the issued class's score and its map word
        m.d.sync += [v1.eq(scan), last1.eq(c == k - 1), idx1.eq(c), sel1.eq(scores[:w])]
        if p.scan_bits:
            m.submodules.class_map = mem = FoldedMemory(FoldedMemoryParams(
                width=p.scan_bits, init=tuple(p.map_words), sel=MemSel.CLASSES,
                writable=p.runtime_writable, name=f"{p.name}.class_map"))
            if p.runtime_writable:
                wiring.connect(m, wiring.flipped(self.cfg), mem.cfg)
            m.d.comb += [mem.rd.addr.eq(c), mem.rd.en.eq(1)]
            word = mem.rd.data
        mul = Const(p.common_scale) if p.common_scale is not None else \
            word[:p.scale_bits]
        off = word[p.scale_bits:].as_signed() if p.has_offsets else Const(0)

        # stage 2: the product (and the offset it waits for)
        prod2 = Signal(signed(p.logit_bits))
        off2 = Signal(signed(max(p.offset_bits, 1)))
        m.d.sync += [v2.eq(v1), last2.eq(last1), idx2.eq(idx1), prod2.eq(sel1 * mul),
                     off2.eq(off)]

        # stage 3: the integer logit
        m.d.sync += [v3.eq(v2), last3.eq(last2), idx3.eq(idx2), z3.eq(prod2 + off2)]

        # stage 4: the first index of the largest logit
        take = (idx3 == 0) | (z3 > best)
        with m.If(v3 & take):
            m.d.sync += [best.eq(z3), best_idx.eq(idx3)]
        m.d.comb += done.eq(v3 & last3)
        with m.If(done):
            m.d.sync += [Value.cast(self.o_stream.payload.scores).eq(scores),
                         self.o_stream.payload.argmax.eq(Mux(take, idx3, best_idx))]
        return m
