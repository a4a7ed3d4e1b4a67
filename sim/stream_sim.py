"""Amaranth-simulator harness for stream blocks, with seeded random stalls on both sides.

``run_stream(dut, inputs, n_outputs)`` feeds ``inputs`` into ``dut.i_stream`` while
collecting ``n_outputs`` payloads from ``dut.o_stream``. Payloads are plain integers, also
for struct-layout payloads (their flat bits). It returns a ``StreamResult``: the list of
payloads, with ``.stalls`` recording what the random stalls really did (a ``Stalls``).

Stalls, both seeded by ``seed``:

- the source idles (``valid`` low, a beat pending) before each input beat, one more
  cycle with probability ``stall_in`` again and again (geometric idle runs);
- the sink holds output beats: before each one it draws a geometric count the same way
  (``stall_out``); when the count is not 0 it keeps ``ready`` low until the DUT offers
  the beat and then for ``count`` more *beat times* (``hold_unit``: the cycles per
  output beat so far, holds left out, at least one), so a beat is held for as long as
  beats take to come and a block that emits one beat per image is held for about an
  image's time, long enough to back its pipeline up.

The stream rule is checked on both streams at every clock edge (``check_stream_rule``):
once ``valid`` is high it stays high and the payload does not change until the beat is
taken (``valid`` and ``ready`` both high at an edge). A violation raises
``StreamRuleError`` naming the stream, the cycle and the old and new payload. Cycle 0 is
the first clock edge of the simulation.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from amaranth.hdl import Value
from amaranth.sim import Simulator

__all__ = ["Stalls", "StreamResult", "StreamRuleError", "check_stream_rule", "hold_unit",
           "run_stream", "stream_get", "stream_put"]


class StreamRuleError(AssertionError):
    """A stream dropped ``valid`` or changed its payload while a beat waited."""


@dataclass
class Stalls:
    """What the random stalls of one run really did.

    ``idle_in_cycles``: cycles the source kept ``valid`` low with a beat pending;
    ``held_out_beats``/``held_out_cycles``: output beats the sink kept waiting (``ready``
    low while the DUT's ``valid`` was high) and the cycles they waited in all;
    ``out_beats``/``cycles``: beats the sink took and the clock edges it waited through.
    ``stall_in``/``stall_out`` are the probabilities asked for.
    """

    stall_in: float = 0.0
    stall_out: float = 0.0
    idle_in_cycles: int = 0
    held_out_beats: int = 0
    held_out_cycles: int = 0
    out_beats: int = 0
    cycles: int = 0


class StreamResult(list):
    """The output payloads of ``run_stream`` (a plain list to compare), with ``stalls``."""

    def __init__(self, payloads: Iterable[Any], stalls: Stalls):
        super().__init__(payloads)
        self.stalls = stalls


def _count(rng: random.Random, stall: float) -> int:
    n = 0
    while stall and rng.random() < stall:
        n += 1
    return n


def hold_unit(cycles: int, held_cycles: int, beats: int) -> int:
    """One beat time for the sink's holds: cycles per output beat so far, the cycles spent
    holding left out (so holds do not lengthen later holds), counting the beat about to be
    taken, at least 1. The cocotb bench (``sim.stream_tb``) uses the same rule."""
    return max(1, (cycles - held_cycles) // (beats + 1))


async def stream_put(ctx, stream, payload, rng: random.Random | None = None,
                     stall: float = 0.0, stalls: Stalls | None = None) -> None:
    """Send one payload on ``stream`` (a source), idling at random first; the idle cycles
    are added to ``stalls.idle_in_cycles`` if given."""
    if rng is not None:
        n = _count(rng, stall)
        if stalls is not None:
            stalls.idle_in_cycles += n
        for _ in range(n):
            await ctx.tick()
    ctx.set(Value.cast(stream.payload), payload)
    ctx.set(stream.valid, 1)
    while not (await ctx.tick().sample(stream.ready))[-1]:
        pass
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, rng: random.Random | None = None,
                     stall: float = 0.0, budget: list[int] | None = None,
                     stalls: Stalls | None = None) -> Any:
    """Receive one payload from ``stream`` (a sink), holding the beat at random first.

    With ``rng`` a geometric count is drawn (``stall``); when it is not 0, ``ready`` stays
    low until ``valid`` is high and then for ``count`` beat times (``hold_unit`` of what
    ``stalls`` has recorded so far; one cycle without ``stalls``), which are recorded
    there. ``budget`` (a one-element list of cycles left) makes it give up, returning
    ``None``, when it runs out; the count goes down by one per clock cycle waited.
    """
    waited = 0

    async def edge(*exprs):
        nonlocal waited
        waited += 1
        if budget is not None:
            budget[0] -= 1
        return (await ctx.tick().sample(*exprs))[2:]

    try:
        count = _count(rng, stall) if rng is not None else 0
        if count:
            held = 0
            while True:
                valid, = await edge(stream.valid)
                if valid:
                    if not held:
                        unit = 1 if stalls is None else hold_unit(
                            stalls.cycles + waited, stalls.held_out_cycles,
                            stalls.out_beats)
                        n = count * unit
                    held += 1
                    if held == n:
                        break
                if budget is not None and budget[0] <= 0:
                    return None
            if stalls is not None:
                stalls.held_out_beats += 1
                stalls.held_out_cycles += n
        ctx.set(stream.ready, 1)
        try:
            while True:
                valid, payload = await edge(stream.valid, Value.cast(stream.payload))
                if valid:
                    if stalls is not None:
                        stalls.out_beats += 1
                    return payload
                if budget is not None and budget[0] <= 0:
                    return None
        finally:
            ctx.set(stream.ready, 0)
    finally:
        if stalls is not None:
            stalls.cycles += waited


def check_stream_rule(stream, name: str) -> Callable[[Any], Any]:
    """A background testbench that checks the stream rule on ``stream`` at every clock
    edge (see the module docstring) and raises ``StreamRuleError`` on a violation."""
    payload = Value.cast(stream.payload)

    async def checker(ctx):
        cycle, since, old = -1, None, None   # since: first edge the waiting beat was seen
        async for _, _, valid, ready, data in ctx.tick().sample(stream.valid, stream.ready,
                                                                 payload):
            cycle += 1
            if since is not None:
                if not valid:
                    raise StreamRuleError(
                        f"stream rule broken on {name}: valid dropped at cycle {cycle} "
                        f"before the beat offered since cycle {since} was taken "
                        f"(payload {old:#x}, now {data:#x} with valid low)")
                if data != old:
                    raise StreamRuleError(
                        f"stream rule broken on {name}: payload changed from {old:#x} to "
                        f"{data:#x} at cycle {cycle} while the beat offered since cycle "
                        f"{since} waited")
            if valid and not ready:
                since, old = (cycle if since is None else since), data
            else:
                since = None

    return checker


def _stream_name(dut, stream) -> str:
    port = getattr(stream.valid, "name", "stream").removesuffix("__valid")
    return f"{type(dut).__name__}.{port}"


def run_stream(dut, inputs: Iterable[Any], n_outputs: int, *, seed: int = 0,
               stall_in: float = 0.3, stall_out: float = 0.3,
               i_stream: Callable[[Any], Any] | None = None,
               o_stream: Callable[[Any], Any] | None = None,
               setup: Callable[[Any], None] | None = None,
               max_cycles: int = 1_000_000, vcd: str | None = None) -> StreamResult:
    """Simulate ``dut`` on ``inputs``; return the first ``n_outputs`` output payloads as a
    ``StreamResult`` (a list with ``.stalls``).

    ``i_stream``/``o_stream`` pick the ports (default ``dut.i_stream``/``dut.o_stream``);
    ``setup(ctx)`` runs first (to set static inputs). Stalls are seeded by ``seed``. The
    stream rule is checked on both ports (``StreamRuleError``). Raises ``TimeoutError`` if
    the outputs have not all arrived within ``max_cycles``.
    """
    inputs = list(inputs)
    i_port = i_stream(dut) if i_stream else dut.i_stream
    o_port = o_stream(dut) if o_stream else dut.o_stream
    outputs: list[Any] = []
    stalls = Stalls(stall_in, stall_out)
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)

    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def source(ctx):
        if setup is not None:
            setup(ctx)
        for item in inputs:
            await stream_put(ctx, i_port, item, rng_in, stall_in, stalls)

    budget = [max_cycles]

    async def sink(ctx):
        for _ in range(n_outputs):
            payload = await stream_get(ctx, o_port, rng_out, stall_out, budget, stalls)
            if payload is None:
                return
            outputs.append(payload)

    sim.add_testbench(source, background=True)
    for port in (i_port, o_port):
        sim.add_testbench(check_stream_rule(port, _stream_name(dut, port)), background=True)
    sim.add_testbench(sink)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    if len(outputs) < n_outputs:
        raise TimeoutError(f"stream simulation: {len(outputs)} of {n_outputs} outputs "
                           f"after {max_cycles} cycles")
    return StreamResult(outputs, stalls)
