"""Helpers for stream block tests in the Amaranth simulator.

``clocked(dut)`` wraps a purely combinational block so the simulator has a ``sync``
domain to clock (the stream harness ticks it); it adds no logic on the streams.

``output_cycles`` drives ``dut.i_stream`` at full rate (valid whenever there is a beat
left) and holds ``dut.o_stream.ready`` high, and returns the cycle at which each output
beat was taken (cycle 0 is the first clock edge), together with the payloads; it runs
until every input beat has been accepted too.
``steady_cycles`` turns those stamps into cycles per image: the distance between the
last beats of two consecutive images once the pipeline is full.

``assert_stalled`` checks that a run asked to stall really did: the source idled with a
beat pending and the sink held beats the DUT offered (a stall probability that never held
an output beat tested nothing).
"""

from __future__ import annotations

from itertools import pairwise

from amaranth import Module, Mux, Signal
from amaranth.hdl import Value
from amaranth.lib import wiring
from amaranth.sim import Simulator


class _Clocked(wiring.Component):
    def __init__(self, dut):
        self._dut = dut
        super().__init__({"i_stream": dut.signature.members["i_stream"],
                          "o_stream": dut.signature.members["o_stream"]})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self._dut
        wiring.connect(m, wiring.flipped(self.i_stream), self._dut.i_stream)
        wiring.connect(m, self._dut.o_stream, wiring.flipped(self.o_stream))
        tick = Signal()
        m.d.sync += tick.eq(~tick)   # gives the design a clock domain
        return m


def clocked(dut):
    """``dut`` behind the same stream ports, in a design that has a ``sync`` domain."""
    return _Clocked(dut)


def assert_stalled(result, *, inputs: bool = True, outputs: bool = True) -> None:
    """Fail unless the stalls of ``result`` happened: input idles (``inputs``) and held
    output beats (``outputs``). ``result`` is what ``sim.stream_sim.run_stream`` returns
    (its ``stalls``) or a ``sim.cosim.CosimResult``."""
    s = getattr(result, "stalls", result)
    seen = (f"idle_in_cycles={s.idle_in_cycles}, held_out_beats={s.held_out_beats}, "
            f"held_out_cycles={s.held_out_cycles}")
    if inputs:
        assert s.idle_in_cycles > 0, f"the source never idled with a beat pending ({seen})"
    if outputs:
        assert s.held_out_beats > 0, f"the sink never held an output beat ({seen})"
        assert s.held_out_cycles >= s.held_out_beats, seen


def output_cycles(dut, inputs, n_outputs: int, max_cycles: int = 100_000):
    """``(cycles, payloads)`` of the first ``n_outputs`` output beats (see module doc)."""
    inputs = list(inputs)
    dut = clocked(dut)
    stamps: list[int] = []
    payloads: list[int] = []
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def source(ctx):
        for item in inputs:
            ctx.set(Value.cast(dut.i_stream.payload), item)
            ctx.set(dut.i_stream.valid, 1)
            await ctx.tick().until(dut.i_stream.ready)
        ctx.set(dut.i_stream.valid, 0)

    async def sink(ctx):
        ctx.set(dut.o_stream.ready, 1)
        for cycle in range(max_cycles):
            _, _, valid, payload = await ctx.tick().sample(
                dut.o_stream.valid, Value.cast(dut.o_stream.payload))
            if valid:
                stamps.append(cycle)
                payloads.append(payload)
                if len(stamps) == n_outputs:
                    return
        raise TimeoutError(f"{len(stamps)} of {n_outputs} outputs after {max_cycles} cycles")

    sim.add_testbench(source)   # every block here accepts all of its input eventually
    sim.add_testbench(sink)
    sim.run()
    return stamps, payloads


def steady_cycles(stamps: list[int], beats_per_image: int) -> list[int]:
    """Cycles between the last beats of consecutive images."""
    ends = [stamps[i - 1] for i in range(beats_per_image, len(stamps) + 1, beats_per_image)]
    return [b - a for a, b in pairwise(ends)]


class SerialInput(wiring.Component):
    """A planted rate fault: ``dut`` behind an input that, like a single input buffer,
    refuses beats for ``gap`` cycles after each pixel's ``sf`` beats."""

    def __init__(self, dut, sf, gap):
        self._dut, self._sf, self._gap = dut, sf, gap
        super().__init__({"i_stream": dut.signature.members["i_stream"],
                          "o_stream": dut.signature.members["o_stream"]})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self._dut
        count, hold = Signal(range(self._sf)), Signal(range(self._gap + 1))
        open_ = hold == 0
        m.d.comb += [dut.i_stream.payload.eq(self.i_stream.payload),
                     dut.i_stream.valid.eq(self.i_stream.valid & open_),
                     self.i_stream.ready.eq(dut.i_stream.ready & open_)]
        with m.If(~open_):
            m.d.sync += hold.eq(hold - 1)
        with m.If(self.i_stream.valid & self.i_stream.ready):
            m.d.sync += count.eq(Mux(count == self._sf - 1, 0, count + 1))
            with m.If(count == self._sf - 1):
                m.d.sync += hold.eq(self._gap)
        wiring.connect(m, dut.o_stream, wiring.flipped(self.o_stream))
        return m
