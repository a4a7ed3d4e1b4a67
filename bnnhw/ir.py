"""The integer intermediate representation: the one contract between software and hardware.

A ``Graph`` is an ordered tuple of nodes (a chain: each node consumes the previous node's
output) plus a JSON-able ``meta`` dict. Shapes are HWC: a feature map is ``(H, W, C)``,
a flat vector ``(F,)``.

Hardware nodes (what a lowered graph holds, see ``Graph.check_lowered``):

- ``InputEncoder``: 8-bit pixels ``(H, W, C)`` -> binary bits (``binary``,
  ``thermometer``) or 8-bit values (``uint8``): the pixels unchanged, or each pixel looked
  up in a 256-entry ``table`` (``uint8 [256]``: an imported model's input quantiser,
  ``bnnhw.onnx_frontend``); see ``bnnhw.reference.encode``.
- ``Conv``: a binary convolution as a matrix-vector-threshold unit. ``weights`` is ``uint8
  [R, K*K*C]`` (bits, column order ``(ky, kx, c)``). The accumulator is
  ``popcount(xnor(window, w))`` for binary inputs and ``sum x * (2w - 1)`` for uint8
  inputs. The output bit is ``acc >= thresholds[row_class[oy], col_class[ox], r]``
  (``thresholds int64 [NY, NX, R]``; ``NY = NX = 1`` and all-zero classes unless
  ``zero_padding``). The input is padded with ``pad_bit`` (the hardware pad element: bit 0
  or 1, or for uint8 inputs a pixel value 0..255, 0 for a checkpoint's model) ``padding``
  rows and columns deep; ``zero_padding`` says the model padded with the value 0 and the
  per-border-class thresholds absorb the difference (see ``bnnhw.frontend``).
- ``MaxPool``: max over each ``kernel x kernel`` window (stride ``stride``, no padding,
  floor output size), or min for the channels whose ``and_mask`` bit is 1. On bits: OR,
  and AND for masked channels.
- ``Dense``: like ``Conv`` on the flattened input (``weights uint8 [R, F]``, ``F`` in HWC
  flatten order of the previous map), ``thresholds int64 [1, 1, R]``. The last node is a
  ``Dense`` without thresholds, the classifier: it outputs the signed dot products
  ``dot`` (for binary inputs ``2 * popcount - F``) and the class, the first index of the
  largest integer logit ``class_scale * dot + class_offset`` (``int64 [classes]``,
  ``class_scale >= 0``). The frontend chooses that integer map so its argmax is the
  model's (``bnnhw.frontend.lower_class_map``): ``class_gain`` is the factor by which it
  approximates the float logits ``scale * dot + bias``, and ``class_exact`` says the
  integer argmax provably equals the argmax of the exact float64 logits for every
  reachable ``dot``.

Fractional maps (``frac2``, FracBNN's 2-bit activations): each element is a code ``q`` in
``0..3`` standing for ``(2q - 3) / 3`` (``bnnhw.numerics``). A thresholded ``Conv``/``Dense``
whose ``thresholds`` are ``int64 [NY, NX, R, 3]`` (ascending along the last axis) outputs a
frac2 map, ``q = sum_k acc >= thresholds[..., k]``. A ``Conv``/``Dense`` with
``input_kind`` ``frac2`` is precision-gated: with ``pc_m``/``pc_l`` the popcounts of its
weights against the MSB (``q >> 1``) and LSB (``q & 1``) planes, row ``r``'s gate is ``g =
(pc_m >= gate[r]) != gate_invert[r]`` (``gate int64 [R]`` in ``0..N + 1``, ``gate_invert``
bits) and its accumulator ``acc = 2 * (2 pc_m - N) + g * (2 pc_l - N)``: three times the
layer's real output, which is also its signed dot product (so ``dot / 3`` is the real dot
product, ``dot_divisor``). A gated conv pads with code 0 or 3. ``MaxPool`` on a frac2 map
takes the max (min where ``and_mask``) of the codes.

Every ``Conv``/``Dense`` carries ``scale``/``bias`` (``float64 [R]``): its real-valued
pre-activation is ``y = scale * dot / dot_divisor + bias`` with ``dot`` the signed dot
product of its (stored, possibly flipped) weights against the true input (zero padding
included). For
thresholded nodes they are provenance (tie margins in ``bnnhw.check``); for the last node
they are the float logit map a host may apply to the scores. The golden model never reads
them for hidden layers.

Frontend nodes (only between frontend passes; never in a lowered graph): ``Affine``
(per-channel ``y = scale * x + bias``, from BatchNorm or the classifier's ``Scores``),
``Sign`` (``bit = x >= 0``) and ``Frac`` (the frac2 quantiser, ``q = [x >= -2/3] + [x >= 0]
+ [x >= 2/3]``). Before ``Sign`` is absorbed, a ``Conv``/``Dense`` without
thresholds outputs its real-valued pre-activation and a ``MaxPool`` pools real values.

Every node has a unique ``name`` and a ``source``: the model modules it implements
(``"encoder"``, ``"layers.3"``, ...). A ``Conv``/``Dense`` whose model layer had pruned
channels removed (``bnnhw.frontend.remove_pruned_channels``) lists in ``channels`` the
model's output channel of each of its rows (ascending; ``None``: row ``r`` is channel
``r``); like ``source``, it is provenance, for comparing with the model.

On disk a graph is a JSON file plus an ``.npz`` beside it (``<path>.npz``) with every
array, versioned, exact round trip (``save_graph`` / ``load_graph``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from . import numerics as nx
from .errors import BnnhwError
from .validate import ParameterError, bit_array, choice, flag, float_array, int_array, integer
from .validate import positive_shape as _shape

FORMAT = "bnnhw-ir"
VERSION = 4
READS = (2, 3, 4)  # 3 added the input encoder's pixel table, 4 frac2 maps and gated layers
KINDS = nx.INPUT_KINDS  # what a matrix node can consume
PIXEL_MAX = nx.PIXEL_MAX
unsigned_bits, signed_bits = nx.unsigned_bits, nx.signed_bits
MAX_CLASS_SCALE = (1 << 24) - 1   # the classifier's integer multipliers (see bnnhw.frontend)
MAX_CLASS_OFFSET = (1 << 47) - 1  # keeps every integer logit well inside int64


@dataclass(frozen=True, eq=False)
class Node:
    """Base of all IR nodes: a frozen, validated record; equality compares arrays exactly."""

    op: ClassVar[str] = ""

    def _set(self, key: str, value: Any) -> None:
        object.__setattr__(self, key, value)

    def _common(self) -> None:
        name = self.name  # type: ignore[attr-defined]
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise ParameterError(f"{self.op} node name must be a non-empty word, not "
                                 f"{name!r}")
        src = self.source  # type: ignore[attr-defined]
        src = tuple(src) if isinstance(src, (list, tuple)) else src
        if not isinstance(src, tuple) or not all(isinstance(s, str) for s in src):
            raise ParameterError(f"{self.where}: source must be a tuple of module names")
        self._set("source", src)

    @property
    def where(self) -> str:
        return f"{self.op} {getattr(self, 'name', '?')!r}"

    # Subclasses provide ``in_shape`` and ``out_shape`` (a field or a property each).

    def replace(self, **changes: Any) -> Node:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
                        and a.dtype == b.dtype and np.array_equal(a, b)):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False)
class InputEncoder(Node):
    """8-bit pixels ``shape = (H, W, C)`` -> the first layer's input (module docstring)."""

    op: ClassVar[str] = "input"
    name: str
    shape: tuple[int, int, int]
    encoding: str = "binary"
    threshold: int = 128
    levels: int = 8
    source: tuple[str, ...] = ()
    table: np.ndarray | None = None

    def __post_init__(self) -> None:
        self._common()
        self._set("shape", _shape(self.where, "shape", self.shape, (3,)))
        choice(self.where, "encoding", self.encoding, nx.ENCODINGS)
        self._set("threshold", integer(self.where, "threshold", self.threshold, 0, PIXEL_MAX))
        self._set("levels", integer(self.where, "levels", self.levels, 1,
                                 nx.MAX_THERMOMETER_LEVELS))
        if self.table is not None:
            if self.encoding != "uint8":
                raise ParameterError(f"{self.where}: a pixel table needs the uint8 encoding, "
                                     f"not {self.encoding}")
            self._set("table", int_array(self.where, "table", self.table,
                                         shape=(PIXEL_MAX + 1,), dtype=np.uint8, low=0,
                                         high=PIXEL_MAX))

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        h, w, c = self.shape
        return (h, w, nx.encoded_channels(c, self.encoding, self.levels))

    @property
    def out_kind(self) -> str:
        """``uint8`` (pixels pass through) or ``binary``."""
        return nx.encoded_kind(self.encoding)


@dataclass(frozen=True, eq=False)
class _Matrix(Node):
    """Shared part of ``Conv`` and ``Dense``: weights, affine provenance, thresholds."""

    @property
    def rows(self) -> int:
        """Output channels ``R``."""
        return int(self.weights.shape[0])  # type: ignore[attr-defined]

    @property
    def cols(self) -> int:
        """Inputs per output ``N`` (``K*K*C`` or ``F``): the accumulator's length."""
        return int(self.weights.shape[1])  # type: ignore[attr-defined]

    @property
    def thresholded(self) -> bool:
        return self.thresholds is not None  # type: ignore[attr-defined]

    @property
    def acc_signed(self) -> bool:
        """Popcounts (binary inputs) are unsigned; uint8 sums and frac2 accumulators are
        signed."""
        return self.input_kind != "binary"  # type: ignore[attr-defined]

    @property
    def gated(self) -> bool:
        """Whether this layer is precision-gated (its input is a frac2 map)."""
        return self.input_kind == "frac2"  # type: ignore[attr-defined]

    @property
    def out_levels(self) -> int:
        """Thresholds per channel: 1 (a bit) or 3 (a frac2 code); 0 for the classifier."""
        t = self.thresholds  # type: ignore[attr-defined]
        if t is None:
            return 0
        return nx.FRAC2_LEVELS if t.ndim == 4 else 1

    @property
    def dot_divisor(self) -> int:
        """The real dot product is ``dot / dot_divisor`` (3 for frac2 inputs)."""
        return nx.DOT_DIVISOR[self.input_kind]  # type: ignore[attr-defined]

    @property
    def gate_bits(self) -> int:
        """Width of one stored gate threshold (``0 .. cols + 1``), without its invert bit."""
        return nx.unsigned_bits(self.cols + 1)

    @property
    def gate_memory_bits(self) -> int:
        """Gate memory size in bits (a threshold and an invert bit per row; 0 if ungated)."""
        return self.rows * (self.gate_bits + 1) if self.gated else 0

    @property
    def acc_min(self) -> int:
        return nx.acc_range(self.input_kind, self.cols)[0]  # type: ignore[attr-defined]

    @property
    def acc_max(self) -> int:
        return nx.acc_range(self.input_kind, self.cols)[1]  # type: ignore[attr-defined]

    @property
    def acc_bits(self) -> int:
        """Width of the accumulator (two's complement if ``acc_signed``)."""
        return nx.range_bits(self.acc_min, self.acc_max)[0]

    @property
    def threshold_min(self) -> int:
        """Thresholds lie in ``acc_min .. acc_max + 1`` (the ends make constant channels)."""
        return self.acc_min

    @property
    def threshold_max(self) -> int:
        return self.acc_max + 1

    @property
    def threshold_bits(self) -> int:
        """Width of one threshold (two's complement if ``acc_signed``; 0 if none)."""
        if not self.thresholded:
            return 0
        return nx.range_bits(self.threshold_min, self.threshold_max)[0]

    @property
    def dot_min(self) -> int:
        """Range of the signed dot product (the last layer's output)."""
        return nx.dot_range(self.input_kind, self.cols)[0]  # type: ignore[attr-defined]

    @property
    def dot_max(self) -> int:
        return -self.dot_min

    @property
    def dot_bits(self) -> int:
        return signed_bits(self.dot_min, self.dot_max)

    @property
    def weight_bits(self) -> int:
        """Weight memory size in bits (one bit per weight)."""
        return self.rows * self.cols

    @property
    def threshold_memory_bits(self) -> int:
        """Threshold memory size in bits (all border classes)."""
        t = self.thresholds  # type: ignore[attr-defined]
        return 0 if t is None else int(t.size) * self.threshold_bits

    def _check_matrix(self, cols: int) -> None:
        w = self.where
        choice(w, "input_kind", self.input_kind, KINDS)  # type: ignore[attr-defined]
        weights = np.asarray(self.weights)  # type: ignore[attr-defined]
        if weights.ndim != 2 or weights.shape[1] != cols or weights.shape[0] < 1:
            raise ParameterError(f"{w}: weights must have shape [R, {cols}], not "
                             f"{list(weights.shape)}")
        self._set("weights", bit_array(w, "weights", weights, shape=weights.shape))
        r = self.rows
        self._set("scale", float_array(w, "scale", self.scale, (r,)))  # type: ignore
        self._set("bias", float_array(w, "bias", self.bias, (r,)))  # type: ignore
        gate, inv = self.gate, self.gate_invert  # type: ignore[attr-defined]
        if not self.gated:
            if gate is not None or inv is not None:
                raise ParameterError(f"{w}: only a layer with frac2 inputs has gates")
            return
        if gate is None or inv is None:
            raise ParameterError(f"{w}: a layer with frac2 inputs needs gate and gate_invert")
        self._set("gate", int_array(w, "gate", gate, shape=(r,), low=0, high=cols + 1))
        self._set("gate_invert", bit_array(w, "gate_invert", inv, shape=(r,)))

    def _check_channels(self) -> None:
        ch = self.channels  # type: ignore[attr-defined]
        if ch is None:
            return
        ch = int_array(self.where, "channels", ch, shape=(self.rows,), low=0)
        if np.any(np.diff(ch) <= 0):
            raise ParameterError(f"{self.where}: channels must be ascending, not "
                                 f"{ch.tolist()}")
        self._set("channels", ch)

    def _check_thresholds(self, classes: tuple[int, int] | None) -> None:
        t = self.thresholds  # type: ignore[attr-defined]
        if t is None:
            return
        t = np.asarray(t)
        levels = t.ndim == 4 and t.shape[3] == nx.FRAC2_LEVELS
        if t.ndim not in (3, 4) or (t.ndim == 4 and not levels) or t.shape[2] != self.rows \
                or (classes and t.shape[:2] != classes):
            want = f"[{classes[0]}, {classes[1]}, {self.rows}]" if classes else \
                f"[NY, NX, {self.rows}]"
            raise ParameterError(f"{self.where}: thresholds must have shape {want} (or "
                                 f"{want[:-1]}, 3] for a frac2 output), not {list(t.shape)}")
        t = int_array(self.where, "thresholds", t, shape=t.shape, low=self.threshold_min,
                      high=self.threshold_max)
        if levels and np.any(np.diff(t, axis=3) < 0):
            raise ParameterError(f"{self.where}: the three thresholds of each channel must "
                                 f"be ascending")
        self._set("thresholds", t)


@dataclass(frozen=True, eq=False)
class Conv(_Matrix):
    """Binary convolution + threshold (module docstring). ``in_shape = (H, W, C)``."""

    op: ClassVar[str] = "conv"
    name: str
    in_shape: tuple[int, int, int]
    kernel: int
    weights: np.ndarray
    scale: np.ndarray
    bias: np.ndarray
    stride: int = 1
    padding: int = 0
    pad_bit: int = 0
    zero_padding: bool = False
    input_kind: str = "binary"
    thresholds: np.ndarray | None = None
    row_class: np.ndarray | None = None
    col_class: np.ndarray | None = None
    source: tuple[str, ...] = ()
    channels: np.ndarray | None = None
    gate: np.ndarray | None = None
    gate_invert: np.ndarray | None = None

    def __post_init__(self) -> None:
        self._common()
        w = self.where
        self._set("in_shape", _shape(w, "in_shape", self.in_shape, (3,)))
        k = integer(w, "kernel", self.kernel, 1)
        s = integer(w, "stride", self.stride, 1)
        p = integer(w, "padding", self.padding, 0)
        self._set("kernel", k)
        self._set("stride", s)
        self._set("padding", p)
        h, wd, c = self.in_shape
        if k > h + 2 * p or k > wd + 2 * p:
            raise ParameterError(f"{w}: kernel {k} is larger than the padded input "
                                 f"{h + 2 * p}x{wd + 2 * p}")
        self._check_matrix(k * k * c)
        self._check_channels()
        pad_max = {"uint8": PIXEL_MAX, "frac2": 3}.get(self.input_kind, 1)
        self._set("pad_bit", integer(w, "pad_bit", self.pad_bit, 0, pad_max))
        if self.gated and self.pad_bit not in nx.FRAC2_PAD_CODES:
            raise ParameterError(f"{w}: a layer with frac2 inputs pads with code 0 (-1) or 3 "
                                 f"(+1), not {self.pad_bit}")
        self._set("zero_padding", flag(w, "zero_padding", self.zero_padding))
        if self.zero_padding and (self.input_kind != "binary" or self.pad_bit != 0 or p == 0):
            raise ParameterError(f"{w}: zero_padding needs binary inputs, padding > 0 and "
                                 f"pad_bit 0 (got {self.input_kind}, padding {p}, pad_bit "
                                 f"{self.pad_bit})")
        have = [self.thresholds is not None, self.row_class is not None,
                self.col_class is not None]
        if any(have) and not all(have):
            raise ParameterError(f"{w}: thresholds, row_class and col_class go together")
        if self.thresholds is None:
            return
        oh, ow = self.out_shape[:2]
        t = np.asarray(self.thresholds)
        ny, nxc = (t.shape[0], t.shape[1]) if t.ndim in (3, 4) else (0, 0)
        self._set("row_class", int_array(w, "row_class", self.row_class, shape=(oh,), low=0,
                                         high=ny - 1))
        self._set("col_class", int_array(w, "col_class", self.col_class, shape=(ow,), low=0,
                                         high=nxc - 1))
        if not self.zero_padding and (ny, nxc) != (1, 1):
            raise ParameterError(f"{w}: thresholds need border classes (NY, NX) = (1, 1) "
                                 f"without zero_padding, not ({ny}, {nxc})")
        self._check_thresholds((ny, nxc))

    @property
    def out_shape(self) -> tuple[int, ...]:
        h, w, _ = self.in_shape
        k, s, p = self.kernel, self.stride, self.padding
        return (nx.conv_out_size(h, k, s, p), nx.conv_out_size(w, k, s, p), self.rows)

    @property
    def out_pixels(self) -> int:
        """Output pixels per image ``P`` (of the cycle model)."""
        return self.out_shape[0] * self.out_shape[1]

    @property
    def border_classes(self) -> tuple[int, int]:
        """``(NY, NX)``: threshold table classes (``(1, 1)`` without zero padding)."""
        t = self.thresholds
        return (1, 1) if t is None else (int(t.shape[0]), int(t.shape[1]))


@dataclass(frozen=True, eq=False)
class MaxPool(Node):
    """Max-pool, min for channels with ``and_mask`` 1 (OR / AND on bits)."""

    op: ClassVar[str] = "maxpool"
    name: str
    in_shape: tuple[int, int, int]
    kernel: int
    stride: int
    and_mask: np.ndarray
    source: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._common()
        w = self.where
        self._set("in_shape", _shape(w, "in_shape", self.in_shape, (3,)))
        k = integer(w, "kernel", self.kernel, 1)
        self._set("kernel", k)
        self._set("stride", integer(w, "stride", self.stride, 1))
        h, wd, c = self.in_shape
        if k > h or k > wd:
            raise ParameterError(f"{w}: kernel {k} is larger than its input {h}x{wd}")
        self._set("and_mask", bit_array(w, "and_mask", self.and_mask, shape=(c,)))

    @property
    def out_shape(self) -> tuple[int, ...]:
        h, w, c = self.in_shape
        k, s = self.kernel, self.stride
        return (nx.conv_out_size(h, k, s), nx.conv_out_size(w, k, s), c)


@dataclass(frozen=True, eq=False)
class Dense(_Matrix):
    """Binary fully connected layer (+ threshold unless last). ``in_shape`` of its input."""

    op: ClassVar[str] = "dense"
    name: str
    in_shape: tuple[int, ...]
    weights: np.ndarray
    scale: np.ndarray
    bias: np.ndarray
    input_kind: str = "binary"
    thresholds: np.ndarray | None = None
    class_scale: np.ndarray | None = None
    class_offset: np.ndarray | None = None
    class_gain: float = 0.0
    class_exact: bool = False
    source: tuple[str, ...] = ()
    channels: np.ndarray | None = None
    gate: np.ndarray | None = None
    gate_invert: np.ndarray | None = None

    def __post_init__(self) -> None:
        self._common()
        w = self.where
        self._set("in_shape", _shape(w, "in_shape", self.in_shape, (1, 3)))
        self._check_matrix(self.in_features)
        self._check_channels()
        self._check_thresholds((1, 1))
        if (self.class_scale is None) != (self.class_offset is None):
            raise ParameterError(f"{w}: class_scale and class_offset go together")
        self._set("class_exact", flag(w, "class_exact", self.class_exact))
        gain = self.class_gain
        if isinstance(gain, bool) or not isinstance(gain, (int, float, np.floating)) \
                or not np.isfinite(gain) or gain < 0:
            raise ParameterError(f"{w}: class_gain must be a finite number >= 0, not {gain!r}")
        self._set("class_gain", float(gain))
        if self.class_scale is None:
            return
        if self.thresholded:
            raise ParameterError(f"{w}: a thresholded layer has no class map")
        r = self.rows
        self._set("class_scale", int_array(w, "class_scale", self.class_scale, shape=(r,),
                                           low=0, high=MAX_CLASS_SCALE))
        self._set("class_offset", int_array(w, "class_offset", self.class_offset, shape=(r,),
                                            low=-MAX_CLASS_OFFSET, high=MAX_CLASS_OFFSET))

    @property
    def classifier(self) -> bool:
        """Whether this node carries the integer class map (the lowered last layer)."""
        return self.class_scale is not None

    @property
    def class_logit_range(self) -> tuple[int, int]:
        """Range of the integer logits ``class_scale * dot + class_offset``."""
        if self.class_scale is None:
            raise ValueError(f"{self.where} has no class map")
        m = self.class_scale.astype(object)
        b = self.class_offset.astype(object)  # type: ignore[union-attr]
        return int(min(b - m * self.dot_max)), int(max(b + m * self.dot_max))

    @property
    def class_logit_bits(self) -> int:
        """Width of one integer logit (two's complement)."""
        return signed_bits(*self.class_logit_range)

    def class_logits(self, dots: np.ndarray) -> np.ndarray:
        """Integer logits ``class_scale * dot + class_offset`` of ``dots[..., R]`` (int64)."""
        if self.class_scale is None:
            raise ValueError(f"{self.where} has no class map")
        return np.asarray(dots, dtype=np.int64) * self.class_scale + self.class_offset

    @property
    def in_features(self) -> int:
        """``F``: the input flattened in HWC order."""
        return int(np.prod(self.in_shape))

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.rows,)


@dataclass(frozen=True, eq=False)
class Affine(Node):
    """Frontend only: per-channel ``y = scale * x + bias`` (channel = last axis)."""

    op: ClassVar[str] = "affine"
    name: str
    shape: tuple[int, ...]
    scale: np.ndarray
    bias: np.ndarray
    source: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._common()
        self._set("shape", _shape(self.where, "shape", self.shape, (1, 3)))
        c = self.shape[-1]
        self._set("scale", float_array(self.where, "scale", self.scale, (c,)))
        self._set("bias", float_array(self.where, "bias", self.bias, (c,)))

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.shape


@dataclass(frozen=True, eq=False)
class _Activation(Node):
    """Frontend only: an elementwise activation of a ``shape`` map or vector."""

    name: str
    shape: tuple[int, ...]
    source: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._common()
        self._set("shape", _shape(self.where, "shape", self.shape, (1, 3)))

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.shape


@dataclass(frozen=True, eq=False)
class Frac(_Activation):
    """Frontend only: the frac2 quantiser, ``code = [x >= -2/3] + [x >= 0] + [x >= 2/3]``."""

    op: ClassVar[str] = "frac"


@dataclass(frozen=True, eq=False)
class Sign(_Activation):
    """Frontend only: ``bit = x >= 0``."""

    op: ClassVar[str] = "sign"


NODE_TYPES: dict[str, type[Node]] = {
    cls.op: cls for cls in (InputEncoder, Conv, MaxPool, Dense, Affine, Sign, Frac)
}
HARDWARE_OPS = ("input", "conv", "maxpool", "dense")


def out_kind(node: Node, kind: str) -> str:
    """What ``node`` produces from an input of ``kind`` (binary, uint8, frac2 or real)."""
    if isinstance(node, InputEncoder):
        return node.out_kind
    if isinstance(node, _Matrix):
        if not node.thresholded:
            return "real"
        return "frac2" if node.out_levels == nx.FRAC2_LEVELS else "binary"
    if isinstance(node, Affine):
        return "real"
    if isinstance(node, Sign):
        return "binary"
    if isinstance(node, Frac):
        return "frac2"
    return kind  # MaxPool keeps its input's kind


@dataclass(frozen=True, eq=False)
class Graph:
    """A chain of nodes, input encoder first; validated on construction (ValueError)."""

    nodes: tuple[Node, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        nodes = tuple(self.nodes)
        object.__setattr__(self, "nodes", nodes)
        if not isinstance(self.meta, dict):
            raise TypeError(f"graph meta must be a dict, not {type(self.meta).__name__}")
        object.__setattr__(self, "meta", dict(self.meta))
        if not nodes or not isinstance(nodes[0], InputEncoder):
            raise ValueError("a graph must start with an input node")
        seen: set[str] = set()
        shape, kind = None, ""
        for node in nodes:
            if not isinstance(node, Node):
                raise TypeError(f"graph nodes must be IR nodes, not {type(node).__name__}")
            if node.name in seen:
                raise ValueError(f"{node.where}: node name used twice")
            seen.add(node.name)
            if shape is not None:
                if isinstance(node, InputEncoder):
                    raise ValueError(f"{node.where}: only the first node can be an input")
                if node.in_shape != shape:
                    raise ValueError(f"{node.where}: takes shape {list(node.in_shape)} but the "
                                     f"node before it gives {list(shape)}")
                if isinstance(node, _Matrix) and node.input_kind != kind:
                    raise ValueError(f"{node.where}: takes {node.input_kind} inputs but the "
                                     f"node before it gives {kind} values")
            shape, kind = node.out_shape, out_kind(node, kind)

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, key: int | str) -> Node:
        if isinstance(key, str):
            for node in self.nodes:
                if node.name == key:
                    return node
            raise KeyError(key)
        return self.nodes[key]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return self.meta == other.meta and len(self) == len(other) and all(
            a == b for a, b in zip(self.nodes, other.nodes))

    __hash__ = None  # type: ignore[assignment]

    def replace(self, nodes: tuple[Node, ...] | list[Node]) -> Graph:
        """The same graph (meta) with other nodes."""
        return Graph(tuple(nodes), self.meta)

    @property
    def input(self) -> InputEncoder:
        return self.nodes[0]  # type: ignore[return-value]

    @property
    def classes(self) -> int:
        """Number of output classes (rows of the last node)."""
        return int(self.nodes[-1].out_shape[-1])

    @property
    def lowered(self) -> bool:
        try:
            self.check_lowered()
        except ValueError:
            return False
        return True

    def check_lowered(self) -> None:
        """Raise ValueError unless this is a hardware graph (module docstring)."""
        for node in self.nodes:
            if node.op not in HARDWARE_OPS:
                src = f" (from {', '.join(node.source)})" if node.source else ""
                raise ValueError(f"{node.where}{src} was not lowered to hardware nodes")
        # (an unthresholded matrix node outputs real values, which only the last node may:
        # the kind check of the constructor already refuses anything after one)
        last = self.nodes[-1]
        if not isinstance(last, Dense) or last.thresholded:
            raise ValueError(f"{last.where}: the last node must be a dense layer without "
                             f"thresholds (the classifier)")
        if not last.classifier:
            raise ValueError(f"{last.where}: the classifier has no integer class map "
                             f"(class_scale, class_offset)")
        for node in self.nodes[:-1]:
            if isinstance(node, Dense) and node.classifier:
                raise ValueError(f"{node.where}: only the last node carries a class map")


# --- files -----------------------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def graph_to_json(graph: Graph) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON document and the arrays (keyed ``<node>.<field>``) of ``graph``."""
    arrays: dict[str, np.ndarray] = {}
    nodes = []
    for node in graph.nodes:
        doc: dict[str, Any] = {"op": node.op}
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            if isinstance(value, np.ndarray):
                key = f"{node.name}.{f.name}"
                arrays[key] = value
                doc[f.name] = {"array": key, "dtype": value.dtype.name,
                               "shape": list(value.shape)}
            else:
                doc[f.name] = _jsonable(value)
        nodes.append(doc)
    return {"format": FORMAT, "version": VERSION, "meta": graph.meta, "nodes": nodes}, arrays


def graph_from_json(doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> Graph:
    """Inverse of ``graph_to_json`` (ValueError for a malformed document)."""
    nodes = []
    for i, nd in enumerate(doc["nodes"]):
        nd = dict(nd)
        op = nd.pop("op", None)
        if op not in NODE_TYPES:
            raise ValueError(f"node {i}: unknown op {op!r} (known: {', '.join(NODE_TYPES)})")
        kwargs = {}
        for key, value in nd.items():
            if isinstance(value, dict) and "array" in value:
                if value["array"] not in arrays:
                    raise ValueError(f"node {i}: array {value['array']!r} is missing")
                a = arrays[value["array"]]
                if a.dtype.name != value["dtype"] or list(a.shape) != value["shape"]:
                    raise ValueError(f"node {i}: array {value['array']!r} is {a.dtype.name} "
                                     f"{list(a.shape)}, not {value['dtype']} {value['shape']}")
                value = a
            kwargs[key] = value
        try:
            nodes.append(NODE_TYPES[op](**kwargs))
        except TypeError as e:
            raise ValueError(f"node {i} ({op}): {e}") from None
    return Graph(tuple(nodes), doc.get("meta", {}))


def arrays_path(path: str | os.PathLike[str]) -> Path:
    """Where the arrays of the graph file ``path`` live: ``<path>.npz``."""
    path = Path(path)
    return path.with_name(path.name + ".npz")


def save_graph(graph: Graph, path: str | os.PathLike[str]) -> Path:
    """Write ``graph`` to ``path`` (JSON) and ``<path>.npz`` (arrays); return ``path``.

    The two files are written together (``bnnhw.errors.write_together``): each to a
    temporary beside it, then both renamed; a failure leaves neither new file behind.
    Only regular files are replaced (``BnnhwError`` for a folder, a device, ...).
    """
    from .errors import write_together

    path = Path(path)
    doc, arrays = graph_to_json(graph)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    blob = buf.getvalue()
    doc["arrays"] = {"file": arrays_path(path).name, "sha256": hashlib.sha256(blob).hexdigest()}
    try:
        text = json.dumps(doc, indent=1, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise ValueError(f"graph meta must be plain JSON values ({e})") from None
    write_together([(arrays_path(path), lambda f: f.write(blob)),
                    (path, lambda f: f.write((text + "\n").encode()))])
    return path


def load_graph(path: str | os.PathLike[str]) -> Graph:
    """Read a graph written by ``save_graph`` (BnnhwError naming what is wrong)."""
    import zipfile

    from .errors import read_json_text

    path = Path(path)
    text = read_json_text(path, f"IR file {path}", "give the .ir file bnnhw compile wrote")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise BnnhwError(f"{path} is not a bnnhw IR file (it is not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BnnhwError(f"{path} is not a bnnhw IR file (no 'format': {FORMAT!r} entry)")
    if type(doc.get("version")) is not int or doc.get("version") not in READS:
        raise BnnhwError(f"IR file {path} has version {doc.get('version')!r}; this bnnhw "
                         f"reads versions {', '.join(map(str, READS))} only")
    entry = doc.get("arrays")
    name = entry.get("file") if isinstance(entry, dict) else None
    if not (isinstance(name, str) and name and Path(name).name == name
            and isinstance(entry.get("sha256"), str)):
        raise BnnhwError(f"IR file {path} is malformed: its 'arrays' entry must name the "
                         f"arrays file beside it and its sha256")
    npz = path.with_name(name)
    try:
        blob = npz.read_bytes()
    except FileNotFoundError:
        raise BnnhwError(f"IR file {path} needs its arrays file {npz}, which does not "
                         f"exist") from None
    except OSError as e:
        raise BnnhwError(f"arrays file {npz} of IR file {path} cannot be read "
                         f"({e.strerror})") from None
    if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
        raise BnnhwError(f"arrays file {npz} does not belong to IR file {path} (checksum "
                         f"mismatch)")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise BnnhwError(f"arrays file {npz} of IR file {path} cannot be read ({e})") from None
    if not isinstance(doc.get("nodes"), list):
        raise BnnhwError(f"IR file {path} is malformed: 'nodes' must be a list")
    try:
        return graph_from_json(doc, arrays)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise BnnhwError(f"IR file {path} is malformed: {e}") from None
