# amaranth: UnusedElaboratable=no
"""UART PHY against a bit-level line model, in the Amaranth simulator.

The line model (``Line``) lays frames on the ``rx`` wire with exact rational timing: any
baud error, any phase of the start edge against the clock, optional edge jitter. The DUT
samples the wire at clock edges, so a level change at time ``t`` (in cycles) is seen from
edge ``ceil(t)`` on. ``tx`` is checked against the exact bit grid and decoded by an ideal
receiver. Every checker is shown once to catch a planted fault: a Params subclass for the
timing faults, and for the structural ones a mutant of ``rtl_gen/uart.py`` with one
source edit (``mutant``), so the fault sits in the real design.
"""

from __future__ import annotations

import random
import sys
import types
from dataclasses import dataclass, field
from fractions import Fraction
from math import ceil
from pathlib import Path

import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

import rtl_gen.uart as uart_module
from bnnhw.validate import ParameterError
from rtl_gen.uart import UART, UARTParams

MHZ = 1_000_000
CONFIGS = [(100 * MHZ, 3 * MHZ), (100 * MHZ, 12 * MHZ), (25 * MHZ, 3 * MHZ), (12 * MHZ, 1 * MHZ)]
IDS = ["100MHz-3M", "100MHz-12M", "25MHz-3M", "12MHz-1M"]
LEAD = 16          # idle cycles before the first frame (the receiver arms on a high line)


# --- line model ---------------------------------------------------------------------------

def frame_bits(byte: int, stop: int = 1) -> list[int]:
    """Start bit, 8 data bits LSB first, stop bit."""
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


class Line:
    """The ``rx`` wire: levels held for exact durations (cycles, ``Fraction``)."""

    def __init__(self, start=LEAD):
        self.t = Fraction(start)
        self.segments: list[tuple[Fraction, int]] = []

    def hold(self, level: int, cycles) -> Line:
        self.segments.append((self.t, level))
        self.t += Fraction(cycles)
        return self

    def idle(self, cycles) -> Line:
        return self.hold(1, cycles)

    def frame(self, byte: int, bit: Fraction, stop: int = 1) -> Line:
        for b in frame_bits(byte, stop):
            self.hold(b, bit)
        return self

    def align(self, phase: Fraction, margin: int = 8) -> Line:
        """Idle for at least ``margin`` cycles, up to a time whose fraction is ``phase``."""
        target = ceil(self.t) + margin + Fraction(phase)
        return self.idle(target - self.t)

    def changes(self, jitter: Fraction = Fraction(0), rng: random.Random | None = None):
        """``(edge, level)``: the level the DUT samples from that edge on. Each transition
        moves by up to ``jitter`` cycles either way (uniformly, seeded)."""
        out: list[tuple[int, int]] = []
        level = 1
        for t, v in self.segments:
            if v == level:
                continue
            level = v
            if jitter:
                t += jitter * Fraction(rng.randint(-1000, 1000), 1000)
            edge = ceil(t)
            if out and out[-1][0] >= edge:       # two transitions between two samples
                out.pop()
                if out and out[-1][1] == v:
                    continue
            out.append((edge, v))
        return out


def sender_bit(params: UARTParams, error) -> Fraction:
    """Bit time, in cycles, of a sender whose baud is off by the relative ``error``."""
    return params.cycles_per_bit / (1 + Fraction(error))


# --- simulation harness -------------------------------------------------------------------

@dataclass
class Run:
    rx: list[tuple[int, int]] = field(default_factory=list)     # (edge taken, byte)
    pulses: dict[str, list[int]] = field(default_factory=dict)  # edges each status was high
    tx: list[tuple[int, int]] = field(default_factory=list)     # (edge, level) at changes
    accepted: list[int] = field(default_factory=list)           # edges i_stream took a byte
    broken: list[int] = field(default_factory=list)             # stream rule violations
    free_at: int | None = None     # first edge i_stream is ready again after the last byte

    @property
    def bytes(self) -> list[int]:
        return [b for _, b in self.rx]

    @property
    def clean(self) -> bool:
        return not any(self.pulses.values()) and not self.broken


STATUS = ("framing_error", "overrun", "break_detect")


def simulate(dut, cycles: int, *, rx=(), send=(), ready=None, loopback=False) -> Run:
    """Run ``dut`` for ``cycles`` edges. ``rx``: ``(edge, level)`` changes of the wire (or
    ``loopback``: the wire is ``tx``); ``send``: bytes offered back to back on
    ``i_stream``, ``None`` for a cycle with ``valid`` low; ``ready(edge)``: the consumer's
    ``ready`` (default always)."""
    run = Run(pulses={name: [] for name in STATUS})
    changes = list(rx)
    send = list(send)
    o, i = dut.o_stream, dut.i_stream
    status = [getattr(dut, name) for name in STATUS]

    async def bench(ctx):
        k = j = 0
        held = None
        ctx.set(o.ready, 1)
        tx_level = 1
        for c in range(cycles):
            while j < len(changes) and changes[j][0] <= c:
                ctx.set(dut.rx, changes[j][1])
                j += 1
            if loopback:
                ctx.set(dut.rx, tx_level)
            if ready is not None:
                ctx.set(o.ready, ready(c))
            idle = k >= len(send) or send[k] is None
            if not idle:
                ctx.set(i.payload, send[k])
            ctx.set(i.valid, not idle)
            *_, ov, orr, op, iv, ir, fe, ovr, brk = await ctx.tick().sample(
                o.valid, o.ready, o.payload, i.valid, i.ready, *status)
            if held is not None and (not ov or op != held):
                run.broken.append(c)
            held = op if ov and not orr else None
            if ov and orr:
                run.rx.append((c, op))
            if iv and ir:
                run.accepted.append(c)
                k += 1
            elif k < len(send) and send[k] is None:
                k += 1
            elif ir and send and k == len(send) and run.free_at is None:
                run.free_at = c
            for name, v in zip(STATUS, (fe, ovr, brk), strict=True):
                if v:
                    run.pulses[name].append(c)
            tx_level = ctx.get(dut.tx)
            if tx_level != (run.tx[-1][1] if run.tx else 1):
                run.tx.append((c, tx_level))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return run


def receive(params, line: Line, dut=None, jitter=Fraction(0), seed=0, **kw) -> Run:
    """Drive ``line`` into the receiver and run until well after its end."""
    cycles = ceil(line.t) + 2 * int(params.frame_cycles) + 8
    return simulate(dut or UART(params), cycles,
                    rx=line.changes(jitter, random.Random(seed)), **kw)


def decode_tx(params: UARTParams, tx: list[tuple[int, int]]) -> list[int]:
    """An ideal receiver on the recorded ``tx`` (a change at edge ``e`` taken to happen at
    time ``e``): a frame starts at each falling edge and is sampled at the exact bit
    centres; one whose start bit is not low or whose stop bit is not high decodes as -1."""
    n = params.cycles_per_bit

    def level(t):
        v = 1
        for edge, lv in tx:
            if edge > t:
                break
            v = lv
        return v

    out, busy_until = [], -1
    for edge, lv in tx:
        if lv or edge < busy_until:
            continue
        bits = [level(edge + (k + Fraction(1, 2)) * n) for k in range(10)]
        good = bits[0] == 0 and bits[9] == 1
        out.append(sum(b << i for i, b in enumerate(bits[1:9])) if good else -1)
        busy_until = edge + Fraction(19, 2) * n
    return out


def mutant(*edits: tuple[str, str]):
    """``rtl_gen.uart`` with textual ``(old, new)`` edits, each matching exactly once."""
    path = Path(uart_module.__file__)
    source = path.read_text()
    for old, new in edits:
        assert source.count(old) == 1, f"mutant edit {old!r} matches {source.count(old)} times"
        source = source.replace(old, new)
    name = f"rtl_gen._uart_mutant_{abs(hash(edits))}"
    module = types.ModuleType(name)
    module.__package__ = "rtl_gen"
    sys.modules[name] = module
    # the design's own source, one edit away: this is the point of a mutant
    exec(compile(source, f"{path} (mutant)", "exec"), module.__dict__)  # noqa: S102
    return module


def args(params: UARTParams) -> tuple:
    return params.clock_hz, params.baud, params.name


def mutant_uart(params: UARTParams, *edits):
    """A mutant UART (see ``mutant``) with the same parameters."""
    m = mutant(*edits)
    return m.UART(m.UARTParams(*args(params)))


# --- parameters ---------------------------------------------------------------------------

def test_derived_figures():
    p = UARTParams(100 * MHZ, 12 * MHZ)
    assert p.cycles_per_bit == Fraction(25, 3) and (p.nco_modulus, p.nco_step) == (25, 3)
    assert p.frame_cycles == Fraction(250, 3) and p.rate_error == 0
    assert p.sample_offsets == (4, 12, 20, 29, 37, 45, 54, 62, 70, 79, 87)
    assert p.baud_error_limits == (Fraction(20, 21) - 1, Fraction(25, 24) - 1)  # bits 8, 9
    assert p.max_baud_error == pytest.approx(0.04167, abs=1e-5)
    assert p.glitch_cycles == 4 and p.sampling_error == Fraction(1, 10)
    assert p.rx_latency == 83
    for clock, baud in CONFIGS:
        q = UARTParams(clock, baud)
        offsets = q.sample_offsets
        # every centre within 1.5 cycles of the ideal (k + 1/2) N - 1/2: the true centre
        # less half the start edge's one-cycle uncertainty
        assert all(abs(d - ((k + Fraction(1, 2)) * q.cycles_per_bit - Fraction(1, 2)))
                   <= Fraction(3, 2) for k, d in enumerate(offsets))
        assert q.max_baud_error > 0.04 and q.sampling_error < Fraction(1, 8)
    slow = UARTParams(12 * MHZ, 3 * MHZ)               # the 4-cycle minimum
    assert slow.max_baud_error > 0.025 and slow.glitch_cycles == 2
    odd = UARTParams(100_000_007, 115_200)             # ratio approximated to Q <= 256
    assert odd.nco_step <= 256 and abs(odd.rate_error) < 1e-6


def test_params_are_validated():
    with pytest.raises(ParameterError, match=r"^host: a 25000000 Hz clock cannot sample "
                                             r"12000000 baud, which needs at least 4 cycles "
                                             r"per bit and gets 2.08$"):
        UARTParams(25 * MHZ, 12 * MHZ, name="host")
    with pytest.raises(ParameterError, match="uart: baud must be a positive integer, not 0"):
        UARTParams(MHZ, 0)
    with pytest.raises(ParameterError, match="clock_hz must be a positive integer, not 100000000.0"):
        UARTParams(1e8, 115_200)
    with pytest.raises(TypeError, match="UART takes UARTParams"):
        UART((100 * MHZ, 3 * MHZ))


def test_converts_to_verilog():
    text = verilog.convert(UART(UARTParams(12 * MHZ, 1 * MHZ)), name="uart")
    assert "module uart" in text and "rx" in text and "tx" in text


# --- receiver -----------------------------------------------------------------------------

PHASES = [Fraction(0), Fraction(1, 1024), Fraction(1, 3), Fraction(1, 2), Fraction(2, 3),
          Fraction(1023, 1024)]


def bursts(params, error, byte_groups, phases):
    """Bursts of back-to-back frames, each starting at a chosen phase of the clock."""
    bit = sender_bit(params, error)
    line = Line()
    for group, phase in zip(byte_groups, phases, strict=True):
        line.align(phase)
        for b in group:
            line.frame(b, bit)
    return line


def check_baud_error(p, error: str, dut=None):
    """+-2 % with half a cycle of edge jitter, or a computed limit exactly ("lo", "hi", no
    jitter): bursts of back-to-back frames whose first start edges fall at the worst phases
    against the clock; every byte must arrive, with no status pulse."""
    lo, hi = p.baud_error_limits
    e = {"-2%": Fraction(-2, 100), "+2%": Fraction(2, 100), "lo": lo, "hi": hi}[error]
    rng = random.Random(p.clock_hz // MHZ + p.baud // 1000)
    groups = [[0x55, 0xAA, 0x00, 0xFF] if g == 0 else [rng.randrange(256) for _ in range(2)]
              for g in range(len(PHASES))]
    jitter = Fraction(1, 2) if error.endswith("%") else Fraction(0)
    run = receive(p, bursts(p, e, groups, PHASES), dut=dut, jitter=jitter,
                  seed=rng.randrange(99))
    assert run.bytes == [b for g in groups for b in g] and run.clean


@pytest.mark.parametrize("clock, baud", CONFIGS, ids=IDS)
@pytest.mark.parametrize("error", ["-2%", "+2%", "lo", "hi"])
def test_rx_tolerates_baud_error(clock, baud, error):
    check_baud_error(UARTParams(clock, baud), error)


@pytest.mark.parametrize("clock, baud", CONFIGS[1:2] + CONFIGS[3:], ids=[IDS[1], IDS[3]])
@pytest.mark.parametrize("side", ["lo", "hi"])
def test_rx_limit_is_tight(clock, baud, side):
    """0.4 % beyond either computed limit, some start phase makes a centre miss its bit
    (0x55 frames: every bit differs from its neighbours)."""
    p = UARTParams(clock, baud)
    lo, hi = p.baud_error_limits
    e = lo - Fraction(1, 250) if side == "lo" else hi + Fraction(1, 250)
    phases = [Fraction(i, 16) + Fraction(1, 1024) for i in range(16)] + [Fraction(0)]
    run = receive(p, bursts(p, e, [[0x55, 0x55]] * len(phases), phases))
    assert run.bytes != [0x55] * 2 * len(phases) or not run.clean


@pytest.mark.parametrize("error", ["-2%", "+2%"])
def test_edge_sampling_fails_the_2_percent_check(error):
    """Planted fault: the receiver samples at the start of each bit, not at its centre."""

    class EdgeSampling(UARTParams):
        @property
        def rx_phase(self):
            return self.nco_modulus - 1

    p = UARTParams(100 * MHZ, 12 * MHZ)
    with pytest.raises(AssertionError):
        check_baud_error(p, error, dut=UART(EdgeSampling(*args(p))))


@pytest.mark.parametrize("clock, baud", CONFIGS, ids=IDS)
def test_rx_latency(clock, baud):
    p = UARTParams(clock, baud)
    line = Line(start=LEAD + Fraction(1, 2)).frame(0xA5, p.cycles_per_bit)
    run = receive(p, line)
    first_low = ceil(LEAD + Fraction(1, 2))
    assert run.bytes == [0xA5] and run.rx[0][0] - first_low == p.rx_latency


def glitch_line(p, rng, short: bool):
    """Twelve low pulses on an idle line, shorter than ``glitch_cycles`` (``short``) or two
    cycles longer than that, at random phases; then one real frame, 0x3C."""
    line = Line()
    for _ in range(12):
        line.align(Fraction(rng.randrange(64), 64))
        if short:
            line.hold(0, Fraction(rng.randrange(1, 64 * p.glitch_cycles), 64))
            line.idle(p.cycles_per_bit)
        else:
            line.hold(0, p.glitch_cycles + 2).idle(2 * p.frame_cycles)
    return line.align(Fraction(1, 3)).frame(0x3C, p.cycles_per_bit)


def check_glitches(p, dut=None, seed=0):
    """Pulses shorter than ``glitch_cycles`` leave no trace; two cycles longer, each is a
    start bit (of an 0xFF frame): the boundary is where ``glitch_cycles`` puts it."""
    run = receive(p, glitch_line(p, random.Random(seed), short=True), dut=dut)
    assert run.bytes == [0x3C] and run.clean
    run = receive(p, glitch_line(p, random.Random(seed), short=False), dut=dut)
    assert run.bytes == [0xFF] * 12 + [0x3C] and run.clean


@pytest.mark.parametrize("clock, baud", CONFIGS, ids=IDS)
def test_glitches_shorter_than_half_a_bit_are_ignored(clock, baud):
    p = UARTParams(clock, baud)
    assert p.glitch_cycles == int(p.cycles_per_bit / 2)
    check_glitches(p, seed=baud)


def check_centre_glitches(p, dut=None):
    """Frames starting on clock edges (so ``t0`` is known) with every data bit inverted
    for exactly one sample, its centre ``t0 + sample_offsets[k]``: the vote outvotes it."""
    data = [0x00, 0xFF, 0x55, 0x3C]
    n = p.cycles_per_bit
    line = Line()
    for byte in data:
        line.align(Fraction(0))
        s = line.t
        for k, v in enumerate(frame_bits(byte)):
            if 1 <= k <= 8:
                c = s + p.sample_offsets[k]
                line.hold(v, c - Fraction(1, 2) - line.t).hold(1 - v, 1)
            line.hold(v, s + (k + 1) * n - line.t)
    run = receive(p, line, dut=dut)
    assert run.bytes == data and run.clean


@pytest.mark.parametrize("clock, baud", CONFIGS[1:2] + CONFIGS[3:], ids=[IDS[1], IDS[3]])
def test_one_sample_glitch_at_a_centre_is_outvoted(clock, baud):
    check_centre_glitches(UARTParams(clock, baud))


def test_glitch_checkers_catch_planted_faults():
    """No start-bit check: short pulses become 0xFF frames. The centre sample alone (no
    vote): a one-sample glitch at a centre flips the bit."""
    p = UARTParams(100 * MHZ, 12 * MHZ)
    no_check = mutant_uart(p, ("with m.Case(0), m.If(vote):", "with m.Case(0), m.If(0):"))
    with pytest.raises(AssertionError):
        check_glitches(p, dut=no_check)
    no_vote = mutant_uart(p, ("vote = (h2 & h1) | (h2 & line) | (h1 & line)", "vote = h1"))
    with pytest.raises(AssertionError):
        check_centre_glitches(p, dut=no_vote)


def check_framing(p, dut=None):
    """A frame with its stop bit low is dropped with one ``framing_error`` pulse; so is an
    all-zero frame with its stop bit low whose line rises before 10.5 bits (not a break)."""
    n = p.cycles_per_bit
    line = Line().frame(0x81, n).frame(0x42, n, stop=0).idle(n)
    line.frame(0x00, n, stop=0).hold(1, 3 * n).frame(0x24, n)
    run = receive(p, line, dut=dut)
    assert run.bytes == [0x81, 0x24]
    assert len(run.pulses["framing_error"]) == 2 and not run.pulses["break_detect"]
    assert not run.pulses["overrun"] and not run.broken


def test_framing_error_drops_the_byte():
    check_framing(UARTParams(100 * MHZ, 12 * MHZ))


def test_framing_checker_catches_a_receiver_that_ignores_the_stop_bit():
    p = UARTParams(100 * MHZ, 12 * MHZ)
    bad = mutant_uart(p, ("deliver = stop & vote", "deliver = stop"))
    with pytest.raises(AssertionError):
        check_framing(p, dut=bad)


def check_break(p, dut=None):
    """The line low for three frames and a bit after a frame, then idle for a frame, then
    two frames: one ``break_detect`` pulse at the 10.5-bit check, no framing error, the
    frames before and after received."""
    n = p.cycles_per_bit
    line = Line().frame(0x11, n)
    line.hold(0, 3 * p.frame_cycles + Fraction(1, 7)).idle(p.frame_cycles)
    line.frame(0x22, n).frame(0x33, n)
    run = receive(p, line, dut=dut)
    assert run.bytes == [0x11, 0x22, 0x33]
    assert not run.pulses["framing_error"] and not run.pulses["overrun"]
    first_low = ceil(LEAD + p.frame_cycles)      # rx pin edge; the break began at 10 N
    assert run.pulses["break_detect"] == [first_low + p.sample_offsets[10] + 4]


@pytest.mark.parametrize("clock, baud", CONFIGS[1:2] + CONFIGS[3:], ids=[IDS[1], IDS[3]])
def test_break_is_reported_once_and_reception_resumes(clock, baud):
    check_break(UARTParams(clock, baud))


def test_break_checker_catches_a_receiver_that_hunts_inside_the_break():
    p = UARTParams(100 * MHZ, 12 * MHZ)
    end = "\n                with m.Default():"       # the break check's last line
    bad = mutant_uart(p, ("m.d.sync += [busy.eq(0), armed.eq(0)]" + end,
                          "m.d.sync += [busy.eq(0)]" + end))
    with pytest.raises(AssertionError):
        check_break(p, dut=bad)


def check_overrun(p, dut=None):
    """Three frames back to back while the consumer holds ``ready`` low until after the
    third, then a fourth: the first byte waits (the stream rule holds), the second and
    third are dropped with one ``overrun`` pulse each, the fourth arrives."""
    n = p.cycles_per_bit
    line = Line()
    for b in (0xA1, 0xB2, 0xC3):
        line.frame(b, n)
    resume = ceil(line.t) + 20
    line.idle(40).frame(0xD4, n)
    run = receive(p, line, dut=dut, ready=lambda c: c >= resume)
    assert run.bytes == [0xA1, 0xD4] and len(run.pulses["overrun"]) == 2
    assert not run.pulses["framing_error"] and not run.broken


def test_overrun_keeps_the_waiting_byte_and_flags_the_dropped_ones():
    check_overrun(UARTParams(100 * MHZ, 12 * MHZ))


def test_overrun_checker_catches_an_overwriting_receiver():
    p = UARTParams(100 * MHZ, 12 * MHZ)
    bad = mutant_uart(p, ("load = deliver & free", "load = deliver"))
    with pytest.raises(AssertionError):
        check_overrun(p, dut=bad)


# --- transmitter and loopback -------------------------------------------------------------

def tx_grid(p, bytes_, first):
    """The exact ``tx`` changes for ``bytes_`` sent back to back from edge ``first``: bit
    ``j`` of the run starts after edge ``first + ceil(j N)``."""
    bits = [b for x in bytes_ for b in frame_bits(x)]
    changes, level = [], 1
    for j, b in enumerate(bits):
        if b != level:
            changes.append((first + ceil(j * p.nco_ratio), b))
            level = b
    return changes


def check_tx(p, dut=None, seed=0):
    """Twelve bytes offered back to back: taken exactly every 10 N cycles (rounded up from
    the first), every ``tx`` edge on the exact bit grid, decoded by the ideal receiver, and
    the transmitter free again exactly 10 M N cycles after the first start bit."""
    data = [0x01, 0x80] + [random.Random(seed).randrange(256) for _ in range(10)]
    run = simulate(dut or UART(p), ceil(len(data) * p.frame_cycles) + 40, send=data)
    first = run.accepted[0]
    n = p.cycles_per_bit
    assert decode_tx(p, run.tx) == data
    assert run.accepted == [first + ceil(10 * i * n) for i in range(len(data))]
    assert run.tx == tx_grid(p, data, first)
    assert run.free_at - first == ceil(len(data) * p.frame_cycles)
    assert run.tx[-1][1] == 1


@pytest.mark.parametrize("clock, baud", CONFIGS, ids=IDS)
def test_tx_back_to_back_is_exactly_ten_bits_per_byte(clock, baud):
    check_tx(UARTParams(clock, baud), seed=clock + baud)


def check_tx_bursts(p, dut=None, seed=0):
    """Bursts of one to three bytes with idle gaps of random length between them: every
    byte decodes, and every ``tx`` edge lies within one cycle of the exact bit grid of its
    run of back-to-back frames (the accumulator holds while idle, so a frame after a gap
    has whole bits too)."""
    rng = random.Random(seed)
    n = p.cycles_per_bit
    send, data = [], []
    for _ in range(5):
        burst = [rng.randrange(256) for _ in range(rng.randrange(1, 4))]
        data += burst
        send += burst + [None] * (ceil(p.frame_cycles) + rng.randrange(1, 3 * ceil(n)))
    run = simulate(dut or UART(p), ceil(len(send) + len(data) * p.frame_cycles), send=send)
    assert decode_tx(p, run.tx) == data
    run_start = frame_start = None
    for edge, level in run.tx:
        if level == 0 and (frame_start is None or edge - frame_start > 19 * n / 2):
            if frame_start is None or edge - frame_start > 10 * n + 1:
                run_start = edge                         # after an idle gap
            frame_start = edge
        bits = (edge - run_start) / n
        assert abs(bits - round(bits)) * n < 1, (edge, run_start)


@pytest.mark.parametrize("clock, baud", CONFIGS[1:2] + CONFIGS[3:], ids=[IDS[1], IDS[3]])
def test_tx_bursts_with_idle_gaps_keep_whole_bits(clock, baud):
    check_tx_bursts(UARTParams(clock, baud), seed=baud)


def test_tx_checkers_catch_planted_faults():
    """An integer bit divider (8 cycles for 8 1/3), an idle cycle between frames, the data
    sent MSB first; and a bit clock that runs on while idle."""

    class IntegerDivider(UARTParams):
        @property
        def nco_ratio(self):
            return Fraction(round(self.cycles_per_bit))

    p = UARTParams(100 * MHZ, 12 * MHZ)
    for dut in (UART(IntegerDivider(*args(p))),
                mutant_uart(p, ("i.ready.eq(~busy | (tick & (bit == FRAME_BITS - 1)))",
                                "i.ready.eq(~busy)")),
                mutant_uart(p, ("self.tx.eq(data[0]), data.eq(Cat(data[1:], Const(1, 1)))",
                                "self.tx.eq(data[7]), data.eq(Cat(Const(1, 1), data[:7]))"))):
        with pytest.raises(AssertionError):
            check_tx(p, dut=dut)
    # the accumulator left running while idle: a frame after a gap starts off the grid
    free_running = mutant_uart(p, ("tick = busy & _nco(m, acc, p, busy)\n        m.d.comb += i",
                                   "tick = busy & _nco(m, acc, p, 1)\n        m.d.comb += i"))
    with pytest.raises(AssertionError):
        check_tx_bursts(p, dut=free_running, seed=p.baud)


def check_loopback(p, dut=None, seed=0):
    """``tx`` wired to ``rx``: random bytes offered back to back come back in order, none
    lost, no status pulse, at the full rate."""
    data = [random.Random(seed).randrange(256) for _ in range(16)] + [0x00, 0xFF]
    run = simulate(dut or UART(p), ceil(len(data) * p.frame_cycles) + p.rx_latency + 20,
                   send=data, loopback=True)
    assert run.bytes == data and run.clean
    assert run.accepted == [run.accepted[0] + ceil(10 * i * p.cycles_per_bit)
                            for i in range(len(data))]


@pytest.mark.parametrize("clock, baud", CONFIGS, ids=IDS)
def test_loopback_random_bytes_back_to_back(clock, baud):
    check_loopback(UARTParams(clock, baud), seed=baud)


def test_loopback_checker_catches_a_bit_order_fault():
    """Planted fault: the receiver shifts data in MSB first."""
    p = UARTParams(12 * MHZ, 1 * MHZ)
    bad = mutant_uart(p, ("data.eq(Cat(data[1:], vote))", "data.eq(Cat(vote, data[:7]))"))
    with pytest.raises(AssertionError):
        check_loopback(p, dut=bad)
