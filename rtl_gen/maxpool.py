"""Streaming max-pool on binary feature maps.

Input: a binary map ``[H, W, C]`` in HWC order, beats of ``simd`` channel bits (channel
``cf * simd + i`` at bit ``i`` of the ``cf``-th beat of a pixel). Output: the pooled map
``[OH, OW, C]`` in the same format, ``OH = (H - K) // S + 1`` (no padding; rows and columns
past the last full window are read and dropped). The max of +-1 values is an OR of their
bits; channels flagged in ``and_mask`` take the AND instead (the max of a function that
decreases with its input, used when pooling comes before a negative-scale BN).

Two structures, picked from the kernel and stride:

- ``K <= S`` (windows do not overlap, the usual 2x2/2): each input bit belongs to at most
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
from amaranth import Array, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from bnnhw.numerics import conv_out_size
from bnnhw.packing import pack
from bnnhw.validate import ParameterError, bit_array, divides, integer, positive_fields

from .block import StreamBlock, output_register, paced
from .sliding_window import SlidingWindow, SlidingWindowParams

__all__ = ["MaxPool", "MaxPoolParams"]


@dataclass(frozen=True)
class MaxPoolParams:
    """Shape and folding of one max-pool layer (see the module docstring).

    ``stride`` defaults to ``kernel``; ``and_mask`` is ``None`` (OR everywhere) or a tuple
    of ``channels`` bits, 1 where the channel pools with AND.
    """

    height: int
    width: int
    channels: int
    kernel: int
    stride: int | None = None
    simd: int = 1
    and_mask: tuple[int, ...] | None = None
    name: str = "maxpool"

    def __post_init__(self):
        n = self.name
        positive_fields(n, self, "height", "width", "channels", "kernel", "simd")
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
        """Bits per beat on both ports: ``simd`` channel bits."""
        return self.simd

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
                                   self.step, 0, self.simd, 1, 0, name=self.name)

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
            return self.beats_per_pixel * self.simd + self.window_params.memory_bits
        return self.out_width * self.beats_per_pixel * self.simd

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
    """Binary max-pool; ``i_stream``/``o_stream`` carry ``simd``-bit beats. See the module
    docstring for the structure, timing and backpressure."""

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

    def _reduce(self, m, src, *, depth, addr, cf, contributes, first, last):
        """Fold beats of ``src`` into partial results at ``addr``; a ``first`` beat starts a
        result, a ``last`` one sends it to ``o_stream``; beats that do not contribute are
        consumed and dropped."""
        p = self.params
        m.submodules.partial = mem = Memory(shape=unsigned(p.simd), depth=depth, init=[])
        rd = mem.read_port(domain="comb")
        wr = mem.write_port()
        masks = p.mask_words()
        and_lanes = Signal(p.simd)
        if any(masks):
            m.d.comb += and_lanes.eq(Array(masks)[cf] if len(masks) > 1 else masks[0])

        x = src.payload
        acc = rd.data
        folded = Mux(first, x, ((acc | x) & ~and_lanes) | (acc & x & and_lanes))
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
