"""cocotb bench of the DDR3 controller (``rtl_gen.dram_controller.DramController``) on the
simulation core of ``boards.litedram`` (LiteDRAM's controller over its DFI-level DRAM
model), under Verilator.

``build(cross_domain=...)`` makes the Verilator build (the component's Verilog with the
generated core's beside it; both cached). The cocotb tests run inside the simulator,
launched by ``sim.verilator.run_cocotb(build, "sim.dram_sim", ...)``; their settings come
from the environment variable ``BNNHW_DRAM_CONF``, a JSON object::

    test       "pattern" or "bandwidth"
    seed       of every random choice (numpy's default_rng(seed); stalls random.Random)
    words      pattern: words written at random addresses over the 256 MB
    ops        pattern: random reads and writes mixed, after the first read-back
    stall      probability that a driver holds valid (or the sink ready) low a cycle
    fault      pattern, planted faults: "read_addr" reads every word at its address with
               bit 0 flipped; "mask" sends all-ones byte masks while the model keeps them
    out_file   where the JSON result goes

``pattern``: writes ``words`` random 128-bit words at distinct random addresses with
full byte masks, rewrites half of them with random byte masks, reads every word back,
then runs ``ops`` random reads and writes mixed in one command stream (reads of words
just written included); every read is compared with a byte-exact model of the memory
(``np.array_equal`` on the bytes), with random stalls on all three streams. The result
holds the number of mismatching words and the first few of them.

``bandwidth``: no stalls; for each pattern of ``patterns`` (``[name, words, stride]``)
reads ``words`` words at addresses ``i * stride``, commands back to back and ``rdata``
always ready, and records the cycles from the first command taken to the last word out;
then ``latency_reads`` single reads on an idle controller, each the cycles from its
command taken to its word valid; and a sequential write run of ``words`` words.
"""

from __future__ import annotations

import json
import os
import random

import numpy as np

CONF_ENV = "BNNHW_DRAM_CONF"
PERIOD_NS = 10
WORD_BYTES = 16
INIT_TIMEOUT_CYCLES = 100_000


def build(cross_domain: str | None = None, cache=None):
    """The Verilator build of the controller on the simulation core (cached)."""
    from boards import litedram
    from rtl_gen.dram_controller import DramController, DramControllerParams
    from sim.verilator import to_verilog, verilator_build

    core = litedram.generate(litedram.SIM_CONFIG, sim=True)
    top = DramController(DramControllerParams.from_core(core, cross_domain=cross_domain))
    text = to_verilog(top, "dram_top") + "\n" + core.verilog[0].read_text()
    return verilator_build(text, toplevel="dram_top", cache=cache)


def _words_bytes(values) -> np.ndarray:
    return np.array([list(int(v).to_bytes(WORD_BYTES, "little")) for v in values],
                    dtype=np.uint8).reshape(-1, WORD_BYTES)


def _mask_bits(mask: int) -> np.ndarray:
    return np.array([(mask >> i) & 1 for i in range(WORD_BYTES)], dtype=bool)


class DramBench:
    """Drives ``cmd`` and ``wdata`` from lists and collects ``rdata``, with stalls."""

    def __init__(self, dut, stall: float, seed: int):
        from cocotb.triggers import RisingEdge

        self.dut = dut
        self.stall = stall
        self.rng = random.Random(seed)
        self.edge = RisingEdge(dut.clk)
        self.cycle = 0

    async def clock(self):
        while True:
            await self.edge
            self.cycle += 1

    async def start(self):
        import cocotb
        from cocotb.clock import Clock

        dut = self.dut
        Clock(dut.clk, PERIOD_NS, unit="ns").start()
        for port in ("cmd__valid", "wdata__valid", "rdata__ready"):
            getattr(dut, port).value = 0
        dut.rst.value = 1
        for _ in range(4):
            await self.edge
        dut.rst.value = 0
        cocotb.start_soon(self.clock())
        start = self.cycle
        while not int(dut.init_done.value):
            await self.edge
            if self.cycle - start > INIT_TIMEOUT_CYCLES:
                raise AssertionError(f"init_done still low after {INIT_TIMEOUT_CYCLES} cycles")
        return self.cycle - start

    async def _pause(self):
        while self.stall and self.rng.random() < self.stall:
            await self.edge

    async def _send(self, valid, ready, payload, beats, times=None):
        from cocotb.triggers import ReadOnly

        for beat in beats:
            await self._pause()
            payload.value = beat
            valid.value = 1
            await ReadOnly()
            while not int(ready.value):
                await self.edge
                await ReadOnly()
            await self.edge
            if times is not None:
                times.append(self.cycle)
            valid.value = 0

    async def send_cmds(self, cmds, times=None):
        """``cmds``: ``(we, addr)`` pairs, in order."""
        beats = [(addr << 1) | we for we, addr in cmds]
        await self._send(self.dut.cmd__valid, self.dut.cmd__ready, self.dut.cmd__payload,
                         beats, times)

    async def send_wdata(self, words):
        """``words``: ``(data, mask)`` pairs, in order."""
        beats = [(mask << 128) | data for data, mask in words]
        await self._send(self.dut.wdata__valid, self.dut.wdata__ready,
                         self.dut.wdata__payload, beats)

    async def receive(self, n, out, times=None):
        from cocotb.triggers import ReadOnly

        dut = self.dut
        for _ in range(n):
            dut.rdata__ready.value = 0
            await self._pause()
            dut.rdata__ready.value = 1
            await ReadOnly()
            while not int(dut.rdata__valid.value):
                await self.edge
                await ReadOnly()
            out.append(int(dut.rdata__payload.value))
            await self.edge
            if times is not None:
                times.append(self.cycle)
        dut.rdata__ready.value = 0

    async def run(self, cmds, wdata):
        """Send ``cmds`` and ``wdata`` together; return the read words, in order."""
        import cocotb

        n_reads = sum(1 for we, _ in cmds if not we)
        out: list[int] = []
        tasks = [cocotb.start_soon(self.send_cmds(cmds)),
                 cocotb.start_soon(self.send_wdata(wdata)),
                 cocotb.start_soon(self.receive(n_reads, out))]
        for t in tasks:
            await t
        return out


def _conf() -> dict:
    return json.loads(os.environ[CONF_ENV])


def _write_result(result: dict) -> None:
    path = _conf().get("out_file")
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)


class MemoryModel:
    """The expected bytes of every word written so far."""

    def __init__(self):
        self.words: dict[int, np.ndarray] = {}

    def write(self, addr: int, data: int, mask: int):
        old = self.words.get(addr, np.zeros(WORD_BYTES, dtype=np.uint8))
        self.words[addr] = np.where(_mask_bits(mask), _words_bytes([data])[0], old)

    def read(self, addr: int) -> np.ndarray:
        return self.words[addr]


def _random_word(rng) -> int:
    return int.from_bytes(rng.integers(0, 256, WORD_BYTES, dtype=np.uint8).tobytes(), "little")


async def _pattern(dut, conf):
    rng = np.random.default_rng(conf["seed"])
    bench = DramBench(dut, conf["stall"], conf["seed"])
    init_cycles = await bench.start()
    fault = conf.get("fault")
    n = conf["words"]
    addr_space = 1 << len(dut.cmd__payload) - 1
    addrs = [int(a) for a in rng.choice(addr_space, size=n, replace=False)]
    model = MemoryModel()
    checked = {"words": 0, "mismatches": 0, "first": []}

    def compare(read_addrs, got):
        want = np.stack([model.read(a) for a in read_addrs])
        have = _words_bytes(got)
        checked["words"] += len(read_addrs)
        if not np.array_equal(want, have):
            bad = np.flatnonzero((want != have).any(axis=1))
            checked["mismatches"] += int(bad.size)
            for i in bad[:4 - len(checked["first"])]:
                checked["first"].append({"addr": read_addrs[i], "want": want[i].tobytes().hex(),
                                         "got": have[i].tobytes().hex()})

    def hw_mask(mask):
        return 0xFFFF if fault == "mask" else mask

    def hw_read_addr(addr):
        return addr ^ 1 if fault == "read_addr" else addr

    # 1. every word with a full mask; 2. half of them again with random byte masks
    full = [(_random_word(rng), 0xFFFF) for _ in addrs]
    partial_addrs = addrs[: n // 2]
    partial = [(_random_word(rng), int(rng.integers(0, 1 << 16))) for _ in partial_addrs]
    for a, (d, mk) in zip(addrs, full):
        model.write(a, d, mk)
    for a, (d, mk) in zip(partial_addrs, partial):
        model.write(a, d, mk)
    if fault == "read_addr":   # the neighbours read by mistake hold data of their own
        for a in addrs:
            if a ^ 1 not in model.words:
                model.write(a ^ 1, 0, 0)
    cmds = [(1, a) for a in addrs + partial_addrs]
    wdata = [(d, hw_mask(mk)) for d, mk in full + partial]
    await bench.run(cmds, wdata)
    # 3. read everything back
    got = await bench.run([(0, hw_read_addr(a)) for a in addrs], [])
    compare(addrs, got)
    # 4. mixed reads and writes in one command stream, against the model in order
    cmds, wdata, read_addrs, expected = [], [], [], []
    for _ in range(conf["ops"]):
        a = addrs[int(rng.integers(0, n))]
        if rng.random() < 0.5:
            d, mk = _random_word(rng), int(rng.integers(0, 1 << 16))
            model.write(a, d, mk)
            cmds.append((1, a))
            wdata.append((d, hw_mask(mk)))
        else:
            cmds.append((0, hw_read_addr(a)))
            read_addrs.append(a)
            expected.append(model.read(a).copy())
    got = await bench.run(cmds, wdata)
    have = _words_bytes(got)
    want = np.stack(expected) if expected else np.zeros((0, WORD_BYTES), np.uint8)
    checked["words"] += len(read_addrs)
    if not np.array_equal(want, have):
        bad = np.flatnonzero((want != have).any(axis=1))
        checked["mismatches"] += int(bad.size)
        for i in bad[:4 - len(checked["first"])]:
            checked["first"].append({"addr": read_addrs[i], "want": want[i].tobytes().hex(),
                                     "got": have[i].tobytes().hex()})
    checked.update(init_cycles=init_cycles, cycles=bench.cycle)
    _write_result(checked)
    assert checked["mismatches"] == 0, (
        f"{checked['mismatches']} of {checked['words']} words read back differ; first: "
        f"{checked['first']}")


async def _bandwidth(dut, conf):
    import cocotb

    bench = DramBench(dut, 0.0, conf["seed"])
    result = {"init_cycles": await bench.start(), "reads": {}, "latency": []}
    for name, words, stride in conf["patterns"]:
        cmd_times, out_times, out = [], [], []
        addr_mask = (1 << len(dut.cmd__payload) - 1) - 1
        cmds = [(0, (i * stride) & addr_mask) for i in range(words)]
        tasks = [cocotb.start_soon(bench.send_cmds(cmds, cmd_times)),
                 cocotb.start_soon(bench.receive(words, out, out_times))]
        for t in tasks:
            await t
        result["reads"][name] = {"words": words, "stride": stride,
                                 "cycles": out_times[-1] - cmd_times[0] + 1}
    for i in range(conf["latency_reads"]):
        for _ in range(64):                                   # let the controller go idle
            await bench.edge
        cmd_times, out_times, out = [], [], []
        tasks = [cocotb.start_soon(bench.send_cmds([(0, 4096 * i)], cmd_times)),
                 cocotb.start_soon(bench.receive(1, out, out_times))]
        for t in tasks:
            await t
        result["latency"].append(out_times[0] - cmd_times[0])
    words = conf["patterns"][0][1]
    cmd_times: list[int] = []
    tasks = [cocotb.start_soon(bench.send_cmds([(1, i) for i in range(words)], cmd_times)),
             cocotb.start_soon(bench.send_wdata([(i, 0xFFFF) for i in range(words)]))]
    for t in tasks:
        await t
    result["writes"] = {"words": words, "cycles": cmd_times[-1] - cmd_times[0] + 1}
    _write_result(result)


try:
    import cocotb

    @cocotb.test()
    async def dram(dut):
        conf = _conf()
        await {"pattern": _pattern, "bandwidth": _bandwidth}[conf["test"]](dut, conf)
except ImportError:  # pragma: no cover - imported outside the simulator without cocotb
    pass
