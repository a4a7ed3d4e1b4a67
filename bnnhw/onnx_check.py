"""QONNX's own executor against the golden model of an imported ONNX model.

The reference is ``qonnx.core.onnx_exec.execute_onnx`` on the ONNX file itself (shapes
inferred first when the file does not state them), fed ``float32(k) / 255`` for the raw
pixels ``k`` (``bnnhw.onnx_frontend.pixel_inputs``), one image at a time (the exported
graphs have batch 1) with single-threaded onnxruntime sessions.

``check_onnx`` compares, exactly, like ``bnnhw.check`` does for a checkpoint
(docs/architecture.md, "Verification ladder", step 1):

- per unit (the smallest runs of IR nodes implementing a contiguous run of ONNX nodes),
  teacher-forced with the executor's own input tensor: binary maps bit by bit, the input
  encoder's values (bits, or the 8-bit codes of the input quantiser) value by value, and
  the classifier's integer dot products against those the executor's matrix output holds;
- per image the golden class against the executor's argmax, and the golden logits (the
  integer scores mapped back through the classifier's float map, ``Tail``) against the
  executor's outputs, every element, as float32 values: equal when the import says the
  float32 replay is exact (``Tail.exact``), reported otherwise.

A disagreeing bit is a float tie when the exact pre-activation, evaluated in float64 on
the integer dot products of the unit's frontend nodes, is within ``eps`` of zero relative
to its terms; a disagreeing class is a tie as ``bnnhw.check.class_tie`` says.
"""

from __future__ import annotations

import contextlib
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from . import golden, ir
from . import reference as ref
from .check import TIE_EPS, CheckReport, class_tie, unit_agreements, units
from .errors import BnnhwError
from .onnx_frontend import OnnxImport, pixel_inputs
from .onnx_graph import EXTRA_ADVICE

__all__ = ["Executor", "OnnxCheckReport", "check_onnx"]


def _require_qonnx() -> Any:
    try:
        import onnxruntime  # noqa: F401
        from qonnx.core import onnx_exec
    except ImportError:
        raise BnnhwError(f"running an ONNX model needs qonnx and onnxruntime; "
                         f"{EXTRA_ADVICE}") from None
    return onnx_exec


@contextlib.contextmanager
def _single_threaded(onnx_exec: Any) -> Iterator[None]:
    """qonnx builds one onnxruntime session per node and run; each would start a thread
    pool per core (slow for one-node graphs, and thread creation fails on a loaded
    machine): give them one thread."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    real = onnx_exec.rt

    def session(model: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("sess_options", opts)
        kwargs.setdefault("providers", ["CPUExecutionProvider"])
        return ort.InferenceSession(model, *args, **kwargs)

    onnx_exec.rt = types.SimpleNamespace(InferenceSession=session)
    try:
        yield
    finally:
        onnx_exec.rt = real


class Executor:
    """``execute_onnx`` on the ONNX model of ``imported``, image by image."""

    def __init__(self, imported: OnnxImport):
        self.onnx_exec = _require_qonnx()
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.transformation.infer_shapes import InferShapes

        self.imported = imported
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ModelWrapper(str(imported.path))
            if not model.check_all_tensor_shapes_specified():
                model = model.transform(InferShapes())
        self.model = model

    def run(self, pixels: Any, names: set[str], progress: bool = False
            ) -> dict[str, np.ndarray]:
        """The tensors ``names`` (and the graph output) for images ``pixels`` ``[N, C, H,
        W]`` (0..255), stacked ``[N, ...]``."""
        px = np.asarray(pixels)
        chain = self.imported.chain
        want = set(names) | {chain.output}
        got: dict[str, list[np.ndarray]] = {n: [] for n in want}
        bar = tqdm(total=len(px), unit="img", desc="execute_onnx", disable=not progress,
                   leave=False)
        with _single_threaded(self.onnx_exec), warnings.catch_warnings(), bar:
            warnings.simplefilter("ignore")
            for image in px:
                ctx = self.onnx_exec.execute_onnx(
                    self.model, {chain.input: pixel_inputs(image[None])},
                    return_full_exec_context=True)
                for n in want:
                    got[n].append(np.asarray(ctx[n]))
                bar.update(1)
        return {n: np.concatenate(v) if v else np.empty((0,)) for n, v in got.items()}

    def logits(self, pixels: Any, progress: bool = False) -> np.ndarray:
        """The executor's outputs ``[N, classes]`` (float32)."""
        out = self.run(pixels, set(), progress)[self.imported.chain.output]
        return out.reshape(len(out), -1)


@dataclass
class OnnxCheckReport(CheckReport):
    """``CheckReport`` plus the logits: ``logits_equal`` of ``logits_compared`` float32
    outputs equal the executor's; required when ``logits_exact``."""

    logits_compared: int = 0
    logits_equal: int = 0
    logits_exact: bool = True

    @property
    def ok(self) -> bool:
        logits = not self.logits_exact or self.logits_equal == self.logits_compared
        return super().ok and logits

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "ok": self.ok, "logits_compared": self.logits_compared,
                "logits_equal": self.logits_equal, "logits_exact": self.logits_exact}

    def format(self) -> str:
        lines = super().format().split("\n")[:-1]
        how = "exact float32 replay" if self.logits_exact else \
            "float32 replay, not promised exact (a rounded sum or a final BatchNorm)"
        lines.append(f"logits: {self.logits_equal}/{self.logits_compared} equal the "
                     f"executor's ({how})")
        lines.append("OK: the golden model matches QONNX's execute_onnx" if self.ok else
                     "FAIL: the golden model disagrees with QONNX's execute_onnx beyond "
                     "float ties")
        return "\n".join(lines)


# --- float64 pre-activations of the frontend nodes (tie margins) --------------------------

def _elements(x: np.ndarray, kind: str) -> np.ndarray:
    return 2 * x - 1 if kind == "binary" else x


def _dot(node: ir.Conv | ir.Dense, x: np.ndarray) -> np.ndarray:
    """Exact integer dot products of ``node`` (frontend: the true input, zero padding
    included) on IR values ``x`` ``[N, ...]``."""
    e = _elements(np.asarray(x, dtype=np.int64), node.input_kind)
    if isinstance(node, ir.Dense):
        return ref.signed_matvec(e.reshape(len(e), -1), node.weights).numpy()
    if node.input_kind == "binary":
        pad = 0 if node.zero_padding else 2 * node.pad_bit - 1
    else:
        pad = node.pad_bit
    win = ref.sliding_window(e, node.kernel, node.stride, node.padding, pad)
    return ref.signed_matvec(win, node.weights).numpy()


def _pool(node: ir.MaxPool, y: np.ndarray, mag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k, s = node.kernel, node.stride
    h, w = y.shape[1:3]
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    sign = np.where(node.and_mask.astype(bool), -1.0, 1.0)
    best = bmag = None
    for ky in range(k):
        for kx in range(k):
            tap = y[:, ky:ky + (oh - 1) * s + 1:s, kx:kx + (ow - 1) * s + 1:s] * sign
            tmag = mag[:, ky:ky + (oh - 1) * s + 1:s, kx:kx + (ow - 1) * s + 1:s]
            if best is None:
                best, bmag = tap, tmag
            else:
                take = tap > best
                best, bmag = np.where(take, tap, best), np.where(take, tmag, bmag)
    return best * sign, bmag  # type: ignore[operator]


def _pre_activation(nodes: list[ir.Node], x: np.ndarray
                    ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(y, mag)`` at the input of the last ``Sign`` of frontend ``nodes`` run in float64
    on IR values ``x``; ``(None, None)`` when there is none or a node follows it."""
    y = mag = None
    out: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
    for node in nodes:
        if isinstance(node, (ir.Conv, ir.Dense)):
            dot = _dot(node, x).astype(np.float64)
            y = node.scale * dot + node.bias
            mag = np.abs(node.scale * dot) + np.abs(node.bias)
        elif isinstance(node, ir.Affine) and y is not None:
            y, mag = node.scale * y + node.bias, np.abs(node.scale) * mag + np.abs(node.bias)
        elif isinstance(node, ir.MaxPool) and y is not None:
            y, mag = _pool(node, y, mag)
        elif isinstance(node, ir.Sign) and y is not None:
            out, y = (y, mag), None
        else:
            return None, None
    return out if y is None else (None, None)


# --- the check --------------------------------------------------------------------------------

def check_onnx(imported: OnnxImport, images: Any, eps: float = TIE_EPS,
               progress: bool = False) -> OnnxCheckReport:
    """Compare the golden model of ``imported`` with ``execute_onnx`` on ``images`` (8-bit
    pixels ``[N, C, H, W]``); module docstring."""
    graph = imported.graph
    pixels = golden.check_images(graph, images)
    pos = imported.positions
    groups = units(graph, index=lambda s: pos[s], start=0)
    ops = imported.chain.ops
    if groups[-1].last != len(ops) - 1:
        raise BnnhwError(f"the graph covers {groups[-1].last + 1} ONNX nodes of {len(ops)}")
    needed = {ops[g.first - 1].output for g in groups if g.first > 0}
    needed |= {ops[g.last].output for g in groups}
    cls_op = next(op for op in ops if op.name == imported.classifier_op)
    needed.add(cls_op.output)
    ctx = Executor(imported).run(pixels.numpy(), needed, progress)
    gold = golden.run(graph, pixels)
    stats = unit_agreements(groups)
    fe = imported.frontend_graph.nodes
    sign = np.where(imported.flipped, -1, 1)
    for g, st in zip(groups, stats):
        if g.first == 0:
            x: Any = pixels.permute(0, 2, 3, 1)
            x_ir = None
        else:
            t = ops[g.first - 1].output
            x_ir = imported.maps[t].to_ir(ctx[t])
            x = torch.from_numpy(x_ir)
        for node in g.nodes:
            x = golden.run_node(node, x)
        got = x.numpy()
        if st.kind == "scores":
            want = imported.tail.dots(ctx[cls_op.output]) * sign
        else:
            want = imported.maps[ops[g.last].output].to_ir(ctx[ops[g.last].output])
        if want.shape != got.shape:
            raise BnnhwError(f"unit {st.name}: the executor's tensor has shape "
                             f"{list(want.shape)}, the golden model's {list(got.shape)}")
        wrong = want != got
        st.compared += want.size
        st.disagreements += int(wrong.sum())
        if wrong.any() and st.kind == "bits" and x_ir is not None:
            span = range(g.first, g.last + 1)
            mine = [n for n in fe if n.source and all(pos[s] in span for s in n.source)]
            y, mag = _pre_activation(mine, x_ir)
            if y is not None and y.shape == want.shape:
                st.ties += int((wrong & (np.abs(y) <= eps * mag)).sum())
    scores = gold.scores.numpy()
    out = ctx[imported.chain.output].reshape(len(pixels), -1)
    onnx_classes = np.argmax(out, axis=1)
    gold_classes = gold.classes.numpy()
    mismatched = [int(i) for i in np.flatnonzero(gold_classes != onnx_classes)]
    ties = sum(class_tie(graph.nodes[-1], scores[i], int(gold_classes[i]),
                         int(onnx_classes[i]), eps) for i in mismatched)
    logits = imported.tail.logits(scores * sign)
    same = logits == out.astype(np.float32)
    return OnnxCheckReport(len(pixels), len(pixels) - len(mismatched), stats, eps, mismatched,
                           ties, reference="QONNX's execute_onnx",
                           logits_compared=int(same.size), logits_equal=int(same.sum()),
                           logits_exact=imported.tail.exact)
