"""An ONNX file as the chain of operations ``bnnhw.onnx_frontend`` lowers.

``read_chain(path)`` loads a model with the ``onnx`` package (the ``onnx`` extra:
``pip install 'bnnhw[onnx]'``), evaluates every constant and walks the data path from the
graph's one image input to its one output:

- constants are the initializers, ``Constant`` nodes and every node whose inputs are all
  constants (a weight's ``BipolarQuant`` or ``Quant``, TorchScript's ``Transpose`` of a
  weight, the ``Pow`` of TensorNorm's variance, shape arithmetic), evaluated with numpy in
  the inputs' own precision, as QONNX's executor does; a tensor is looked up by name, so
  one initializer may feed many nodes (the default exporter shares one ``1.0`` among them);
- the data path must be a chain: every node on it takes exactly one computed tensor and
  its output feeds exactly one node (a ``Shape`` of a tensor whose shape the graph states
  is a constant). A node that joins two computed tensors (a residual ``Add``, a
  ``Concat``) or a tensor feeding two nodes is refused, naming the node.

Errors are ``BnnhwError`` sentences naming the file and the node (``node 'X' (Op)``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BnnhwError

__all__ = ["Chain", "Op", "binary_quant", "int_quant", "read_chain", "require_onnx"]

EXTRA_ADVICE = "install the onnx extra: pip install 'bnnhw[onnx]'"


def require_onnx() -> Any:
    """The ``onnx`` module, or a ``BnnhwError`` saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise BnnhwError(f"reading an ONNX model needs the onnx package; "
                         f"{EXTRA_ADVICE}") from None
    return onnx


# --- QONNX's quantisers, exactly as qonnx.custom_op.general executes them ------------------

def binary_quant(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``BipolarQuant``: ``+scale`` where ``x >= 0``, else ``-scale``."""
    ones = np.ones(x.shape, dtype=x.dtype)
    return np.where(x >= 0.0, ones, -ones) * scale


def quant_limits(signed: bool, narrow: bool, bits: int) -> tuple[int, int]:
    """Smallest and largest integer code of a ``Quant`` (qonnx's ``min_int``/``max_int``)."""
    if signed:
        return -(1 << (bits - 1)) + int(narrow), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1 - int(narrow)


def _rounding(mode: str) -> Callable[[np.ndarray], np.ndarray]:
    mode = mode.upper()
    table: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "ROUND": np.round, "HALF_EVEN": np.round, "CEIL": np.ceil, "FLOOR": np.floor,
        "UP": lambda v: np.sign(v) * np.ceil(np.abs(v)), "DOWN": np.fix,
        "HALF_UP": lambda v: np.sign(v) * np.floor(np.abs(v) + 0.5),
        "HALF_DOWN": lambda v: np.sign(v) * np.ceil(np.abs(v) - 0.5)}
    if mode not in table:
        raise ValueError(f"rounding_mode {mode!r} is not one of {', '.join(table)}")
    return table[mode]


def quant_codes(x: np.ndarray, scale: np.ndarray, zeropt: np.ndarray, bits: int,
                signed: bool, narrow: bool, mode: str) -> np.ndarray:
    """The integer codes of a ``Quant`` (before ``(q - zeropt) * scale``), as floats of
    ``x``'s type; 1-bit signed codes are +-1 (``x / scale + zeropt >= 0``)."""
    y = x / scale
    y = y + zeropt
    if bits == 1 and signed:
        ones = np.ones(y.shape, dtype=y.dtype)
        return np.where(y >= 0.0, ones, -ones)
    lo, hi = quant_limits(signed, narrow, bits)
    y = np.where(y > hi, np.asarray(hi).astype(y.dtype), y)
    y = np.where(y < lo, np.asarray(lo).astype(y.dtype), y)
    return _rounding(mode)(y)


def int_quant(x: np.ndarray, scale: np.ndarray, zeropt: np.ndarray, bits: int,
              signed: bool, narrow: bool, mode: str) -> np.ndarray:
    """``Quant``: ``(q - zeropt) * scale`` of the codes ``quant_codes``."""
    out = (quant_codes(x, scale, zeropt, bits, signed, narrow, mode) - zeropt) * scale
    return np.asarray(out, dtype=np.float32)


def quant_bits(where: str, value: np.ndarray) -> int:
    """A ``Quant``'s bit width input as an integer (one value, integral, 1..32)."""
    v = np.asarray(value).reshape(-1)
    if v.size != 1 or not np.isfinite(v[0]) or v[0] != int(v[0]) or not 1 <= v[0] <= 32:
        raise BnnhwError(f"{where}: its bit width must be one integer in 1..32, not "
                         f"{v.tolist()}")
    return int(v[0])


# --- the chain ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Op:
    """One node on the data path: its constant inputs (``None`` at the data input and for
    absent optional inputs), attributes, data input and output tensor names, and for each
    constant input the node that computed it (``(name, op_type)``, or None)."""

    name: str
    op_type: str
    domain: str
    inputs: tuple[np.ndarray | None, ...]
    data_index: int
    attrs: dict[str, Any]
    input: str
    output: str
    producers: tuple[tuple[str, str] | None, ...] = ()

    @property
    def where(self) -> str:
        return f"node {self.name!r} ({self.op_type})"

    def const(self, i: int, what: str) -> np.ndarray:
        """Constant input ``i`` (``what`` names it in the error when it is missing)."""
        if i >= len(self.inputs) or i == self.data_index or self.inputs[i] is None:
            raise BnnhwError(f"{self.where}: its {what} must be a constant")
        return self.inputs[i]  # type: ignore[return-value]

    def optional(self, i: int) -> np.ndarray | None:
        return None if i >= len(self.inputs) or i == self.data_index else self.inputs[i]

    def producer(self, i: int) -> tuple[str, str] | None:
        return self.producers[i] if i < len(self.producers) else None


@dataclass(frozen=True)
class Chain:
    """The data path of an ONNX graph: its input tensor (``input_shape`` with the batch
    dimension first), the ops in order, the output tensor."""

    path: Path
    input: str
    input_shape: tuple[int | None, ...]
    ops: tuple[Op, ...]
    output: str
    opsets: dict[str, int] = field(default_factory=dict)


def _attrs(onnx: Any, node: Any) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, list):
            v = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v]
        out[a.name] = v
    return out


def _constant_node(onnx: Any, node: Any, attrs: dict[str, Any]) -> np.ndarray:
    from onnx import numpy_helper

    if "value" in attrs:
        return numpy_helper.to_array(attrs["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    raise ValueError("it holds no tensor, float or integer value")


def _reshape(x: np.ndarray, shape: np.ndarray, allowzero: int) -> np.ndarray:
    dims = [int(d) for d in np.asarray(shape).reshape(-1)]
    if not allowzero:
        dims = [x.shape[i] if d == 0 and i < x.ndim else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _axes(attrs: dict[str, Any], inputs: list[Any], ndim: int) -> list[int] | None:
    axes = attrs.get("axes")
    if axes is None and len(inputs) > 1 and inputs[1] is not None:
        axes = np.asarray(inputs[1]).reshape(-1).tolist()
    return None if axes is None else [int(a) % ndim for a in axes]


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(np.result_type(a, b), np.integer):
        return np.trunc(np.true_divide(a, b)).astype(np.result_type(a, b))
    return a / b


def _fold(onnx: Any, op: str, inputs: list[Any], attrs: dict[str, Any]) -> np.ndarray:
    """The value of a node whose inputs are all constant (ValueError if bnnhw cannot)."""
    x = inputs[0] if inputs else None
    if op == "Identity":
        return x
    if op == "Transpose":
        return np.transpose(x, attrs.get("perm"))
    if op == "Reshape":
        return _reshape(x, inputs[1], attrs.get("allowzero", 0))
    if op == "Flatten":
        axis = attrs.get("axis", 1) % max(x.ndim, 1)
        return x.reshape(int(np.prod(x.shape[:axis])), -1)
    if op == "Squeeze":
        axes = _axes(attrs, inputs, x.ndim)
        return np.squeeze(x, axis=None if axes is None else tuple(axes))
    if op == "Unsqueeze":
        axes = _axes(attrs, inputs, x.ndim + len(np.asarray(
            attrs.get("axes", inputs[1] if len(inputs) > 1 else [])).reshape(-1)))
        for a in sorted(axes or []):
            x = np.expand_dims(x, a)
        return x
    if op == "Concat":
        return np.concatenate(inputs, axis=attrs.get("axis", 0))
    if op == "Gather":
        return np.take(x, np.asarray(inputs[1]).astype(np.int64), axis=attrs.get("axis", 0))
    if op == "Cast":
        return x.astype(onnx.helper.tensor_dtype_to_np_dtype(attrs["to"]))
    if op == "Shape":
        return np.asarray(x.shape, dtype=np.int64)
    if op in ("Mul", "Add", "Sub", "Div", "Pow"):
        fn = {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract, "Div": _divide,
              "Pow": np.power}[op]
        return np.asarray(fn(inputs[0], inputs[1]))
    if op == "Sqrt":
        return np.sqrt(x)
    if op == "Neg":
        return -x
    if op == "Reciprocal":
        return np.asarray(1, dtype=x.dtype) / x
    if op == "ConstantOfShape":
        value = attrs.get("value")
        fill = onnx.numpy_helper.to_array(value) if value is not None else np.zeros(
            1, np.float32)
        return np.full(np.asarray(x).astype(np.int64), fill.reshape(-1)[0], dtype=fill.dtype)
    if op == "BipolarQuant":
        return binary_quant(x, inputs[1])
    if op == "Quant":
        bits = quant_bits("it", inputs[3])
        return int_quant(x, inputs[1], inputs[2], bits, bool(attrs.get("signed", 1)),
                         bool(attrs.get("narrow", 1)), attrs.get("rounding_mode", "ROUND"))
    raise ValueError("bnnhw does not evaluate this operation on constants")


_PASSING = ("Identity", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast")


def _load(path: Path) -> Any:
    onnx = require_onnx()
    from google.protobuf.message import DecodeError

    if not path.exists():
        raise BnnhwError(f"ONNX model {path} does not exist")
    if not path.is_file():
        raise BnnhwError(f"ONNX model {path} is not a file")
    try:
        return onnx.load(str(path))
    except (DecodeError, ValueError, OSError, RuntimeError) as e:
        why = getattr(e, "strerror", None) or str(e).split("\n")[0] or type(e).__name__
        raise BnnhwError(f"{path} is not a readable ONNX model ({why})") from None


def _dims(value_info: Any) -> tuple[int | None, ...] | None:
    t = value_info.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None
                 for d in t.tensor_type.shape.dim)


def read_chain(path: str | os.PathLike[str]) -> Chain:
    """The data path of the ONNX model at ``path`` (module docstring)."""
    onnx = require_onnx()
    from onnx import numpy_helper

    path = Path(path)
    model = _load(path)
    graph = model.graph
    consts: dict[str, np.ndarray] = {}
    made_by: dict[str, tuple[str, str]] = {}
    for init in graph.initializer:
        try:
            consts[init.name] = numpy_helper.to_array(init, base_dir=str(path.parent))
        except (ValueError, TypeError, OSError) as e:  # a missing or malformed data file
            raise BnnhwError(f"{path}: initializer {init.name!r} cannot be read "
                             f"({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                             ) from None
    shapes = {vi.name: _dims(vi) for vi in [*graph.input, *graph.value_info, *graph.output]}
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs) or "none"
        raise BnnhwError(f"{path}: the graph must have one image input, not {len(inputs)} "
                         f"({names})")
    if len(graph.output) != 1:
        raise BnnhwError(f"{path}: the graph must have one output (the class scores), not "
                         f"{len(graph.output)}")
    first = inputs[0].name
    in_shape = shapes.get(first)
    if in_shape is None:
        raise BnnhwError(f"{path}: the graph input {first!r} has no stated shape")
    users: dict[str, int] = {}  # the nodes taking each tensor (a Shape reads no values)
    for node in graph.node:
        if node.op_type != "Shape":
            for i in node.input:
                users[i] = users.get(i, 0) + 1
    outputs = {o.name for o in graph.output}
    computed = {first}  # every tensor computed from the image, to name a join first
    for index, node in enumerate(graph.node):
        joined = [t for t in node.input if t in computed]
        if node.op_type != "Shape" and joined:
            if len(joined) > 1:
                name = node.name or f"{node.op_type}_{index}"
                raise BnnhwError(f"{path}: node {name!r} ({node.op_type}): combines "
                                 f"{len(joined)} computed tensors (a residual connection or a "
                                 f"concatenation); bnnhw lowers a chain of layers only")
            computed.update(t for t in node.output if t)
    data, end = {first}, first
    ops: list[Op] = []
    for index, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{index}"
        where = f"{path}: node {name!r} ({node.op_type})"
        attrs = _attrs(onnx, node)
        data_in = [i for i, t in enumerate(node.input) if t in data]
        if node.op_type == "Shape" and data_in:
            dims = shapes.get(node.input[0])
            if dims is None or None in dims:
                raise BnnhwError(f"{where}: takes the shape of a tensor whose shape the graph "
                                 f"does not state; export with a fixed input shape")
            consts[node.output[0]] = np.asarray(dims, dtype=np.int64)
            made_by[node.output[0]] = (name, node.op_type)
            continue
        if not data_in:
            try:
                if node.op_type == "Constant":
                    value = _constant_node(onnx, node, attrs)
                else:
                    missing = [t for t in node.input if t and t not in consts]
                    if missing:
                        raise ValueError(f"its input {missing[0]!r} is not in the graph")
                    value = _fold(onnx, node.op_type,
                                  [consts[t] if t else None for t in node.input], attrs)
            except BnnhwError:
                raise
            except (ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
                raise BnnhwError(f"{where}: computes a constant bnnhw cannot evaluate "
                                 f"({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                                 ) from None
            consts[node.output[0]] = np.asarray(value)
            # a quantiser stays the origin through reshapes and transposes (for messages)
            origin = made_by.get(node.input[0]) if node.input and node.op_type in _PASSING \
                else None
            made_by[node.output[0]] = origin or (name, node.op_type)
            continue
        i = data_in[0]
        tensor = node.input[i]
        if tensor != end or users.get(tensor, 0) > 1:
            raise BnnhwError(f"{where}: its input {tensor!r} also feeds another node (a branch); "
                             f"bnnhw lowers a chain of layers only")
        for extra in node.output[1:]:
            if extra and (users.get(extra) or extra in outputs):
                raise BnnhwError(f"{where}: its output {extra!r} is used; bnnhw takes the "
                                 f"first output of a node only")
        unknown = [t for j, t in enumerate(node.input) if j != i and t and t not in consts]
        if unknown:
            raise BnnhwError(f"{where}: its input {unknown[0]!r} is neither a constant nor "
                             f"computed from the image")
        values = tuple(None if j == i or not t else consts[t] for j, t in enumerate(node.input))
        producers = tuple(made_by.get(t) if j != i and t else None
                          for j, t in enumerate(node.input))
        ops.append(Op(name, node.op_type, node.domain, values, i, attrs, tensor,
                      node.output[0], producers))
        end = node.output[0]
        data.add(end)
    out = graph.output[0].name
    if end != out:
        raise BnnhwError(f"{path}: the graph output {out!r} is not the end of the chain from "
                         f"the input {first!r} (which ends at {end!r})")
    opsets = {o.domain: int(o.version) for o in model.opset_import}
    return Chain(path, first, in_shape, tuple(ops), out, opsets)
