"""A stream of constant beats from a ROM: what a simulation uses to preload a memory.

``BeatRom(BeatRomParams(beats, width))`` sends ``beats`` (ints of ``width`` bits) in order
on ``o_stream`` after reset, one per cycle while ``ready``, then raises ``done`` and
stays idle. The beats live in one ``amaranth.lib.memory`` ROM read one cycle ahead, so a
long sequence costs a memory, not logic.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

__all__ = ["BeatRom", "BeatRomParams"]


@dataclass(frozen=True, eq=False)
class BeatRomParams:
    beats: tuple[int, ...]
    width: int = 64
    name: str = "beat_rom"

    def __post_init__(self):
        object.__setattr__(self, "beats", tuple(int(b) for b in self.beats))
        if self.width < 1:
            raise ValueError(f"{self.name}: width must be positive, not {self.width}")
        if any(not 0 <= b < 1 << self.width for b in self.beats):
            raise ValueError(f"{self.name}: every beat must fit {self.width} bits")


class BeatRom(wiring.Component):
    """The beats of a ``BeatRomParams`` on ``o_stream``, then ``done`` (module docstring)."""

    def __init__(self, params: BeatRomParams):
        self.params = params
        super().__init__({"o_stream": Out(stream.Signature(params.width)), "done": Out(1)})

    def elaborate(self, platform):
        p = self.params
        m = Module()
        n = len(p.beats)
        if n == 0:
            m.d.comb += self.done.eq(1)
            return m
        m.submodules.rom = rom = Memory(shape=p.width, depth=n, init=p.beats)
        rd = rom.read_port()
        index = Signal(range(n + 1))       # the beat on o_stream (n: all sent)
        primed = Signal()                  # rd.data holds beat ``index``
        take = self.o_stream.valid & self.o_stream.ready
        nxt = Signal.like(index)
        m.d.comb += [nxt.eq(index + take), rd.addr.eq(nxt), rd.en.eq(1),
                     self.o_stream.payload.eq(rd.data),
                     self.o_stream.valid.eq(primed & (index < n)),
                     self.done.eq(index == n)]
        m.d.sync += [index.eq(nxt), primed.eq(1)]
        return m
