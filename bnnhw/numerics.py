"""Numeric conventions and shape arithmetic: the one place every layer takes them from.

Torch-free and amaranth-free, so the IR, the folding, the packing, the RTL generators and
the host all import it (docs/architecture.md, "Numeric conventions").

- A binary value is a bit ``b`` standing for ``2b - 1``; ``sign(0) = +1``.
- Pixels are 8-bit unsigned (``0..PIXEL_MAX``). A matrix layer consumes ``binary``
  elements (1 bit), ``uint8`` pixels (8 bits) or ``frac2`` codes (2 bits):
  ``ELEMENT_BITS``.
- A ``frac2`` code ``q`` in ``0..3`` is the fractional activation ``(2q - 3) / 3``
  (-1, -1/3, +1/3, +1); its MSB plane bit is ``q >> 1``, its LSB plane bit ``q & 1``
  (``frac2_value``).
- Accumulators: ``popcount(xnor(x, w))`` over ``cols`` bits for binary inputs
  (``0..cols``), ``sum x * (2w - 1)`` for uint8 inputs (``-255 cols .. 255 cols``),
  ``2 * msb + g * lsb`` for frac2 inputs (``-3 cols .. 3 cols``: three times the layer's
  real output, ``msb``/``lsb`` the signed dot products of the two planes, ``g`` the
  row's gate). The signed dot product is ``2 * popcount - cols`` (binary) or the
  accumulator itself.
- Thresholds compare ``acc >= T``; every useful ``T`` lies in ``acc_min .. acc_max + 1``
  (the two ends make constant channels).
"""

from __future__ import annotations

ENCODINGS = ("binary", "uint8", "thermometer")
"""Input encodings of the first layer."""
PAD_VALUES = (0, 1, -1)
"""Values a binary convolution may pad its input with (0: plain zero padding)."""
INPUT_KINDS = ("binary", "uint8", "frac2")
"""What a matrix layer can consume."""
ELEMENT_BITS = {"binary": 1, "uint8": 8, "frac2": 2}
"""Bits per element of each input kind."""
FRAC2_PAD_CODES = (0, 3)
"""Codes a precision-gated convolution may pad with: -1 and +1 (no zero padding)."""
FRAC2_LEVELS = 3
"""Thresholds per channel of a layer whose output is frac2 (codes 0..3)."""
FRAC2_BOUNDARIES = ((-2, 3), (0, 1), (2, 3))
"""The quantiser's boundaries ``-2/3, 0, 2/3`` as fractions: ``q`` counts those ``y`` reaches
(``y >= b``; a value on a boundary rounds up, as ``sign(0) = +1``)."""
DOT_DIVISOR = {"binary": 1, "uint8": 1, "frac2": 3}
"""The real dot product of a matrix layer is its signed dot product over this divisor."""
PIXEL_BITS = 8
PIXEL_MAX = (1 << PIXEL_BITS) - 1
MAX_THERMOMETER_LEVELS = PIXEL_MAX
"""A thermometer code has one threshold per level, each a distinct pixel value."""


def thermometer_thresholds(levels: int) -> list[int]:
    """Pixel thresholds of a ``levels``-level thermometer code, evenly spread over 0..255."""
    return [((k + 1) * (PIXEL_MAX + 1)) // (levels + 1) for k in range(levels)]


def encoded_kind(encoding: str) -> str:
    """What the input encoder gives the first layer: ``uint8`` pixels or ``binary`` bits."""
    return "uint8" if encoding == "uint8" else "binary"


def encoded_channels(channels: int, encoding: str, levels: int) -> int:
    """Channels of the encoded input map (a thermometer code makes ``levels`` per pixel
    channel)."""
    return channels * levels if encoding == "thermometer" else channels


def bits_per_channel(encoding: str, levels: int) -> int:
    """Encoder output bits per input pixel channel."""
    return {"binary": 1, "thermometer": levels, "uint8": PIXEL_BITS}[encoding]


def conv_out_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output size along one axis of a convolution (or pool: ``padding`` 0), floor mode."""
    return (size + 2 * padding - kernel) // stride + 1


def frac2_value(code: int) -> float:
    """The fractional activation a frac2 code ``0..3`` stands for: ``(2 * code - 3) / 3``."""
    return (2 * int(code) - 3) / 3


def acc_range(kind: str, cols: int) -> tuple[int, int]:
    """Smallest and largest accumulator of a matrix layer with ``cols`` inputs of ``kind``."""
    if kind == "binary":
        return 0, cols
    return dot_range(kind, cols)


def dot_range(kind: str, cols: int) -> tuple[int, int]:
    """Range of the signed dot product (the classifier's score)."""
    hi = {"uint8": PIXEL_MAX, "frac2": 3}.get(kind, 1) * cols
    return -hi, hi


def acc_to_dot(kind: str, cols: int, acc: int) -> int:
    """The signed dot product of an accumulator value."""
    return 2 * acc - cols if kind == "binary" else acc


def threshold_range(kind: str, cols: int) -> tuple[int, int]:
    """Range of a stored threshold: ``acc_min .. acc_max + 1``."""
    lo, hi = acc_range(kind, cols)
    return lo, hi + 1


def unsigned_bits(hi: int) -> int:
    """Bits of an unsigned field holding ``0..hi`` (at least 1)."""
    return max(1, int(hi).bit_length())


def signed_bits(lo: int, hi: int) -> int:
    """Bits of a two's complement field holding ``lo..hi``."""
    need = max(int(hi).bit_length(), (-int(lo) - 1).bit_length() if lo < 0 else 0)
    return need + 1


def range_bits(lo: int, hi: int) -> tuple[int, bool]:
    """``(width, signed)`` of the narrowest field holding ``lo..hi``: two's complement when
    ``lo < 0``, unsigned otherwise."""
    return (signed_bits(lo, hi), True) if lo < 0 else (unsigned_bits(hi), False)


def index_bits(count: int) -> int:
    """Bits of an index ``0..count-1`` (at least 1)."""
    return unsigned_bits(count - 1)
