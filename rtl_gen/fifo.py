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

from amaranth import Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .sliding_window import _check_int

__all__ = ["Fifo", "FifoParams"]


@dataclass(frozen=True)
class FifoParams:
    """``depth`` beats of ``width`` bits; ``beats_per_image`` only feeds the cycle figure."""

    width: int
    depth: int
    beats_per_image: int = 1
    name: str = "fifo"

    def __post_init__(self):
        for what in ("width", "depth", "beats_per_image"):
            _check_int(self.name, what, getattr(self, what), 1)

    @property
    def cycles_per_image(self) -> int:
        """Cycles per image at steady state without stalls."""
        return self.beats_per_image * (1 if self.depth >= 3 else 2)

    @property
    def latency(self) -> int:
        """Cycles from a beat entering an empty FIFO to it being valid at the output."""
        return 1 if self.depth == 1 else 2

    @property
    def memory_bits(self) -> int:
        return self.width * self.depth


class Fifo(wiring.Component):
    """Stream FIFO; ``i_stream``/``o_stream`` carry ``width``-bit beats."""

    def __init__(self, params: FifoParams):
        if not isinstance(params, FifoParams):
            raise TypeError(f"Fifo takes FifoParams, not {params!r}")
        self.params = params
        super().__init__({
            "i_stream": In(stream.Signature(unsigned(params.width))),
            "o_stream": Out(stream.Signature(unsigned(params.width))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.params.width,
                                                    depth=self.params.depth)
        m.d.comb += [
            fifo.w_data.eq(self.i_stream.payload),
            fifo.w_en.eq(self.i_stream.valid),
            self.i_stream.ready.eq(fifo.w_rdy),
            self.o_stream.payload.eq(fifo.r_data),
            self.o_stream.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.o_stream.ready),
        ]
        return m
