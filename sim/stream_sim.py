"""Amaranth-simulator harness for stream blocks, with seeded random stalls on both sides.

``run_stream(dut, inputs, n_outputs)`` feeds ``inputs`` into ``dut.i_stream`` while
collecting ``n_outputs`` payloads from ``dut.o_stream``; the source drops ``valid`` and
the sink drops ``ready`` at random (seeded), so every test exercises backpressure.
Payloads are plain integers, also for struct-layout payloads (their flat bits).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

from amaranth.hdl import Value
from amaranth.sim import Simulator


async def _idle(ctx, rng: random.Random, stall: float) -> None:
    while stall and rng.random() < stall:
        await ctx.tick()


async def stream_put(ctx, stream, payload, rng: random.Random | None = None,
                     stall: float = 0.0) -> None:
    """Send one payload on ``stream`` (a source), idling at random first."""
    if rng is not None:
        await _idle(ctx, rng, stall)
    ctx.set(Value.cast(stream.payload), payload)
    ctx.set(stream.valid, 1)
    while not (await ctx.tick().sample(stream.ready))[-1]:
        pass
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, rng: random.Random | None = None,
                     stall: float = 0.0, budget: list[int] | None = None) -> Any:
    """Receive one payload from ``stream`` (a sink), holding ``ready`` low at random first.

    ``budget`` (a one-element list of cycles left) makes it give up, returning ``None``,
    when it runs out; the count goes down by one per clock cycle waited.
    """
    if rng is not None:
        while stall and rng.random() < stall:
            await ctx.tick()
            if budget is not None:
                budget[0] -= 1
    ctx.set(stream.ready, 1)
    try:
        while True:
            *_, valid, payload = await ctx.tick().sample(stream.valid,
                                                         Value.cast(stream.payload))
            if valid:
                return payload
            if budget is not None:
                budget[0] -= 1
                if budget[0] <= 0:
                    return None
    finally:
        ctx.set(stream.ready, 0)


def run_stream(dut, inputs: Iterable[Any], n_outputs: int, *, seed: int = 0,
               stall_in: float = 0.3, stall_out: float = 0.3,
               i_stream: Callable[[Any], Any] | None = None,
               o_stream: Callable[[Any], Any] | None = None,
               setup: Callable[[Any], None] | None = None,
               max_cycles: int = 1_000_000, vcd: str | None = None) -> list[Any]:
    """Simulate ``dut`` on ``inputs`` and return the first ``n_outputs`` output payloads.

    ``i_stream``/``o_stream`` pick the ports (default ``dut.i_stream``/``dut.o_stream``);
    ``setup(ctx)`` runs first (to set static inputs). Stalls are seeded by ``seed``.
    Raises ``TimeoutError`` if the outputs have not all arrived within ``max_cycles``.
    """
    inputs = list(inputs)
    i_port = i_stream(dut) if i_stream else dut.i_stream
    o_port = o_stream(dut) if o_stream else dut.o_stream
    outputs: list[Any] = []
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)

    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def source(ctx):
        if setup is not None:
            setup(ctx)
        for item in inputs:
            await stream_put(ctx, i_port, item, rng_in, stall_in)

    budget = [max_cycles]

    async def sink(ctx):
        for _ in range(n_outputs):
            payload = await stream_get(ctx, o_port, rng_out, stall_out, budget)
            if payload is None:
                return
            outputs.append(payload)

    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    if len(outputs) < n_outputs:
        raise TimeoutError(f"stream simulation: {len(outputs)} of {n_outputs} outputs "
                           f"after {max_cycles} cycles")
    return outputs
