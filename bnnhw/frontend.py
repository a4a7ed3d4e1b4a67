"""Frontend: a trained bnnhw model -> the integer IR (``bnnhw.ir``).

``compile_model(model)`` is ``import_model`` followed by the passes of ``PASSES``, in
order, each a pure function ``Graph -> Graph`` with one job:

1. ``commute_affine_through_pool``: ``MaxPool -> Affine`` becomes ``Affine -> MaxPool``.
   A per-channel affine map with a negative scale is decreasing, and
   ``f(max z) = min f(z)`` for decreasing ``f``: those channels become min-pooled
   (``and_mask``). This is how pooling before BatchNorm is handled.
2. ``merge_affine``: ``Conv/Dense -> Affine`` becomes one ``Conv/Dense`` whose real
   pre-activation is ``y = a * dot + c``: ``a = s * scale``, ``c = s * bias + t`` for the
   affine ``s * x + t`` (BatchNorm ``s = gamma / sqrt(var + eps)``,
   ``t = beta - s * mean``; or the classifier's ``Scores``).
3. ``commute_sign_through_pool``: ``MaxPool -> Sign`` becomes ``Sign -> MaxPool``
   (``sign`` is non-decreasing, so ``sign(max y) = max sign(y)``, same for min): the
   hardware pools bits, OR for max and AND for min.
4. ``flip_negative_rows``: in a ``Conv/Dense -> Sign`` pair, every row with ``a < 0`` gets
   its weight bits inverted and ``a`` negated (``dot' = -dot``, so ``y`` is unchanged),
   leaving ``a >= 0`` everywhere: one comparison convention (``>=``) for all channels.
   (For the original ``a < 0`` the bit is ``dot <= -c / a``, i.e. ``-dot >= ceil(c / a)``;
   pass 5 computes exactly that on the flipped row.)
5. ``make_thresholds``: ``Conv/Dense -> Sign`` becomes a thresholded ``Conv/Dense``.
6. ``lower_class_map``: the classifier's float logits ``scale * dot + bias`` become an
   integer map ``class_scale * dot + class_offset`` whose argmax is the hardware's class
   (``class_map``): exact with one common scale, within a stated rounding bound otherwise.
7. ``remove_pruned_channels``: the output channels a model layer declares pruned (its
   binarised weights are 0, so the channel is the constant bit ``bias >= 0``) leave the
   hardware: the row goes from its layer, the channel from the max-pools after it, and its
   columns from the next matrix layer, whose thresholds (per border class) or class
   offsets absorb the constant's exact contribution to the accumulator. A channel that
   would meet non-zero padding of another value (a conv padding with ``pad_bit`` != the
   constant) stays, as the constant channel pass 5 made of it.

Threshold maths (pass 5). ``a``, ``c`` are float64, computed from the model's float32
parameters (the XNOR-Net scale ``alpha = mean |W|`` is computed in float32 exactly like
the model does). The output bit is ``y >= 0`` (``sign(0) = +1``). For ``a > 0`` that is
``dot >= D`` with ``D = ceil(-c / a)``, computed in exact rational arithmetic from the
float64 values (no float rounding at all); for ``a == 0`` the channel is constant (``D``
below or above every reachable dot). ``D`` is clamped to ``[dot_min, dot_max + 1]``.
For binary inputs the hardware accumulates ``acc = popcount(xnor) = (dot_hw + N) / 2``,
so ``T = ceil((D - corr + N) / 2)`` (integer arithmetic), clamped to ``[0, N + 1]``; for
uint8 inputs ``acc = dot`` and ``T = D``.

Padding. A pad value of +1 or -1 is a bit (1 or 0) the hardware inserts itself: exact.
uint8 maps pad with pixel 0: exact. Zero padding of a binary map pads with the value 0,
which is not a bit. The hardware pads with bit 0 (= -1) and the thresholds absorb the
difference: at an output pixel whose window covers the padded taps ``P``,
``dot_true = dot_hw + corr`` with ``corr = sum_{taps in P} sum_c (2w - 1)`` (the stored,
possibly flipped weights). ``P`` depends only on which kernel rows are padded at that
output row and which kernel columns at that output column. The distinct sets of padded
kernel rows, in order of first appearance over the output rows, number the row classes
(``row_class[oy]``); the same for columns; ``thresholds[row_class, col_class, r]`` then
holds each class's corrected threshold (``NY * NX`` classes, typically 3 x 3 for
padding 1). Without zero padding ``NY = NX = 1``.

Dense layers after a conv: torch flattens CHW, the hardware streams HWC; ``import_model``
permutes the weight columns. The classifier's ``scale`` and ``bias`` (its float logit
map) are ``Scores.scale * alpha`` and ``Scores.scale * b + Scores.bias``; pass 6 flips its
rows of negative scale.

Without BatchNorm a hidden layer's bit is ``sign(alpha * dot + b)``: its ``Conv/Dense ->
Sign`` pair is thresholded by the same pass 5 (``D = ceil(-b / alpha)``).

Fractional activations (FracBNN, ``bnnhw.ir``). A ``FracActivation`` imports as a
``Frac`` node (after an ``Affine`` of its gain when it has one), which passes 3-5 treat
like ``Sign``: the pool commutes with it (the quantiser is non-decreasing), negative rows
flip, and ``make_thresholds`` gives three thresholds per channel, one per boundary ``b``
of ``-2/3, 0, 2/3``: ``D_b = ceil(divisor * (b - c) / a)``, exact. A ``GatedConv2d`` /
``GatedLinear`` imports as a matrix node with ``input_kind`` ``frac2``: its accumulator
``acc = 2 msb + g lsb`` is three times the model's ``out`` (``dot_divisor`` 3, so ``y = a *
acc / 3 + c``) and its learnt gate ``2 msb > 3 t`` becomes ``pc_m >= floor((3 t + 2 N) / 4)
+ 1`` (``gate_thresholds``). Flipping a gated row inverts its gate (``pc_m' = N - pc_m``:
``G' = N + 1 - G`` and ``gate_invert`` toggled). The classifier's class map of a frac2
input is chosen for the logits times 3 (the same argmax), ``class_gain`` times 3. A
pruned channel feeding a gated layer, or one with a frac2 output, stays in the hardware
as a constant channel.

Refused, with one sentence naming the module (``BnnhwError``): unknown module types,
weight scales that vary along the reduction axis, NaN/inf parameters or BatchNorm
statistics, shape mismatches and layer orders that do not lower to the IR.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from torch import nn

from . import ir
from . import numerics as nx
from .errors import BnnhwError
from .nn.layers import (
    BinaryActivation,
    BinaryConv2d,
    BinaryLinear,
    FracActivation,
    GatedConv2d,
    GatedLinear,
    InputEncoder,
    Scores,
    _xnor_scale,
)

Pass = Callable[[ir.Graph], ir.Graph]


# --- import: torch modules -> frontend IR, one node per module ---------------------------------

def _floats(where: str, what: str, t: torch.Tensor | None, default: float,
            count: int) -> np.ndarray:
    """A float64 copy of ``t`` (``default`` if None), refusing NaN/inf."""
    if t is None:
        return np.full(count, default, dtype=np.float64)
    a = t.detach().cpu().to(torch.float64).numpy().copy()
    if not np.all(np.isfinite(a)):
        raise BnnhwError(f"{where}: its {what} holds NaN or infinite values")
    return a


def _row_scale(where: str, m: BinaryConv2d | BinaryLinear) -> np.ndarray:
    """Per-output-row weight scale of ``m`` as float64 (computed like the model, float32)."""
    rows = m.weight.shape[0]
    scale = m.scale
    if isinstance(scale, bool):
        if not scale:
            return np.ones(rows, dtype=np.float64)
        with torch.no_grad():
            return _floats(where, "XNOR scale", _xnor_scale(m.weight), 1.0, rows)
    if isinstance(scale, torch.Tensor):
        # an explicit scale tensor, broadcast against the weights: it folds into the
        # thresholds only if it is constant along the reduction (input) axes
        if scale.dim() != m.weight.dim():
            raise BnnhwError(f"{where}: its weight scale must have one axis per weight axis "
                             f"({m.weight.dim()}), not shape {list(scale.shape)}")
        try:
            full = scale.detach().to(torch.float64).expand(m.weight.shape)
        except RuntimeError:
            raise BnnhwError(f"{where}: its weight scale of shape {list(scale.shape)} does not "
                             f"broadcast to its weights {list(m.weight.shape)}") from None
        flat = full.reshape(rows, -1)
        if not torch.equal(flat, flat[:, :1].expand_as(flat)):
            raise BnnhwError(f"{where}: its weight scale varies along the reduction axis "
                             f"(input channels or kernel taps), which cannot be folded into "
                             f"thresholds; use one scale per output channel")
        return _floats(where, "weight scale", flat[:, 0], 1.0, rows)
    raise BnnhwError(f"{where}: its scale must be true, false or a tensor, not "
                     f"{type(scale).__name__}")


def _pruned_scale(m: BinaryConv2d | BinaryLinear, alpha: np.ndarray) -> np.ndarray:
    """``alpha`` with the pruned rows of ``m`` at 0: their binarised weights are 0."""
    pruned = list(getattr(m, "pruned", ()))
    if pruned:
        alpha = alpha.copy()
        alpha[pruned] = 0.0
    return alpha


def _weight_bits(where: str, weight: torch.Tensor) -> np.ndarray:
    """Binarised weights as bits (``sign(0) = +1``, so latent 0 is bit 1)."""
    w = weight.detach().cpu()
    if not torch.isfinite(w).all():
        raise BnnhwError(f"{where}: its weights hold NaN or infinite values")
    return (w >= 0).to(torch.uint8).numpy()


def chw_columns_to_hwc(weights: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Reorder ``weights[R, C*H*W]`` (torch's CHW flatten) to HWC flatten for map ``shape``."""
    h, w, c = shape
    r = weights.shape[0]
    return weights.reshape(r, c, h, w).transpose(0, 2, 3, 1).reshape(r, h * w * c)


def _pair(where: str, key: str, value: Any) -> int:
    v = (value, value) if isinstance(value, int) else tuple(value)
    if len(v) != 2 or v[0] != v[1]:
        raise BnnhwError(f"{where}: only square {key}s are supported, not {value!r}")
    return int(v[0])


def gate_thresholds(t: np.ndarray, cols: int) -> np.ndarray:
    """The integer gate thresholds on ``pc_m`` of a gated layer with learnt thresholds
    ``t`` (float64) and ``cols`` inputs per row: the model's gate ``2 * msb > 3 * t`` with
    ``msb = 2 pc_m - cols`` is ``pc_m >= floor((3 t + 2 cols) / 4) + 1``, in exact rational
    arithmetic, clamped to ``0 .. cols + 1``."""
    out = np.empty(len(t), dtype=np.int64)
    for r, v in enumerate(t.tolist()):
        g = math.floor((3 * Fraction(v) + 2 * cols) / 4) + 1
        out[r] = min(max(g, 0), cols + 1)
    return out


def _gate_fields(where: str, m: GatedConv2d | GatedLinear, cols: int) -> dict[str, Any]:
    t = _floats(where, "gate_threshold", m.gate_threshold, 0.0, m.weight.shape[0])
    return {"gate": gate_thresholds(t, cols), "gate_invert": np.zeros(len(t), np.uint8)}


def _import_module(j: int, m: nn.Module, shape: tuple[int, ...], kind: str,
                   flatten: tuple[str, ...]) -> ir.Node | list[ir.Node]:
    """The frontend node(s) of module ``layers.j`` given its input ``shape`` and ``kind``."""
    path = f"layers.{j}"
    where = f"{path} ({type(m).__name__})"
    t = type(m)
    matrix = (BinaryConv2d, BinaryLinear, GatedConv2d, GatedLinear)
    if t in matrix and kind == "real":
        raise BnnhwError(f"{where}: its input is not binary; the layer before it must end "
                         f"with a BinaryActivation or a FracActivation")
    if t in (BinaryConv2d, BinaryLinear) and kind == "frac2":
        raise BnnhwError(f"{where}: its input is fractional (a FracActivation before it), "
                         f"so it must be a precision-gated layer (GatedConv2d/GatedLinear)")
    if t in (GatedConv2d, GatedLinear) and kind != "frac2":
        raise BnnhwError(f"{where}: a precision-gated layer needs a fractional input (a "
                         f"FracActivation before it), not {kind} values")
    if t is GatedConv2d:
        t = BinaryConv2d
    elif t is GatedLinear:
        t = BinaryLinear
    if t is BinaryConv2d:
        if len(shape) != 3:
            raise BnnhwError(f"{where}: a convolution needs a feature map, but its input "
                             f"is a flat vector of {shape[0]}")
        if m.in_channels != shape[2]:
            raise BnnhwError(f"{where}: expects {m.in_channels} input channels but the "
                             f"layer before it gives {shape[2]}")
        k = _pair(where, "kernel", m.kernel_size)
        s = _pair(where, "stride", m.stride)
        if m.groups != 1 or tuple(m.dilation) != (1, 1) or tuple(m.padding) != (0, 0):
            raise BnnhwError(f"{where}: grouped, dilated or torch-padded convolutions are "
                             f"not supported")
        bits = _weight_bits(where, m.weight)  # [R, C, K, K]
        weights = bits.transpose(0, 2, 3, 1).reshape(bits.shape[0], -1)  # (ky, kx, c)
        alpha = _pruned_scale(m, _row_scale(where, m))
        bias = _floats(where, "bias", m.bias, 0.0, bits.shape[0])
        pad_bit, zero = 0, False
        if m.pad_amount:
            if kind == "uint8" and m.pad_value != 0:
                raise BnnhwError(f"{where}: a convolution on uint8 pixels pads with zeros "
                                 f"only, not {m.pad_value}")
            if kind == "frac2" and m.pad_value == 0:
                raise BnnhwError(f"{where}: a precision-gated convolution pads with +1 or -1, "
                                 f"not zeros")
            pad_bit = (3 if kind == "frac2" else 1) if m.pad_value == 1 else 0
            zero = kind == "binary" and m.pad_value == 0
        gate = _gate_fields(where, m, weights.shape[1]) if kind == "frac2" else {}
        return ir.Conv(f"conv{j}", shape, k, weights, alpha, bias, stride=s,
                       padding=m.pad_amount, pad_bit=pad_bit, zero_padding=zero,
                       input_kind=kind, source=(path,), **gate)
    if t is BinaryLinear:
        features = int(np.prod(shape))
        if len(shape) == 3 and not flatten:
            raise BnnhwError(f"{where}: needs a Flatten before it (its input is a "
                             f"{shape[0]}x{shape[1]}x{shape[2]} map)")
        if m.in_features != features:
            raise BnnhwError(f"{where}: expects {m.in_features} inputs but the layer "
                             f"before it gives {features}")
        weights = _weight_bits(where, m.weight)
        if len(shape) == 3:
            weights = chw_columns_to_hwc(weights, shape)  # type: ignore[arg-type]
        alpha = _pruned_scale(m, _row_scale(where, m))
        bias = _floats(where, "bias", m.bias, 0.0, weights.shape[0])
        gate = _gate_fields(where, m, weights.shape[1]) if kind == "frac2" else {}
        return ir.Dense(f"dense{j}", shape, weights, alpha, bias, input_kind=kind,
                        source=flatten + (path,), **gate)
    if t in (nn.BatchNorm1d, nn.BatchNorm2d):
        want = 3 if t is nn.BatchNorm2d else 1
        if len(shape) != want or m.num_features != shape[-1]:
            raise BnnhwError(f"{where}: normalises {m.num_features} channels of a "
                             f"{'map' if want == 3 else 'vector'} but its input has shape "
                             f"{list(shape)}")
        if m.running_mean is None or m.running_var is None:
            raise BnnhwError(f"{where}: has no running statistics (track_running_stats is "
                             f"off), so its inference behaviour is undefined")
        n = m.num_features
        mean = _floats(where, "running_mean", m.running_mean, 0.0, n)
        var = _floats(where, "running_var", m.running_var, 1.0, n)
        gamma = _floats(where, "weight (gamma)", m.weight, 1.0, n)
        beta = _floats(where, "bias (beta)", m.bias, 0.0, n)
        if not math.isfinite(m.eps) or np.any(var + m.eps <= 0):
            raise BnnhwError(f"{where}: running_var + eps must be positive, found "
                             f"{float(np.min(var + m.eps))}")
        s = gamma / np.sqrt(var + float(m.eps))
        return ir.Affine(f"bn{j}", shape, s, beta - s * mean, (path,))
    if t is Scores:
        scale = _floats(where, "scale", m.scale, 1.0, m.scale.numel())
        sbias = _floats(where, "bias", m.bias, 0.0, m.bias.numel())
        if len(shape) != 1 or scale.shape != (shape[0],) or sbias.shape != (shape[0],):
            raise BnnhwError(f"{where}: scales {scale.size} classes but its input has "
                             f"shape {list(shape)}")
        return ir.Affine(f"scores{j}", shape, scale, sbias, (path,))
    if t is BinaryActivation:
        return ir.Sign(f"sign{j}", shape, (path,))
    if t is FracActivation:
        frac = ir.Frac(f"frac{j}", shape, (path,))
        gain = float(getattr(m, "gain", 1.0))
        if gain == 1.0:
            return frac
        n = shape[-1]  # the quantiser of gain * x: an affine map first, merged later
        return [ir.Affine(f"gain{j}", shape, np.full(n, gain), np.zeros(n), (path,)), frac]
    if t is nn.MaxPool2d:
        if len(shape) != 3:
            raise BnnhwError(f"{where}: max-pooling needs a feature map, not a flat vector")
        k = _pair(where, "kernel", m.kernel_size)
        s = _pair(where, "stride", m.stride if m.stride is not None else k)
        if _pair(where, "padding", m.padding) or _pair(where, "dilation", m.dilation) != 1 \
                or m.ceil_mode or m.return_indices:
            raise BnnhwError(f"{where}: only plain max-pooling is supported (no padding, "
                             f"dilation, ceil_mode or return_indices)")
        return ir.MaxPool(f"pool{j}", shape, k, s, np.zeros(shape[2], np.uint8), (path,))
    raise BnnhwError(f"{where}: the frontend does not know this layer type (it knows "
                     f"BinaryConv2d, BinaryLinear, BatchNorm1d/2d, BinaryActivation, "
                     f"MaxPool2d, Flatten and Scores)")


def _module_index(path: str) -> int:
    return int(path.split(".")[1])


def import_model(model: nn.Module) -> ir.Graph:
    """Translate a bnnhw ``BNN`` module by module into a frontend graph (not yet lowered).

    Conv/Dense nodes get bit weights in IR column order and ``scale = alpha``,
    ``bias = b``; BatchNorm and ``Scores`` become ``Affine`` nodes, ``BinaryActivation``
    ``Sign`` nodes. Raises ``BnnhwError`` for anything the IR cannot express.
    """
    encoder, layers = getattr(model, "encoder", None), getattr(model, "layers", None)
    spec = getattr(model, "spec", None)
    if type(encoder) is not InputEncoder or not isinstance(layers, nn.Sequential) \
            or not isinstance(spec, dict):
        raise BnnhwError(f"the frontend takes a bnnhw BNN model (with spec, encoder and layers),"
                         f" not a {type(model).__name__}")
    c, h, w = spec["input"]["shape"]
    try:
        node: ir.Node = ir.InputEncoder("input", (h, w, c), encoder.encoding,
                                        encoder.threshold, encoder.levels, ("encoder",))
    except ValueError as e:
        raise BnnhwError(f"encoder: {e}") from None
    nodes: list[ir.Node] = [node]
    shape, kind = node.out_shape, node.out_kind
    flatten: tuple[str, ...] = ()  # the source of a pending Flatten
    for j, m in enumerate(layers):
        if flatten and type(m) not in (BinaryLinear, GatedLinear):
            raise BnnhwError(f"{flatten[0]} (Flatten): must be followed by a BinaryLinear")
        if type(m) is nn.Flatten:
            if m.start_dim != 1 or m.end_dim != -1:
                raise BnnhwError(f"layers.{j} (Flatten): only Flatten(start_dim=1) is "
                                 f"supported")
            flatten = (f"layers.{j}",)
            continue
        try:
            made = _import_module(j, m, shape, kind, flatten)
        except ValueError as e:
            raise BnnhwError(f"layers.{j} ({type(m).__name__}): {e}") from None
        flatten = ()
        for node in made if isinstance(made, list) else [made]:
            nodes.append(node)
            shape, kind = node.out_shape, ir.out_kind(node, kind)
    if flatten:
        raise BnnhwError(f"{flatten[0]} (Flatten): must be followed by a BinaryLinear")
    meta: dict[str, Any] = {"spec": spec}
    pruned = {n.name: list(layers[_module_index(n.source[-1])].pruned) for n in nodes
              if isinstance(n, (ir.Conv, ir.Dense))
              and getattr(layers[_module_index(n.source[-1])], "pruned", ())}
    if pruned:
        meta["pruned"] = pruned
    try:
        return ir.Graph(tuple(nodes), meta)
    except ValueError as e:
        raise BnnhwError(str(e)) from None


# --- passes ----------------------------------------------------------------------------------

def _rewrite_pairs(graph: ir.Graph,
                   rule: Callable[[ir.Node, ir.Node], list[ir.Node] | None]) -> ir.Graph:
    """Apply ``rule`` to adjacent node pairs until none matches; ``rule`` returns the
    replacement of the pair, or None to leave it."""
    nodes = list(graph.nodes)
    changed = True
    while changed:
        changed = False
        for i in range(len(nodes) - 1):
            new = rule(nodes[i], nodes[i + 1])
            if new is not None:
                nodes[i:i + 2] = new
                changed = True
                break
    return graph.replace(nodes)


def commute_affine_through_pool(graph: ir.Graph) -> ir.Graph:
    """``MaxPool -> Affine`` to ``Affine -> MaxPool``, min-pooling negative-scale channels."""
    def rule(a: ir.Node, b: ir.Node) -> list[ir.Node] | None:
        if not (isinstance(a, ir.MaxPool) and isinstance(b, ir.Affine)):
            return None
        mask = a.and_mask ^ (b.scale < 0).astype(np.uint8)
        return [b.replace(shape=a.in_shape), a.replace(and_mask=mask)]
    return _rewrite_pairs(graph, rule)


def merge_affine(graph: ir.Graph) -> ir.Graph:
    """``Conv/Dense -> Affine`` to one ``Conv/Dense`` with ``y = (s*a) dot + (s*c + t)``."""
    def rule(a: ir.Node, b: ir.Node) -> list[ir.Node] | None:
        if not (isinstance(a, (ir.Conv, ir.Dense)) and not a.thresholded
                and isinstance(b, ir.Affine)):
            return None
        return [a.replace(scale=b.scale * a.scale, bias=b.scale * a.bias + b.bias,
                          source=a.source + b.source)]
    return _rewrite_pairs(graph, rule)


_ACTIVATIONS = (ir.Sign, ir.Frac)


def commute_sign_through_pool(graph: ir.Graph) -> ir.Graph:
    """``MaxPool -> Sign`` to ``Sign -> MaxPool`` (the pool then works on bits), and the
    same for the frac2 quantiser ``Frac`` (non-decreasing too: the pool takes codes)."""
    def rule(a: ir.Node, b: ir.Node) -> list[ir.Node] | None:
        if not (isinstance(a, ir.MaxPool) and isinstance(b, _ACTIVATIONS)):
            return None
        return [b.replace(shape=a.in_shape), a]
    return _rewrite_pairs(graph, rule)


def flip_negative_rows(graph: ir.Graph) -> ir.Graph:
    """In ``Conv/Dense -> Sign/Frac``, invert the weights of rows with ``scale < 0``."""
    def rule(a: ir.Node, b: ir.Node) -> list[ir.Node] | None:
        if not (isinstance(a, (ir.Conv, ir.Dense)) and not a.thresholded
                and isinstance(b, _ACTIVATIONS)):
            return None
        if not (a.scale < 0).any():
            return None
        return [_flip_negative(a), b]
    return _rewrite_pairs(graph, rule)


def _flip_negative(node: ir.Conv | ir.Dense) -> ir.Conv | ir.Dense:
    """``node`` with the weight bits of every row of ``scale < 0`` inverted and its scale
    negated: ``dot' = -dot``, so ``scale * dot`` is unchanged. A gated row's gate follows:
    ``pc_m' = N - pc_m``, so ``pc_m >= G`` is ``not pc_m' >= N + 1 - G``."""
    neg = node.scale < 0
    weights = np.where(neg[:, None], 1 - node.weights, node.weights)
    gate: dict[str, Any] = {}
    if node.gated:
        assert node.gate is not None and node.gate_invert is not None
        gate = {"gate": np.where(neg, node.cols + 1 - node.gate, node.gate),
                "gate_invert": np.where(neg, 1 - node.gate_invert, node.gate_invert)}
    return node.replace(weights=weights, scale=np.where(neg, -node.scale, node.scale),
                        **gate)


def border_classes(size: int, kernel: int, stride: int, padding: int
                   ) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Border classes along one axis: ``(cls[out], padded_taps[class])``.

    ``padded_taps`` lists, per class, the kernel offsets that fall into the padding;
    classes are numbered in order of first appearance over the output positions.
    """
    out = (size + 2 * padding - kernel) // stride + 1
    sets: list[tuple[int, ...]] = []
    cls = np.empty(out, dtype=np.int64)
    for o in range(out):
        taps = tuple(k for k in range(kernel) if not 0 <= o * stride + k - padding < size)
        if taps not in sets:
            sets.append(taps)
        cls[o] = sets.index(taps)
    return cls, sets


def dot_thresholds(scale: np.ndarray, bias: np.ndarray, lo: int, hi: int,
                   level: Fraction = Fraction(0), divisor: int = 1) -> np.ndarray:
    """Per row, the least integer ``D`` with ``scale * D / divisor + bias >= level``,
    clamped to ``[lo, hi + 1]`` (exact rational arithmetic on the float64 values;
    ``scale >= 0``).

    A row with ``scale == 0`` is constant: ``lo`` (always on) if ``bias >= level``, else
    ``hi + 1`` (always off).
    """
    out = np.empty(len(scale), dtype=np.int64)
    for r, (a, c) in enumerate(zip(scale.tolist(), bias.tolist())):
        if a < 0:
            raise ValueError(f"row {r} has a negative scale {a}; flip it first")
        if a == 0:
            d = lo if c >= level else hi + 1
        else:
            d = math.ceil(divisor * (level - Fraction(c)) / Fraction(a))
        out[r] = min(max(d, lo), hi + 1)
    return out


def _levels(frac: bool) -> tuple[Fraction, ...]:
    """The boundaries an activation compares with: 0 for a sign, the frac2 quantiser's
    three (``bnnhw.numerics.FRAC2_BOUNDARIES``)."""
    return tuple(Fraction(*b) for b in nx.FRAC2_BOUNDARIES) if frac else (Fraction(0),)


def _dot_levels(node: ir.Conv | ir.Dense, frac: bool) -> np.ndarray:
    """``D[R, L]``: per row, the dot thresholds of each boundary of the activation."""
    return np.stack([dot_thresholds(node.scale, node.bias, node.dot_min, node.dot_max, b,
                                    node.dot_divisor) for b in _levels(frac)], axis=1)


def _conv_thresholds(node: ir.Conv, frac: bool = False
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(thresholds[NY, NX, R], row_class, col_class)`` of a conv with ``scale >= 0``
    (``[NY, NX, R, 3]`` when ``frac``: the frac2 quantiser's three boundaries)."""
    levels = _dot_levels(node, frac)
    if frac:
        parts = [_conv_level_thresholds(node, levels[:, k]) for k in range(levels.shape[1])]
        return np.stack([p[0] for p in parts], axis=3), parts[0][1], parts[0][2]
    return _conv_level_thresholds(node, levels[:, 0])


def _conv_level_thresholds(node: ir.Conv, d: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thresholds on the accumulator for dot thresholds ``d[R]`` (module docstring)."""
    n = node.cols
    oh, ow, r = node.out_shape
    if node.input_kind != "binary":  # the accumulator is the dot itself; no zero padding
        t = d.reshape(1, 1, r)
        return t, np.zeros(oh, np.int64), np.zeros(ow, np.int64)
    h, w, c = node.in_shape
    k = node.kernel
    if node.zero_padding:
        rc, rsets = border_classes(h, k, node.stride, node.padding)
        cc, csets = border_classes(w, k, node.stride, node.padding)
    else:
        rc, rsets = np.zeros(oh, np.int64), [()]
        cc, csets = np.zeros(ow, np.int64), [()]
    # sum of the +-1 weights of each kernel tap, per row: [R, K, K]
    tap_sum = (2 * node.weights.astype(np.int64) - 1).reshape(r, k, k, c).sum(axis=3)
    corr = np.zeros((len(rsets), len(csets), r), dtype=np.int64)
    for i, rows in enumerate(rsets):
        for j, cols in enumerate(csets):
            padded = np.zeros((k, k), dtype=bool)
            padded[list(rows), :] = True
            padded[:, list(cols)] = True
            corr[i, j] = tap_sum[:, padded].sum(axis=1)
    x = d[None, None, :] - corr + n
    t = -((-x) // 2)  # ceil(x / 2) for integers of either sign
    return np.clip(t, 0, n + 1), rc, cc


def make_thresholds(graph: ir.Graph) -> ir.Graph:
    """``Conv/Dense -> Sign`` (every ``scale >= 0``) to a thresholded ``Conv/Dense``, and
    ``Conv/Dense -> Frac`` to one with three thresholds per channel (a frac2 output)."""
    def rule(a: ir.Node, b: ir.Node) -> list[ir.Node] | None:
        if not (isinstance(a, (ir.Conv, ir.Dense)) and not a.thresholded
                and isinstance(b, _ACTIVATIONS)):
            return None
        source = a.source + b.source
        frac = isinstance(b, ir.Frac)
        if isinstance(a, ir.Conv):
            t, rc, cc = _conv_thresholds(a, frac)
            return [a.replace(thresholds=t, row_class=rc, col_class=cc, source=source)]
        d = _dot_levels(a, frac)  # [R, L]
        if a.input_kind == "binary":
            d = np.clip(-((-(d + a.cols)) // 2), 0, a.cols + 1)
        t = d.reshape(1, 1, *d.shape) if frac else d[:, 0].reshape(1, 1, -1)
        return [a.replace(thresholds=t, source=source)]
    return _rewrite_pairs(graph, rule)


# --- the classifier's integer class map --------------------------------------------------------

CLASS_SCALE_BITS = 16   # precision of the integer multipliers when class scales differ
MAX_CLASS_SHIFT = 16    # largest common multiplier 2**k tried: multipliers stay within 17 bits
_EXACT_SEARCH_CLASSES = 256  # above this many classes the exactness search is skipped


def _pair_exact(ui: Fraction, uj: Fraction, mi: int, mj: int, bi: int, bj: int,
                big: int, dot_max: int) -> bool:
    """Whether ``i`` (the lower index) beats ``j`` under the integer map exactly when it
    does under the float map, for every pair of dots in ``-dot_max..dot_max``: the float
    map is ``a * dot + a * u`` (``a > 0`` for classes with ``m == big``, ``0`` for ``m ==
    0``), the integer map ``m * dot + b``; ties go to ``i``. Each side is a condition
    ``x >= t`` (or ``<=``) on an integer ``x`` of a known range: two thresholds give the
    same condition when they round to the same integer within that range."""
    if not (mi or mj):
        return (ui >= uj) == (bi >= bj)
    # both scaled: d_i - d_j >= u_j - u_i; one: d_i >= u_j - u_i, or -d_j >= u_j - u_i;
    # against >= (b_j - b_i) / big on the integer side, for x in -r..r
    r = 2 * dot_max if mi and mj else dot_max

    def clip(v: int) -> int:
        return min(max(v, -r), r + 1)

    return clip(math.ceil(uj - ui)) == clip(-((bi - bj) // big))


def _common_scale_map(scale: np.ndarray, bias: np.ndarray, dot_max: int
                      ) -> tuple[np.ndarray, np.ndarray, float, bool] | None:
    """The exact map when every nonzero class scale is the same ``a``: ``m = 2**k`` (or 0),
    ``b = floor(2**k * bias / a)``, for the smallest ``k`` that keeps every pairwise
    comparison (``_pair_exact``); ``None`` when the scales differ or no ``k`` up to
    ``MAX_CLASS_SHIFT`` is exact."""
    nonzero = sorted({float(a) for a in scale if a > 0})
    if len(nonzero) > 1 or len(scale) > _EXACT_SEARCH_CLASSES:
        return None
    a = Fraction(nonzero[0]) if nonzero else Fraction(1)
    u = [Fraction(float(c)) / a for c in bias]
    on = [bool(x > 0) for x in scale]
    for k in range(MAX_CLASS_SHIFT + 1):
        big = 1 << k
        m = [big if o else 0 for o in on]
        b = [math.floor(big * x) for x in u]
        if all(_pair_exact(u[i], u[j], m[i], m[j], b[i], b[j], big, dot_max)
               for i in range(len(u)) for j in range(i + 1, len(u))):
            return (np.array(m, np.int64), np.array(b, dtype=object),
                    float(big / a), True)
    return None


def _clamp_offsets(m: np.ndarray, b: np.ndarray, dot_max: int) -> np.ndarray:
    """Offsets moved as close together as the argmax allows: a class whose largest logit
    is below another's smallest never wins, and stays so one below that; a class whose
    smallest logit is above every other's largest always wins, and stays so one above;
    then all are centred on 0."""
    m = [int(x) for x in m]
    b = [int(x) for x in b]
    lo = [bc - mc * dot_max for mc, bc in zip(m, b)]
    floor_ = max(lo)
    b = [max(bc, floor_ - mc * dot_max - 1) for mc, bc in zip(m, b)]
    hi = [bc + mc * dot_max for mc, bc in zip(m, b)]
    for c in range(len(b)):
        others = max((h for i, h in enumerate(hi) if i != c), default=None)
        if others is not None and b[c] - m[c] * dot_max > others:
            b[c] = others + m[c] * dot_max + 1
    centre = (max(b) + min(b)) // 2  # a common shift changes no argmax
    return np.array([bc - centre for bc in b], dtype=object)


def class_map(scale: np.ndarray, bias: np.ndarray, dot_max: int
              ) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """``(class_scale, class_offset, class_gain, class_exact)`` for float logits
    ``scale * dot + bias`` (``scale >= 0``) over dots in ``-dot_max..dot_max``.

    With one common scale (the usual case without a per-class scale) the map is exact:
    ``2**k * dot + floor(2**k * bias / a)``, ``k`` as small as exactness allows (0 and
    plain scores when the biases are equal too). Otherwise ``m = round(g * scale)``,
    ``b = round(g * bias)`` with ``g`` a power of two giving the largest multiplier
    ``CLASS_SCALE_BITS`` bits: each integer logit is then within ``(|dot| + 1) / 2`` of
    ``g`` times the float one, so two classes can only be reordered when their float
    logits lie within ``(|dot_i| + |dot_j| + 2) / (2 g)`` of each other; ``bnnhw.check``
    counts such images as ties. Offsets are clamped (``_clamp_offsets``) without changing
    any argmax.
    """
    exact = _common_scale_map(scale, bias, dot_max)
    if exact is not None:
        m, b, gain, ok = exact
    else:
        top = float(np.max(scale))
        gain = math.ldexp(1.0, CLASS_SCALE_BITS - math.frexp(top)[1]) if top > 0 else 1.0
        m = np.array([round(Fraction(float(a)) * Fraction(gain)) for a in scale], np.int64)
        b = np.array([round(Fraction(float(c)) * Fraction(gain)) for c in bias], dtype=object)
        ok = False
    b = _clamp_offsets(m, b, dot_max)
    if max(abs(int(x)) for x in b) > ir.MAX_CLASS_OFFSET:
        raise BnnhwError("the classifier's biases are too large against its scales to be "
                         "compared as integers")
    return m, np.array([int(x) for x in b], np.int64), gain, ok


def lower_class_map(graph: ir.Graph) -> ir.Graph:
    """Give the classifier (the last node, an unthresholded ``Dense``) its integer class
    map: rows with ``scale < 0`` get their weights inverted and ``scale`` negated (``dot'
    = -dot``, the float logit unchanged), then ``class_map`` picks the integers."""
    last = graph.nodes[-1]
    if not isinstance(last, ir.Dense) or last.thresholded or last.classifier:
        return graph
    flipped = _flip_negative(last)
    # the float logits times the dot divisor: the same argmax, with the dot's own scale
    div = flipped.dot_divisor
    m, b, gain, exact = class_map(flipped.scale, flipped.bias * div, flipped.dot_max)
    node = flipped.replace(class_scale=m, class_offset=b, class_gain=gain * div,
                           class_exact=exact)
    return graph.replace([*graph.nodes[:-1], node])


# --- removing pruned channels -------------------------------------------------------------------

def _removable(consumer: ir.Conv | ir.Dense, values: dict[int, int]) -> list[int]:
    """The pruned channels (``values``: channel -> constant bit) whose contribution to
    ``consumer``'s accumulator is one constant per border class (none for a gated
    consumer: a constant input moves its gates, so the channel stays, constant)."""
    if consumer.gated:
        return []
    if isinstance(consumer, ir.Conv) and consumer.padding and not consumer.zero_padding:
        return [q for q, v in values.items() if v == consumer.pad_bit]
    return list(values)


def _fold_columns(node: ir.Conv | ir.Dense, chans: list[int], values: list[int]
                  ) -> ir.Conv | ir.Dense:
    """``node`` without the input channels ``chans`` (constant bits ``values``), their
    contribution folded into its thresholds or class offsets (module docstring, pass 7)."""
    in_shape = node.in_shape
    c = in_shape[-1]
    keep = np.setdiff1d(np.arange(c), chans)
    v = np.zeros(c, np.int64)
    v[chans] = values
    gone = np.zeros(c, bool)
    gone[chans] = True
    r = node.rows
    if isinstance(node, ir.Conv):
        k = node.kernel
        w = node.weights.reshape(r, k, k, c).astype(np.int64)
        # popcount contribution of each removed channel's tap: xnor(v, w) = (w == v), or
        # (w == pad_bit) where the tap falls into the padding
        inside = ((w == v) & gone).sum(axis=3)  # [R, K, K]
        padded_c = ((w == node.pad_bit) & gone).sum(axis=3)
        if node.zero_padding:
            rsets = border_classes(in_shape[0], k, node.stride, node.padding)[1]
            csets = border_classes(in_shape[1], k, node.stride, node.padding)[1]
        else:
            rsets, csets = [()], [()]
        acc = np.zeros((len(rsets), len(csets), r), np.int64)
        for i, rows in enumerate(rsets):
            for j, cols in enumerate(csets):
                pad = np.zeros((k, k), bool)
                pad[list(rows), :] = True
                pad[:, list(cols)] = True
                acc[i, j] = inside[:, ~pad].sum(axis=1) + padded_c[:, pad].sum(axis=1)
        weights = w[:, :, :, keep].reshape(r, -1).astype(np.uint8)
        changes: dict[str, Any] = {"in_shape": (*in_shape[:2], len(keep))}
    else:
        w = node.weights.reshape(r, -1, c).astype(np.int64)  # HWC flatten: channel last
        acc = ((w == v) & gone).sum(axis=(1, 2)).reshape(1, 1, r)
        weights = w[:, :, keep].reshape(r, -1).astype(np.uint8)
        changes = {"in_shape": (*in_shape[:-1], len(keep))}
    removed = node.cols - weights.shape[1]
    if node.thresholded:
        t = np.clip(node.thresholds - acc, 0, weights.shape[1] + 1)
        return node.replace(weights=weights, thresholds=t, **changes)
    # the classifier: dot = 2 acc - N, so the full dot is the kept one plus 2 acc - removed
    shift = 2 * acc.reshape(r) - removed
    offset = node.class_offset.astype(object) + node.class_scale.astype(object) * shift
    if max(abs(int(x)) for x in offset) > ir.MAX_CLASS_OFFSET:
        raise BnnhwError(f"{node.name}: the class offsets after removing pruned channels "
                         f"are too large to be compared as integers")
    return node.replace(weights=weights, class_offset=np.array(offset.tolist(), np.int64),
                        bias=node.bias + node.scale * shift, **changes)


def remove_pruned_channels(graph: ir.Graph) -> ir.Graph:
    """Remove the channels ``graph.meta["pruned"]`` names (node -> model channels) from
    the hardware, folding their constant bits into the next matrix layer (pass 7)."""
    pruned = graph.meta.get("pruned") or {}
    nodes = list(graph.nodes)
    for i, node in enumerate(nodes):
        if node.name not in pruned or not isinstance(node, (ir.Conv, ir.Dense)) \
                or node.out_levels != 1:
            continue
        chans = node.channels if node.channels is not None else np.arange(node.rows)
        rows = [int(np.searchsorted(chans, q)) for q in pruned[node.name] if q in chans]
        if not rows:
            continue
        assert all(node.scale[q] == 0 for q in rows), "pruned rows have zero scale"
        j = i + 1
        while isinstance(nodes[j], ir.MaxPool):
            j += 1
        consumer = nodes[j]
        assert isinstance(consumer, (ir.Conv, ir.Dense))
        values = {q: int(node.bias[q] >= 0) for q in rows}
        rows = _removable(consumer, values)
        if not rows or len(rows) == node.rows:
            continue
        keep = np.setdiff1d(np.arange(node.rows), rows)
        thresholds = node.thresholds[:, :, keep]  # type: ignore[index]
        nodes[i] = node.replace(weights=node.weights[keep], scale=node.scale[keep],
                                bias=node.bias[keep], thresholds=thresholds,
                                channels=chans[keep])
        for m in range(i + 1, j):
            pool = nodes[m]
            assert isinstance(pool, ir.MaxPool)
            nodes[m] = pool.replace(in_shape=(*pool.in_shape[:2], len(keep)),
                                    and_mask=pool.and_mask[keep])
        nodes[j] = _fold_columns(consumer, rows, [values[q] for q in rows])
    return graph.replace(nodes)


PASSES: tuple[Pass, ...] = (
    commute_affine_through_pool,
    merge_affine,
    commute_sign_through_pool,
    flip_negative_rows,
    make_thresholds,
    lower_class_map,
    remove_pruned_channels,
)


def _explain_unlowered(graph: ir.Graph) -> None:
    """Raise ``BnnhwError`` naming the first module that did not lower, and why."""
    nodes = graph.nodes
    for node in nodes:
        src = ", ".join(node.source) or node.name
        if isinstance(node, ir.Affine):
            raise BnnhwError(f"{src}: this BatchNorm or Scores does not follow a conv or dense "
                             f"layer (directly or through max-pooling), so it cannot be "
                             f"folded into thresholds")
        if isinstance(node, (ir.Sign, ir.Frac)):
            raise BnnhwError(f"{src}: this activation does not follow a conv or dense "
                             f"layer (with its BatchNorm), so it cannot become a threshold")
    last = nodes[-1]
    if not isinstance(last, ir.Dense) or last.thresholded:
        src = ", ".join(last.source) or last.name
        raise BnnhwError(f"{src}: the network must end with a BinaryLinear classifier and its "
                         f"Scores, not this layer")


def lower(graph: ir.Graph, passes: tuple[Pass, ...] = PASSES) -> ir.Graph:
    """Run ``passes`` in order and check that the result is a hardware graph."""
    for p in passes:
        graph = p(graph)
    try:
        graph.check_lowered()
    except ValueError:
        _explain_unlowered(graph)
        raise
    return graph


def compile_model(model: nn.Module, meta: dict[str, Any] | None = None) -> ir.Graph:
    """Lower a bnnhw ``BNN`` (its eval-mode behaviour) to a hardware graph."""
    graph = lower(import_model(model))
    return ir.Graph(graph.nodes, {**graph.meta, **(meta or {})})


def compile_checkpoint(path: str | os.PathLike[str]) -> ir.Graph:
    """Load a checkpoint (``bnnhw.checkpoint.load_model``) and lower it."""
    from .checkpoint import load_model

    model, ckpt = load_model(path)
    return compile_model(model, {"arch": ckpt.arch, "checkpoint": str(path),
                                 "checkpoint_meta": ckpt.meta})
