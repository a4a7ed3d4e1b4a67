"""The integer intermediate representation: the one contract between software and hardware.

A ``Graph`` is an ordered tuple of nodes (a chain: each node consumes the previous node's
output) plus a JSON-able ``meta`` dict. Shapes are HWC: a feature map is ``(H, W, C)``,
a flat vector ``(F,)``.

Hardware nodes (what a lowered graph holds, see ``Graph.check_lowered``):

- ``InputEncoder``: 8-bit pixels ``(H, W, C)`` -> binary bits (``binary``,
  ``thermometer``) or the pixels unchanged (``uint8``); see ``bnnhw.reference.encode``.
- ``Conv``: a binary convolution as a matrix-vector-threshold unit. ``weights`` is
  ``uint8 [R, K*K*C]`` (bits, column order ``(ky, kx, c)``). The accumulator is
  ``popcount(xnor(window, w))`` for binary inputs and ``sum x * (2w - 1)`` for uint8
  inputs. The output bit is ``acc >= thresholds[row_class[oy], col_class[ox], r]``
  (``thresholds int64 [NY, NX, R]``; ``NY = NX = 1`` and all-zero classes unless
  ``zero_padding``). The input is padded with ``pad`` (the hardware pad element: bit 0
  or 1, pixel 0 for uint8); ``zero_padding`` says the model padded with the value 0 and
  the per-border-class thresholds absorb the difference (see ``bnnhw.frontend``).
- ``MaxPool``: max over each ``kernel x kernel`` window (stride ``stride``, no padding,
  floor output size), or min for the channels whose ``and_mask`` bit is 1. On bits: OR,
  and AND for masked channels.
- ``Dense``: like ``Conv`` on the flattened input (``weights uint8 [R, F]``, ``F`` in HWC
  flatten order of the previous map), ``thresholds int64 [1, 1, R]``. The last node is a
  ``Dense`` without thresholds: it outputs the signed dot products ``dot`` (for binary
  inputs ``2 * popcount - F``), and the host computes ``logits = scale * dot + bias``
  (``float64 [classes]``) and takes the argmax.

Every ``Conv``/``Dense`` carries ``scale``/``bias`` (``float64 [R]``): its real-valued
pre-activation is ``y = scale * dot + bias`` with ``dot`` the signed dot product of its
(stored, possibly flipped) weights against the true input (zero padding included). For
thresholded nodes they are provenance (tie margins in ``bnnhw.check``); for the last node
they are the host's logit map. The golden model never reads them for hidden layers.

Frontend nodes (only between frontend passes; never in a lowered graph): ``Affine``
(per-channel ``y = scale * x + bias``, from BatchNorm or the classifier's ``Scores``) and
``Sign`` (``bit = x >= 0``). Before ``Sign`` is absorbed, a ``Conv``/``Dense`` without
thresholds outputs its real-valued pre-activation and a ``MaxPool`` pools real values.

Every node has a unique ``name`` and a ``source``: the model modules it implements
(``"encoder"``, ``"layers.3"``, ...).

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

from .errors import BnnhwError
from .nn.layers import ENCODINGS

FORMAT = "bnnhw-ir"
VERSION = 1
KINDS = ("binary", "uint8")  # what a matrix node can consume
PIXEL_MAX = 255


def unsigned_bits(hi: int) -> int:
    """Bits of an unsigned field holding ``0..hi`` (at least 1)."""
    return max(1, int(hi).bit_length())


def signed_bits(lo: int, hi: int) -> int:
    """Bits of a two's complement field holding ``lo..hi``."""
    need = max(int(hi).bit_length(), (-int(lo) - 1).bit_length() if lo < 0 else 0)
    return need + 1


def _shape(where: str, key: str, value: Any, dims: tuple[int, ...]) -> tuple[int, ...]:
    value = tuple(value) if isinstance(value, (list, tuple)) else value
    if (not isinstance(value, tuple) or len(value) not in dims
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
                   for v in value)):
        want = " or ".join(f"{d} positive integers" for d in dims)
        raise ValueError(f"{where}: {key} must be {want}, not {value!r}")
    return tuple(int(v) for v in value)


def _int(where: str, key: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum
            or (maximum is not None and value > maximum)):
        rng = f"an integer >= {minimum}" if maximum is None else f"an integer in {minimum}.." \
              f"{maximum}"
        raise ValueError(f"{where}: {key} must be {rng}, not {value!r}")
    return int(value)


def _array(where: str, key: str, value: Any, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    """A read-only private copy of ``value`` as ``dtype`` with exactly ``shape``."""
    a = np.asarray(value)
    if a.shape != shape:
        raise ValueError(f"{where}: {key} must have shape {list(shape)}, not {list(a.shape)}")
    if np.issubdtype(dtype, np.integer):
        if a.size and a.dtype.kind not in "biu":
            raise ValueError(f"{where}: {key} must hold integers, not {a.dtype}")
        if a.size and (int(a.min()) < np.iinfo(dtype).min or int(a.max()) > np.iinfo(dtype).max):
            raise ValueError(f"{where}: {key} values {int(a.min())}..{int(a.max())} do not fit "
                             f"{np.dtype(dtype).name}")
    elif a.size and not np.all(np.isfinite(a.astype(np.float64))):
        raise ValueError(f"{where}: {key} must be finite")
    out = np.array(a, dtype=dtype, copy=True)
    out.flags.writeable = False
    return out


def _bits(where: str, key: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    a = _array(where, key, value, np.uint8, shape)
    if a.size and int(a.max()) > 1:
        raise ValueError(f"{where}: {key} must hold bits 0/1, found {int(a.max())}")
    return a


@dataclass(frozen=True, eq=False)
class Node:
    """Base of all IR nodes: a frozen, validated record; equality compares arrays exactly."""

    op: ClassVar[str] = ""

    def _set(self, key: str, value: Any) -> None:
        object.__setattr__(self, key, value)

    def _common(self) -> None:
        name = self.name  # type: ignore[attr-defined]
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise ValueError(f"{self.op} node name must be a non-empty word, not {name!r}")
        src = self.source  # type: ignore[attr-defined]
        src = tuple(src) if isinstance(src, (list, tuple)) else src
        if not isinstance(src, tuple) or not all(isinstance(s, str) for s in src):
            raise ValueError(f"{self.where}: source must be a tuple of module names")
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

    def __post_init__(self) -> None:
        self._common()
        self._set("shape", _shape(self.where, "shape", self.shape, (3,)))
        if self.encoding not in ENCODINGS:
            raise ValueError(f"{self.where}: encoding must be one of {', '.join(ENCODINGS)}, "
                             f"not {self.encoding!r}")
        self._set("threshold", _int(self.where, "threshold", self.threshold, 0, PIXEL_MAX))
        self._set("levels", _int(self.where, "levels", self.levels, 1))

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        h, w, c = self.shape
        return (h, w, c * self.levels) if self.encoding == "thermometer" else self.shape

    @property
    def out_kind(self) -> str:
        """``uint8`` (pixels pass through) or ``binary``."""
        return "uint8" if self.encoding == "uint8" else "binary"


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
        """Popcounts (binary inputs) are unsigned; uint8 sums are signed."""
        return self.input_kind == "uint8"  # type: ignore[attr-defined]

    @property
    def acc_min(self) -> int:
        return -PIXEL_MAX * self.cols if self.acc_signed else 0

    @property
    def acc_max(self) -> int:
        return PIXEL_MAX * self.cols if self.acc_signed else self.cols

    @property
    def acc_bits(self) -> int:
        """Width of the accumulator (two's complement if ``acc_signed``)."""
        if self.acc_signed:
            return signed_bits(self.acc_min, self.acc_max)
        return unsigned_bits(self.acc_max)

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
        if self.acc_signed:
            return signed_bits(self.threshold_min, self.threshold_max)
        return unsigned_bits(self.threshold_max)

    @property
    def dot_min(self) -> int:
        """Range of the signed dot product (the last layer's output)."""
        return -PIXEL_MAX * self.cols if self.acc_signed else -self.cols

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
        if self.input_kind not in KINDS:  # type: ignore[attr-defined]
            raise ValueError(f"{w}: input_kind must be one of {', '.join(KINDS)}, not "
                             f"{self.input_kind!r}")  # type: ignore[attr-defined]
        weights = np.asarray(self.weights)  # type: ignore[attr-defined]
        if weights.ndim != 2 or weights.shape[1] != cols or weights.shape[0] < 1:
            raise ValueError(f"{w}: weights must have shape [R, {cols}], not "
                             f"{list(weights.shape)}")
        self._set("weights", _bits(w, "weights", weights, weights.shape))
        r = self.rows
        self._set("scale", _array(w, "scale", self.scale, np.float64, (r,)))  # type: ignore
        self._set("bias", _array(w, "bias", self.bias, np.float64, (r,)))  # type: ignore

    def _check_thresholds(self, classes: tuple[int, int] | None) -> None:
        t = self.thresholds  # type: ignore[attr-defined]
        if t is None:
            return
        t = np.asarray(t)
        if t.ndim != 3 or t.shape[2] != self.rows or (classes and t.shape[:2] != classes):
            want = f"[{classes[0]}, {classes[1]}, {self.rows}]" if classes else \
                f"[NY, NX, {self.rows}]"
            raise ValueError(f"{self.where}: thresholds must have shape {want}, not "
                             f"{list(t.shape)}")
        t = _array(self.where, "thresholds", t, np.int64, t.shape)
        if t.size and (int(t.min()) < self.threshold_min or int(t.max()) > self.threshold_max):
            raise ValueError(f"{self.where}: thresholds must lie in {self.threshold_min}.."
                             f"{self.threshold_max}, found {int(t.min())}..{int(t.max())}")
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
    pad: int = 0
    zero_padding: bool = False
    input_kind: str = "binary"
    thresholds: np.ndarray | None = None
    row_class: np.ndarray | None = None
    col_class: np.ndarray | None = None
    source: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._common()
        w = self.where
        self._set("in_shape", _shape(w, "in_shape", self.in_shape, (3,)))
        k = _int(w, "kernel", self.kernel, 1)
        s = _int(w, "stride", self.stride, 1)
        p = _int(w, "padding", self.padding, 0)
        self._set("kernel", k)
        self._set("stride", s)
        self._set("padding", p)
        h, wd, c = self.in_shape
        if k > h + 2 * p or k > wd + 2 * p:
            raise ValueError(f"{w}: kernel {k} is larger than the padded input "
                             f"{h + 2 * p}x{wd + 2 * p}")
        self._check_matrix(k * k * c)
        self._set("pad", _int(w, "pad", self.pad, 0, 0 if self.input_kind == "uint8" else 1))
        if not isinstance(self.zero_padding, (bool, np.bool_)):
            raise TypeError(f"{w}: zero_padding must be true or false, not "
                             f"{self.zero_padding!r}")
        self._set("zero_padding", bool(self.zero_padding))
        if self.zero_padding and (self.input_kind != "binary" or self.pad != 0 or p == 0):
            raise ValueError(f"{w}: zero_padding needs binary inputs, padding > 0 and pad 0 "
                             f"(got {self.input_kind}, padding {p}, pad {self.pad})")
        have = [self.thresholds is not None, self.row_class is not None,
                self.col_class is not None]
        if any(have) and not all(have):
            raise ValueError(f"{w}: thresholds, row_class and col_class go together")
        if self.thresholds is None:
            return
        oh, ow = self.out_shape[:2]
        rc = _array(w, "row_class", self.row_class, np.int64, (oh,))
        cc = _array(w, "col_class", self.col_class, np.int64, (ow,))
        t = np.asarray(self.thresholds)
        ny, nx = (t.shape[0], t.shape[1]) if t.ndim == 3 else (0, 0)
        for key, cls, n in (("row_class", rc, ny), ("col_class", cc, nx)):
            if cls.size and (int(cls.min()) < 0 or int(cls.max()) >= n):
                raise ValueError(f"{w}: {key} values must lie in 0..{n - 1}")
        if not self.zero_padding and (ny, nx) != (1, 1):
            raise ValueError(f"{w}: thresholds need border classes (NY, NX) = (1, 1) without "
                             f"zero_padding, not ({ny}, {nx})")
        self._set("row_class", rc)
        self._set("col_class", cc)
        self._check_thresholds((ny, nx))

    @property
    def out_shape(self) -> tuple[int, ...]:
        h, w, _ = self.in_shape
        k, s, p = self.kernel, self.stride, self.padding
        return ((h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1, self.rows)

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
        k = _int(w, "kernel", self.kernel, 1)
        self._set("kernel", k)
        self._set("stride", _int(w, "stride", self.stride, 1))
        h, wd, c = self.in_shape
        if k > h or k > wd:
            raise ValueError(f"{w}: kernel {k} is larger than its input {h}x{wd}")
        self._set("and_mask", _bits(w, "and_mask", self.and_mask, (c,)))

    @property
    def out_shape(self) -> tuple[int, ...]:
        h, w, c = self.in_shape
        k, s = self.kernel, self.stride
        return ((h - k) // s + 1, (w - k) // s + 1, c)


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
    source: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._common()
        self._set("in_shape", _shape(self.where, "in_shape", self.in_shape, (1, 3)))
        self._check_matrix(self.in_features)
        self._check_thresholds((1, 1))

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
        self._set("scale", _array(self.where, "scale", self.scale, np.float64, (c,)))
        self._set("bias", _array(self.where, "bias", self.bias, np.float64, (c,)))

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.shape


@dataclass(frozen=True, eq=False)
class Sign(Node):
    """Frontend only: ``bit = x >= 0``."""

    op: ClassVar[str] = "sign"
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


NODE_TYPES: dict[str, type[Node]] = {
    cls.op: cls for cls in (InputEncoder, Conv, MaxPool, Dense, Affine, Sign)
}
HARDWARE_OPS = ("input", "conv", "maxpool", "dense")


def out_kind(node: Node, kind: str) -> str:
    """What ``node`` produces from an input of ``kind`` (binary, uint8 or real)."""
    if isinstance(node, InputEncoder):
        return node.out_kind
    if isinstance(node, _Matrix):
        return "binary" if node.thresholded else "real"
    if isinstance(node, Affine):
        return "real"
    if isinstance(node, Sign):
        return "binary"
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

    from .errors import check_json_depth

    path = Path(path)
    if path.is_dir():
        raise BnnhwError(f"IR file {path} is a folder, not a file")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BnnhwError(f"IR file {path} does not exist") from None
    except UnicodeDecodeError:
        raise BnnhwError(f"{path} is not a bnnhw IR file (it is not JSON)") from None
    except OSError as e:
        raise BnnhwError(f"IR file {path} cannot be read ({e.strerror})") from None
    check_json_depth(text, f"IR file {path}")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise BnnhwError(f"{path} is not a bnnhw IR file (it is not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BnnhwError(f"{path} is not a bnnhw IR file (no 'format': {FORMAT!r} entry)")
    if type(doc.get("version")) is not int or doc.get("version") != VERSION:
        raise BnnhwError(f"IR file {path} has version {doc.get('version')!r}; this bnnhw "
                         f"reads version {VERSION} only")
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
