"""The golden model: a lowered IR graph run bit-exactly on integers.

Built only from ``bnnhw.reference`` (integer torch ops after the input encoder). It is
the reference every hardware stage is compared with: per node, the values a hardware
block must stream out (HWC, bits for binary maps), and per image the classifier's signed
dot products and the class the hardware computes: the first index of the largest integer
logit ``class_scale * dot + class_offset`` (``bnnhw.ir.Dense``). The float64 logits
``scale * dot + bias`` are given too, for a host that wants them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import ir
from . import numerics as nx
from . import reference as ref
from .errors import BnnhwError

# Images per chunk are chosen so no sliding-window tensor exceeds this many elements.
_CHUNK_ELEMENTS = 1 << 23


@dataclass(frozen=True)
class GoldenResult:
    """``scores``: int64 ``[N, classes]`` dot products; ``logits``: float64 ``scale * dot +
    bias``; ``classes``: int64 ``[N]``, the integer argmax the hardware computes;
    ``activations``: per node name, its int64 output ``[N, ...]`` (HWC maps, bits for
    binary maps), or None if not requested."""

    scores: torch.Tensor
    logits: torch.Tensor
    classes: torch.Tensor
    activations: dict[str, torch.Tensor] | None = None


def run_node(node: ir.Node, x: Any, kind: str = "binary") -> torch.Tensor:
    """One lowered node on its input ``x[N, ...]`` (pixels HWC for the input node) of
    ``kind`` (a max-pool pools bits, or codes of a ``frac2`` map)."""
    if isinstance(node, ir.InputEncoder):
        return ref.encode(x, node.encoding, node.threshold, node.levels, node.table)
    if isinstance(node, ir.MaxPool):
        return ref.maxpool(x, node.kernel, node.stride, node.and_mask,
                           element_bits=nx.ELEMENT_BITS["frac2"] if kind == "frac2" else 1)
    if isinstance(node, ir.Conv):
        return _conv(node, ref.as_int64(x))
    if isinstance(node, ir.Dense):
        x = ref.as_int64(x)
        acc = accumulate(node, x.reshape(x.shape[0], -1))
        if node.thresholds is None:
            return nx.acc_to_dot(node.input_kind, node.cols, acc)
        return _threshold(node, acc)
    raise ValueError(f"{node.where} is not a hardware node; lower the graph first")


def gates(node: ir.Conv | ir.Dense, x: torch.Tensor) -> torch.Tensor:
    """The gate bits ``g[..., R]`` of a precision-gated layer on its input vectors or
    windows ``x[..., N]`` (frac2 codes): ``(pc_m >= gate) != gate_invert``."""
    pc_m = ref.popcount_matvec(x >> 1, node.weights)
    return (pc_m >= ref.as_int64(node.gate)).to(torch.int64) ^ ref.as_int64(node.gate_invert)


def accumulate(node: ir.Conv | ir.Dense, x: torch.Tensor) -> torch.Tensor:
    """The accumulator ``acc[..., R]`` of a matrix layer on its input vectors or windows
    ``x[..., N]``: a popcount (binary), a signed sum (uint8) or ``2 msb + g lsb`` (frac2,
    ``bnnhw.ir``)."""
    if node.input_kind == "uint8":
        return ref.signed_matvec(x, node.weights)
    if node.input_kind == "binary":
        return ref.popcount_matvec(x, node.weights)
    n = node.cols
    msb = 2 * ref.popcount_matvec(x >> 1, node.weights) - n
    lsb = 2 * ref.popcount_matvec(x & 1, node.weights) - n
    g = gates(node, x)
    return 2 * msb + g * lsb


def _threshold(node: ir.Conv | ir.Dense, acc: torch.Tensor, row_class: Any = None,
               col_class: Any = None) -> torch.Tensor:
    """Bits ``acc >= T`` (one threshold per channel) or frac2 codes (three: the count of
    thresholds ``acc`` reaches)."""
    t = node.thresholds
    assert t is not None
    if t.ndim == 3:
        return ref.threshold(acc, t, row_class, col_class)
    return sum(ref.threshold(acc, np.ascontiguousarray(t[..., k]), row_class, col_class)
               for k in range(t.shape[3]))


def _conv(node: ir.Conv, x: torch.Tensor) -> torch.Tensor:
    if node.thresholds is None:
        raise ValueError(f"{node.where}: the golden model runs thresholded convolutions only")
    oh, ow, _ = node.out_shape
    per_image = max(1, oh * ow * node.cols)
    step = max(1, _CHUNK_ELEMENTS // per_image)
    outs = []
    for i in range(0, x.shape[0], step):
        win = ref.sliding_window(x[i:i + step], node.kernel, node.stride, node.padding,
                                 node.pad_bit)
        outs.append(_threshold(node, accumulate(node, win), node.row_class, node.col_class))
    return torch.cat(outs) if outs else torch.empty((0, oh, ow, node.rows), dtype=torch.int64)


def check_images(graph: ir.Graph, images: Any) -> torch.Tensor:
    """``images`` as an int64 tensor ``[N, C, H, W]`` of 0..255 (BnnhwError otherwise)."""
    h, w, c = graph.input.shape
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.dim() != 4 or tuple(x.shape[1:]) != (c, h, w):
        raise BnnhwError(f"images must have shape [N, {c}, {h}, {w}] for this model, not "
                         f"{list(x.shape)}")
    if x.is_floating_point():
        if not torch.equal(x, x.round()):
            raise BnnhwError("images must hold integer pixel values 0..255")
        x = x.to(torch.int64)
    x = x.to(torch.int64)
    if x.numel() and (int(x.min()) < 0 or int(x.max()) > 255):
        raise BnnhwError(f"images must hold pixel values 0..255, found "
                         f"{int(x.min())}..{int(x.max())}")
    return x


def gate_maps(graph: ir.Graph, images: Any, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Per precision-gated node, its gate bits on ``images``: ``[N, OH, OW, R]`` for a conv,
    ``[N, R]`` for a dense layer (int64); empty for a graph without gated layers."""
    graph.check_lowered()
    names = [n.name for n in graph.nodes if isinstance(n, (ir.Conv, ir.Dense)) and n.gated]
    if not names:
        return {}
    x_all = check_images(graph, images).permute(0, 2, 3, 1)
    out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for i in range(0, x_all.shape[0], batch_size):
        x, kind = x_all[i:i + batch_size], "uint8"
        for node in graph.nodes:
            if node.name in out:
                assert isinstance(node, (ir.Conv, ir.Dense))
                if isinstance(node, ir.Conv):
                    v = ref.sliding_window(x, node.kernel, node.stride, node.padding,
                                           node.pad_bit)
                else:
                    v = x.reshape(x.shape[0], -1)
                out[node.name].append(gates(node, v))
            x, kind = run_node(node, x, kind), ir.out_kind(node, kind)
    return {k: torch.cat(v) for k, v in out.items()}


def host_logits(node: ir.Dense, scores: torch.Tensor) -> torch.Tensor:
    """The host's float64 logits ``scale * dot / dot_divisor + bias`` of the classifier."""
    scale = torch.tensor(node.scale / node.dot_divisor, dtype=torch.float64)
    return scores.to(torch.float64) * scale + torch.tensor(node.bias, dtype=torch.float64)


def integer_classes(node: ir.Dense, scores: np.ndarray) -> np.ndarray:
    """The hardware's class of each row of ``scores[N, classes]``: the first index of the
    largest integer logit (``int64 [N]``)."""
    scores = np.asarray(scores, dtype=np.int64).reshape(-1, node.rows)
    return np.argmax(node.class_logits(scores), axis=1).astype(np.int64)


def run(graph: ir.Graph, images: Any, activations: bool = False,
        batch_size: int = 64) -> GoldenResult:
    """Run ``graph`` (lowered) on ``images`` ``[N, C, H, W]`` (8-bit pixels, NCHW)."""
    graph.check_lowered()
    x_all = check_images(graph, images).permute(0, 2, 3, 1)  # NHWC
    scores, acts = [], {n.name: [] for n in graph.nodes} if activations else None
    for i in range(0, x_all.shape[0], batch_size):
        x, kind = x_all[i:i + batch_size], "uint8"
        for node in graph.nodes:
            x, kind = run_node(node, x, kind), ir.out_kind(node, kind)
            if acts is not None:
                acts[node.name].append(x)
        scores.append(x)
    classifier: ir.Dense = graph.nodes[-1]  # type: ignore[assignment]
    if scores:
        score = torch.cat(scores)
    else:
        score = torch.empty((0, graph.classes), dtype=torch.int64)
    logits = host_logits(classifier, score)
    classes = torch.from_numpy(integer_classes(classifier, score.numpy()))
    out = None
    if acts is not None:
        out = {k: torch.cat(v) if v else torch.empty(0, dtype=torch.int64)
               for k, v in acts.items()}
    return GoldenResult(score, logits, classes, out)
