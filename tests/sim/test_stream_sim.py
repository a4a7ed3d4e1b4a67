"""The stream harness itself: a registered pass-through keeps order under stalls that
really happen, a block that drops a beat is caught, and so is one that breaks the stream
rule (retracts or alters a beat that waits), which only held beats expose."""

import pytest
from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from sim.stream_sim import StreamRuleError, run_stream
from tests.stream_helpers import assert_stalled


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


class RuleBreaker(Passthrough):
    """Planted stream-rule faults of a one-register buffer whose beat is not taken:
    ``retract`` drops ``valid`` after one cycle (the beat is lost), ``alter`` adds one to
    the waiting payload every cycle."""

    def __init__(self, fault):
        self._fault = fault
        super().__init__()

    def elaborate(self, platform):
        m = super().elaborate(platform)
        o = self.o_stream
        with m.If(o.valid & ~o.ready):
            if self._fault == "retract":
                m.d.sync += o.valid.eq(0)
            else:
                m.d.sync += o.payload.eq(o.payload + 1)
        return m


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_passthrough_keeps_order_under_stalls(seed):
    data = [(i * 37 + seed) % 256 for i in range(60)]
    got = run_stream(Passthrough(), data, len(data), seed=seed)
    assert got == data
    assert_stalled(got)
    assert got.stalls.held_out_cycles >= got.stalls.held_out_beats > 5


def test_dropped_beat_is_caught():
    data = list(range(20))
    with pytest.raises(TimeoutError):
        run_stream(Passthrough(drop=True), data, len(data), max_cycles=2000)


@pytest.mark.parametrize("fault, message", [
    ("retract", (r"valid dropped at cycle \d+ before the beat offered since cycle \d+ was "
                 r"taken \(payload 0x[0-9a-f]+")),
    ("alter", (r"payload changed from 0x[0-9a-f]+ to 0x[0-9a-f]+ at cycle \d+ while the "
               r"beat offered since cycle \d+ waited")),
])
def test_stream_rule_violation_is_caught(fault, message):
    data = list(range(40))
    # Never held, the faulty buffer passes: only backpressure shows the fault ...
    assert run_stream(RuleBreaker(fault), data, len(data), stall_in=0.3, stall_out=0) == data
    # ... and the checker names it at the first beat held.
    with pytest.raises(StreamRuleError, match=r"^stream rule broken on RuleBreaker\.o_stream: "
                                              + message):
        run_stream(RuleBreaker(fault), data, len(data), max_cycles=2000)
