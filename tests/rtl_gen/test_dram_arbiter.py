# amaranth: UnusedElaboratable=no
"""DRAM arbiter (rtl_gen.dram_arbiter) against a behavioural controller with latency and
random stalls: 1, 2 and 3 random readers, each checked to get exactly its words in its
order, while configuration beats (dropped ones among them) write another region with
masked writes; both write orders a controller may take (data after its command, data
first); round-robin order; the outstanding bound; the LFSR's stall rate; a real TiledMVTU reading preloaded
weights and another reading weights uploaded through ``cfg``, results equal to the
reference; the DramController's members connect directly; planted faults."""

import random
from collections import deque

import numpy as np
import pytest
from amaranth import Module
from amaranth.back import rtlil
from amaranth.lib import wiring
from amaranth.sim import Simulator

from bnnhw.packing import MemSel, cfg_beats, cfg_word
from bnnhw.validate import ParameterError
from rtl_gen.dram_arbiter import DramArbiter, DramArbiterParams
from rtl_gen.dram_controller import DramController, DramControllerParams
from rtl_gen.tiled_mvtu import TiledMVTU
from sim.stream_sim import Stalls, check_stream_rule, stream_get, stream_put
from tests.rtl_gen.test_tiled_mvtu import build, decode, reference, stream_in

WORD = (1 << 128) - 1


class Controller:
    """A behavioural DRAM controller on the arbiter's ``dram`` port.

    ``memory`` (address -> 128-bit word) is read and written in place. ``cmd.ready`` and
    ``wdata.ready`` drop at random (``stall``); a read's word is offered ``latency`` cycles
    after its command, held back at random (``stall``) before it is first offered and
    then held until taken. ``data_first`` takes a write's data before its command (as
    ``DramController``'s buffered port: the command waits for its data), otherwise only
    with or after it (as LiteDRAM's native port). A write is committed, under its byte
    enables, once both its command and data are in. Checks, raising ``AssertionError``:
    ``wdata.valid`` never before its write's command is offered; at most ``bound`` reads
    in flight; ``busy`` high whenever the controller or the port holds work.
    """

    def __init__(self, memory, *, latency=6, stall=0.0, data_first=False, bound=None,
                 seed=0):
        self.memory, self.latency, self.stall = memory, latency, stall
        self.data_first, self.bound = data_first, bound
        self.rng = random.Random(seed)
        self.commands: list[tuple[int, int]] = []    # (we, addr) in the order taken
        self.command_cycles: list[int] = []          # the cycle each was taken
        self.max_reads = self.cycles = self.stalls = 0

    def stalled(self):
        if self.stall and self.rng.random() < self.stall:
            self.stalls += 1
            return True
        return False

    def testbench(self, port, busy):
        async def run(ctx):
            reads = deque()          # [first cycle it may be offered, word]
            waddrs, wbeats = deque(), deque()
            writes = data_in = 0     # write commands and data beats taken
            cycle, offered = 0, False
            while True:
                cv, cmd = ctx.get(port.cmd.valid), ctx.get(port.cmd.payload)
                is_write = cv and cmd.we
                cready = not self.stalled()
                if self.data_first and is_write and data_in <= writes:
                    cready = False
                ctx.set(port.cmd.ready, cready)
                if self.data_first:
                    wready = True
                else:
                    wready = writes > data_in or (is_write and cready)
                ctx.set(port.wdata.ready, wready and not self.stalled())
                if not offered and reads and reads[0][0] <= cycle and not self.stalled():
                    offered = True
                ctx.set(port.rdata.valid, offered)
                ctx.set(port.rdata.payload, reads[0][1] if offered else 0)
                _, _, cv, cmd, cr, wv, wd, wr, rr, b = await ctx.tick().sample(
                    port.cmd.valid, port.cmd.payload, port.cmd.ready, port.wdata.valid,
                    port.wdata.payload, port.wdata.ready, port.rdata.ready, busy)
                if wv:
                    assert writes + (cv and cmd.we) > data_in, \
                        f"wdata offered at cycle {cycle} before its write command"
                if (cv or wv or reads or writes > data_in) and not b:
                    raise AssertionError(f"busy low at cycle {cycle} with work pending")
                if cv and cr:
                    self.commands.append((cmd.we, cmd.addr))
                    self.command_cycles.append(cycle)
                    if cmd.we:
                        writes += 1
                        waddrs.append(cmd.addr)
                    else:
                        reads.append([cycle + self.latency, self.memory[cmd.addr]])
                        self.max_reads = max(self.max_reads, len(reads))
                        if self.bound is not None:
                            assert len(reads) <= self.bound, \
                                f"{len(reads)} reads in flight at cycle {cycle}"
                if wv and wr:
                    data_in += 1
                    wbeats.append((wd.data, wd.we))
                while waddrs and wbeats:
                    self.write(waddrs.popleft(), *wbeats.popleft())
                if offered and rr:
                    reads.popleft()
                    offered = False
                cycle += 1
                self.cycles = cycle

        return run

    def write(self, addr, data, we):
        mask = sum(0xFF << 8 * b for b in range(16) if we >> b & 1)
        self.memory[addr] = (self.memory.get(addr, 0) & ~mask) | (data & mask)


def reader_bench(port, addrs, got, done, seed, stall=0.3):
    """Reader testbenches: commands for ``addrs`` (random idles), words into ``got``
    (random holds); ``done[0]`` counts the readers finished."""
    rng_c, rng_d = random.Random(seed), random.Random(seed + 1)

    async def commands(ctx):
        for a in addrs:
            await stream_put(ctx, port.cmd, a, rng_c, stall)

    async def words(ctx):
        stalls = Stalls()
        for _ in addrs:
            got.append(await stream_get(ctx, port.rdata, rng_d, stall, stalls=stalls))
        done[0] += 1

    return commands, words


def expected_writes(memory, beats):
    """``memory`` after the configuration ``beats`` (chunks past the word dropped)."""
    out = dict(memory)
    for b in beats:
        data, chunk, addr = b & 0xFFFFFFFF, b >> 32 & 0x3FF, b >> 42 & 0xFFFFF
        if chunk < 4:
            out[addr] = out.get(addr, 0) & ~(0xFFFFFFFF << 32 * chunk) | data << 32 * chunk
    return out


def scenario(readers, seed, reads=40, words=12):
    """Preloaded memory (reader ``i`` reads region ``1000 i``, the writes go to ``7000``),
    each reader's addresses (repeats and jumps) and the configuration beats: whole words,
    single chunks, and beats to drop."""
    rng = random.Random(seed)
    memory = {1000 * i + a: rng.getrandbits(128) for i in range(readers) for a in range(32)}
    memory |= {7000 + a: rng.getrandbits(128) for a in range(words)}
    addrs = [[1000 * i + rng.randrange(32) for _ in range(reads)] for i in range(readers)]
    beats = cfg_beats(MemSel.WEIGHTS, [rng.getrandbits(128) for _ in range(words // 2)],
                      128, 7000)
    beats += [cfg_word(rng.randrange(4), 7000 + rng.randrange(words), rng.randrange(4),
                       rng.getrandbits(32)) for _ in range(words)]
    beats += [cfg_word(0, 7000 + rng.randrange(words), rng.randrange(4, 1024),
                       rng.getrandbits(32)) for _ in range(4)]
    rng.shuffle(beats)
    return memory, addrs, beats


def run(arb, memory, addrs, beats, *, seed=0, stall=0.3, latency=6, data_first=False,
        bound=None, max_cycles=20_000):
    """Readers, the cfg writer and the controller on ``arb``; returns (words each reader
    got, the controller) once all are done and ``busy`` is low, or after ``max_cycles``."""
    ctrl = Controller(dict(memory), latency=latency, stall=stall, data_first=data_first,
                      bound=bound, seed=seed + 100)
    got, done = [[] for _ in addrs], [0]
    sim = Simulator(arb)
    sim.add_clock(1e-8)
    for i, (port, a) in enumerate(zip(arb.readers, addrs)):
        for bench in reader_bench(port, a, got[i], done, seed + 10 * i, stall):
            sim.add_testbench(bench, background=True)
        sim.add_testbench(check_stream_rule(port.rdata, f"reader_{i}.rdata"), background=True)
    for s, name in ((arb.dram.cmd, "dram.cmd"), (arb.dram.wdata, "dram.wdata")):
        sim.add_testbench(check_stream_rule(s, name), background=True)
    sim.add_testbench(ctrl.testbench(arb.dram, arb.busy), background=True)
    rng = random.Random(seed + 5)

    async def writer(ctx):
        for b in beats:
            await stream_put(ctx, arb.cfg, b, rng, stall)
        done[0] += 1

    async def main(ctx):
        for _ in range(max_cycles):
            if done[0] == len(addrs) + 1 and not ctx.get(arb.busy):
                return
            await ctx.tick()

    sim.add_testbench(writer, background=True)
    sim.add_testbench(main)
    sim.run()
    return got, ctrl


def arbiter(readers, cls=DramArbiter, **kw):
    return cls(DramArbiterParams(readers=readers, **kw))


@pytest.mark.parametrize("data_first", [False, True])
@pytest.mark.parametrize("readers", [1, 2, 3])
def test_readers_get_their_words_while_cfg_writes(readers, data_first):
    memory, addrs, beats = scenario(readers, readers + 10 * data_first)
    want_mem = expected_writes(memory, beats)
    got, ctrl = run(arbiter(readers, stall=0.25, outstanding=6, seed=readers), memory,
                    addrs, beats, seed=readers + 10 * data_first, data_first=data_first, bound=6)
    assert got == [[want_mem[a] for a in a_list] for a_list in addrs]
    assert ctrl.memory == want_mem
    assert ctrl.memory != memory               # the writes did change words
    assert sum(we for we, _ in ctrl.commands) == sum(b >> 32 & 0x3FF < 4 for b in beats)
    assert ctrl.stalls and ctrl.max_reads > 1


def test_outstanding_bound_reached_not_passed():
    """A far controller: reads pile up to exactly ``outstanding``."""
    memory, addrs, beats = scenario(2, 7, reads=30)
    got, ctrl = run(arbiter(2, outstanding=4), memory, addrs, beats[:8], stall=0.0,
                    latency=30, bound=4)
    assert got == [[memory[a] for a in a_list] for a_list in addrs]
    assert ctrl.max_reads == 4


@pytest.mark.parametrize("stall", [0.0, 0.25])
def test_stall_rate(stall):
    """Requesters always waiting, a controller always ready: one command per cycle, or
    about ``1 - stall`` with the LFSR's stalls."""
    memory, addrs, _ = scenario(3, 9, reads=100)
    _, ctrl = run(arbiter(3, stall=stall), memory, addrs, [], stall=0.0, latency=2)
    c = ctrl.command_cycles
    rate = (len(c) - 1) / (c[-1] - c[0])
    print("stall", stall, "commands per cycle", rate)
    assert abs(rate - (1 - stall)) < 0.05
    assert stall == 0 or rate < 0.9                  # the check sees the stalls


def test_round_robin_order():
    """Every requester always waiting, no stalls: reader 0, 1, 2, the writer, reader 0..."""
    memory, addrs, beats = scenario(3, 8, reads=12, words=12)
    beats = [b for b in beats if b >> 32 & 0x3FF < 4][:12]
    _, ctrl = run(arbiter(3), memory, addrs, beats, stall=0.0, latency=2)
    who = [3 if we else addr // 1000 for we, addr in ctrl.commands]
    assert who[:48] == [0, 1, 2, 3] * 12


class SwappedRoutes(DramArbiter):
    """Planted fault: the words of readers 0 and 1 go to each other."""

    def route(self, head):
        return head ^ (head < 2)


class ShiftedEnables(DramArbiter):
    """Planted fault: a chunk's byte enables are those of the next chunk."""

    def write_beat(self, beat):
        data, we = super().write_beat(beat)
        return data, we.rotate_left(4)


class EarlyData(DramArbiter):
    """Planted fault: a write's data is offered while its command is held back."""

    def wdata_valid(self, wdata_full, write_cmd_hidden):
        return wdata_full


class NotBusyReading(DramArbiter):
    """Planted fault: ``busy`` ignores the reads in flight."""

    def busy_when(self, cmd_full, wdata_full, reads_in_flight):
        return cmd_full | wdata_full


class FixedPriority(DramArbiter):
    """Planted fault: reader 0 first, always."""

    def _round_robin(self, m, requests, grant, last):
        with m.If(requests[0]):
            m.d.comb += grant.eq(0)
        for k in range(1, len(requests)):
            with m.Elif(requests[k]):
                m.d.comb += grant.eq(k)


def test_swapped_routes_are_caught():
    memory, addrs, beats = scenario(2, 2)
    got, _ = run(arbiter(2, cls=SwappedRoutes), memory, addrs, beats[:4], max_cycles=3000)
    assert got != [[memory[a] for a in a_list] for a_list in addrs]


def test_shifted_byte_enables_are_caught():
    memory, addrs, beats = scenario(1, 3, reads=4)
    _, ctrl = run(arbiter(1, cls=ShiftedEnables), memory, addrs, beats)
    assert ctrl.memory != expected_writes(memory, beats)


@pytest.mark.parametrize("cls, message", [
    (EarlyData, "before its write command"), (NotBusyReading, "busy low"),
    (DramArbiter, "reads in flight")])
def test_controller_checks_catch_faults(cls, message):
    """Early write data; busy low during reads; an arbiter allowing 8 reads in flight
    against a controller that takes 4."""
    memory, addrs, beats = scenario(2, 4, reads=20)
    with pytest.raises(AssertionError, match=message):
        run(arbiter(2, cls=cls, stall=0.3, outstanding=8), memory, addrs, beats,
            latency=20, bound=4 if cls is DramArbiter else None)


def test_fixed_priority_is_caught():
    memory, addrs, beats = scenario(3, 8, reads=12, words=12)
    beats = [b for b in beats if b >> 32 & 0x3FF < 4][:12]
    _, ctrl = run(arbiter(3, cls=FixedPriority), memory, addrs, beats, stall=0.0, latency=2)
    who = [3 if we else addr // 1000 for we, addr in ctrl.commands]
    assert who[:48] != [0, 1, 2, 3] * 12


class TwoUnits(wiring.Component):
    """Two TiledMVTUs on one arbiter: unit ``a`` connected directly, unit ``b``'s
    commands held back until ``go`` (its weights are uploaded through ``cfg`` first)."""

    def __init__(self, pa, pb, **arb):
        self.a, self.b = TiledMVTU(pa), TiledMVTU(pb)
        self.arb = DramArbiter(DramArbiterParams(readers=2, **arb))
        super().__init__({"go": wiring.In(1)})

    def elaborate(self, platform):
        m = Module()
        a, b, arb = self.a, self.b, self.arb
        m.submodules.a, m.submodules.b, m.submodules.arb = a, b, arb
        wiring.connect(m, a.dram, arb.reader_0)
        wiring.connect(m, arb.reader_1.rdata, b.dram.rdata)
        m.d.comb += [arb.reader_1.cmd.payload.eq(b.dram.cmd.payload),
                     arb.reader_1.cmd.valid.eq(b.dram.cmd.valid & self.go),
                     b.dram.cmd.ready.eq(arb.reader_1.cmd.ready & self.go)]
        return m


def test_tiled_units_read_their_weights_through_the_arbiter():
    """Unit a's weights preloaded at 5.., unit b's uploaded by cfg at 300.. (then ``go``);
    while both run, cfg writes go to 7000..; stalls everywhere."""
    pa, wa, xa = build(1, 8, 16, 2, 8, 4, scores=True, images=3)
    pb, wb, xb = build(2, 9, 30, 3, 10, 3, oh=2, ow=2, nx=2, images=3, base_addr=300)
    dut = TwoUnits(pa, pb, stall=0.2, outstanding=8, seed=9)
    memory = dict(enumerate(pa.dram_image(wa), pa.base_addr))
    memory |= {300 + i: 0 for i in range(pb.dram_words)} | {7000 + i: 0 for i in range(16)}
    upload = cfg_beats(MemSel.WEIGHTS, pb.dram_image(wb), 128, pb.base_addr)
    rng = random.Random(3)
    extra = cfg_beats(MemSel.WEIGHTS, [rng.getrandbits(128) for _ in range(16)], 128, 7000)
    ctrl = Controller(memory, latency=5, stall=0.2, seed=4, bound=8)
    outs = {"a": [], "b": []}
    want = {"a": reference(pa, wa, xa), "b": reference(pb, wb, xb)}
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(ctrl.testbench(dut.arb.dram, dut.arb.busy), background=True)
    for s, name in ((dut.arb.dram.cmd, "cmd"), (dut.arb.dram.wdata, "wdata")):
        sim.add_testbench(check_stream_rule(s, name), background=True)

    def unit(key, u, p, x, gated):
        rng_i, rng_o = random.Random(len(key)), random.Random(7)

        async def source(ctx):
            if gated:
                await ctx.tick().until(dut.go)
            for beat in stream_in(p, x):
                await stream_put(ctx, u.i_stream, beat, rng_i, 0.2)

        async def sink(ctx):
            for _ in range(want[key].size // p.pe):
                outs[key].append(await stream_get(ctx, u.o_stream, rng_o, 0.2))

        return source, sink

    async def host(ctx):
        wrng = random.Random(11)
        for beat in upload:
            await stream_put(ctx, dut.arb.cfg, beat, wrng, 0.2)
        await ctx.tick().until(~dut.arb.busy)
        ctx.set(dut.go, 1)
        for beat in extra:
            await stream_put(ctx, dut.arb.cfg, beat, wrng, 0.2)
        await ctx.tick().until(~dut.arb.busy)

    sinks = []
    for key, u, p, x, gated in (("a", dut.a, pa, xa, False), ("b", dut.b, pb, xb, True)):
        source, sink = unit(key, u, p, x, gated)
        sinks.append(sink)
        sim.add_testbench(source, background=True)
    sim.add_testbench(host)
    for sink in sinks:
        sim.add_testbench(sink)
    sim.run()
    assert np.array_equal(decode(pa, outs["a"], len(xa)), want["a"])
    assert np.array_equal(decode(pb, outs["b"], len(xb)), want["b"])
    assert [ctrl.memory[300 + i] for i in range(pb.dram_words)] == pb.dram_image(wb)
    assert {a: ctrl.memory[a] for a in range(7000, 7016)} == expected_writes({}, extra)
    reads_a = [a for we, a in ctrl.commands if not we and a < 300]
    assert reads_a[:len(xa) * pa.dram_words] == list(range(5, 5 + pa.dram_words)) * len(xa)
    assert ctrl.stalls
    kinds = "".join("w" if we and a >= 7000 else "b" if 300 <= a < 7000 else "-"
                    for we, a in ctrl.commands)
    assert "bw" in kinds and "wb" in kinds       # unit b's reads and the writes interleave
    print("cycles", ctrl.cycles, "commands", len(ctrl.commands), "max reads", ctrl.max_reads)


def test_connects_to_the_dram_controller():
    """The controller's cmd/wdata/rdata take the arbiter's dram members as they are."""
    arb = arbiter(2)
    ctrl = DramController(DramControllerParams(cross_domain="sync"))
    for name in ("cmd", "wdata", "rdata"):
        assert arb.dram.signature.members[name].flip() == ctrl.signature.members[name]

    class Top(wiring.Component):
        def __init__(self):
            super().__init__({"reader_0": wiring.In(arb.signature.members["reader_0"]
                                                      .signature.flip()),
                              "busy": wiring.Out(1)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.arb, m.submodules.ctrl = arb, ctrl
            for name in ("cmd", "wdata"):
                wiring.connect(m, getattr(arb.dram, name), getattr(ctrl, name))
            wiring.connect(m, ctrl.rdata, arb.dram.rdata)
            wiring.connect(m, wiring.flipped(self.reader_0), arb.reader_0)
            m.d.comb += self.busy.eq(arb.busy)
            return m

    text = rtlil.convert(Top())
    assert "litedram_core" in text and "in_flight" in text


@pytest.mark.parametrize("bad, message", [
    ({"readers": 0}, "readers must be a positive integer"),
    ({"data_width": 64}, "data_width must be 128"),
    ({"stall": 1.0}, "stall must be a probability"),
    ({"seed": 0}, "seed must be an integer in 1..4294967295"),
    ({"outstanding": 0}, "outstanding"),
])
def test_bad_parameters_are_named(bad, message):
    with pytest.raises(ParameterError, match=message):
        DramArbiterParams(**({"readers": 1} | bad))


def test_stall_threshold():
    assert DramArbiterParams(readers=1).stall_threshold == 0
    assert DramArbiterParams(readers=1, stall=0.25).stall_threshold == 64
    assert DramArbiterParams(readers=1, stall=0.999).stall_threshold == 255
    assert DramArbiterParams(readers=1, stall=1e-6).stall_threshold == 1

