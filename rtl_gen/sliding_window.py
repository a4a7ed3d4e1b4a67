"""Line-buffer sliding-window generator (SWG).

Input: a feature map ``[H, W, C]`` in HWC order, in beats of ``simd`` elements of
``elem_width`` bits (element ``i`` of a beat at bits ``[i * elem_width, (i + 1) *
elem_width)``). Output: for each output pixel, row-major, its ``K * K * C`` window in
``(ky, kx, c)`` order (``c`` fastest), in beats of ``simd`` elements; window positions
outside the map carry ``pad_value`` in every element. ``OH = (H + 2P - K) // S + 1``
(same for ``OW``). Images follow each other back to back with no framing: the block counts
beats.

Buffering: the last ``buffer_rows`` input rows live in one ``amaranth.lib.memory`` in a
circular order (row ``g`` of the endless row sequence in slot ``g mod buffer_rows``). The
write side accepts a row once the row it overwrites is no longer needed by the current
output row; the read side emits a window beat once the bottom-right input pixel of that
window has been written (pixels arrive in raster order, so the whole window is then
present). ``buffer_rows`` is chosen so that neither side waits for the other in steady
state: ``K + S`` rows (``K`` being read, ``S`` being filled for the next output row), more
when the first rows of the next image must be prefetched while the last output row of the
current one is read (valid convolutions, ``2P < K - 1``).

Cycle model: one beat per cycle on each side, so an image takes
``max(H * W * C / simd, OH * OW * K * K * C / simd)`` cycles at steady state
(``cycles_per_image``). Latency: the first beat of a window leaves two cycles after the
window's last input pixel is accepted. Backpressure: ``o_stream.valid`` never waits on
``o_stream.ready``; ``i_stream.ready`` depends only on registers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth import Const, Module, Mux, Signal, unsigned
from amaranth.lib.memory import Memory

from bnnhw.numerics import conv_out_size
from bnnhw.packing import pack
from bnnhw.validate import ParameterError, divides, integer, positive_fields

from .block import StreamBlock, output_register, paced

__all__ = ["SlidingWindow", "SlidingWindowParams"]


@dataclass(frozen=True)
class SlidingWindowParams:
    """Shape and folding of one sliding-window generator (see the module docstring)."""

    height: int
    width: int
    channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    simd: int = 1
    elem_width: int = 1
    pad_value: int = 0
    name: str = "sliding_window"

    def __post_init__(self):
        n = self.name
        positive_fields(n, self, "height", "width", "channels", "kernel", "stride", "simd",
                        "elem_width")
        integer(n, "padding", self.padding, 0)
        divides(n, "simd", self.simd, self.channels, "channels")
        for what, size in (("height", self.height), ("width", self.width)):
            if self.kernel > size + 2 * self.padding:
                raise ParameterError(f"{n}: kernel {self.kernel} is larger than the padded "
                                     f"{what} {size + 2 * self.padding}")
        integer(n, "pad_value", self.pad_value, 0,
                (1 << self.elem_width) - 1)

    @property
    def out_height(self) -> int:
        return conv_out_size(self.height, self.kernel, self.stride, self.padding)

    @property
    def out_width(self) -> int:
        return conv_out_size(self.width, self.kernel, self.stride, self.padding)

    @property
    def beats_per_pixel(self) -> int:
        """Beats per pixel, ``C / simd``."""
        return self.channels // self.simd

    @property
    def beat_width(self) -> int:
        """Bits per beat on both ports."""
        return self.simd * self.elem_width

    i_width = o_width = beat_width

    @property
    def in_beats(self) -> int:
        """Input beats per image."""
        return self.height * self.width * self.beats_per_pixel

    @property
    def out_beats(self) -> int:
        """Output beats per image."""
        return self.out_height * self.out_width * self.kernel ** 2 * self.beats_per_pixel

    @property
    def cycles_per_image(self) -> int:
        """Cycles per image at steady state without stalls (one beat per cycle per side)."""
        return max(self.in_beats, self.out_beats)

    @property
    def latency(self) -> int:
        """Cycles from accepting a window's last input pixel to its first beat leaving."""
        return 2

    def beat_times(self, t_in):
        """A window's beats leave ``latency`` cycles after its bottom-right input pixel
        (inside the map) has been accepted, one per cycle (``rtl_gen.block``)."""
        t_in = np.asarray(t_in, dtype=np.int64)
        k, s, p, cf = self.kernel, self.stride, self.padding, self.beats_per_pixel
        oy = np.arange(self.out_height)[:, None]
        ox = np.arange(self.out_width)[None, :]
        row = np.clip(oy * s - p + k - 1, 0, self.height - 1)
        col = np.clip(ox * s - p + k - 1, 0, self.width - 1)
        need = ((row * self.width + col) * cf + cf - 1).reshape(-1)
        per_window = k * k * cf
        return paced(np.repeat(t_in[need] + self.latency, per_window))

    @property
    def buffer_rows(self) -> int:
        """Input rows held in the line buffer (see the module docstring)."""
        h, k, s, p = self.height, self.kernel, self.stride, self.padding
        # Lowest row still needed while the last output row of an image is read, and the
        # last row the first output row of the next image needs, both counted from the
        # current image's row 0.
        last_low = min(max((self.out_height - 1) * s - p, 0), h)
        next_high = h + min(max(k - 1 - p, 0), h - 1)
        return max(k + s, next_high - last_low + 1)

    @property
    def memory_depth(self) -> int:
        return self.buffer_rows * self.width * self.beats_per_pixel

    @property
    def memory_bits(self) -> int:
        return self.memory_depth * self.beat_width


def _add_mod(value, const: int, modulus: int):
    """``(value + const) mod modulus`` for ``0 <= value < modulus``."""
    const %= modulus
    if const == 0:
        return value
    # both candidates in parallel, picked by the sign of the wrapped one (one adder deep)
    wrapped = value - (modulus - const)
    return Mux(wrapped >= 0, wrapped, value + const)[:len(Const(modulus - 1))]


def _clamp(value, low: int, high: int):
    return Mux(value < low, low, Mux(value > high, high, value))


class SlidingWindow(StreamBlock):
    """Sliding-window generator; ``i_stream``/``o_stream`` carry ``simd * elem_width``-bit
    beats. See the module docstring for order, padding, timing and backpressure."""

    Params = SlidingWindowParams

    def elaborate(self, platform):
        p = self.params
        h, w, cf, k, s, pad = p.height, p.width, p.beats_per_pixel, p.kernel, p.stride, p.padding
        oh, ow, rows = p.out_height, p.out_width, p.buffer_rows
        row_words = w * cf
        depth = rows * row_words
        # Global row counters wrap modulo 2**gbits; every difference the logic takes stays
        # well inside the signed range.
        gbits = (2 * (rows + h + k + pad + s) + 2).bit_length() + 1

        m = Module()
        m.submodules.mem = mem = Memory(shape=unsigned(p.beat_width), depth=depth, init=[])
        wr = mem.write_port()
        rd = mem.read_port()

        # ---- write side: rows in raster order into a circular buffer ----
        wr_addr = Signal(range(depth))
        wr_cf = Signal(range(cf))
        wr_x = Signal(range(w))        # pixels 0..wr_x-1 of row wr_g are complete
        wr_g = Signal(gbits)           # global row being written

        # ---- read side: window beat counters ----
        img_g = Signal(gbits)          # global row of the current image's row 0
        oy = Signal(range(oh))
        ox = Signal(range(ow))
        ky = Signal(range(k))
        kx = Signal(range(k))
        cfc = Signal(range(cf))
        iy0 = Signal(range(-pad, (oh - 1) * s - pad + 1), init=-pad)   # oy * S - P
        ix0 = Signal(range(-pad, (ow - 1) * s - pad + 1), init=-pad)   # ox * S - P
        ix0_cf = Signal(range(-pad * cf, ((ow - 1) * s - pad) * cf + 1), init=-pad * cf)
        # ix * C/simd + c-fold of the current beat; with row_addr, its memory address
        col_addr = Signal(range(-pad * cf, ((ow - 1) * s - pad + k) * cf + 1), init=-pad * cf)
        # memory address of slot (row iy0) and of slot (row iy0 + ky), row-aligned
        y0_addr = Signal(range(depth), init=((-pad) % rows) * row_words)
        row_addr = Signal(range(depth), init=((-pad) % rows) * row_words)

        # Lowest row the read side still needs, and the pixel the current window waits for
        # (its bottom-right pixel inside the map); registers, updated with the window.
        def need_row(y0):
            return _clamp(y0 + (k - 1), 0, h - 1)

        def need_col(x0):
            return _clamp(x0 + (k - 1), 0, w - 1)

        def low_row(y0):
            return _clamp(y0, 0, h)

        lo_g = Signal(gbits)   # image row max(-P, 0) = 0 of image 0
        need_g = Signal(gbits, init=min(max(k - 1 - pad, 0), h - 1))
        need_x = Signal(range(w), init=min(max(k - 1 - pad, 0), w - 1))
        ahead = Signal(gbits)   # wr_g - lo_g (mod)
        done = Signal(gbits)    # wr_g - need_g (mod)
        m.d.comb += [ahead.eq(wr_g - lo_g), done.eq(wr_g - need_g)]
        can_write = ahead.as_signed() < rows
        available = (done.as_signed() > 0) | ((done == 0) & (wr_x > need_x))

        # ---- write side ----
        wr_fire = Signal()
        m.d.comb += [
            self.i_stream.ready.eq(can_write),
            wr_fire.eq(self.i_stream.valid & self.i_stream.ready),
            wr.addr.eq(wr_addr),
            wr.data.eq(self.i_stream.payload),
            wr.en.eq(wr_fire),
        ]
        with m.If(wr_fire):
            m.d.sync += wr_addr.eq(Mux(wr_addr == depth - 1, 0, wr_addr + 1))
            m.d.sync += wr_cf.eq(wr_cf + 1)
            with m.If(wr_cf == cf - 1):
                m.d.sync += [wr_cf.eq(0), wr_x.eq(wr_x + 1)]
                with m.If(wr_x == w - 1):
                    m.d.sync += [wr_x.eq(0), wr_g.eq(wr_g + 1)]

        # ---- read side ----
        iy = iy0 + ky
        ix = ix0 + kx
        is_pad = (iy < 0) | (iy >= h) | (ix < 0) | (ix >= w)
        pad_word = pack([p.pad_value] * p.simd, p.elem_width)

        pad_q = Signal()
        issue = Signal()
        free = output_register(m, self.o_stream, issue)
        m.d.comb += [
            issue.eq(available & free),
            rd.addr.eq((row_addr + col_addr)[:len(rd.addr)]),
            rd.en.eq(issue),
            self.o_stream.payload.eq(Mux(pad_q, pad_word, rd.data)),
        ]
        with m.If(issue):
            m.d.sync += pad_q.eq(is_pad)

        last_cf = cfc == cf - 1
        last_kx = kx == k - 1
        last_ky = ky == k - 1
        last_ox = ox == ow - 1
        last_oy = oy == oh - 1
        # Window origin of the next output pixel and row (next image after the last row).
        ix0_next = Mux(last_ox, -pad, ix0 + s)
        iy0_next = Mux(last_oy, -pad, iy0 + s)
        img_next = Mux(last_oy, img_g + h, img_g)[:gbits]
        y0_next = Signal.like(y0_addr)
        image_step = (h - (oh - 1) * s) % rows   # rows from last iy0 to next image's iy0
        with m.If(last_oy):
            m.d.comb += y0_next.eq(_add_mod(y0_addr, image_step * row_words, depth))
        with m.Else():
            m.d.comb += y0_next.eq(_add_mod(y0_addr, (s % rows) * row_words, depth))

        with m.If(issue):
            m.d.sync += [cfc.eq(cfc + 1), col_addr.eq(col_addr + 1)]
            with m.If(last_cf):
                m.d.sync += [cfc.eq(0), kx.eq(kx + 1)]
                with m.If(last_kx):
                    m.d.sync += [kx.eq(0), ky.eq(ky + 1), col_addr.eq(ix0_cf),
                                 row_addr.eq(_add_mod(row_addr, row_words, depth))]
                    with m.If(last_ky):
                        # next output pixel
                        m.d.sync += [ky.eq(0), ox.eq(ox + 1), ix0.eq(ix0_next),
                                     need_x.eq(need_col(ix0_next)),
                                     ix0_cf.eq(ix0_cf + s * cf),
                                     col_addr.eq(ix0_cf + s * cf), row_addr.eq(y0_addr)]
                        with m.If(last_ox):
                            # next output row
                            m.d.sync += [ox.eq(0), ix0_cf.eq(-pad * cf),
                                         col_addr.eq(-pad * cf), oy.eq(oy + 1),
                                         iy0.eq(iy0_next), img_g.eq(img_next),
                                         need_g.eq(img_next + need_row(iy0_next)),
                                         lo_g.eq(img_next + low_row(iy0_next)),
                                         y0_addr.eq(y0_next), row_addr.eq(y0_next)]
                            with m.If(last_oy):
                                m.d.sync += oy.eq(0)
        return m
