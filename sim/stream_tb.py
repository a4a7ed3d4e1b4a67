"""Generic cocotb testbench for one stream block: beats in on ``i_stream``, beats out of
``o_stream``, seeded random stalls on both sides, cycle stamps for every transfer.

Run by ``sim.cosim.run_stream_cosim`` (never imported by it: this module runs inside the
simulator). Everything it needs comes from the environment variable ``BNNHW_COSIM_CONF``,
a JSON object::

    in_file        text file, one input beat per line in hex
    out_file       where the JSON result goes
    n_out          output beats to collect
    seed           stalls: the source uses random.Random(seed), the sink seed + 1
    stall_in       probability of one more idle cycle before each input beat (< 1)
    stall_out      the sink holds output beats: before each one it draws a count the
                   same way; when it is not 0 ``ready`` stays low until the design offers
                   the beat and then for that many beat times (the cycles per output beat
                   so far, holds left out, at least one: ``sim.stream_sim.hold_unit``)
    timeout_cycles give up this many cycles after reset
    linger_cycles  after the last expected beat, keep ``ready`` high this long and record
                   whatever else comes out (catches duplicated beats)
    reset_cycles   cycles with ``rst`` high at the start
    i_port, o_port port name prefixes (``i_stream`` -> ``i_stream__payload`` ...)
    progress_file  optional: rewritten about twice a second with "<beats> <cycle>", the
                   output beats collected so far and the cycle of the last one

Cycle numbers count rising clock edges after reset: cycle 0 is the first edge at which a
transfer can happen. A beat "accepted at cycle c" crossed on edge c (valid and ready
both high just before it). The result JSON holds ``status`` ("ok", "timeout" or
"stream_rule"), ``out`` (hex strings), ``out_cycles``, ``in_cycles``, ``extra`` (hex,
from lingering), ``cycles`` (edges from reset to the end of collection), ``sim_seconds``
and ``sim_cpu_seconds`` (wall and CPU time of the simulated run), ``idle_in_cycles``
(idle cycles the source inserted with a beat pending), ``held_out_beats`` and
``held_out_cycles`` (output beats the sink held while the design offered them, and the
cycles they waited in all) and ``rule_error`` (``None``, or what broke the rule).

The stream rule is checked on ``o_stream`` while the sink holds a beat: ``valid`` must
stay high and the payload must not change until the beat is taken. A violation ends the
run with status "stream_rule" and a message naming the cycle and the old/new payload.

Speed: the coroutines act once per transfer, not once per cycle. An input idle of n
cycles is one timer; waiting for the other side is one edge trigger on its
``valid``/``ready``. The clock runs in the simulator's C++ (cocotb's GPI clock), so a
block that spends thousands of cycles per beat costs Python nothing for those cycles.
The rule check costs nothing while no beat is held: a hold of up to ``POLL_HOLD`` cycles
is one timer per cycle, a longer one a single wait for its end or a change of ``valid``
or the payload, whichever comes first.
"""

from __future__ import annotations

import json
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import First, ReadOnly, RisingEdge, Timer, select
from cocotb.types import LogicArray
from cocotb.utils import get_sim_steps, get_sim_time

CONF_ENV = "BNNHW_COSIM_CONF"
PERIOD_NS = 10
PROGRESS_EVERY_S = 0.5
POLL_HOLD = 8          # holds up to this many cycles are checked edge by edge


def _to_int(value) -> int:
    return value.to_unsigned() if isinstance(value, LogicArray) else int(value)


def hold_unit(cycles: int, held_cycles: int, beats: int) -> int:
    """``sim.stream_sim.hold_unit`` (not imported: this module runs without Amaranth)."""
    return max(1, (cycles - held_cycles) // (beats + 1))


class StreamBench:
    """Drives ``i_stream`` from a list of beats and collects ``o_stream``."""

    def __init__(self, dut, conf: dict):
        self.dut = dut
        self.conf = conf
        ip, op = conf.get("i_port", "i_stream"), conf.get("o_port", "o_stream")
        self.i_payload = getattr(dut, f"{ip}__payload")
        self.i_valid = getattr(dut, f"{ip}__valid")
        self.i_ready = getattr(dut, f"{ip}__ready")
        self.o_payload = getattr(dut, f"{op}__payload")
        self.o_valid = getattr(dut, f"{op}__valid")
        self.o_ready = getattr(dut, f"{op}__ready")
        self.clk_edge = RisingEdge(dut.clk)
        self.period = get_sim_steps(PERIOD_NS, "ns")
        self.t_ref = 0
        self.in_cycles: list[int] = []
        self.out: list[int] = []
        self.out_cycles: list[int] = []
        self.extra: list[int] = []
        self.idle_in_cycles = 0
        self.held_out_beats = 0
        self.held_out_cycles = 0
        self.rule_error: str | None = None

    def cycle(self) -> int:
        """The number of the rising edge we are at (call right after awaiting one)."""
        return (get_sim_time() - self.t_ref) // self.period - 1

    async def idle(self, n: int) -> None:
        """Let n rising edges pass with no action; resume right after the n-th.

        Called right after an edge. Lands mid-cycle first so that the order of the timer
        and the clock inside one time step never matters.
        """
        await Timer(n * PERIOD_NS - PERIOD_NS // 2, unit="ns")
        await self.clk_edge

    @staticmethod
    def pause(rng: random.Random, stall: float) -> int:
        n = 0
        while stall and rng.random() < stall:
            n += 1
        return n

    async def source(self, beats: list[int]) -> None:
        rng, stall = random.Random(self.conf["seed"]), self.conf["stall_in"]
        payload, valid, ready = self.i_payload, self.i_valid, self.i_ready
        for beat in beats:
            n = self.pause(rng, stall)
            if n:
                self.idle_in_cycles += n
                valid.value = 0
                await self.idle(n)
            payload.value = beat
            valid.value = 1
            await ReadOnly()
            while not ready.value:
                await RisingEdge(ready)
                await ReadOnly()
            await self.clk_edge
            self.in_cycles.append(self.cycle())
        valid.value = 0

    async def sink(self, n_out: int) -> None:
        rng, stall = random.Random(self.conf["seed"] + 1), self.conf["stall_out"]
        payload, valid, ready = self.o_payload, self.o_valid, self.o_ready
        progress, next_report = self.conf.get("progress_file"), 0.0
        for _ in range(n_out):
            n = self.pause(rng, stall)
            ready.value = 0 if n else 1
            await ReadOnly()
            while not valid.value:
                await RisingEdge(valid)
                await ReadOnly()
            beat = _to_int(payload.value)
            if n:   # edges so far, up to the one at which the beat is first offered
                unit = hold_unit(self.cycle() + 2, self.held_out_cycles, len(self.out))
                if not await self.hold(beat, n * unit):
                    return
                ready.value = 1
            await self.clk_edge
            self.out.append(beat)
            self.out_cycles.append(self.cycle())
            if progress and time.perf_counter() >= next_report:
                _write_progress(progress, len(self.out), self.out_cycles[-1])
                next_report = time.perf_counter() + PROGRESS_EVERY_S
        ready.value = 0

    async def hold(self, beat: int, n: int) -> bool:
        """Keep ``ready`` low while the offered ``beat`` waits ``n`` edges, checking the
        stream rule. Called in the read-only phase with ``valid`` high; returns in the
        middle of the cycle before the edge that will take the beat, True, or False with
        ``rule_error`` set when ``valid`` dropped or the payload changed.

        A short hold is checked edge by edge (one timer per cycle, sampling mid-cycle);
        a long one waits once for its end or a change of ``valid`` or the payload,
        whichever comes first (costlier to set up, but not per cycle)."""
        since = self.cycle() + 1                      # the first edge the beat waits at
        end = self.t_ref + (since + n) * self.period + self.period // 2
        valid, payload = self.o_valid, self.o_payload
        if n <= POLL_HOLD:
            for k in range(n - 1, -1, -1):            # mid-cycle before edge since + n - k
                await Timer(end - k * self.period - get_sim_time(), unit="step")
                if not valid.value or _to_int(payload.value) != beat:
                    return self.broken(beat, since)
        else:
            while True:
                timer = Timer(end - get_sim_time(), unit="step")
                if await First(timer, valid.value_change, payload.value_change) is timer:
                    break
                await ReadOnly()
                if not valid.value or _to_int(payload.value) != beat:
                    return self.broken(beat, since)   # else it changed and changed back
        self.held_out_beats += 1
        self.held_out_cycles += n
        return True

    def broken(self, beat: int, since: int) -> bool:
        """Record what broke the stream rule (called right after the change)."""
        now, where = _to_int(self.o_payload.value), f"at cycle {self.cycle() + 1}"
        self.rule_error = (
            f"stream rule broken on {self.conf.get('o_port', 'o_stream')}: "
            + (f"payload changed from {beat:#x} to {now:#x} {where} while the beat "
               f"offered since cycle {since} waited" if self.o_valid.value else
               f"valid dropped {where} before the beat offered since cycle {since} was "
               f"taken (payload {beat:#x}, now {now:#x} with valid low)"))
        return False

    async def linger(self, cycles: int) -> None:
        """Hold ``ready`` high for ``cycles`` edges and keep every beat that crosses."""
        self.o_ready.value = 1
        for _ in range(cycles):
            await ReadOnly()
            beat = _to_int(self.o_payload.value) if self.o_valid.value else None
            await self.clk_edge
            if beat is not None:
                self.extra.append(beat)
        self.o_ready.value = 0


def _read_beats(path: str) -> list[int]:
    with open(path) as f:
        return [int(line, 16) for line in f if line.strip()]


def _write_progress(path: str, beats: int, cycle: int) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(f"{beats} {cycle}\n")
    os.replace(path + ".tmp", path)


def _write_result(path: str, result: dict) -> None:
    with open(path, "w") as f:
        json.dump(result, f)


@cocotb.test()
async def stream_cosim(dut):
    """Feed the input file through the design and write what came out."""
    conf = json.loads(os.environ[CONF_ENV])
    beats = _read_beats(conf["in_file"])
    bench = StreamBench(dut, conf)

    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    dut.rst.value = 1
    bench.i_valid.value = 0
    bench.o_ready.value = 0
    for _ in range(conf.get("reset_cycles", 4)):
        await bench.clk_edge
    dut.rst.value = 0
    bench.t_ref = get_sim_time()
    wall, cpu = time.perf_counter(), time.process_time()

    cocotb.start_soon(bench.source(beats))
    deadline = Timer(conf["timeout_cycles"] * PERIOD_NS, unit="ns")
    first, _ = await select(bench.sink(conf["n_out"]), deadline)
    status = "ok" if first == 0 else "timeout"
    if bench.rule_error:
        status = "stream_rule"
    if status == "ok" and conf.get("linger_cycles", 0):
        await bench.linger(conf["linger_cycles"])
    cycles = bench.cycle() + 1 if status != "timeout" else conf["timeout_cycles"]
    sim_seconds, sim_cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu

    result = {
        "status": status,
        "out": [f"{b:x}" for b in bench.out],
        "out_cycles": bench.out_cycles,
        "in_cycles": bench.in_cycles,
        "extra": [f"{b:x}" for b in bench.extra],
        "cycles": cycles,
        "sim_seconds": sim_seconds,
        "sim_cpu_seconds": sim_cpu_seconds,
        "idle_in_cycles": bench.idle_in_cycles,
        "held_out_beats": bench.held_out_beats,
        "held_out_cycles": bench.held_out_cycles,
        "rule_error": bench.rule_error,
        "ports": {name: f"{_to_int(getattr(dut, name).value):x}"
                  for name in conf.get("read_ports", ())},
    }
    _write_result(conf["out_file"], result)
    assert status != "stream_rule", bench.rule_error
    assert status == "ok", (
        f"timeout: {len(bench.out)} of {conf['n_out']} output beats after "
        f"{conf['timeout_cycles']} cycles ({len(bench.in_cycles)} of {len(beats)} input "
        f"beats accepted)")
