"""The network's result beats to the bytes of a ``RESULTS`` frame.

Input: one beat per image, ``{scores, argmax}`` (``bnnhw.beats.TopFormat.out_layout``).
Output: the image's result as it travels (``bnnhw.manifest.Manifest.encode_result``): the
class in ``class_bytes`` bytes, then each class's score sign-extended to ``score_bytes``
bytes, all little-endian. A shift register holds one result and sends a byte per cycle;
the next result is taken as the last byte of this one leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Cat, Module, Mux, Signal
from amaranth.hdl import Value

from bnnhw.beats import TopFormat
from bnnhw.validate import positive_fields

from .block import StreamBlock, struct_layout

__all__ = ["ResultPacker", "ResultPackerParams"]


@dataclass(frozen=True)
class ResultPackerParams:
    """Results of ``classes`` scores of ``score_width`` signed bits."""

    classes: int
    score_width: int
    name: str = "result_packer"

    def __post_init__(self):
        positive_fields(self.name, self, "classes", "score_width")

    @property
    def format(self) -> TopFormat:
        return TopFormat(1, 1, 1, self.classes, self.score_width)

    @property
    def class_bytes(self) -> int:
        return 1 if self.classes <= 256 else 2

    @property
    def score_bytes(self) -> int:
        return -(-self.score_width // 8)

    @property
    def result_bytes(self) -> int:
        return self.class_bytes + self.classes * self.score_bytes

    @property
    def i_width(self):
        return struct_layout(self.format.out_layout)

    @property
    def o_width(self) -> int:
        return 8

    @property
    def cycles_per_image(self) -> int:
        return self.result_bytes


class ResultPacker(StreamBlock):
    """Result beats in, result bytes out (see the module docstring)."""

    Params = ResultPackerParams

    def elaborate(self, platform):
        p = self.params
        m = Module()
        sb = 8 * p.score_bytes
        scores = Value.cast(self.i_stream.payload.scores)
        # the class zero-extended, each score sign-extended, byte-aligned fields in order
        class_field = Signal(8 * p.class_bytes)
        m.d.comb += class_field.eq(self.i_stream.payload.argmax)
        score_fields = []
        for c in range(p.classes):
            f = Signal(sb, name=f"score{c}")
            m.d.comb += f.eq(scores[c * p.score_width:(c + 1) * p.score_width].as_signed())
            score_fields.append(f)
        packed = Signal(8 * p.result_bytes)
        m.d.comb += packed.eq(Cat(class_field, *score_fields))

        shift = Signal(8 * p.result_bytes)
        left = Signal(range(p.result_bytes + 1))   # bytes of the held result still to send
        o = self.o_stream
        sending = left != 0
        last = left == 1
        take = self.i_stream.valid & self.i_stream.ready
        m.d.comb += [o.valid.eq(sending), o.payload.eq(shift[:8]),
                     self.i_stream.ready.eq(~sending | (last & o.ready))]
        with m.If(take):
            m.d.sync += [shift.eq(packed), left.eq(p.result_bytes)]
        with m.Elif(o.valid & o.ready):
            m.d.sync += [shift.eq(shift >> 8), left.eq(Mux(last, 0, left - 1))]
        return m
