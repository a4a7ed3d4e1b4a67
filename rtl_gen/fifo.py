"""Stream FIFO between dataflow blocks.

A ``wiring.Component`` around ``amaranth.lib.fifo.SyncFIFOBuffered``: ``depth`` beats of
``width`` bits, the read data straight from a register (block RAM friendly). Order is
preserved; no beat is lost or duplicated under any pattern of stalls.

Timing: a beat written into an empty FIFO is valid on ``o_stream`` ``latency`` cycles
later (two; one for ``depth`` 1, a single register). With
``depth >= 3`` it moves one beat per cycle; ``depth`` 1 or 2 alternates between accepting
and holding, one beat every two cycles (``cycles_per_image`` accounts for it). Both
``ready`` and ``valid`` come from registers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered

from bnnhw.validate import positive_fields

from .block import StreamBlock, paced

__all__ = ["Fifo", "FifoParams"]


@dataclass(frozen=True)
class FifoParams:
    """``depth`` beats of ``width`` bits; ``beats_per_image`` only feeds the cycle figure."""

    width: int
    depth: int
    beats_per_image: int = 1
    name: str = "fifo"

    def __post_init__(self):
        positive_fields(self.name, self, "width", "depth", "beats_per_image")

    @property
    def i_width(self) -> int:
        return self.width

    o_width = i_width

    @property
    def cycles_per_image(self) -> int:
        """Cycles per image at steady state without stalls."""
        return self.beats_per_image * (1 if self.depth >= 3 else 2)

    @property
    def latency(self) -> int:
        """Cycles from a beat entering an empty FIFO to it being valid at the output."""
        return 1 if self.depth == 1 else 2

    def beat_times(self, t_in):
        """A beat leaves ``latency`` cycles after it entered (``rtl_gen.block``)."""
        return paced(np.asarray(t_in, dtype=np.int64) + self.latency)

    @property
    def memory_bits(self) -> int:
        return self.width * self.depth


class Fifo(StreamBlock):
    """Stream FIFO; ``i_stream``/``o_stream`` carry ``width``-bit beats."""

    Params = FifoParams

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.params.width,
                                                    depth=self.params.depth)
        wiring.connect(m, wiring.flipped(self.i_stream), fifo.w_stream)
        wiring.connect(m, fifo.r_stream, wiring.flipped(self.o_stream))
        return m
