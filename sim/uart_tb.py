"""cocotb bench of the UART PHY (``rtl_gen.uart.UART``) under Verilator, with
``cocotbext.uart``'s ``UartSource`` on ``rx`` and ``UartSink`` on ``tx``.

Run by ``tests/sim/test_uart_cocotb.py`` through ``sim.verilator.run_cocotb`` (this module
runs inside the simulator). Its settings come from the environment variable
``BNNHW_UART_CONF``, a JSON object::

    clock_hz   the design's clock (the bench clock is always 100 MHz, 10 ns)
    baud       the line rate the bench assumes (the design's, unless a test plants a fault)
    bytes      bytes per case
    seed       random bytes: random.Random(seed + case number)
    out_file   where the JSON result goes: per case, the sender's realised baud error

The cases (one cocotb test each; every one resets the design first):

- ``rx_exact``, ``rx_fast``, ``rx_slow``: random bytes back to back from a ``UartSource``
  at the nominal rate and about 2 % or more faster and slower, all received, in order,
  with no status pulse. ``UartSource`` times bits in whole nanoseconds
  (``int(1e9 / baud)``), so a bit is ``bit_ns`` long: the nearest whole number for the
  exact case (333 ns at 3 Mbaud, 83 ns at 12 Mbaud: +0.1 %, +0.4 %), and for the others
  the nearest whole number at least 2 % away (326/341 ns at 3 Mbaud, +2.2 %/-2.2 %;
  81/86 ns at 12 Mbaud, +2.9 %/-3.1 %); the realised errors go into the result.
- ``rx_break``: ``rx`` held low for three frame times, then idle for one: exactly one
  ``break_detect`` pulse, no byte and no framing error; then bytes from a ``UartSource``
  are received again.
- ``tx_loopback``: bytes offered back to back on ``i_stream``: taken exactly every ``10 N``
  cycles (``N = clock_hz / baud``, rounded up from the first), decoded by a ``UartSink`` on
  ``tx``, and, with ``rx`` wired to ``tx`` by the bench, received on ``o_stream`` too.
"""

from __future__ import annotations

import json
import math
import os
import random
from fractions import Fraction

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import Edge, ReadOnly, RisingEdge, Timer, with_timeout
from cocotb.utils import get_sim_time
from cocotbext.uart import UartSink, UartSource

CONF_ENV = "BNNHW_UART_CONF"
PERIOD_NS = 10
STATUS = ("framing_error", "overrun", "break_detect")


def _conf() -> dict:
    return json.loads(os.environ[CONF_ENV])


def _record(case: str, figures: dict) -> None:
    """Add ``figures`` for ``case`` to the result file (read, update, write back)."""
    path = _conf().get("out_file")
    if not path:
        return
    result = {}
    if os.path.exists(path):
        with open(path) as f:
            result = json.load(f)
    result[case] = figures
    with open(path, "w") as f:
        json.dump(result, f)


def source_baud(bit_ns: int) -> float:
    """A baud for which ``UartSource`` makes bits of exactly ``bit_ns`` nanoseconds."""
    baud = 1e9 / (bit_ns + 0.5)
    assert int(1e9 / baud) == bit_ns
    return baud


def bit_ns_for(baud: int, case: str) -> int:
    """The whole-nanosecond bit time of a case (see the module docstring)."""
    nominal = Fraction(10**9, baud)
    if case == "exact":
        return round(nominal)
    if case == "fast":
        return math.floor(nominal / Fraction(102, 100))
    return math.ceil(nominal / Fraction(98, 100))


class UartBench:
    """Clock, reset and monitors: every byte taken from ``o_stream`` (always ready) and a
    count of each status pulse."""

    def __init__(self, dut):
        self.dut = dut
        conf = _conf()
        self.baud = conf["baud"]
        self.cycles_per_bit = Fraction(conf["clock_hz"], self.baud)
        self.frame_ns = math.ceil(10 * 10**9 / self.baud)     # whole ns: Timer needs them
        self.received: list[int] = []
        self.pulses = dict.fromkeys(STATUS, 0)

    async def start(self) -> None:
        dut = self.dut
        Clock(dut.clk, PERIOD_NS, unit="ns").start()
        dut.rst.value = 1
        dut.rx.value = 1
        dut.i_stream__valid.value = 0
        dut.o_stream__ready.value = 1
        for _ in range(4):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        cocotb.start_soon(self._collect())
        for name in STATUS:
            cocotb.start_soon(self._count(name))
        # the receiver arms on a high line; then land just after a rising edge, where
        # every write of this bench happens (never in the same time step as an edge)
        await Timer(10 * PERIOD_NS + PERIOD_NS // 2, unit="ns")
        await RisingEdge(dut.clk)

    async def _collect(self) -> None:
        # valid is high for one cycle per byte (ready is always high, bytes are a frame apart)
        valid, payload = self.dut.o_stream__valid, self.dut.o_stream__payload
        while True:
            await RisingEdge(valid)
            await ReadOnly()
            self.received.append(int(payload.value))

    async def _count(self, name: str) -> None:
        signal = getattr(self.dut, name)
        while True:
            await RisingEdge(signal)
            self.pulses[name] += 1

    async def wait_received(self, count: int, frames: float) -> None:
        """Until ``count`` bytes have arrived; fail after ``frames`` frame times."""
        async def enough():
            while len(self.received) < count:
                await RisingEdge(self.dut.o_stream__valid)
                await ReadOnly()
        await with_timeout(enough(), int(frames * self.frame_ns) + 1000, "ns")

    async def send(self, data: list[int]) -> list[int]:
        """Offer ``data`` back to back on ``i_stream``; the cycle each byte was taken at."""
        dut = self.dut
        taken = []
        for byte in data:
            dut.i_stream__payload.value = byte
            dut.i_stream__valid.value = 1
            await ReadOnly()
            while not dut.i_stream__ready.value:
                await RisingEdge(dut.i_stream__ready)
                await ReadOnly()
            await RisingEdge(dut.clk)
            taken.append(int(get_sim_time("ns")) // PERIOD_NS)
        dut.i_stream__valid.value = 0
        return taken


def _data(case: int) -> list[int]:
    conf = _conf()
    rng = random.Random(conf["seed"] + case)
    return [0x00, 0xFF, 0x55, 0xAA] + [rng.randrange(256) for _ in range(conf["bytes"] - 4)]


async def _rx_case(dut, case: str, number: int) -> None:
    bench = UartBench(dut)
    await bench.start()
    bit_ns = bit_ns_for(bench.baud, case)
    error = float(Fraction(10**9, bench.baud) / bit_ns - 1)
    _record(f"rx_{case}", {"bit_ns": bit_ns, "baud_error": error})
    dut._log.info("rx %s: %d ns bits, baud error %+.3f %%", case, bit_ns, 100 * error)
    source = UartSource(dut.rx, baud=source_baud(bit_ns))
    data = _data(number)
    await source.write(data)
    await bench.wait_received(len(data), len(data) + 4)
    await Timer(2 * bench.frame_ns, unit="ns")      # nothing more arrives
    assert bench.received == data, f"sent {data}, received {bench.received}"
    assert not any(bench.pulses.values()), bench.pulses


@cocotb.test()
async def rx_exact(dut):
    await _rx_case(dut, "exact", 0)


@cocotb.test()
async def rx_fast(dut):
    await _rx_case(dut, "fast", 1)


@cocotb.test()
async def rx_slow(dut):
    await _rx_case(dut, "slow", 2)


@cocotb.test()
async def rx_break(dut):
    bench = UartBench(dut)
    await bench.start()
    dut.rx.value = 0
    await Timer(3 * bench.frame_ns, unit="ns")
    dut.rx.value = 1
    await Timer(bench.frame_ns, unit="ns")
    assert bench.pulses == {"framing_error": 0, "overrun": 0, "break_detect": 1}, bench.pulses
    assert bench.received == []
    source = UartSource(dut.rx, baud=source_baud(bit_ns_for(bench.baud, "exact")))
    data = _data(3)
    await source.write(data)
    await bench.wait_received(len(data), len(data) + 4)
    assert bench.received == data, f"sent {data}, received {bench.received}"
    assert bench.pulses["break_detect"] == 1 and not bench.pulses["framing_error"]


@cocotb.test()
async def tx_loopback(dut):
    bench = UartBench(dut)
    await bench.start()
    sink = UartSink(dut.tx, baud=bench.baud)

    async def wire():                                   # rx follows tx
        while True:
            await Edge(dut.tx)
            dut.rx.value = dut.tx.value

    cocotb.start_soon(wire())
    data = _data(4)
    taken = await bench.send(data)
    n = bench.cycles_per_bit
    spacing = [t - taken[0] for t in taken]
    assert spacing == [math.ceil(10 * i * n) for i in range(len(data))], spacing
    await bench.wait_received(len(data), 4)
    await Timer(2 * bench.frame_ns, unit="ns")
    decoded = list(sink.read_nowait())
    assert decoded == data, f"sent {data}, UartSink decoded {decoded}"
    assert bench.received == data, f"sent {data}, looped back {bench.received}"
    assert not any(bench.pulses.values()), bench.pulses
    _record("tx_loopback", {"cycles": spacing[-1], "bytes": len(data)})
