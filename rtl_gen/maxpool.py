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

from amaranth import Array, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from bnnhw.packing import pack

from .sliding_window import SlidingWindow, SlidingWindowParams, _check_int

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
        for what in ("height", "width", "channels", "kernel", "simd"):
            _check_int(n, what, getattr(self, what), 1)
        if self.stride is not None:
            _check_int(n, "stride", self.stride, 1)
        if self.channels % self.simd:
            raise ValueError(f"{n}: simd must divide the {self.channels} channels, "
                             f"not {self.simd}")
        if self.kernel > min(self.height, self.width):
            raise ValueError(f"{n}: kernel {self.kernel} is larger than the "
                             f"{self.height}x{self.width} input map")
        if self.and_mask is not None:
            if not isinstance(self.and_mask, tuple) or len(self.and_mask) != self.channels:
                raise ValueError(f"{n}: and_mask must be a tuple of {self.channels} bits, "
                                 f"not {self.and_mask!r}")
            if any(b not in (0, 1) or isinstance(b, float) for b in self.and_mask):
                raise ValueError(f"{n}: and_mask entries must be 0 or 1, "
                                 f"not {self.and_mask!r}")

    @property
    def step(self) -> int:
        """The stride actually used."""
        return self.kernel if self.stride is None else self.stride

    @property
    def out_height(self) -> int:
        return (self.height - self.kernel) // self.step + 1

    @property
    def out_width(self) -> int:
        return (self.width - self.kernel) // self.step + 1

    @property
    def fold(self) -> int:
        """Beats per pixel, ``C / simd``."""
        return self.channels // self.simd

    @property
    def in_beats(self) -> int:
        return self.height * self.width * self.fold

    @property
    def out_beats(self) -> int:
        return self.out_height * self.out_width * self.fold

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
            return self.fold * self.simd + self.window_params.memory_bits
        return self.out_width * self.fold * self.simd

    def mask_words(self) -> list[int]:
        """The AND mask as one ``simd``-bit word per channel fold."""
        mask = self.and_mask or (0,) * self.channels
        return [pack(mask[f * self.simd:(f + 1) * self.simd]) for f in range(self.fold)]


class MaxPool(wiring.Component):
    """Binary max-pool; ``i_stream``/``o_stream`` carry ``simd``-bit beats. See the module
    docstring for the structure, timing and backpressure."""

    def __init__(self, params: MaxPoolParams):
        if not isinstance(params, MaxPoolParams):
            raise TypeError(f"MaxPool takes MaxPoolParams, not {params!r}")
        self.params = params
        super().__init__({
            "i_stream": In(stream.Signature(unsigned(params.simd))),
            "o_stream": Out(stream.Signature(unsigned(params.simd))),
        })

    def elaborate(self, platform):
        p = self.params
        m = Module()
        if p.overlapping:
            m.submodules.window = window = SlidingWindow(p.window_params)
            wiring.connect(m, wiring.flipped(self.i_stream), window.i_stream)
            src = window.o_stream
            # window beats in (ky, kx, cf) order
            pos = Signal(range(p.kernel ** 2))
            cfc = Signal(range(p.fold))
            fire = src.valid & src.ready
            with m.If(fire):
                m.d.sync += cfc.eq(cfc + 1)
                with m.If(cfc == p.fold - 1):
                    m.d.sync += [cfc.eq(0), pos.eq(pos + 1)]
                    with m.If(pos == p.kernel ** 2 - 1):
                        m.d.sync += pos.eq(0)
            self._fold(m, src, depth=p.fold, addr=cfc, cf=cfc, contributes=1,
                       first=pos == 0, last=pos == p.kernel ** 2 - 1)
            return m

        k, s, cf = p.kernel, p.step, p.fold
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
        self._fold(m, src, depth=p.out_width * cf, addr=cx * cf + cfc, cf=cfc,
                   contributes=contributes, first=(px == 0) & (py == 0),
                   last=(px == k - 1) & (py == k - 1))
        return m

    def _fold(self, m, src, *, depth, addr, cf, contributes, first, last):
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
        o_valid = Signal()
        fire = Signal()
        m.d.comb += [
            src.ready.eq(~finish | ~o_valid | self.o_stream.ready),
            fire.eq(src.valid & src.ready),
            rd.addr.eq(addr),
            wr.addr.eq(addr),
            wr.data.eq(folded),
            wr.en.eq(fire & contributes & ~last),
            self.o_stream.valid.eq(o_valid),
        ]
        with m.If(fire & finish):
            m.d.sync += [o_valid.eq(1), self.o_stream.payload.eq(folded)]
        with m.Elif(self.o_stream.ready):
            m.d.sync += o_valid.eq(0)
