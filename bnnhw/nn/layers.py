"""Binary QAT layers.

Images enter a model as 8-bit pixel values (0..255) in a float tensor, NCHW. The input
encoder turns them into what the first layer sees:

- ``binary``: ``+1`` where ``pixel >= threshold`` else ``-1``;
- ``thermometer``: each channel ``c`` becomes ``levels`` channels ``c * levels + k``, each
  ``+1`` where ``pixel >= thermometer_thresholds(levels)[k]``;
- ``uint8``: the raw pixel values (integers stored in float32, so the first layer's sums
  are exact), multiplied by binary weights.

Binary convolutions pad their input themselves with a stated constant: ``0`` (plain zero
padding, as float-trained models use), ``+1`` or ``-1``; the same constant is used in
training and inference.

Two training-only modes leave the inference behaviour (and the state_dict) alone:

- ``slope``: a layer or activation whose ``slope`` is a number uses the smooth
  ``tanh(slope * x)`` in place of ``sign`` (self-binarizing training raises it until the
  two agree); ``None`` (the default, and every loaded model) is the binary network.
- ``pruned`` output channels (fixed at construction, from the spec) have binarised
  weight 0: their dot product is 0, so after BatchNorm and sign each is a constant bit.

Fractional (FracBNN-style "frac2") activations and precision gating:

- ``FracActivation`` quantises a real ``y`` to the 2-bit code ``q = [y >= -2/3] +
  [y >= 0] + [y >= 2/3]`` (the thresholds are the exact rationals, ties go up) and
  outputs its value ``(2q - 3) / 3``: -1, -1/3, +1/3 or +1. ``frac_planes`` splits such
  values into their MSB and LSB planes ``m``, ``l`` (each +-1, ``v = (2/3) m + (1/3) l``).
- ``GatedConv2d`` / ``GatedLinear`` consume fractional values: ``msb = W m``, ``lsb =
  W l``, the gate ``g = (2/3) msb > t`` (``gate_threshold``, one per output) and the
  output ``(2 msb + g lsb) / 3``: the LSB plane only counts where the MSB plane's sum is
  large. The gate is hard in the forward pass; its backward pass is the gradient of
  ``sigmoid(((2/3) msb - t) / tau)`` (``tau = sqrt(fan-in)``), reaching ``t`` only (the
  surrogate sees ``msb`` detached). The latent weights learn through ``msb`` and ``lsb``
  (the planes are constants there); the input's gradient is that of ``conv(x, Wb)``
  (straight-through planes: the MSB plane carries ``1.5 (x - x)``, zero in value).
- Two-step training: with ``quantise`` False (``set_quantise``) a ``FracActivation``
  returns ``clamp(y, -1, 1)`` and a gated layer computes ``conv(x, Wb)`` directly (no
  planes, no gate); every built or loaded model starts quantised.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..numerics import ENCODINGS, PAD_VALUES, thermometer_thresholds
from .binarize import binarize_activation, binarize_weight

__all__ = ["ENCODINGS", "PAD_VALUES", "BinaryActivation", "BinaryConv2d", "BinaryLinear",
           "FracActivation", "GatedConv2d", "GatedLinear", "InputEncoder", "Scores",
           "clip_latent_weights", "frac_planes", "gated_layers", "set_quantise",
           "thermometer_thresholds"]


class InputEncoder(nn.Module):
    """Encodes 8-bit pixels for the first layer (see the module docstring)."""

    def __init__(self, encoding: str = "binary", threshold: int = 128, levels: int = 8):
        super().__init__()
        if encoding not in ENCODINGS:
            raise ValueError(f"input encoding must be one of {ENCODINGS}, not {encoding!r}")
        self.encoding = encoding
        self.threshold = int(threshold)
        self.levels = int(levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        if self.encoding == "uint8":
            return x
        if self.encoding == "binary":
            return torch.where(x >= self.threshold, 1.0, -1.0)
        t = torch.tensor(thermometer_thresholds(self.levels), dtype=x.dtype, device=x.device)
        n, c, h, w = x.shape
        bits = x.unsqueeze(2) >= t.view(1, 1, -1, 1, 1)  # N, C, L, H, W
        return torch.where(bits, 1.0, -1.0).reshape(n, c * self.levels, h, w)

    def extra_repr(self) -> str:
        return f"encoding={self.encoding}, threshold={self.threshold}, levels={self.levels}"


def _xnor_scale(weight: torch.Tensor) -> torch.Tensor:
    """XNOR-Net per-output-channel scale: mean absolute latent weight of each output."""
    return weight.abs().mean(dim=tuple(range(1, weight.dim())))


class _Binarised:
    """Shared by the binary conv and linear layers: the pruned-channel mask and the
    binarised (or, with ``slope`` set, smoothed) weights."""

    slope: float | None = None
    weight: nn.Parameter

    def _init_mask(self, rows: int, pruned: list[int] | tuple[int, ...]) -> None:
        keep = torch.ones(rows)
        keep[list(pruned)] = 0.0
        # not persistent: the spec's pruned list rebuilds it, checkpoints keep their keys
        self.register_buffer("keep", keep, persistent=False)  # type: ignore[attr-defined]
        self.pruned = tuple(int(c) for c in pruned)

    def binary_weight(self) -> torch.Tensor:
        """The weights the forward pass uses: ``sign`` (STE), or ``tanh(slope * w)``;
        pruned rows are 0."""
        w = self.weight
        wb = binarize_weight(w) if self.slope is None else torch.tanh(self.slope * w)
        if self.pruned:
            wb = wb * self.keep.view(-1, *([1] * (w.dim() - 1)))  # type: ignore[attr-defined]
        return wb


class BinaryLinear(_Binarised, nn.Linear):
    """Linear layer with binarised weights; optional XNOR-Net per-output scale and bias."""

    def __init__(self, in_features: int, out_features: int, scale: bool = False,
                 bias: bool = False, pruned: list[int] | tuple[int, ...] = ()):
        super().__init__(in_features, out_features, bias=bias)
        self.scale = scale
        nn.init.uniform_(self.weight, -1.0, 1.0)
        self._init_mask(out_features, pruned)

    def matrix(self, x: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
        """The dot products of ``x`` with the binarised weights ``wb``."""
        return F.linear(x, wb)

    def finish(self, y: torch.Tensor) -> torch.Tensor:
        """The XNOR scale and bias applied to the dot products ``y``."""
        if self.scale:
            y = y * _xnor_scale(self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(self.matrix(x, self.binary_weight()))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scale={self.scale}"


class BinaryConv2d(_Binarised, nn.Conv2d):
    """2-D convolution with binarised weights, padding its input with ``pad_value``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, padding: int = 0, pad_value: int = 0,
                 scale: bool = False, bias: bool = False,
                 pruned: list[int] | tuple[int, ...] = ()):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=0, bias=bias)
        if pad_value not in PAD_VALUES:
            raise ValueError(f"pad_value must be one of {PAD_VALUES}, not {pad_value!r}")
        self.pad_amount = int(padding)
        self.pad_value = int(pad_value)
        self.scale = scale
        nn.init.uniform_(self.weight, -1.0, 1.0)
        self._init_mask(out_channels, pruned)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` padded with ``pad_value`` (the layer's own padding)."""
        if self.pad_amount:
            x = F.pad(x, (self.pad_amount,) * 4, value=float(self.pad_value))
        return x

    def matrix(self, x: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
        """The dot products of the padded input ``x`` with the binarised weights ``wb``."""
        return F.conv2d(x, wb, stride=self.stride)

    def finish(self, y: torch.Tensor) -> torch.Tensor:
        """The XNOR scale and bias applied to the dot products ``y``."""
        if self.scale:
            y = y * _xnor_scale(self.weight).view(1, -1, 1, 1)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(self.matrix(self.pad(x), self.binary_weight()))

    def extra_repr(self) -> str:
        return super().extra_repr() + (
            f", pad_amount={self.pad_amount}, pad_value={self.pad_value}, scale={self.scale}")


class BinaryActivation(nn.Module):
    """``sign(gain * x)`` (= ``sign(x)``, ``gain > 0``) with a clipped straight-through
    estimator, so the gradient passes where ``|gain * x| <= 1``; with ``slope`` set, the
    smooth ``tanh(slope * gain * x)`` instead (module docstring)."""

    slope: float | None = None

    def __init__(self, gain: float = 1.0):
        super().__init__()
        if not gain > 0:
            raise ValueError(f"activation gain must be positive, not {gain!r}")
        self.gain = float(gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.slope is not None:
            return torch.tanh((self.slope * self.gain) * x)
        # the value is sign(x) itself (a product could round a tiny x to -0.0)
        return binarize_activation(x, 1.0 / self.gain)

    def extra_repr(self) -> str:
        return "" if self.gain == 1.0 else f"gain={self.gain:.4g}"


# --- fractional activations and precision-gated layers -------------------------------------

def _float32_at_least(r: Fraction) -> float:
    """The least float32 value ``>= r``: ``y >= r`` (exact) is ``y >= this`` for every
    float32 ``y``."""
    f = np.float32(float(r))
    if Fraction(float(f)) < r:
        f = np.nextafter(f, np.float32(np.inf))
    return float(f)


# The quantiser's thresholds -2/3, 0 and 2/3 are exact rationals (ties go up): these
# float32 numbers are the least float32 values at or above them.
FRAC_THRESHOLDS = tuple(_float32_at_least(Fraction(k, 3)) for k in (-2, 0, 2))
GATE_DEFAULTS: dict[str, float] = {"target_rate": 0.1, "weight": 1.0, "init": 0.0}
"""Gate options of a gated layer (see ``bnnhw.nn.spec``): the LSB gate rate the
regulariser aims at, its weight in the objective, and the initial ``gate_threshold``."""


def frac_quantise(y: torch.Tensor) -> torch.Tensor:
    """The frac2 value of ``y``: ``(2q - 3) / 3`` with ``q = [y >= -2/3] + [y >= 0] +
    [y >= 2/3]`` (exact thresholds, ties up), float32."""
    y = y.to(torch.float32)
    q = sum((y >= t).to(torch.float32) for t in FRAC_THRESHOLDS)
    return (2 * q - 3) / 3  # type: ignore[operator]


class _FracClippedSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y):
        ctx.save_for_backward(y)
        return frac_quantise(y)

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (y.abs() <= 1).to(grad.dtype)


def frac_planes(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The MSB and LSB planes ``(m, l)`` of frac2 values ``v`` (each +-1 float32, ``v =
    (2/3) m + (1/3) l``): ``m = +1`` where ``v >= 0``, ``l = +1`` where ``v`` is -1/3 or
    +1 (decided with margins, so values a little off the four levels split the same)."""
    one = torch.ones((), dtype=torch.float32, device=v.device)
    m = torch.where(v >= 0, one, -one)
    l_on = ((v >= -0.5) & (v < 0)) | (v >= 0.5)
    return m, torch.where(l_on, one, -one)


class FracActivation(nn.Module):
    """2-bit fractional activation: ``y = gain * x`` (``y = x`` when ``gain`` is 1) is
    quantised to -1, -1/3, +1/3 or +1 (``frac_quantise``) with a clipped straight-through
    estimator (the gradient passes where ``|y| <= 1``); with ``quantise`` False it returns
    ``clamp(y, -1, 1)`` (the first step of two-step training)."""

    def __init__(self, gain: float = 1.0):
        super().__init__()
        if not gain > 0:
            raise ValueError(f"activation gain must be positive, not {gain!r}")
        self.gain = float(gain)
        self.quantise = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.gain == 1.0 else x * self.gain
        if not self.quantise:
            return torch.clamp(y, -1.0, 1.0)
        return _FracClippedSTE.apply(y)

    def extra_repr(self) -> str:
        gain = "" if self.gain == 1.0 else f"gain={self.gain:.4g}, "
        return gain + f"quantise={self.quantise}"


class _Gated:
    """Shared by the gated conv and linear layers: the gate threshold, the gate options
    and the gated forward pass (module docstring)."""

    weight: nn.Parameter
    matrix: Any
    quantise: bool = True
    last_gate_rate: float = float("nan")
    soft_gate_rate: torch.Tensor | None = None

    def _init_gate(self, rows: int, fan_in: int, gate: dict[str, float] | None) -> None:
        unknown = sorted(set(gate or {}) - set(GATE_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown gate option {unknown[0]!r} "
                             f"(known: {', '.join(GATE_DEFAULTS)})")
        self.gate_options = {k: float(v) for k, v in {**GATE_DEFAULTS, **(gate or {})}.items()}
        self.gate_threshold = nn.Parameter(
            torch.full((rows,), self.gate_options["init"], dtype=torch.float32))
        self.tau = math.sqrt(fan_in)
        self.quantise = True

    def gated_matrix(self, x: torch.Tensor, wb: torch.Tensor, view: tuple[int, ...]
                     ) -> torch.Tensor:
        """``(2 msb + g lsb) / 3`` of the frac2 input ``x`` (padded), or ``matrix(x, wb)``
        when the input is not quantised; records ``last_gate_rate`` and
        ``soft_gate_rate``."""
        if not self.quantise:
            self.last_gate_rate, self.soft_gate_rate = float("nan"), None
            return self.matrix(x, wb)
        m, l = frac_planes(x.detach())
        m = m + 1.5 * (x - x.detach())  # zero in value; the input's straight-through path
        msb, lsb = self.matrix(torch.cat([m, l]), wb).split(len(x))
        t = self.gate_threshold.view(view)
        hard = (2 * msb.detach().double() > 3 * t.detach().double()).to(msb.dtype)
        soft = torch.sigmoid(((2.0 / 3.0) * msb.detach() - t) / self.tau)
        g = hard + (soft - soft.detach())  # the hard gate, the surrogate's gradient
        self.last_gate_rate = float(hard.mean())
        self.soft_gate_rate = soft.mean()
        return (2 * msb + g * lsb) / 3

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v:g}" for k, v in self.gate_options.items())
        return super().extra_repr() + f", gate=({opts}), quantise={self.quantise}"  # type: ignore[misc]


class GatedLinear(_Gated, BinaryLinear):
    """A ``BinaryLinear`` on frac2 inputs with a precision-gated LSB plane; ``gate`` holds
    the gate options (``GATE_DEFAULTS``)."""

    def __init__(self, in_features: int, out_features: int, scale: bool = False,
                 bias: bool = False, pruned: list[int] | tuple[int, ...] = (),
                 gate: dict[str, float] | None = None):
        super().__init__(in_features, out_features, scale, bias, pruned)
        self._init_gate(out_features, in_features, gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(self.gated_matrix(x, self.binary_weight(), (1, -1)))


class GatedConv2d(_Gated, BinaryConv2d):
    """A ``BinaryConv2d`` on frac2 inputs with a precision-gated LSB plane; it pads with
    +1 or -1 only (a frac2 code), never zeros."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, padding: int = 0, pad_value: int = 0,
                 scale: bool = False, bias: bool = False,
                 pruned: list[int] | tuple[int, ...] = (),
                 gate: dict[str, float] | None = None):
        if padding and pad_value == 0:
            raise ValueError("a gated convolution pads with +1 or -1 (a frac2 code), not "
                             "zeros; give pad_value 1 or -1")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, pad_value,
                         scale, bias, pruned)
        self._init_gate(out_channels, in_channels * kernel_size ** 2, gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(self.gated_matrix(self.pad(x), self.binary_weight(), (1, -1, 1, 1)))


def gated_layers(model: nn.Module) -> dict[str, GatedConv2d | GatedLinear]:
    """The gated layers of ``model`` by module path (``layers.4``)."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, (GatedConv2d, GatedLinear))}


def set_quantise(model: nn.Module, on: bool) -> None:
    """Quantised (frac2 codes, gated LSB planes) or, with ``on`` False, real activations in
    every ``FracActivation`` and gated layer of ``model`` (binary activations stay)."""
    for m in model.modules():
        if isinstance(m, (FracActivation, GatedConv2d, GatedLinear)):
            m.quantise = on


class Scores(nn.Module):
    """Per-class float scale and bias applied to the classifier's integer dot products.

    The hardware emits the integer dot products; the host applies this affine map (it
    keeps the trained logits' argmax) before taking the argmax.
    """

    def __init__(self, classes: int, fan_in: int):
        super().__init__()
        self.scale = nn.Parameter(torch.full((classes,), fan_in ** -0.5))
        self.bias = nn.Parameter(torch.zeros(classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.bias


def clip_latent_weights(model: nn.Module) -> None:
    """Clip the latent weights of every binary layer to [-1, 1] (call after each step)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (BinaryLinear, BinaryConv2d)):
                m.weight.clamp_(-1.0, 1.0)
