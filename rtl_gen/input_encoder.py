"""First-layer input encoders: 8-bit pixel streams to what the first layer reads.

Input: pixels ``[H, W, C]`` in HWC order, beats of ``simd`` channels x 8 bits (channel
``i`` of a beat at bits ``[8i, 8i + 8)``). Output, per input beat, one beat of:

- ``binary``: ``simd`` bits, bit ``i`` = ``pixel_i >= threshold``;
- ``thermometer``: ``simd * levels`` bits, bit ``i * levels + k`` = ``pixel_i >=
  bnnhw.nn.thermometer_thresholds(levels)[k]``; so global channel ``c`` gives channels
  ``c * levels + k`` of the encoded map, in HWC order with beats of ``simd * levels``;
- ``uint8``: the pixels unchanged (the block is a wire, kept so a network is assembled
  the same way whatever its encoding).

The encoder is combinational: zero latency, one beat per cycle, ``valid`` and ``ready``
pass straight through. ``cycles_per_image = H * W * C / simd``.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Cat, Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bnnhw.nn.layers import ENCODINGS, thermometer_thresholds

from .sliding_window import _check_int

__all__ = ["InputEncoder", "InputEncoderParams"]


@dataclass(frozen=True)
class InputEncoderParams:
    """One input encoder (see the module docstring); ``threshold`` is used by ``binary``,
    ``levels`` by ``thermometer``."""

    height: int
    width: int
    channels: int
    encoding: str = "binary"
    simd: int = 1
    threshold: int = 128
    levels: int = 8
    name: str = "input_encoder"

    def __post_init__(self):
        n = self.name
        for what in ("height", "width", "channels", "simd"):
            _check_int(n, what, getattr(self, what), 1)
        if self.encoding not in ENCODINGS:
            raise ValueError(f"{n}: encoding must be one of {', '.join(ENCODINGS)}, "
                             f"not {self.encoding!r}")
        if self.channels % self.simd:
            raise ValueError(f"{n}: simd must divide the {self.channels} channels, "
                             f"not {self.simd}")
        _check_int(n, "threshold", self.threshold, 0)
        if self.threshold > 255:
            raise ValueError(f"{n}: threshold must lie in 0..255, not {self.threshold}")
        _check_int(n, "levels", self.levels, 1)
        if self.levels > 255:
            raise ValueError(f"{n}: levels must lie in 1..255, not {self.levels}")

    @property
    def bits_per_channel(self) -> int:
        """Output bits per input pixel channel."""
        return {"binary": 1, "thermometer": self.levels, "uint8": 8}[self.encoding]

    @property
    def in_width(self) -> int:
        return 8 * self.simd

    @property
    def out_width(self) -> int:
        return self.bits_per_channel * self.simd

    @property
    def out_channels(self) -> int:
        """Channels of the encoded map."""
        return self.channels * (self.levels if self.encoding == "thermometer" else 1)

    @property
    def cycles_per_image(self) -> int:
        """Cycles per image at steady state without stalls."""
        return self.height * self.width * self.channels // self.simd


class InputEncoder(wiring.Component):
    """Pixel encoder; ``i_stream`` carries ``8 * simd`` bits, ``o_stream`` ``out_width``."""

    def __init__(self, params: InputEncoderParams):
        if not isinstance(params, InputEncoderParams):
            raise TypeError(f"InputEncoder takes InputEncoderParams, not {params!r}")
        self.params = params
        super().__init__({
            "i_stream": In(stream.Signature(unsigned(params.in_width))),
            "o_stream": Out(stream.Signature(unsigned(params.out_width))),
        })

    def elaborate(self, platform):
        p = self.params
        m = Module()
        pixels = [self.i_stream.payload[8 * i:8 * i + 8] for i in range(p.simd)]
        if p.encoding == "uint8":
            bits = self.i_stream.payload
        elif p.encoding == "binary":
            bits = Cat(*(px >= p.threshold for px in pixels))
        else:
            levels = thermometer_thresholds(p.levels)
            bits = Cat(*(px >= t for px in pixels for t in levels))
        m.d.comb += [
            self.o_stream.payload.eq(bits),
            self.o_stream.valid.eq(self.i_stream.valid),
            self.i_stream.ready.eq(self.o_stream.ready),
        ]
        return m
