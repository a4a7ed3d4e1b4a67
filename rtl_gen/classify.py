"""Packs one image's class scores with their argmax into the network's output beat.

Input: one beat per image holding ``classes`` signed scores of ``width`` bits (class ``i``
at bits ``[i * width, (i + 1) * width)``, two's complement). Output: one beat per image,
``{"scores": the same bits, "argmax": index of the largest score}``; ties go to the lowest
index, as in ``rtl_gen.argmax`` and ``torch.argmax``. The argmax is over the raw integer
scores: it is the host's answer only when the classes share one positive scale and equal
biases (``rtl_gen.argmax`` explains why).

Timing: one image per cycle; the output beat is registered, one cycle after the input.
``i_stream.ready`` is high whenever the output register is empty or being emptied.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .argmax import _better
from .sliding_window import _check_int

__all__ = ["Classify", "ClassifyParams"]


@dataclass(frozen=True)
class ClassifyParams:
    classes: int
    width: int
    name: str = "classify"

    def __post_init__(self):
        for what in ("classes", "width"):
            _check_int(self.name, what, getattr(self, what), 1)

    @property
    def index_width(self) -> int:
        return max(1, (self.classes - 1).bit_length())

    @property
    def layout(self) -> data.StructLayout:
        return data.StructLayout({"scores": unsigned(self.classes * self.width),
                                  "argmax": unsigned(self.index_width)})

    @property
    def cycles_per_image(self) -> int:
        return 1


class Classify(wiring.Component):
    """Scores in, ``{scores, argmax}`` out (see the module docstring)."""

    def __init__(self, params: ClassifyParams):
        self.params = params
        super().__init__({
            "i_stream": In(stream.Signature(unsigned(params.classes * params.width))),
            "o_stream": Out(stream.Signature(params.layout)),
        })

    @property
    def cycles_per_image(self) -> int:
        return self.params.cycles_per_image

    def elaborate(self, platform):
        p = self.params
        m = Module()
        scores = [self.i_stream.payload[i * p.width:(i + 1) * p.width].as_signed()
                  for i in range(p.classes)]
        best = Signal(signed(p.width), name="best")
        best_index = Signal(unsigned(p.index_width), name="best_index")
        value, index = scores[0], 0
        for i in range(1, p.classes):
            take = _better(scores[i], value)
            value, index = Mux(take, scores[i], value), Mux(take, i, index)
        m.d.comb += [best.eq(value), best_index.eq(index)]

        m.d.comb += self.i_stream.ready.eq(~self.o_stream.valid | self.o_stream.ready)
        with m.If(self.o_stream.valid & self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)
        with m.If(self.i_stream.valid & self.i_stream.ready):
            m.d.sync += [self.o_stream.payload.scores.eq(self.i_stream.payload),
                         self.o_stream.payload.argmax.eq(best_index),
                         self.o_stream.valid.eq(1)]
        return m
