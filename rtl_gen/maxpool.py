"""Streaming max-pool on binary or 2-bit feature maps.

Input: a map ``[H, W, C]`` in HWC order, beats of ``simd`` elements of ``elem_width``
bits (channel ``cf * simd + i`` at bits ``[i * elem_width, (i + 1) * elem_width)`` of the
``cf``-th beat of a pixel): bits (``elem_width`` 1) or 2-bit activation codes 0..3
(``elem_width`` 2). Output: the pooled map ``[OH, OW, C]`` in the same format, ``OH = (H -
K) // S + 1`` (no padding; rows and columns past the last full window are read and
dropped). Each channel takes the max of its window's elements, compared unsigned (for
+-1 bits an OR; for codes the highest level, which is not the bitwise OR: codes 1 and 2
give 2, not 3); channels flagged in ``and_mask`` take the min instead (for bits an AND: the
max of a function that decreases with its input, used when pooling comes before a
negative-scale BN).

Two structures, picked from the kernel and stride:

- ``K <= S`` (windows do not overlap, the usual 2x2/2): each input element belongs to at most
  one window. A row of ``OW * C / simd`` partial results (distributed memory, combinational
  read) is folded in place as the input streams past; a window's beat leaves with its last
  input beat. One input beat per cycle: ``H * W * C / simd`` cycles per image.
- ``K > S`` (overlapping windows): a :class:`~rtl_gen.sliding_window.SlidingWindow` with
  no padding feeds the same fold, ``C / simd`` partial results deep; the window generator
  sets the rate, ``max(H * W, OH * OW * K * K) * C / simd`` cycles per image.

Latency (``K <= S``): the output beat is valid the cycle after the window's last input beat
is accepted. ``o_stream.valid`` never waits on ``o_stream.ready``; ``i_stream.ready`` is low
only while a finished beat waits for the output register.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth import Array, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from bnnhw.numerics import conv_out_size
from bnnhw.packing import pack
from bnnhw.validate import (
    ParameterError,
    bit_array,
    choice,
    divides,
    integer,
    positive_fields,
)

from .block import StreamBlock, output_register, paced
from .sliding_window import SlidingWindow, SlidingWindowParams

__all__ = ["ELEMENT_WIDTHS", "MaxPool", "MaxPoolParams"]

ELEMENT_WIDTHS = (1, 2)
"""Bits per element: binary maps, 2-bit activation codes."""


@dataclass(frozen=True)
class MaxPoolParams:
    """Shape and folding of one max-pool layer (see the module docstring).

    ``stride`` defaults to ``kernel``; ``and_mask`` is ``None`` (max everywhere) or a tuple
    of ``channels`` bits, 1 where the channel pools with the min (AND); ``elem_width`` is
    1 for binary maps, 2 for 2-bit codes.
    """

    height: int
    width: int
    channels: int
    kernel: int
    stride: int | None = None
    simd: int = 1
    and_mask: tuple[int, ...] | None = None
    name: str = "maxpool"
    elem_width: int = 1

    def __post_init__(self):
        n = self.name
        positive_fields(n, self, "height", "width", "channels", "kernel", "simd")
        choice(n, "elem_width", self.elem_width, ELEMENT_WIDTHS)
        if self.stride is not None:
            integer(n, "stride", self.stride, 1)
        divides(n, "simd", self.simd, self.channels, "channels")
        if self.kernel > min(self.height, self.width):
            raise ParameterError(f"{n}: kernel {self.kernel} is larger than the "
                                 f"{self.height}x{self.width} input map")
        if self.and_mask is not None:
            if not isinstance(self.and_mask, tuple):
                raise ParameterError(f"{n}: and_mask must be a tuple of {self.channels} "
                                     f"bits, not {self.and_mask!r}")
            mask = bit_array(n, "and_mask", self.and_mask, shape=(self.channels,))
            object.__setattr__(self, "and_mask", tuple(int(b) for b in mask))

    @property
    def step(self) -> int:
        """The stride actually used."""
        return self.kernel if self.stride is None else self.stride

    @property
    def out_height(self) -> int:
        return conv_out_size(self.height, self.kernel, self.step)

    @property
    def out_width(self) -> int:
        return conv_out_size(self.width, self.kernel, self.step)

    @property
    def i_width(self) -> int:
        """Bits per beat on both ports: ``simd`` elements of ``elem_width`` bits."""
        return self.simd * self.elem_width

    o_width = i_width

    @property
    def beats_per_pixel(self) -> int:
        """Beats per pixel, ``C / simd``."""
        return self.channels // self.simd

    @property
    def in_beats(self) -> int:
        return self.height * self.width * self.beats_per_pixel

    @property
    def out_beats(self) -> int:
        return self.out_height * self.out_width * self.beats_per_pixel

    @property
    def overlapping(self) -> bool:
        """Windows overlap (``K > S``): the sliding-window structure is used."""
        return self.kernel > self.step

    @property
    def window_params(self) -> SlidingWindowParams | None:
        """The window generator used when windows overlap, else ``None``."""
        if not self.overlapping:
            return None
        return SlidingWindowParams(self.height, self.width, self.channels, self.kernel,
                                   self.step, 0, self.simd, self.elem_width, 0, name=self.name)

    @property
    def cycles_per_image(self) -> int:
        """Cycles per image at steady state without stalls."""
        if self.overlapping:
            return self.window_params.cycles_per_image
        return self.in_beats

    @property
    def memory_bits(self) -> int:
        """Partial-result bits (plus the window generator's line buffer if any)."""
        if self.overlapping:
            return self.beats_per_pixel * self.i_width + self.window_params.memory_bits
        return self.out_width * self.beats_per_pixel * self.i_width

    @property
    def latency(self) -> int:
        """Cycles from accepting a window's last input beat to its output beat leaving."""
        return 1 + (self.window_params.latency if self.overlapping else 0)

    def beat_times(self, t_in):
        """A pooled beat leaves the cycle after the window's last beat (``rtl_gen.block``)."""
        t_in = np.asarray(t_in, dtype=np.int64)
        cf = self.beats_per_pixel
        if self.overlapping:
            win = self.window_params.beat_times(t_in).reshape(-1, self.kernel ** 2, cf)
            return paced(win[:, -1, :].reshape(-1) + 1)
        k, s = self.kernel, self.step
        oy = np.arange(self.out_height)[:, None]
        ox = np.arange(self.out_width)[None, :]
        last = ((oy * s + k - 1) * self.width + ox * s + k - 1)[..., None] * cf \
            + np.arange(cf)
        return paced(t_in[last.reshape(-1)] + 1)

    def mask_words(self) -> list[int]:
        """The AND mask as one ``simd``-bit word per channel fold."""
        mask = self.and_mask or (0,) * self.channels
        return [pack(mask[f * self.simd:(f + 1) * self.simd]) for f in range(self.beats_per_pixel)]


class MaxPool(StreamBlock):
    """Max-pool; ``i_stream``/``o_stream`` carry beats of ``simd`` elements of
    ``elem_width`` bits. See the module docstring for the structure, timing and
    backpressure."""

    Params = MaxPoolParams

    def elaborate(self, platform):
        p = self.params
        m = Module()
        if p.overlapping:
            m.submodules.window = window = SlidingWindow(p.window_params)
            wiring.connect(m, wiring.flipped(self.i_stream), window.i_stream)
            src = window.o_stream
            # window beats in (ky, kx, cf) order
            pos = Signal(range(p.kernel ** 2))
            cfc = Signal(range(p.beats_per_pixel))
            fire = src.valid & src.ready
            with m.If(fire):
                m.d.sync += cfc.eq(cfc + 1)
                with m.If(cfc == p.beats_per_pixel - 1):
                    m.d.sync += [cfc.eq(0), pos.eq(pos + 1)]
                    with m.If(pos == p.kernel ** 2 - 1):
                        m.d.sync += pos.eq(0)
            self._reduce(m, src, depth=p.beats_per_pixel, addr=cfc, cf=cfc, contributes=1,
                       first=pos == 0, last=pos == p.kernel ** 2 - 1)
            return m

        k, s, cf = p.kernel, p.step, p.beats_per_pixel
        src = self.i_stream
        # Raster position of the input beat: phase (py, px) inside the stride cell and the
        # cell (cy, cx); cells past the last full window are dropped.
        cfc = Signal(range(cf))
        px = Signal(range(s))
        py = Signal(range(s))
        cx = Signal(range((p.width - 1) // s + 1))
        cy = Signal(range((p.height - 1) // s + 1))
        ix = Signal(range(p.width))
        iy = Signal(range(p.height))
        fire = src.valid & src.ready
        with m.If(fire):
            m.d.sync += cfc.eq(cfc + 1)
            with m.If(cfc == cf - 1):
                m.d.sync += [cfc.eq(0), ix.eq(ix + 1), px.eq(px + 1)]
                with m.If(px == s - 1):
                    m.d.sync += [px.eq(0), cx.eq(cx + 1)]
                with m.If(ix == p.width - 1):
                    m.d.sync += [ix.eq(0), px.eq(0), cx.eq(0), iy.eq(iy + 1), py.eq(py + 1)]
                    with m.If(py == s - 1):
                        m.d.sync += [py.eq(0), cy.eq(cy + 1)]
                    with m.If(iy == p.height - 1):
                        m.d.sync += [iy.eq(0), py.eq(0), cy.eq(0)]
        contributes = (px < k) & (py < k) & (cx < p.out_width) & (cy < p.out_height)
        self._reduce(m, src, depth=p.out_width * cf, addr=cx * cf + cfc, cf=cfc,
                   contributes=contributes, first=(px == 0) & (py == 0),
                   last=(px == k - 1) & (py == k - 1))
        return m

    def fold(self, acc, x, and_lanes):
        """Partial results ``acc`` folded with the beat ``x``, lane by lane: the max of the
        two elements (unsigned), the min in lanes whose ``and_lanes`` bit is 1. For bits
        that is ``OR`` and ``AND``, written so directly."""
        ew = self.params.elem_width
        if ew == 1:
            return ((acc | x) & ~and_lanes) | (acc & x & and_lanes)
        lanes = []
        for i in range(self.params.simd):
            a, b = acc[i * ew:(i + 1) * ew], x[i * ew:(i + 1) * ew]
            a_wins = (a > b) ^ and_lanes[i]    # a is the max, or (AND lane) the min
            lanes.append(Mux(a_wins, a, b))
        return Cat(*lanes)

    def _reduce(self, m, src, *, depth, addr, cf, contributes, first, last):
        """Fold beats of ``src`` into partial results at ``addr``; a ``first`` beat starts a
        result, a ``last`` one sends it to ``o_stream``; beats that do not contribute are
        consumed and dropped."""
        p = self.params
        m.submodules.partial = mem = Memory(shape=unsigned(p.i_width), depth=depth, init=[])
        rd = mem.read_port(domain="comb")
        wr = mem.write_port()
        masks = p.mask_words()
        and_lanes = Signal(p.simd)
        if any(masks):
            m.d.comb += and_lanes.eq(Array(masks)[cf] if len(masks) > 1 else masks[0])

        x = src.payload
        acc = rd.data
        folded = Mux(first, x, self.fold(acc, x, and_lanes))
        finish = contributes & last
        fire = Signal()
        free = output_register(m, self.o_stream, fire & finish)
        m.d.comb += [
            src.ready.eq(~finish | free),
            fire.eq(src.valid & src.ready),
            rd.addr.eq(addr),
            wr.addr.eq(addr),
            wr.data.eq(folded),
            wr.en.eq(fire & contributes & ~last),
        ]
        with m.If(fire & finish):
            m.d.sync += self.o_stream.payload.eq(folded)
