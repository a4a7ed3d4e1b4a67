"""Stream width converter (gearbox) between layers folded differently.

The stream is a sequence of frames (images) of ``frame_elems`` elements of ``elem_width``
bits. Input beats carry ``in_width`` bits, output beats ``out_width`` bits, both multiples
of ``elem_width``; element order is preserved and LSB first: element ``j`` of a frame sits
at bits ``[j * elem_width, (j + 1) * elem_width)`` of the frame's bit string, which is cut
into beats starting at bit 0 of the first beat. A frame never shares a beat with the next
one: when the frame's bit count is not a multiple of a beat width, the frame's last input
beat carries its bits in the LSBs and the rest is ignored, and its last output beat is
completed with zero bits. Any pair of widths works (``12 -> 8`` as well as ``64 -> 16``
or ``16 -> 64``).

Structure: a shift register of ``capacity`` bits holding ``level`` valid bits; an input
beat is appended above the valid bits, an output beat is taken from the bottom (in one
cycle, the beat is placed at ``level`` first and the result shifted down, so the
variable shift hangs on a register only). Same widths with whole beats per frame need no
logic: the block is then a wire.

Cycle model: one beat per cycle on each side, ``max(in_beats, out_beats)`` cycles per frame
(``cycles_per_image``). Latency: an output beat is valid the cycle after the input beat that
completes it is accepted (zero for the wire). ``o_stream.valid`` depends only on registers;
``i_stream.ready`` also looks at ``o_stream.ready`` (a beat may leave and enter in the same
cycle).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

import numpy as np
from amaranth import Module, Mux, Signal
from amaranth.lib import wiring

from bnnhw.validate import ParameterError, positive_fields

from .block import StreamBlock, paced

__all__ = ["WidthConverter", "WidthConverterParams"]


@dataclass(frozen=True)
class WidthConverterParams:
    """Widths and frame size of one width converter (see the module docstring)."""

    in_width: int
    out_width: int
    frame_elems: int
    elem_width: int = 1
    name: str = "width_converter"

    def __post_init__(self):
        n = self.name
        positive_fields(n, self, "in_width", "out_width", "frame_elems", "elem_width")
        for what in ("in_width", "out_width"):
            if getattr(self, what) % self.elem_width:
                raise ParameterError(f"{n}: {what} must be a multiple of the "
                                     f"{self.elem_width}-bit element width, not "
                                     f"{getattr(self, what)}")

    @property
    def i_width(self) -> int:
        return self.in_width

    @property
    def o_width(self) -> int:
        return self.out_width

    @property
    def frame_bits(self) -> int:
        return self.frame_elems * self.elem_width

    @property
    def in_beats(self) -> int:
        """Input beats per frame."""
        return -(-self.frame_bits // self.in_width)

    @property
    def out_beats(self) -> int:
        """Output beats per frame."""
        return -(-self.frame_bits // self.out_width)

    @property
    def last_in_bits(self) -> int:
        """Frame bits carried by the last input beat of a frame."""
        return self.frame_bits - (self.in_beats - 1) * self.in_width

    @property
    def pad_bits(self) -> int:
        """Zero bits completing the last output beat of a frame."""
        return self.out_beats * self.out_width - self.frame_bits

    @property
    def is_wire(self) -> bool:
        """Same widths and whole beats per frame: no logic at all."""
        return self.in_width == self.out_width and self.pad_bits == 0

    @property
    def capacity(self) -> int:
        """Shift-register bits (0 for a wire)."""
        if self.is_wire:
            return 0
        g = gcd(self.in_width, self.out_width, self.frame_bits)
        # Below one output beat (at most out_width - g bits) an input beat plus the frame's
        # padding must always fit, or the converter would deadlock.
        return self.out_width - g + self.in_width + self.pad_bits

    @property
    def cycles_per_image(self) -> int:
        """Cycles per frame at steady state without stalls."""
        return max(self.in_beats, self.out_beats)

    @property
    def latency(self) -> int:
        """Cycles from accepting the input beat that completes an output beat to that
        beat leaving (0 for a wire)."""
        return 0 if self.is_wire else 1

    def beat_times(self, t_in):
        """An output beat leaves the cycle after the input beat that completes it
        (``rtl_gen.block``)."""
        t_in = np.asarray(t_in, dtype=np.int64)
        if self.is_wire:
            return t_in
        ends = np.minimum((np.arange(self.out_beats) + 1) * self.out_width, self.frame_bits)
        return paced(t_in[(ends - 1) // self.in_width] + 1)


class WidthConverter(StreamBlock):
    """Width converter; ``i_stream`` carries ``in_width``-bit beats, ``o_stream``
    ``out_width``-bit beats. See the module docstring for order, framing and timing."""

    Params = WidthConverterParams

    def elaborate(self, platform):
        p = self.params
        m = Module()
        if p.is_wire:
            wiring.connect(m, wiring.flipped(self.i_stream), wiring.flipped(self.o_stream))
            return m

        win, wout = p.in_width, p.out_width
        g = gcd(win, wout, p.frame_bits)    # every bit count below is a multiple of g
        cap = p.capacity
        buf = Signal(cap)                   # valid bits at the bottom, zeros above them
        level = Signal(range(cap // g + 1))  # valid bits / g
        beat = Signal(range(p.in_beats))    # input beat within the frame

        last_in = beat == p.in_beats - 1
        n_in, n_last = win // g, (p.last_in_bits + p.pad_bits) // g  # bits / g per input beat
        n_out, n_cap = wout // g, cap // g
        data = Signal(win)
        added = Signal.like(level)          # bits / g the input beat adds, padding included
        if p.last_in_bits == win:
            m.d.comb += data.eq(self.i_stream.payload)
        else:
            keep = (1 << p.last_in_bits) - 1
            m.d.comb += data.eq(Mux(last_in, self.i_stream.payload & keep,
                                    self.i_stream.payload))
        m.d.comb += added.eq(Mux(last_in, n_last, n_in))

        o_fire = Signal()
        i_fire = Signal()

        # ``ready`` is ``level - (o_fire ? wout : 0) + added <= cap`` (in units of g), and
        # ``ready`` feeds the upstream block's clock enable: written as four comparisons of
        # the ``level`` register with constants, chosen by the handshake and ``last_in``,
        # it has no adder after ``o_stream.ready``.
        def fits(out: int):
            return Mux(last_in, level <= n_cap + out - n_last, level <= n_cap + out - n_in)

        m.d.comb += [
            self.o_stream.valid.eq(level >= n_out),
            self.o_stream.payload.eq(buf[:wout]),
            o_fire.eq(self.o_stream.valid & self.o_stream.ready),
            self.i_stream.ready.eq(Mux(o_fire, fits(n_out), fits(0))),
            i_fire.eq(self.i_stream.valid & self.i_stream.ready),
        ]
        # The input beat goes in above the valid bits *before* this cycle's output beat is
        # taken out: its position then depends on the ``level`` register alone, not on
        # ``o_stream.ready``, and the shift is a multiplexer over the ``level`` values (no
        # multiplier for ``level * g``). Only the final 2:1 multiplexer waits for the
        # handshakes. ``merged`` holds up to one output beat more than ``cap``.
        merged_width = cap + wout
        placed = Signal(merged_width)
        with m.Switch(level):
            for k in range(min(cap // g, (merged_width - 1) // g) + 1):
                with m.Case(k):
                    m.d.comb += placed.eq(data << (k * g))
        merged = Signal(merged_width)
        m.d.comb += merged.eq(buf | Mux(i_fire, placed, 0))
        # the level moves by one of a few constants: a single adder
        delta = Mux(o_fire, Mux(i_fire, added - n_out, -n_out), Mux(i_fire, added, 0))
        m.d.sync += [
            buf.eq(Mux(o_fire, merged >> wout, merged)),
            level.eq(level + delta),
        ]
        with m.If(i_fire):
            m.d.sync += beat.eq(Mux(last_in, 0, beat + 1))
        return m
