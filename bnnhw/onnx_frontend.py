"""Frontend for QONNX graphs: a Brevitas/QONNX binary network -> the integer IR.

``import_onnx(path)`` reads the graph's data path (``bnnhw.onnx_graph``), translates it op
by op into the frontend nodes a checkpoint becomes (``bnnhw.frontend``: ``InputEncoder``,
``Conv``, ``Dense``, ``MaxPool``, ``Affine``, ``Sign``) and lowers them with the very same
passes (``bnnhw.frontend.PASSES``), so every command downstream of the IR works unchanged.

The image. The model is fed ``x = float32(k) / 255`` for the raw 8-bit pixel ``k``, the
way a trainer's ``ToTensor`` feeds it. Every elementwise op before the first quantiser
(Brevitas' ``2x - 1``) is evaluated in float32 on all 256 pixel values, exactly as the
executor computes it, and the quantiser on those values fixes the input encoder:

- ``BipolarQuant`` (or a one-threshold ``MultiThreshold``): bit ``f(k) >= 0`` must be a
  step ``k >= T`` (or ``k <= T``, which inverts the bits and negates their value): the
  ``binary`` encoding with threshold ``T``;
- ``Quant`` (at most 8 bits, one scale): codes ``q(k)`` become the values
  ``u = q - q_min`` in 0..255 of a ``uint8`` encoder with a 256-entry table (``u(k)``,
  monotone but not affine in ``k``: for Brevitas' CNV ``254`` and ``255`` share a code and
  no ``k`` gives the code 0); the value is ``scale * (u + q_min - zero_point)``.

Values. A binary tensor holds ``a * e + o`` for elements ``e = +-1`` (bit ``(e + 1) / 2``),
an 8-bit one ``a * u + o``; ``a`` and ``o`` follow the scalar ``Mul``/``Div``/``Add``/``Sub``
after a quantiser (a ``BipolarQuant`` gives ``a = scale, o = 0``, a ``MultiThreshold``
with ``out_scale``/``out_bias`` gives ``a = out_scale / 2, o = out_scale / 2 + out_bias``).
A matrix layer with bipolar weights ``alpha_r * (2w - 1)`` (one ``alpha`` per output
channel: a ``BipolarQuant`` scale, or a constant of two values per row) then computes
``alpha_r * (a * dot_r + o * sum_c (2w - 1))`` plus its bias: that is the IR node's
``scale * dot + bias``. Padding pads the value 0: the hardware pads with the element
whose value is 0 (bit 0 or 1, or the pixel ``-o / a``), or, for ``o = 0``, zero padding
with per-border thresholds. ``XnorPopcountMatMul`` takes 0/1 bits and gives
``(dot + N) / 2``.

After a matrix layer, ``BatchNormalization`` and per-channel ``Mul``/``Div``/``Add``/``Sub``
become ``Affine`` nodes, ``MaxPool`` a pool, and the quantiser (``BipolarQuant``, a 1-bit
``Quant``, a one-threshold ``MultiThreshold`` ``x >= T``) a ``Sign``. The last layer is a
``Gemm``/``MatMul``/``XnorPopcountMatMul``; what follows it to the graph output (TensorNorm's
``Sub/Div/Mul/Add``, a BatchNorm) is the classifier's float map, kept as a float32
program (``Tail``) that maps the integer scores back to the model's outputs.

Anything else is refused with one sentence naming the node, its op type and the reason
(a non-binary weight quantiser, a multi-bit activation, a residual add, a per-input-channel
scale that cannot be folded, a channels-last graph, ...).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import frontend, ir
from .errors import BnnhwError
from .onnx_graph import Chain, Op, quant_bits, quant_codes, quant_limits, read_chain

__all__ = ["OnnxImport", "Tail", "ValueMap", "import_onnx", "pixel_inputs"]

QUANT_OPS = ("BipolarQuant", "Quant", "MultiThreshold")
MATRIX_OPS = ("Conv", "Gemm", "MatMul", "XnorPopcountMatMul")
PASS_OPS = ("Identity", "Dropout")
AFFINE_OPS = ("Mul", "Div", "Add", "Sub")
KNOWN = (*QUANT_OPS, *MATRIX_OPS, *PASS_OPS, *AFFINE_OPS, "BatchNormalization", "MaxPool",
         "Reshape", "Flatten")


def pixel_inputs(pixels: Any) -> np.ndarray:
    """What the model is fed for raw 8-bit pixels ``k``: ``float32(k) / 255`` (float32)."""
    return np.asarray(pixels).astype(np.float32) / np.float32(255)


@dataclass(frozen=True)
class ValueMap:
    """What a computed tensor holds: ``kind`` ``bits`` (value ``scale * (2b - 1) +
    offset``) or ``uint8`` (value ``scale * u + offset``); ``chw`` the map's ``(C, H, W)``
    (also when flattened, ``flat``), or None for a vector."""

    kind: str
    scale: float
    offset: float
    chw: tuple[int, int, int] | None
    flat: bool

    def to_ir(self, tensor: np.ndarray) -> np.ndarray:
        """An executor's tensor ``[N, ...]`` (NCHW, or flat in CHW order) as IR values
        (int64, HWC): bits, or the 8-bit values ``u``."""
        t = np.asarray(tensor, dtype=np.float64)
        n = t.shape[0]
        if self.kind == "bits":
            e = (t - self.offset) / self.scale
            v = (e > 0).astype(np.int64)
        else:
            v = np.rint((t - self.offset) / self.scale).astype(np.int64)
        if self.chw is not None:
            v = v.reshape(n, *self.chw).transpose(0, 2, 3, 1)
        return v


@dataclass(frozen=True)
class Tail:
    """The classifier's float map: the matrix layer's float32 output ``pre_scale * dot +
    pre_bias`` (``dot`` of the weights as imported, before any row flip) and the ops after
    it to the graph output. ``exact`` says the float32 replay (``logits``) reproduces the
    executor bit for bit: the matrix output is exactly representable (power-of-two scales,
    no rounding in its sums) and every later op is an IEEE elementwise ``Mul``/``Div``/
    ``Add``/``Sub``."""

    pre_scale: np.ndarray
    pre_bias: np.ndarray
    steps: tuple[tuple[str, Any, bool], ...]
    exact: bool

    def logits(self, dots: np.ndarray) -> np.ndarray:
        """Float32 logits ``[N, classes]`` of the imported dots ``[N, classes]``."""
        d = np.asarray(dots, dtype=np.float64)
        y = (d * self.pre_scale + self.pre_bias).astype(np.float32)
        for op, c, first in self.steps:
            if op == "BatchNormalization":
                gamma, beta, mean, var, eps = c
                s = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
                y = (s * (y.astype(np.float64) - mean) + beta).astype(np.float32)
                continue
            k = np.asarray(c, dtype=np.float32)
            if op == "Mul":
                y = y * k
            elif op == "Add":
                y = y + k
            elif op == "Sub":
                y = k - y if first else y - k
            else:
                y = k / y if first else y / k
            y = np.asarray(y, dtype=np.float32).reshape(d.shape)
        return y

    def dots(self, outputs: np.ndarray) -> np.ndarray:
        """The imported dots recovered from the matrix layer's float outputs."""
        y = np.asarray(outputs, dtype=np.float64).reshape(-1, len(self.pre_scale))
        return np.rint((y - self.pre_bias) / self.pre_scale).astype(np.int64)


@dataclass(frozen=True)
class OnnxImport:
    """An imported ONNX model: the lowered ``graph``, the frontend graph it was lowered
    from, the chain, the value map of every binary or 8-bit tensor (by name), the
    classifier's matrix op and float map, and which classifier rows the lowering flipped."""

    path: Path
    chain: Chain
    graph: ir.Graph
    frontend_graph: ir.Graph
    maps: dict[str, ValueMap]
    classifier_op: str
    tail: Tail
    flipped: np.ndarray
    positions: dict[str, int] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images."""
        h, w, c = self.graph.input.shape
        return c, h, w


# --- helpers ---------------------------------------------------------------------------------

def _err(op: Op, why: str) -> BnnhwError:
    return BnnhwError(f"{op.where}: {why}")


def _scalar(op: Op, value: np.ndarray, what: str) -> float:
    """One number: ``value`` must hold one distinct, finite value."""
    v = np.asarray(value, dtype=np.float64).reshape(-1)
    if v.size == 0 or not np.all(v == v[0]):
        raise _err(op, f"its {what} varies across elements (shape {list(np.shape(value))}); "
                       f"bnnhw needs one value here")
    if not math.isfinite(v[0]):
        raise _err(op, f"its {what} is not finite")
    return float(v[0])


def _pow2(x: float) -> bool:
    return x == 0 or math.frexp(abs(x))[0] == 0.5


def _bipolar(op: Op, i: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(bits [R, ...], alpha [R])`` of bipolar weights ``w`` (rows first): every row holds
    ``+alpha_r`` and ``-alpha_r`` only (``alpha_r > 0``)."""
    w = np.asarray(w, dtype=np.float64)
    src = op.producer(i)
    if src and src[1] == "Quant":
        name = src[0]
    else:
        name = None
    if w.size == 0 or not np.all(np.isfinite(w)):
        raise _err(op, "its weights hold NaN or infinite values")
    rows = w.reshape(w.shape[0], -1)
    mag = np.abs(rows)
    alpha = mag.max(axis=1)
    if not np.all(mag == alpha[:, None]) or np.any(alpha == 0):
        if name:
            raise BnnhwError(f"node {name!r} (Quant): quantises the weights of {op.where} to "
                             f"more than two values; bnnhw takes binary (1-bit) weights only")
        levels = len(np.unique(rows[0]))
        raise _err(op, f"its weights are not binary (a row holds {levels} distinct values, or "
                       f"its +-scale varies along the input axes, which cannot be folded into "
                       f"thresholds); bnnhw takes one +-scale per output channel")
    return (w > 0).astype(np.uint8), alpha


def _per_channel(op: Op, c: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A constant broadcast against a tensor of ``shape`` (batch first) as one value per
    channel (axis 1), refusing values that vary along other axes."""
    try:
        full = np.broadcast_to(np.asarray(c, dtype=np.float64), shape)
    except ValueError:
        raise _err(op, f"its {what} of shape {list(np.shape(c))} does not broadcast to the "
                       f"tensor of shape {list(shape)}") from None
    per = full.reshape(shape[0], shape[1], -1)[0, :, 0]
    if not np.array_equal(full, np.broadcast_to(per.reshape((1, -1) + (1,) * (len(shape) - 2)),
                                                shape)):
        raise _err(op, f"its {what} varies within a channel; bnnhw folds one value per "
                       f"channel")
    if not np.all(np.isfinite(per)):
        raise _err(op, f"its {what} holds NaN or infinite values")
    return per


# --- the translation -----------------------------------------------------------------------

class _Lowering:
    """Walks the chain once, keeping what the current tensor is (module docstring)."""

    def __init__(self, chain: Chain):
        self.chain = chain
        shape = chain.input_shape
        where = f"{chain.path}: the graph input {chain.input!r}"
        if len(shape) != 4 or any(d is None for d in shape[1:]):
            raise BnnhwError(f"{where} has shape {list(shape)}; bnnhw takes images as NCHW "
                             f"[1, C, H, W]")
        if shape[0] not in (None, 1):
            raise BnnhwError(f"{where} has batch size {shape[0]}; export it with batch 1")
        self.chw: tuple[int, int, int] = tuple(int(d) for d in shape[1:])  # type: ignore
        self.flat = False
        self.state = "pixels"
        self.f = np.arange(256, dtype=np.float32) / np.float32(255)
        self.vmap = (1.0, 0.0)
        self.nodes: list[ir.Node] = []
        self.pending: list[str] = []
        self.features: int | None = None  # vector length once a dense layer ran
        self.maps: dict[str, ValueMap] = {}
        self.tail: list[tuple[str, Any, bool]] = []
        self.tail_exact = True
        self.classifier: tuple[str, np.ndarray, np.ndarray, bool] | None = None

    # -- state ------------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        """The current tensor's shape, batch first."""
        if self.features is not None:
            return (1, self.features)
        c, h, w = self.chw
        return (1, c * h * w) if self.flat else (1, c, h, w)

    @property
    def ir_shape(self) -> tuple[int, ...]:
        if self.features is not None:
            return (self.features,)
        c, h, w = self.chw
        return (h, w, c)

    def source(self, op: Op) -> tuple[str, ...]:
        out = (*self.pending, op.name)
        self.pending = []
        return out

    def record(self, op: Op) -> None:
        if self.state in ("bits", "uint8"):
            self.maps[op.output] = ValueMap(self.state, self.vmap[0], self.vmap[1],
                                            None if self.features is not None else self.chw,
                                            self.flat)

    def add(self, node: ir.Node) -> None:
        self.nodes.append(node)

    # -- ops ----------------------------------------------------------------------------------

    def run(self) -> None:
        for index, op in enumerate(self.chain.ops):
            self.index = index
            t = op.op_type
            if t not in KNOWN:
                raise _err(op, f"bnnhw does not lower this operation (it lowers "
                               f"{', '.join(sorted(set(KNOWN)))})")
            getattr(self, f"op_{t}")(op)
            self.record(op)

    def op_Identity(self, op: Op) -> None:
        self.pending.append(op.name)

    def op_Dropout(self, op: Op) -> None:
        if op.attrs.get("training_mode") or (op.optional(2) is not None and bool(op.optional(2))):
            raise _err(op, "runs in training mode")
        self.pending.append(op.name)

    def op_Reshape(self, op: Op) -> None:
        target = [int(d) for d in op.const(1, "target shape").reshape(-1)]
        cur = self.shape
        if not op.attrs.get("allowzero", 0):
            target = [cur[i] if d == 0 and i < len(cur) else d for i, d in enumerate(target)]
        total = int(np.prod(cur))
        if target.count(-1) == 1:
            rest = int(np.prod([d for d in target if d != -1]))
            target = [total // rest if d == -1 else d for d in target]
        self._reshape(op, tuple(target))

    def op_Flatten(self, op: Op) -> None:
        axis = int(op.attrs.get("axis", 1))
        cur = self.shape
        if axis % len(cur) != 1:
            raise _err(op, f"flattens from axis {axis}; bnnhw flattens after the batch axis "
                           f"only (axis 1)")
        self._reshape(op, (1, int(np.prod(cur[1:]))))

    def _reshape(self, op: Op, target: tuple[int, ...]) -> None:
        cur = self.shape
        if target == cur:
            self.pending.append(op.name)
            return
        if len(target) == 2 and target[0] == 1 and target[1] == int(np.prod(cur)):
            if self.features is None:
                self.flat = True
            self.pending.append(op.name)
            return
        raise _err(op, f"reshapes {list(cur)} to {list(target)}; bnnhw takes a flatten to "
                       f"[1, features] only")

    def _const_operand(self, op: Op) -> tuple[np.ndarray, bool]:
        """The constant operand of a binary elementwise op and whether it comes first."""
        other = 1 - op.data_index
        if op.data_index not in (0, 1) or len(op.inputs) != 2:
            raise _err(op, "must take one computed tensor and one constant")
        return op.const(other, "operand"), other == 0

    def _elementwise(self, op: Op) -> None:
        c, first = self._const_operand(op)
        t = op.op_type
        if self.state == "pixels":
            flat = np.asarray(c).reshape(-1)
            if flat.size == 0 or np.any(flat != flat[0]):
                raise _err(op, "applies a per-channel or per-pixel map to the input; bnnhw's "
                               "input encoder takes one map for every pixel")
            k = flat[:1].astype(np.float32).reshape(())
            f = self.f
            f = {"Mul": lambda: f * k, "Add": lambda: f + k,
                 "Sub": lambda: k - f if first else f - k,
                 "Div": lambda: k / f if first else f / k}[t]()
            self.f = np.asarray(f, dtype=np.float32)
            self.pending.append(op.name)
            return
        if self.state in ("bits", "uint8"):
            v = _scalar(op, c, "constant")
            a, o = self.vmap
            if t == "Mul":
                a, o = a * v, o * v
            elif t == "Add":
                o = o + v
            elif t == "Sub":
                a, o = (-a, v - o) if first else (a, o - v)
            elif first:
                raise _err(op, "divides a constant by a binary activation, which is not "
                               "affine")
            elif v == 0:
                raise _err(op, "divides by zero")
            else:
                a, o = a / v, o / v
            if a == 0:
                raise _err(op, "scales an activation by zero")
            self.vmap = (a, o)
            self.pending.append(op.name)
            return
        per = _per_channel(op, c, self.shape, "constant")
        n = len(per)
        if t == "Mul":
            scale, bias = per, np.zeros(n)
        elif t == "Add":
            scale, bias = np.ones(n), per
        elif t == "Sub":
            scale, bias = (-np.ones(n), per) if first else (np.ones(n), -per)
        else:
            if first:
                raise _err(op, "divides a constant by a computed tensor, which is not affine")
            if np.any(per == 0):
                raise _err(op, "divides by zero")
            scale, bias = 1.0 / per, np.zeros(n)
        self.add(ir.Affine(f"affine{self.index}", self.ir_shape, scale, bias, self.source(op)))
        self.tail.append((t, np.asarray(c, dtype=np.float32), first))

    op_Mul = op_Add = op_Sub = op_Div = _elementwise

    def op_BatchNormalization(self, op: Op) -> None:
        if self.state != "real":
            raise _err(op, "normalises the input or a binary activation; bnnhw folds a "
                           "BatchNorm into the layer before it, which must be a conv, "
                           "Gemm or MatMul")
        if op.attrs.get("training_mode", 0):
            raise _err(op, "runs in training mode")
        if op.data_index != 0:
            raise _err(op, "its input must be the computed tensor")
        n = self.shape[1]
        gamma, beta, mean, var = (np.asarray(op.const(i, what), dtype=np.float64).reshape(-1)
                                  for i, what in ((1, "scale"), (2, "bias"), (3, "mean"),
                                                  (4, "variance")))
        if any(a.shape != (n,) for a in (gamma, beta, mean, var)):
            raise _err(op, f"normalises {gamma.size} channels but its input has {n}")
        eps = float(op.attrs.get("epsilon", 1e-5))
        if not all(np.all(np.isfinite(a)) for a in (gamma, beta, mean, var)):
            raise _err(op, "its parameters hold NaN or infinite values")
        if not math.isfinite(eps) or np.any(var + eps <= 0):
            raise _err(op, "its variance + epsilon is not positive")
        s = gamma / np.sqrt(var + eps)
        self.add(ir.Affine(f"bn{self.index}", self.ir_shape, s, beta - s * mean,
                           self.source(op)))
        raw = tuple(np.asarray(op.const(i, "parameter"), dtype=np.float32).reshape(-1)
                    for i in (1, 2, 3, 4))
        self.tail.append(("BatchNormalization", (*raw, eps), False))
        self.tail_exact = False

    def op_MaxPool(self, op: Op) -> None:
        if self.flat or self.features is not None:
            raise _err(op, "pools a flat vector")
        if self.state in ("pixels", "uint8"):
            raise _err(op, "pools the input pixels; bnnhw pools binary maps and conv outputs")
        a = op.attrs
        k = a.get("kernel_shape", [])
        s = a.get("strides", [1] * len(k))
        if len(k) != 2 or k[0] != k[1] or len(s) != 2 or s[0] != s[1]:
            raise _err(op, f"has kernel {k} and strides {s}; bnnhw pools square windows "
                           f"with equal strides")
        if any(a.get("pads", [0])) or a.get("ceil_mode", 0) or \
                any(d != 1 for d in a.get("dilations", [1, 1])) or \
                a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise _err(op, "pads, dilates or uses ceil_mode; bnnhw takes plain max-pooling")
        c, h, w = self.chw
        kk, ss = int(k[0]), int(s[0])
        if kk > h or kk > w:
            raise _err(op, f"its {kk}x{kk} window is larger than its {h}x{w} input")
        mask = np.zeros(c, np.uint8)
        if self.state == "bits" and self.vmap[0] < 0:
            mask[:] = 1  # the values fall as the bits rise: max of values is AND of bits
        self.add(ir.MaxPool(f"pool{self.index}", self.ir_shape, kk, ss, mask,
                            self.source(op)))
        self.chw = (c, (h - kk) // ss + 1, (w - kk) // ss + 1)

    # -- quantisers -----------------------------------------------------------------------------

    def _encoder(self, op: Op, bits: np.ndarray | None, table: np.ndarray | None,
                 vmap: tuple[float, float]) -> None:
        c, h, w = self.chw
        src = self.source(op)
        if bits is not None:
            ks = np.arange(256)
            on = np.flatnonzero(bits)
            rising = on.size == 0 or np.array_equal(bits, (ks >= on[0]).astype(bits.dtype))
            off = np.flatnonzero(1 - bits)
            falling = off.size == 0 or np.array_equal(1 - bits, (ks >= off[0]).astype(
                bits.dtype))
            if rising and on.size:
                threshold = int(on[0])
            elif falling and off.size:
                threshold, vmap = int(off[0]), (-vmap[0], vmap[1])
            else:
                raise _err(op, "binarises the input in a way that is not one pixel "
                               "threshold (its bit is not monotone in the pixel value)")
            node = ir.InputEncoder("input", (h, w, c), "binary", threshold, source=src)
            self.state = "bits"
        else:
            identity = table is not None and np.array_equal(table, np.arange(256))
            node = ir.InputEncoder("input", (h, w, c), "uint8", source=src,
                                   table=None if identity else table)
            self.state = "uint8"
        self.add(node)
        self.vmap = vmap

    def op_BipolarQuant(self, op: Op) -> None:
        if op.data_index != 0:
            raise _err(op, "its first input must be the computed tensor")
        s = self._activation_scale(op, op.const(1, "scale"))
        if s <= 0:
            raise _err(op, f"has scale {s}; bnnhw takes a positive activation scale")
        self._sign(op, None, (s, 0.0))

    def _activation_scale(self, op: Op, scale: np.ndarray) -> float:
        v = np.asarray(scale, dtype=np.float64).reshape(-1)
        if v.size > 1 and np.any(v != v[0]) and self.state == "real":
            raise _err(op, f"has a per-channel scale (shape {list(np.shape(scale))}), which "
                           f"cannot be folded: it varies along the next layer's reduction "
                           f"axis")
        return _scalar(op, scale, "scale")

    def _sign(self, op: Op, threshold: np.ndarray | None, vmap: tuple[float, float]) -> None:
        """``bit = x >= threshold`` (0 if None) with value map ``vmap`` after it."""
        if self.state == "pixels":
            t = 0.0 if threshold is None else _scalar(op, threshold, "threshold")
            bits = (self.f >= np.float32(t)).astype(np.uint8)
            self._encoder(op, bits, None, vmap)
            return
        if self.state != "real":
            raise _err(op, "quantises a tensor that is already binary or 8-bit")
        if threshold is not None:
            per = _per_channel(op, np.asarray(threshold, dtype=np.float64).reshape(1, -1)
                               if np.size(threshold) > 1 else threshold, self.shape[:2],
                               "thresholds")
            self.add(ir.Affine(f"mt{self.index}", self.ir_shape, np.ones(len(per)), -per,
                               (op.name,)))
        self.add(ir.Sign(f"sign{self.index}", self.ir_shape, self.source(op)))
        self.state, self.vmap = "bits", vmap
        self.tail, self.tail_exact = [], True

    def op_Quant(self, op: Op) -> None:
        if op.data_index != 0:
            raise _err(op, "its first input must be the computed tensor")
        bits = quant_bits(op.where, op.const(3, "bit width"))
        signed = bool(op.attrs.get("signed", 1))
        narrow = bool(op.attrs.get("narrow", 1))
        mode = str(op.attrs.get("rounding_mode", "ROUND"))
        scale = op.const(1, "scale")
        zp = op.const(2, "zero point")
        s = self._activation_scale(op, scale)
        z = _scalar(op, zp, "zero point")
        if s <= 0:
            raise _err(op, f"has scale {s}; bnnhw takes a positive quantiser scale")
        if bits == 1 and signed:
            if z != 0:
                raise _err(op, f"is a 1-bit quantiser with zero point {z}; bnnhw takes zero "
                               f"point 0")
            self._sign(op, None, (s, 0.0))
            return
        if self.state != "pixels":
            raise _err(op, f"is a {bits}-bit activation quantiser; bnnhw's layers take binary "
                           f"activations (only the input may be 8-bit)")
        if bits > 8:
            raise _err(op, f"quantises the input to {bits} bits; the hardware takes at most "
                           f"8-bit inputs")
        if z != round(z):
            raise _err(op, f"has a fractional zero point {z}")
        lo, _ = quant_limits(signed, narrow, bits)
        try:
            codes = quant_codes(self.f, np.asarray(scale, np.float32).reshape(()),
                                np.asarray(zp, np.float32).reshape(()), bits, signed, narrow,
                                mode)
        except ValueError as e:
            raise _err(op, str(e)) from None
        table = (codes.astype(np.int64) - lo).astype(np.int64)
        # the value (u + lo - z) * s, as Quant computes (q - z) * s
        self._encoder(op, None, table, (s, (lo - z) * s))

    def op_MultiThreshold(self, op: Op) -> None:
        if op.data_index != 0:
            raise _err(op, "its first input must be the computed tensor")
        t = np.asarray(op.const(1, "thresholds"), dtype=np.float64)
        if t.ndim != 2 or t.shape[1] != 1:
            steps = t.shape[1] if t.ndim == 2 else "?"
            raise _err(op, f"has {steps} thresholds per channel (a multi-bit activation); "
                           f"bnnhw's activations are binary (one threshold)")
        layout = str(op.attrs.get("data_layout", "") or "")
        if layout and layout not in ("NCHW", "NC"):
            raise _err(op, f"works on the {layout} layout; bnnhw lowers NCHW graphs")
        out_scale = float(op.attrs.get("out_scale", 1.0))
        out_bias = float(op.attrs.get("out_bias", 0.0))
        if not out_scale > 0:
            raise _err(op, f"has out_scale {out_scale}; bnnhw takes a positive one")
        self._sign(op, t[:, 0], (out_scale / 2, out_scale / 2 + out_bias))

    # -- matrix layers ----------------------------------------------------------------------

    def _input_terms(self, op: Op) -> tuple[str, float, float]:
        if self.state not in ("bits", "uint8"):
            what = "the unquantised input" if self.state == "pixels" else \
                "a real-valued tensor (the layer before it has no binary activation)"
            raise _err(op, f"takes {what}; bnnhw's layers take binary activations or the "
                           f"quantised input")
        return ("binary" if self.state == "bits" else "uint8"), self.vmap[0], self.vmap[1]

    def _matrix(self, op: Op, node: ir.Conv | ir.Dense, alpha: np.ndarray,
                bias: np.ndarray, a: float, o: float, exact: bool) -> None:
        """Add ``node`` with ``scale = alpha * a`` and ``bias = alpha * o * rowsum + bias``
        (module docstring); ``exact``: the executor's sum cannot round because of the bias."""
        rowsum = (2 * node.weights.astype(np.int64) - 1).sum(axis=1)
        scale = alpha * a
        offset = alpha * o
        self.add(node.replace(scale=scale, bias=offset * rowsum + bias))
        self.state = "real"
        # the float sum is exact when every term is a multiple of the smallest power of
        # two among the scales and the largest partial sum stays within float32's mantissa
        terms = [float(x) for x in (*scale, *offset) if x]
        unit = min((abs(x) for x in terms), default=1.0)
        big = float(np.max(np.abs(scale))) * node.cols * (
            ir.PIXEL_MAX if node.input_kind == "uint8" else 1) + \
            float(np.max(np.abs(offset))) * node.cols
        exact = exact and all(_pow2(x) for x in terms) and big / unit < 2 ** 24
        self.tail, self.tail_exact = [], exact
        self.classifier = (op.name, scale, offset * rowsum + bias, exact)

    def op_Conv(self, op: Op) -> None:
        kind, a, o = self._input_terms(op)
        if self.flat or self.features is not None:
            raise _err(op, "convolves a flat vector")
        if op.data_index != 0:
            raise _err(op, "its first input must be the computed tensor")
        at = op.attrs
        w = op.const(1, "weights")
        if w.ndim != 4 or w.shape[2] != w.shape[3]:
            raise _err(op, f"has weights of shape {list(w.shape)}; bnnhw takes square 2-D "
                           f"kernels")
        k = int(w.shape[2])
        c, h, wd = self.chw
        strides = at.get("strides", [1, 1])
        pads = at.get("pads", [0, 0, 0, 0])
        if at.get("group", 1) != 1 or any(d != 1 for d in at.get("dilations", [1, 1])):
            raise _err(op, "is grouped or dilated; bnnhw takes plain convolutions")
        if at.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise _err(op, f"uses auto_pad {at.get('auto_pad')}; give explicit pads")
        if len(strides) != 2 or strides[0] != strides[1]:
            raise _err(op, f"has strides {strides}; bnnhw takes equal strides")
        if len(set(pads)) > 1:
            raise _err(op, f"has pads {pads}; bnnhw takes the same padding on every side")
        if w.shape[1] != c:
            raise _err(op, f"expects {w.shape[1]} input channels but its input has {c}")
        p, s = int(pads[0]), int(strides[0])
        bits, alpha = _bipolar(op, 1, w)
        weights = bits.transpose(0, 2, 3, 1).reshape(bits.shape[0], -1)  # (ky, kx, c)
        r = weights.shape[0]
        b = op.optional(2)
        bias = np.zeros(r) if b is None else _per_channel(op, np.asarray(b).reshape(1, -1),
                                                          (1, r), "bias")
        pad_bit, zero = 0, False
        if p:
            pad_bit, zero = self._pad(op, kind, a, o)
        try:
            node = ir.Conv(f"conv{self.index}", (h, wd, c), k, weights, np.ones(r),
                           np.zeros(r), stride=s, padding=p, pad_bit=pad_bit,
                           zero_padding=zero, input_kind=kind, source=self.source(op))
        except ValueError as e:
            raise _err(op, str(e)) from None
        self._matrix(op, node, alpha, bias, a, o, False)
        self.chw = node.out_shape[2], node.out_shape[0], node.out_shape[1]

    def _pad(self, op: Op, kind: str, a: float, o: float) -> tuple[int, bool]:
        """The hardware pad element whose value is 0, and whether it is zero padding."""
        if kind == "binary":
            if o == 0:
                return 0, True
            for bit in (0, 1):
                if a * (2 * bit - 1) + o == 0:
                    return bit, False
            raise _err(op, f"pads a binary map whose values are {o - a:g} and {o + a:g} with "
                           f"0, which the hardware cannot express")
        u = -o / a
        if u != round(u) or not 0 <= u <= ir.PIXEL_MAX:
            raise _err(op, f"pads the 8-bit input with 0, which is no input code ({u:g})")
        return round(u), False

    def _dense(self, op: Op, w_rows: np.ndarray, bias: np.ndarray | None,
               exact: bool) -> None:
        kind, a, o = self._input_terms(op)
        if not self.flat and self.features is None:
            raise _err(op, f"takes a {self.chw[0]}x{self.chw[1]}x{self.chw[2]} map; it "
                           f"needs a Flatten or Reshape to [1, features] before it")
        if w_rows.ndim != 2 or w_rows.shape[1] != self.shape[1]:
            raise _err(op, f"has weights for {w_rows.shape[-1] if w_rows.ndim else '?'} "
                           f"inputs but its input has {self.shape[1]}")
        bits, alpha = _bipolar(op, 1, w_rows)
        if self.features is None:
            c, h, w = self.chw
            bits = frontend.chw_columns_to_hwc(bits, (h, w, c))
        r = bits.shape[0]
        node = ir.Dense(f"dense{self.index}", self.ir_shape, bits, np.ones(r), np.zeros(r),
                        input_kind=kind, source=self.source(op))
        self._matrix(op, node, alpha, np.zeros(r) if bias is None else bias, a, o, exact)
        self.features, self.flat = r, False

    def op_Gemm(self, op: Op) -> None:
        at = op.attrs
        if op.data_index != 0 or at.get("transA", 0):
            raise _err(op, "must take the computed tensor as its first, untransposed input")
        w = np.asarray(op.const(1, "weights"), dtype=np.float64)
        w = w if at.get("transB", 0) else w.T
        gain, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
        if gain == 0:
            raise _err(op, "has alpha 0")
        c = op.optional(2)
        bias = None
        if c is not None and beta != 0:
            bias = _per_channel(op, np.asarray(c, dtype=np.float64) * beta, (1, w.shape[0]),
                                "bias")
        self._dense(op, w * gain, bias, gain == 1.0 and bias is None)

    def op_MatMul(self, op: Op) -> None:
        if op.data_index != 0:
            raise _err(op, "must take the computed tensor as its first input")
        w = np.asarray(op.const(1, "weights"), dtype=np.float64)
        if w.ndim != 2:
            raise _err(op, f"has weights of shape {list(w.shape)}; bnnhw takes a matrix")
        self._dense(op, w.T, None, True)

    def op_XnorPopcountMatMul(self, op: Op) -> None:
        if op.data_index != 0:
            raise _err(op, "must take the computed tensor as its first input")
        if self.state != "bits" or self.vmap != (0.5, 0.5):
            raise _err(op, "takes 0/1 bits; its input is not a 0/1 binary activation")
        w = np.asarray(op.const(1, "weights"), dtype=np.float64)
        if w.ndim != 2 or not np.all((w == 0) | (w == 1)):
            raise _err(op, "its weights must be a matrix of 0/1 bits")
        # popcount(xnor) = (dot + N) / 2, the 0/1 bits of both operands read as -1/+1;
        # computed exactly in float32 by the executor
        n = w.shape[0]
        self.vmap = (1.0, 0.0)
        self._dense(op, 0.5 * (2 * w.T - 1), np.full(w.shape[1], n / 2), True)

    # -- the end --------------------------------------------------------------------------------

    def finish(self) -> tuple[ir.Graph, Tail, str]:
        path = self.chain.path
        last = self.nodes[-1] if self.nodes else None
        dense = [n for n in self.nodes if isinstance(n, (ir.Conv, ir.Dense))]
        if not dense:
            raise BnnhwError(f"{path}: the graph has no Conv, Gemm or MatMul layer")
        if self.state != "real" or self.classifier is None:
            src = last.source[-1] if last is not None and last.source else "?"
            raise BnnhwError(f"{path}: node {src!r} quantises the network's output; the graph "
                             f"must end with a Gemm or MatMul whose scores are the outputs")
        if not isinstance(dense[-1], ir.Dense):
            raise BnnhwError(f"{path}: the last layer {dense[-1].source[-1]!r} is a Conv; the "
                             f"graph must end with a fully connected classifier (Gemm or "
                             f"MatMul)")
        if self.pending:
            node = self.nodes[-1]
            self.nodes[-1] = node.replace(source=(*node.source, *self.pending))
        op_name, scale, bias, _ = self.classifier
        tail = Tail(np.asarray(scale, np.float64), np.asarray(bias, np.float64),
                    tuple(self.tail), self.tail_exact)
        try:
            graph = ir.Graph(tuple(self.nodes), {})
        except ValueError as e:
            raise BnnhwError(f"{path}: {e}") from None
        return graph, tail, op_name


def import_onnx(path: str | os.PathLike[str]) -> OnnxImport:
    """Read and lower the QONNX graph at ``path`` (module docstring); ``BnnhwError`` names
    the node that cannot be lowered and why."""
    chain = read_chain(path)
    low = _Lowering(chain)
    try:
        low.run()
    except BnnhwError as e:
        text = str(e)
        raise BnnhwError(text if text.startswith(str(chain.path)) else
                         f"{chain.path}: {text}") from None
    fe, tail, op_name = low.finish()
    try:
        graph = frontend.lower(fe)
    except BnnhwError as e:
        raise BnnhwError(f"{chain.path}: {e}") from None
    graph = ir.Graph(graph.nodes, {"onnx": str(chain.path)})
    fe_last, last = fe.nodes, graph.nodes[-1]
    fe_dense = [n for n in fe_last if isinstance(n, ir.Dense)][-1]
    flipped = np.array([not np.array_equal(a, b) for a, b in
                        zip(fe_dense.weights, last.weights)], dtype=bool)
    positions = {op.name: i for i, op in enumerate(chain.ops)}
    return OnnxImport(chain.path, chain, graph, fe, low.maps, op_name, tail, flipped,
                      positions)
