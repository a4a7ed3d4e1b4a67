"""UART PHY: an 8N1 serial line on one side, byte streams on the other.

Frame: one start bit (low), 8 data bits LSB first, one stop bit (high), no parity; the line
idles high. ``i_stream`` takes the bytes to send on ``tx``, ``o_stream`` gives the bytes
received on ``rx``. One clock domain (``sync``); ``rx`` may change at any time.

Bit timing. A bit lasts ``N = clock_hz / baud`` clock cycles, an exact fraction
(``cycles_per_bit``; 100 MHz at 12 Mbaud is 25/3). Both directions count bits with a
phase accumulator: ``P / Q = N`` in lowest terms (``nco_modulus``, ``nco_step``), the
accumulator adds ``Q`` every cycle modulo ``P`` and each wrap ends a bit, so bits last
``floor(N)`` or ``ceil(N)`` cycles and ``k`` bits last ``k N`` cycles to within one cycle,
for any ``k``: no error grows along a frame or a run of frames. (A ratio whose denominator
is above 256 is replaced by the nearest fraction whose denominator is not: less than 1/256
cycle per bit off, ``rate_error``; 0 for the usual clocks and rates.) A baud that gives
fewer than 4 cycles per bit is refused.

Receiver. ``rx`` passes two flip-flops (``amaranth.lib.cdc.FFSynchronizer``) and is sampled
every cycle. While hunting, the first low sample starts a candidate start bit; its
accumulator is loaded with ``rx_phase`` so that the ticks fall on the centre samples
``t0 + sample_offsets[k]`` of bit ``k`` (``t0`` is the first low sample; ``k`` 0 is the
start bit, 1..8 the data, 9 the stop bit). At every centre the bit's value is the majority
of the three samples around it (a one-cycle glitch there is outvoted). ``rx_phase`` puts
the centres where the tolerated baud error is largest, the start bit's no earlier than half
a bit rounded down to whole cycles (``glitch_cycles``). Then:

- start bit high at its centre: a glitch, forgotten; hunting goes on. A low pulse shorter
  than ``glitch_cycles`` cycles (half a bit, rounded down to cycles) never starts a frame;
  one of ``glitch_cycles + 1`` cycles or more always does.
- stop bit high: the byte goes into the ``o_stream`` output register; when that register
  still holds a byte nobody took, the new byte is dropped and ``overrun`` pulses (the line
  cannot be stalled; the older byte stays, the stream rule holds). If the line is already
  low again in the cycle of the stop decision, that low sample starts the next frame.
- stop bit low with some data bit high: ``framing_error`` pulses, the byte is dropped, and
  the receiver waits for the line to be high before it hunts again.
- stop bit low and all data bits low: one more bit is sampled (10.5 bits after the start);
  low there too means the line has been low for longer than a whole frame:
  ``break_detect`` pulses (and ``framing_error`` does not), else ``framing_error`` pulses.
  Either way nothing is delivered and the receiver waits for the line to return high, so a
  break of any length is reported once.
- after reset the receiver also waits for the line to be high first.

The status outputs are one-cycle pulses, registered, one cycle after the decision; logic
that wants sticky flags or counts latches them itself.

Tolerated baud error. With the start edge anywhere within the clock cycle before ``t0``,
every centre sample lands inside its bit for a sender whose baud is ``baud * (1 + e)`` with
``e`` in ``baud_error_limits`` (``max_baud_error`` is the smaller side): -4.8 %..+4.2 % at
100 MHz and 12 Mbaud (and 25 MHz at 3 Mbaud), -5.1 %..+5.1 % at 100 MHz and 3 Mbaud,
-5.3 %..+4.3 % at 12 MHz and 1 Mbaud, and no less than +-2.5 % down to 4 cycles per bit;
this holds for back-to-back frames too. It is the budget for the sum of both ends' rate
errors and the sender's edge jitter (as a share of 9.5 bits); ``sampling_error`` is the
worst distance of a centre sample from the true centre of its bit at the exact rate, in
bits (0.1 at 100 MHz and 12 Mbaud).

Transmitter. ``i_stream.ready`` is high while the transmitter is idle and in the last cycle
of a stop bit, so bytes offered back to back go out with no idle time between frames. The
accumulator runs while a frame is on the line and holds while idle, so every bit lasts
``floor(N)`` or ``ceil(N)`` cycles and a run of ``M`` back-to-back bytes lasts ``10 M N``
cycles to within one: the ``j``-th bit of a run ends ``ceil((j P - a) / Q)`` cycles after
the edge that took its first byte, ``a`` the accumulator then (0 after reset). ``tx`` is a
register; each of its edges lies within one clock cycle of that exact grid.

Latency. Transmit: ``tx`` falls (start bit) at the clock edge that takes the byte.
Receive: ``rx_latency`` edges from the first edge that samples the start bit low on ``rx``
to the edge at which an always-ready consumer takes the byte (two synchroniser stages, the
stop bit's centre, the output register): about 9.5 bits.

Cost: two accumulators of ``bits(P)`` flip-flops, two 4-bit bit counters, two 8-bit shift
registers, the 8-bit output register and a dozen control flip-flops: 71 iCE40 LUTs and 58
flip-flops at 100 MHz and 3 Mbaud, 65 and 52 at 12 MHz and 1 Mbaud (``bench/uart_cost.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from bnnhw.validate import ParameterError, integer

from .block import StreamBlock, output_register

__all__ = ["FRAME_BITS", "MIN_CYCLES_PER_BIT", "UART", "UARTParams"]

FRAME_BITS = 10            # start, 8 data bits, stop
MIN_CYCLES_PER_BIT = 4
MAX_DENOMINATOR = 256      # largest accumulator step ``Q``


@dataclass(frozen=True)
class UARTParams:
    """Clock and line rate of one UART (8N1; see the module docstring)."""

    clock_hz: int
    baud: int
    name: str = "uart"

    def __post_init__(self):
        n = self.name
        integer(n, "clock_hz", self.clock_hz, 1)
        integer(n, "baud", self.baud, 1)
        if self.cycles_per_bit < MIN_CYCLES_PER_BIT:
            raise ParameterError(
                f"{n}: a {self.clock_hz} Hz clock cannot sample {self.baud} baud, which "
                f"needs at least {MIN_CYCLES_PER_BIT} cycles per bit and gets "
                f"{float(self.cycles_per_bit):.3g}")

    # stream widths, as every rtl_gen block states them
    i_width = 8
    o_width = 8

    @property
    def cycles_per_bit(self) -> Fraction:
        """Clock cycles per bit, exactly: ``clock_hz / baud``."""
        return Fraction(self.clock_hz, self.baud)

    @property
    def frame_cycles(self) -> Fraction:
        """Clock cycles per frame (10 bits), exactly."""
        return FRAME_BITS * self.cycles_per_bit

    @property
    def nco_ratio(self) -> Fraction:
        """The bit time the accumulators count, ``nco_modulus / nco_step`` cycles."""
        return self.cycles_per_bit.limit_denominator(MAX_DENOMINATOR)

    @property
    def nco_modulus(self) -> int:
        return self.nco_ratio.numerator

    @property
    def nco_step(self) -> int:
        return self.nco_ratio.denominator

    @property
    def rate_error(self) -> Fraction:
        """Relative error of the counted bit time (0 unless the ratio was approximated)."""
        return self.nco_ratio / self.cycles_per_bit - 1

    def _centres(self, phase: int) -> tuple[int, ...]:
        """Centre sample of bits 0..10 after ``t0`` for the receiver's start ``phase``: the
        ``j``-th wrap comes ``ceil((j P - phase) / Q)`` cycles after ``t0`` and votes on
        the samples up to it, so its centre is one cycle earlier."""
        p, q = self.nco_modulus, self.nco_step
        return tuple(-(-(j * p - phase) // q) - 1 for j in range(1, FRAME_BITS + 2))

    def _limits(self, centres: tuple[int, ...]) -> tuple[Fraction, Fraction]:
        """Baud errors ``(lo, hi)`` for which every centre of bits 0..9 is inside its bit.

        A sender bit lasts ``T = N / (1 + e)`` cycles; bit ``k`` covers
        ``[s + k T, s + (k + 1) T)`` for a start edge ``s`` in ``(t0 - 1, t0]``, and the
        sample ``t0 + D`` sees it for every such ``s`` iff ``k T <= D <= (k + 1) T - 1``.
        """
        n = self.cycles_per_bit
        lo = max(k * n / centres[k] for k in range(1, FRAME_BITS)) - 1
        hi = min((k + 1) * n / (centres[k] + 1) for k in range(FRAME_BITS)) - 1
        return lo, hi

    @cached_property
    def rx_phase(self) -> int:
        """Receiver accumulator value at a start: the one (near ``P / 2``) with the widest
        tolerated baud error whose start-bit centre is at least ``floor(N / 2)``."""
        p, q = self.nco_modulus, self.nco_step
        half = int(self.cycles_per_bit / 2)

        def score(phase):
            centres = self._centres(phase)
            if centres[0] < max(half, 1):
                return None
            lo, hi = self._limits(centres)
            return min(-lo, hi), phase

        scores = [s for a in range(max(0, p // 2 - 3 * q), min(p, p // 2 + 3 * q))
                  if (s := score(a)) is not None]
        return max(scores)[1]

    @property
    def sample_offsets(self) -> tuple[int, ...]:
        """Centre sample of bits 0..9 (and of the break check, 10) in cycles after ``t0``."""
        return self._centres(self.rx_phase)

    @property
    def glitch_cycles(self) -> int:
        """A low pulse shorter than this many cycles never starts a frame (it covers at
        most this many samples, and the start bit's vote needs one more)."""
        return self.sample_offsets[0]

    @property
    def baud_error_limits(self) -> tuple[Fraction, Fraction]:
        """Sender baud errors ``(lo, hi)`` (relative, exact) that the receiver tolerates."""
        return self._limits(self.sample_offsets)

    @property
    def max_baud_error(self) -> float:
        """The tolerated baud error, either way (the smaller of the two limits)."""
        lo, hi = self.baud_error_limits
        return float(min(-lo, hi))

    @property
    def sampling_error(self) -> Fraction:
        """Worst distance, in bits, of a centre sample from the true centre of its bit at
        the exact rate (the start edge anywhere within a cycle)."""
        n = self.cycles_per_bit
        worst = max(max(abs(d - (k + Fraction(1, 2)) * n), abs(d + 1 - (k + Fraction(1, 2)) * n))
                    for k, d in enumerate(self.sample_offsets[:FRAME_BITS]))
        return worst / n

    @property
    def rx_latency(self) -> int:
        """Clock edges from the first that samples the start bit low on ``rx`` to the one at
        which an always-ready consumer takes the byte."""
        return self.sample_offsets[FRAME_BITS - 1] + 4


def _nco(m: Module, acc: Signal, params: UARTParams, run, load=None, value: int = 0
         ) -> Signal:
    """Step ``acc`` by ``Q`` modulo ``P`` while ``run`` (set it to ``value`` instead when
    ``load``); return the wrap (end of a bit). The wrap, ``acc >= P - Q``, is a register
    computed from the accumulator's next value, so the handshakes that depend on it start
    from a flip-flop, not from a comparator (0 after reset: ``P > Q``)."""
    p, q = params.nco_modulus, params.nco_step
    wrap = Signal()
    nxt = Signal.like(acc)
    width = len(acc)
    m.d.comb += nxt.eq(acc)
    with m.If(run):         # one adder: the step is Q, or Q - P (mod 2**width) on a wrap
        m.d.comb += nxt.eq(acc + Mux(wrap, Const((q - p) % (1 << width), width), q))
    if load is not None:
        with m.If(load):
            m.d.comb += nxt.eq(value)
    m.d.sync += [acc.eq(nxt), wrap.eq(nxt >= p - q)]
    return wrap


class UART(StreamBlock):
    """8N1 UART PHY: ``rx``/``tx`` pins, ``i_stream`` bytes to send, ``o_stream`` bytes
    received, ``framing_error``/``overrun``/``break_detect`` one-cycle pulses. Timing,
    errors, tolerance and latency: see the module docstring."""

    Params = UARTParams

    @classmethod
    def extra_members(cls, params):
        return {"rx": In(1, init=1), "tx": Out(1, init=1), "framing_error": Out(1),
                "overrun": Out(1), "break_detect": Out(1)}

    def elaborate(self, platform):
        m = Module()
        self._receiver(m)
        self._transmitter(m)
        return m

    def _receiver(self, m: Module) -> None:
        p = self.params
        o = self.o_stream
        line = Signal()                 # rx after two flip-flops; 0 until they have filled
        m.submodules.rx_sync = FFSynchronizer(self.rx, line, init=0)
        h1, h2 = Signal(), Signal()     # the two samples before ``line``
        m.d.sync += [h1.eq(line), h2.eq(h1)]
        vote = (h2 & h1) | (h2 & line) | (h1 & line)

        busy = Signal()                 # inside a frame
        armed = Signal()                # line seen high since reset or the last error
        bit = Signal(range(FRAME_BITS + 1))
        acc = Signal(range(p.nco_modulus))
        data = Signal(8)                # data bits, shifted in from the top

        start = Signal()
        tick = busy & _nco(m, acc, p, busy, load=start, value=p.rx_phase)
        stop = tick & (bit == FRAME_BITS - 1)
        deliver = stop & vote
        free = ~o.valid | o.ready
        load = deliver & free
        output_register(m, o, load)
        with m.If(load):
            m.d.sync += o.payload.eq(data)
        framing = Signal()
        brk = Signal()
        m.d.sync += [self.framing_error.eq(framing), self.break_detect.eq(brk),
                     self.overrun.eq(deliver & ~free)]

        with m.If(~busy):
            m.d.sync += armed.eq(armed | line)
        with m.If(tick):
            m.d.sync += bit.eq(bit + 1)
            with m.Switch(bit):
                with m.Case(0), m.If(vote):                     # start bit high: a glitch
                    m.d.sync += busy.eq(0)
                with m.Case(FRAME_BITS - 1):                    # stop bit
                    with m.If(vote):
                        m.d.sync += busy.eq(0)
                    with m.Elif(data != 0):
                        m.d.comb += framing.eq(1)
                        m.d.sync += [busy.eq(0), armed.eq(0)]
                with m.Case(FRAME_BITS):                        # break check
                    m.d.comb += [framing.eq(vote), brk.eq(~vote)]
                    m.d.sync += [busy.eq(0), armed.eq(0)]
                with m.Default():                               # data bits
                    m.d.sync += data.eq(Cat(data[1:], vote))
        # Hunting: the first low sample starts a frame, also in the stop bit's decision
        # cycle (the next start bit may begin right after the stop bit's centre).
        m.d.comb += start.eq(((~busy & armed) | deliver) & ~line)
        with m.If(start):
            m.d.sync += [busy.eq(1), bit.eq(0)]

    def _transmitter(self, m: Module) -> None:
        p = self.params
        i = self.i_stream
        busy = Signal()
        bit = Signal(range(FRAME_BITS))
        acc = Signal(range(p.nco_modulus))
        data = Signal(8)                # bits still to send; 1s (stop, idle) come in on top

        tick = busy & _nco(m, acc, p, busy)
        m.d.comb += i.ready.eq(~busy | (tick & (bit == FRAME_BITS - 1)))
        with m.If(tick):
            m.d.sync += [self.tx.eq(data[0]), data.eq(Cat(data[1:], Const(1, 1))),
                         bit.eq(bit + 1)]
            with m.If(bit == FRAME_BITS - 1):
                m.d.sync += busy.eq(0)
        with m.If(i.valid & i.ready):
            m.d.sync += [self.tx.eq(0), data.eq(i.payload), bit.eq(0), busy.eq(1)]
