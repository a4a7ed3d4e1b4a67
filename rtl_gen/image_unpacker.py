"""Image bytes from the link to the network's pixel beats.

Input: the bytes of whole images as they travel (``bnnhw.manifest``): ``binary`` models'
pixel channels as bits, 8 to a byte, LSB first, an image's last byte completed with
padding bits; other models' pixel channels as bytes. Output: one beat per pixel,
``{data: C pixels of 8 bits, first, last}`` (``bnnhw.beats.TopFormat.in_layout``), pixels
of each image in order, ``first``/``last`` on an image's first and last pixel. A bit
becomes the pixel 255 (1) or 0 (0), which the network's binary encoder turns back into
the same bit for any threshold (the host compared each pixel with it; 255 passes every
threshold up to 255 and 0 fails every threshold but 0, for which the host sends 1s only).

Structure: a bit buffer of ``8 + C * E - 1`` bits (``E`` bits per channel: 1 or 8) takes
a byte whenever it holds less than a pixel and gives a pixel whenever it holds one; at an
image's last pixel the padding bits left are dropped. ``cycles_per_image`` is the larger
of the image's bytes and pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Cat, Module, Mux, Signal
from amaranth.hdl import Value

from bnnhw.beats import TopFormat
from bnnhw.validate import flag, positive_fields

from .block import StreamBlock, output_register, struct_layout

__all__ = ["ImageUnpacker", "ImageUnpackerParams"]


@dataclass(frozen=True)
class ImageUnpackerParams:
    """``pixels`` pixels of ``channels`` channels per image; ``binary`` images travel as
    bits."""

    pixels: int
    channels: int
    binary: bool
    name: str = "image_unpacker"

    def __post_init__(self):
        positive_fields(self.name, self, "pixels", "channels")
        flag(self.name, "binary", self.binary)

    @property
    def elem_bits(self) -> int:
        """Bits per pixel channel on the wire."""
        return 1 if self.binary else 8

    @property
    def pixel_bits(self) -> int:
        return self.channels * self.elem_bits

    @property
    def image_bytes(self) -> int:
        return -(-self.pixels * self.pixel_bits // 8)

    @property
    def i_width(self) -> int:
        return 8

    @property
    def o_width(self):
        return struct_layout(TopFormat(1, self.pixels, self.channels, 1, 2).in_layout)

    @property
    def cycles_per_image(self) -> int:
        return max(self.image_bytes, self.pixels)


class ImageUnpacker(StreamBlock):
    """Image bytes in, pixel beats out (see the module docstring)."""

    Params = ImageUnpackerParams

    def elaborate(self, platform):
        p = self.params
        m = Module()
        need = p.pixel_bits
        buf = Signal(8 + need - 1)
        level = Signal(range(8 + need))          # valid bits at the bottom of buf
        pixel = Signal(range(p.pixels))
        o = self.o_stream

        take_pixel = Signal()
        free = output_register(m, o, take_pixel)
        last_pixel = pixel == p.pixels - 1
        m.d.comb += take_pixel.eq((level >= need) & free)
        # after an image's last pixel its padding bits are dropped
        kept = Signal.like(level)                # bits left after this cycle's pixel
        m.d.comb += kept.eq(Mux(take_pixel, Mux(last_pixel, 0, level - need), level))
        shifted = Mux(take_pixel, Mux(last_pixel, 0, buf >> need), buf)
        m.d.comb += self.i_stream.ready.eq(kept < need)
        take_byte = self.i_stream.valid & self.i_stream.ready

        with m.If(take_byte):
            m.d.sync += [buf.eq(shifted | (self.i_stream.payload << kept)),
                         level.eq(kept + 8)]
        with m.Else():
            m.d.sync += [buf.eq(shifted), level.eq(kept)]

        bits = buf[:need]
        data = Cat(*(bits[c].replicate(8) for c in range(p.channels))) if p.binary else bits
        with m.If(take_pixel):
            m.d.sync += [Value.cast(o.payload.data).eq(data),
                         o.payload.first.eq(pixel == 0), o.payload.last.eq(last_pixel),
                         pixel.eq(Mux(last_pixel, 0, pixel + 1))]
        return m
