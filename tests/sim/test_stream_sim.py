"""The stream harness itself: a registered pass-through keeps order under stalls, and a
block that drops a beat is caught."""

import pytest
from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from sim.stream_sim import run_stream


class Passthrough(wiring.Component):
    """One-register stream buffer; with ``drop`` it loses every 5th beat (a planted fault)."""

    def __init__(self, width=8, drop=False):
        self._drop = drop
        super().__init__({"i_stream": In(stream.Signature(width)),
                          "o_stream": Out(stream.Signature(width))})

    def elaborate(self, platform):
        m = Module()
        count = Signal(range(5))
        m.d.comb += self.i_stream.ready.eq(~self.o_stream.valid | self.o_stream.ready)
        with m.If(self.o_stream.valid & self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)
        with m.If(self.i_stream.valid & self.i_stream.ready):
            m.d.sync += count.eq(count + 1)
            if self._drop:
                with m.If(count == 4):
                    m.d.sync += count.eq(0)
                with m.Else():
                    m.d.sync += [self.o_stream.payload.eq(self.i_stream.payload),
                                 self.o_stream.valid.eq(1)]
            else:
                m.d.sync += [self.o_stream.payload.eq(self.i_stream.payload),
                             self.o_stream.valid.eq(1)]
        return m


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_passthrough_keeps_order_under_stalls(seed):
    data = [(i * 37 + seed) % 256 for i in range(60)]
    assert run_stream(Passthrough(), data, len(data), seed=seed) == data


def test_dropped_beat_is_caught():
    data = list(range(20))
    with pytest.raises(TimeoutError):
        run_stream(Passthrough(drop=True), data, len(data), max_cycles=2000)
