"""Argmax over the last layer's class scores.

Input: per image ``classes`` signed scores of ``width`` bits (two's complement), in beats
of ``pe`` scores (beat ``nf`` lane ``i`` is class ``nf * pe + i``, as the last MVTU emits
them). Output: one beat per image, the index of the largest score as an unsigned integer
of ``index_width`` bits. Ties go to the lowest index, as ``torch.argmax`` does ("the index
of the first maximal value").

The argmax is taken over the raw integer scores. It equals the argmax of the host's
``scale * score + bias`` only when every class shares one positive scale and the biases
are equal; otherwise the host must take the argmax itself from the scores.

Timing: ``classes / pe`` input beats per image at one beat per cycle
(``cycles_per_image``); the index is valid the cycle after the image's last score beat
is accepted. ``o_stream.valid`` comes from a register; ``i_stream.ready`` is low only while
the previous index waits on a finished image.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .sliding_window import _check_int

__all__ = ["Argmax", "ArgmaxParams"]


def _better(challenger, incumbent):
    """A later (higher-index) score replaces the best so far only if strictly larger."""
    return challenger > incumbent


@dataclass(frozen=True)
class ArgmaxParams:
    """``classes`` scores of ``width`` signed bits per image, ``pe`` per beat."""

    classes: int
    width: int
    pe: int = 1
    name: str = "argmax"

    def __post_init__(self):
        for what in ("classes", "width", "pe"):
            _check_int(self.name, what, getattr(self, what), 1)
        if self.classes % self.pe:
            raise ValueError(f"{self.name}: pe must divide the {self.classes} classes, "
                             f"not {self.pe}")

    @property
    def fold(self) -> int:
        """Score beats per image, ``classes / pe``."""
        return self.classes // self.pe

    @property
    def in_width(self) -> int:
        return self.pe * self.width

    @property
    def index_width(self) -> int:
        return max(1, (self.classes - 1).bit_length())

    @property
    def cycles_per_image(self) -> int:
        """Cycles per image at steady state without stalls."""
        return self.fold


class Argmax(wiring.Component):
    """Argmax; ``i_stream`` carries ``pe * width``-bit score beats, ``o_stream`` one
    ``index_width``-bit index per image."""

    def __init__(self, params: ArgmaxParams):
        if not isinstance(params, ArgmaxParams):
            raise TypeError(f"Argmax takes ArgmaxParams, not {params!r}")
        self.params = params
        super().__init__({
            "i_stream": In(stream.Signature(unsigned(params.in_width))),
            "o_stream": Out(stream.Signature(unsigned(params.index_width))),
        })

    def elaborate(self, platform):
        p = self.params
        m = Module()
        w = p.width
        # Best lane of the beat: a pairwise tree that keeps the left (lower) lane unless
        # the right one is strictly larger.
        level = [(self.i_stream.payload[i * w:(i + 1) * w].as_signed(), i)
                 for i in range(p.pe)]
        while len(level) > 1:
            nxt = []
            for j in range(0, len(level) - 1, 2):
                (ls, li), (rs, ri) = level[j], level[j + 1]
                right = _better(rs, ls)
                nxt.append((Mux(right, rs, ls), Mux(right, ri, li)))
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
        beat_score, beat_lane = level[0]

        nf = Signal(range(p.fold))
        best = Signal(signed(w))
        best_index = Signal(p.index_width)
        candidate = Signal(p.index_width)
        take = Signal()
        m.d.comb += [
            candidate.eq(nf * p.pe + beat_lane),
            take.eq((nf == 0) | _better(beat_score, best)),
        ]

        last = nf == p.fold - 1
        o_valid = Signal()
        fire = Signal()
        m.d.comb += [
            self.i_stream.ready.eq(~last | ~o_valid | self.o_stream.ready),
            fire.eq(self.i_stream.valid & self.i_stream.ready),
            self.o_stream.valid.eq(o_valid),
        ]
        with m.If(fire):
            m.d.sync += nf.eq(Mux(last, 0, nf + 1))
            with m.If(take):
                m.d.sync += [best.eq(beat_score), best_index.eq(candidate)]
            with m.If(last):
                m.d.sync += [o_valid.eq(1),
                             self.o_stream.payload.eq(Mux(take, candidate, best_index))]
        with m.If(~(fire & last) & self.o_stream.ready):
            m.d.sync += o_valid.eq(0)
        return m
