"""First-layer input encoders: 8-bit pixel streams to what the first layer reads.

Input: pixels ``[H, W, C]`` in HWC order, beats of ``n = simd * pixels`` elements of 8
bits: ``simd`` channels of one pixel, or ``pixels`` whole pixels (``simd = C``) when
``pixels > 1``; element ``i`` of a beat (channel ``i % C`` of its pixel ``i // C`` then) at
bits ``[8i, 8i + 8)``. Output, per input beat, one beat of:

- ``binary``: ``n`` bits, bit ``i`` = ``element_i >= threshold``;
- ``thermometer``: ``n * levels`` bits, bit ``i * levels + k`` = ``element_i >=
  bnnhw.numerics.thermometer_thresholds(levels)[k]``; so global channel ``c`` gives channels
  ``c * levels + k`` of the encoded map, in HWC order with beats of ``n * levels``;
- ``uint8``: the pixels unchanged (the block is a wire, kept so a network is assembled
  the same way whatever its encoding), or, given a 256-entry ``table``, each element
  replaced by ``table[element]`` (a lookup in logic, one per element of a beat).

The encoder is combinational: zero latency, one beat per cycle, every element of a beat
encoded in the same cycle, ``valid`` and ``ready`` pass straight through.
``cycles_per_image = H * W * C / (simd * pixels)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth import Cat, Const, Module

from bnnhw import numerics as nx
from bnnhw.validate import ParameterError, choice, divides, integer, positive_fields

from .block import StreamBlock

__all__ = ["InputEncoder", "InputEncoderParams"]


@dataclass(frozen=True)
class InputEncoderParams:
    """One input encoder (see the module docstring); ``threshold`` is used by ``binary``,
    ``levels`` by ``thermometer``, ``table`` (256 values 0..255, or None) by ``uint8``;
    ``pixels`` whole pixels per beat (then ``simd`` must be ``channels`` and ``pixels``
    must divide ``height * width``)."""

    height: int
    width: int
    channels: int
    encoding: str = "binary"
    simd: int = 1
    threshold: int = 128
    levels: int = 8
    name: str = "input_encoder"
    pixels: int = 1
    table: tuple[int, ...] | None = None

    def __post_init__(self):
        n = self.name
        positive_fields(n, self, "height", "width", "channels")
        choice(n, "encoding", self.encoding, nx.ENCODINGS)
        divides(n, "simd", self.simd, self.channels, "channels")
        integer(n, "threshold", self.threshold, 0, nx.PIXEL_MAX)
        integer(n, "levels", self.levels, 1, nx.MAX_THERMOMETER_LEVELS)
        integer(n, "pixels", self.pixels, 1)
        if self.pixels > 1:
            if self.simd != self.channels:
                raise ParameterError(f"{n}: with {self.pixels} pixels per beat simd must be "
                                     f"all {self.channels} channels, not {self.simd}")
            divides(n, "pixels", self.pixels, self.height * self.width, "pixels of an image")
        if self.table is not None:
            if self.encoding != "uint8":
                raise ParameterError(f"{n}: a pixel table needs the uint8 encoding, not "
                                     f"{self.encoding}")
            if not isinstance(self.table, tuple) or len(self.table) != nx.PIXEL_MAX + 1:
                raise ParameterError(f"{n}: table must be a tuple of {nx.PIXEL_MAX + 1} "
                                     f"values")
            for v in self.table:
                integer(n, "table entry", v, 0, nx.PIXEL_MAX)

    @property
    def elements(self) -> int:
        """Pixel channels per beat: ``simd * pixels``."""
        return self.simd * self.pixels

    @property
    def bits_per_channel(self) -> int:
        """Output bits per input pixel channel."""
        return nx.bits_per_channel(self.encoding, self.levels)

    @property
    def i_width(self) -> int:
        return nx.PIXEL_BITS * self.elements

    @property
    def o_width(self) -> int:
        return self.bits_per_channel * self.elements

    @property
    def out_channels(self) -> int:
        """Channels of the encoded map."""
        return nx.encoded_channels(self.channels, self.encoding, self.levels)

    @property
    def cycles_per_image(self) -> int:
        """Cycles per image at steady state without stalls."""
        return self.height * self.width * self.channels // self.elements

    @property
    def latency(self) -> int:
        return 0

    def beat_times(self, t_in):
        """Output beats leave with their input beats (``rtl_gen.block``)."""
        return np.asarray(t_in, dtype=np.int64)


class InputEncoder(StreamBlock):
    """Pixel encoder; ``i_stream`` carries ``8 * simd`` bits, ``o_stream`` ``o_width``."""

    Params = InputEncoderParams

    def elaborate(self, platform):
        p = self.params
        m = Module()
        pixels = [self.i_stream.payload[8 * i:8 * i + 8] for i in range(p.elements)]
        if p.encoding == "uint8" and p.table is None:
            bits = self.i_stream.payload
        elif p.encoding == "uint8":
            rom = Const(int.from_bytes(bytes(p.table), "little"), 8 * len(p.table))
            bits = Cat(*(rom.word_select(px, 8) for px in pixels))
        elif p.encoding == "binary":
            bits = Cat(*(px >= p.threshold for px in pixels))
        else:
            levels = nx.thermometer_thresholds(p.levels)
            bits = Cat(*(px >= t for px in pixels for t in levels))
        m.d.comb += [
            self.o_stream.payload.eq(bits),
            self.o_stream.valid.eq(self.i_stream.valid),
            self.i_stream.ready.eq(self.o_stream.ready),
        ]
        return m
