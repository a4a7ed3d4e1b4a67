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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..numerics import ENCODINGS, PAD_VALUES, thermometer_thresholds
from .binarize import binarize_activation, binarize_weight

__all__ = ["ENCODINGS", "PAD_VALUES", "BinaryActivation", "BinaryConv2d", "BinaryLinear",
           "InputEncoder", "Scores", "clip_latent_weights", "thermometer_thresholds"]


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.binary_weight())
        if self.scale:
            y = y * _xnor_scale(self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_amount:
            x = F.pad(x, (self.pad_amount,) * 4, value=float(self.pad_value))
        y = F.conv2d(x, self.binary_weight(), stride=self.stride)
        if self.scale:
            y = y * _xnor_scale(self.weight).view(1, -1, 1, 1)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

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
