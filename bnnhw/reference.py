"""Bit-exact reference functions, one per hardware operation.

These are the integer models the golden model (``bnnhw.golden``) is assembled from and the
RTL block tests compare against. Every function accepts numpy arrays or torch tensors,
allows leading batch dimensions, uses integer torch operations only and returns a torch
``int64`` tensor. Conventions (docs/architecture.md, "Numeric conventions"):

- a binary value is a bit ``b`` standing for ``2b - 1`` (bit 1 is +1, bit 0 is -1);
- feature maps are HWC: ``x[..., H, W, C]``, channel innermost;
- a window of a sliding-window generator lists its ``K * K * C`` elements in
  ``(ky, kx, c)`` order (``c`` fastest), which is also the column order of conv weights;
- comparisons are ``acc >= T`` with signed integer thresholds ``T``;
- a 2-bit activation code ``q`` in ``0..3`` (a fractional activation, value ``(2q - 3) /
  3``) is ``sum_k (acc >= T_k)`` over three ascending thresholds (``multi_threshold``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .numerics import ENCODINGS, thermometer_thresholds

__all__ = [
    "as_int64", "encode", "maxpool", "multi_threshold", "popcount_matvec", "signed_matvec",
    "sliding_window", "threshold",
]

# Above this magnitude an int32 matmul could overflow; int64 is used instead (slower).
_INT32_SAFE = 2**31 - 1


def as_int64(x: Any) -> torch.Tensor:
    """``x`` as an int64 tensor (no copy when it already is one)."""
    if isinstance(x, torch.Tensor):
        if x.is_floating_point() or x.is_complex():
            raise ValueError(f"expected an integer tensor, not dtype {x.dtype}")
        return x.to(torch.int64)
    a = np.asarray(x)
    if a.dtype.kind not in "biu":
        raise ValueError(f"expected an integer array, not dtype {a.dtype}")
    if a.dtype != np.int64 or not a.flags.writeable:
        a = a.astype(np.int64)  # a copy: torch must not alias read-only or narrower arrays
    return torch.from_numpy(a)


def _check_bits(name: str, x: torch.Tensor, bits: int = 1) -> None:
    if x.numel():
        lo, hi = (int(v) for v in torch.aminmax(x))
        if lo < 0 or hi >= 1 << bits:
            want = "bits 0/1" if bits == 1 else f"{bits}-bit codes 0..{(1 << bits) - 1}"
            raise ValueError(f"{name} must hold {want}, found values in {lo}..{hi}")


def _matmul(x: torch.Tensor, w: torch.Tensor, bound: int) -> torch.Tensor:
    """Exact ``x @ w.T`` for integer operands; ``bound`` bounds every partial sum's magnitude.

    int32 matmul is an order of magnitude faster than int64 on CPU, and exact while no
    partial sum leaves the int32 range, which ``bound`` guarantees.
    """
    dtype = torch.int32 if bound <= _INT32_SAFE else torch.int64
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1]).to(dtype)
    out = torch.matmul(flat, w.to(dtype).T.contiguous())
    return out.to(torch.int64).reshape(*lead, w.shape[0])


def encode(pixels: Any, encoding: str, threshold: int = 128, levels: int = 8,
           table: Any = None) -> torch.Tensor:
    """Encode 8-bit pixels ``[..., H, W, C]`` for the first layer.

    - ``binary``: ``[..., H, W, C]`` bits, 1 where ``pixel >= threshold``;
    - ``thermometer``: ``[..., H, W, C * levels]`` bits, channel ``c * levels + k`` is 1
      where ``pixel >= thermometer_thresholds(levels)[k]``;
    - ``uint8``: the pixel values unchanged, or ``table[pixel]`` given a 256-entry
      ``table`` of values 0..255.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
    p = as_int64(pixels)
    if p.numel() and (int(p.min()) < 0 or int(p.max()) > 255):
        raise ValueError(f"pixels must lie in 0..255, found {int(p.min())}..{int(p.max())}")
    if encoding == "uint8":
        if table is None:
            return p.clone()
        t = as_int64(table)
        if t.shape != (256,) or int(t.min()) < 0 or int(t.max()) > 255:
            raise ValueError(f"a pixel table must hold 256 values 0..255, not shape "
                             f"{tuple(t.shape)}")
        return t[p]
    if encoding == "binary":
        return (p >= int(threshold)).to(torch.int64)
    t = torch.tensor(thermometer_thresholds(int(levels)), dtype=torch.int64)
    bits = (p.unsqueeze(-1) >= t).to(torch.int64)  # [..., H, W, C, L]
    return bits.reshape(*p.shape[:-1], p.shape[-1] * int(levels))


def sliding_window(x: Any, kernel: int, stride: int = 1, padding: int = 0,
                   pad_value: int = 0) -> torch.Tensor:
    """Windows of ``x[..., H, W, C]`` as ``[..., OH, OW, K * K * C]``, ``(ky, kx, c)`` order.

    The input is surrounded by ``padding`` rows/columns of ``pad_value`` first;
    ``OH = (H + 2 * padding - K) // stride + 1`` (same for ``OW``).
    """
    x = as_int64(x)
    if x.dim() < 3:
        raise ValueError(f"sliding_window needs an [..., H, W, C] map, not shape "
                         f"{tuple(x.shape)}")
    k, s, p = int(kernel), int(stride), int(padding)
    if k < 1 or s < 1 or p < 0:
        raise ValueError(f"sliding_window needs kernel >= 1, stride >= 1, padding >= 0, "
                         f"not {k}, {s}, {p}")
    *lead, h, w, c = x.shape
    if k > h + 2 * p or k > w + 2 * p:
        raise ValueError(f"kernel {k} is larger than the padded input {h + 2 * p}x{w + 2 * p}")
    if p:
        padded = torch.full((*lead, h + 2 * p, w + 2 * p, c), int(pad_value), dtype=torch.int64)
        padded[..., p:p + h, p:p + w, :] = x
        x = padded
    win = x.unfold(-3, k, s).unfold(-3, k, s)  # [..., OH, OW, C, ky, kx]
    oh, ow = win.shape[-5], win.shape[-4]
    return win.permute(*range(len(lead)), -5, -4, -2, -1, -3).reshape(*lead, oh, ow, k * k * c)


def _matvec_operands(name: str, x: Any, w: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``x[..., C]`` and bit weights ``w[R, C]`` as int64 tensors, or ValueError."""
    x, w = as_int64(x), as_int64(w)
    if w.dim() != 2 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"{name} needs x[..., C] and w[R, C], not shapes "
                         f"{tuple(x.shape)} and {tuple(w.shape)}")
    _check_bits("w", w)
    return x, w


def popcount_matvec(x: Any, w: Any) -> torch.Tensor:
    """``popcount(xnor(x, w[r]))`` for every row: bits ``x[..., C]``, ``w[R, C]`` ->
    ``[..., R]``."""
    x, w = _matvec_operands("popcount_matvec", x, w)
    _check_bits("x", x)
    # popcount(xnor(x, w)) = x.w + (1 - x).(1 - w) = 2 x.w - sum(x) - sum(w) + C: one
    # matmul on the bits themselves, no elementwise pass over the (large) window tensor
    c = w.shape[1]
    xw = _matmul(x, w, c)
    return 2 * xw - x.sum(dim=-1, keepdim=True) - w.sum(dim=1) + c


def signed_matvec(x: Any, w: Any) -> torch.Tensor:
    """``sum_c x[..., c] * (2 * w[r, c] - 1)``: integers ``x[..., C]``, bits ``w[R, C]``."""
    x, w = _matvec_operands("signed_matvec", x, w)
    bound = int(x.abs().max()) * w.shape[1] if x.numel() else 0
    return _matmul(x, 2 * w - 1, bound)


def threshold(acc: Any, t: Any, row_class: Any = None, col_class: Any = None) -> torch.Tensor:
    """Threshold bits ``acc >= T`` with per-border-class thresholds.

    Conv form: ``acc[..., OH, OW, R]``, ``t[NY, NX, R]``, ``row_class[OH]`` and
    ``col_class[OW]`` (ints in ``0..NY-1`` / ``0..NX-1``); output bit ``[oy, ox, r]`` is
    ``acc >= t[row_class[oy], col_class[ox], r]``. Dense form (both classes ``None``):
    ``acc[..., R]`` and ``t`` of shape ``[R]`` or ``[1, 1, R]``.
    """
    acc, t = as_int64(acc), as_int64(t)
    if (row_class is None) != (col_class is None):
        raise ValueError("threshold needs both row_class and col_class, or neither")
    if row_class is None:
        if t.dim() == 3 and t.shape[:2] == (1, 1):
            t = t[0, 0]
        if t.dim() != 1 or acc.shape[-1:] != t.shape:
            raise ValueError(f"threshold needs acc[..., R] and t[R] (or [1, 1, R]), not "
                             f"shapes {tuple(acc.shape)} and {tuple(t.shape)}")
        return (acc >= t).to(torch.int64)
    rc, cc = as_int64(row_class), as_int64(col_class)
    if (t.dim() != 3 or acc.dim() < 3 or rc.shape != acc.shape[-3:-2]
            or cc.shape != acc.shape[-2:-1] or acc.shape[-1] != t.shape[2]):
        raise ValueError(f"threshold needs acc[..., OH, OW, R], t[NY, NX, R], row_class[OH], "
                         f"col_class[OW], not shapes {tuple(acc.shape)}, {tuple(t.shape)}, "
                         f"{tuple(rc.shape)}, {tuple(cc.shape)}")
    if rc.numel() and (int(rc.min()) < 0 or int(rc.max()) >= t.shape[0]):
        raise ValueError(f"row_class values must lie in 0..{t.shape[0] - 1}")
    if cc.numel() and (int(cc.min()) < 0 or int(cc.max()) >= t.shape[1]):
        raise ValueError(f"col_class values must lie in 0..{t.shape[1] - 1}")
    full = t[rc][:, cc]  # [OH, OW, R]
    return (acc >= full).to(torch.int64)


def multi_threshold(acc: Any, t: Any, row_class: Any = None,
                    col_class: Any = None) -> torch.Tensor:
    """2-bit codes ``sum_k (acc >= t[..., k])`` over three thresholds per channel.

    Like ``threshold`` with a last axis of three thresholds: conv form ``t[NY, NX, R, 3]``
    with ``row_class``/``col_class``, dense form ``t[R, 3]`` or ``[1, 1, R, 3]``. Output
    ``[..., R]`` codes ``0..3``; with ascending thresholds ``T0 <= T1 <= T2`` the code is
    the activation level ``[acc >= T0] + [acc >= T1] + [acc >= T2]``.
    """
    t = as_int64(t)
    if t.dim() not in (2, 4) or t.shape[-1] != 3:
        raise ValueError(f"multi_threshold needs thresholds t[NY, NX, R, 3] or t[R, 3], not "
                         f"shape {tuple(t.shape)}")
    return sum(threshold(acc, t[..., k], row_class, col_class) for k in range(3))


def maxpool(x: Any, kernel: int, stride: int | None = None, and_mask: Any = None,
            element_bits: int = 1) -> torch.Tensor:
    """Max-pool of ``x[..., H, W, C]``: the max over each window, the min where
    ``and_mask[c]``.

    Elements are ``element_bits``-bit unsigned codes: bits (1, the default: OR and AND) or
    2-bit activation codes 0..3 (2: the max and min of the codes, compared unsigned); any
    other value is refused. No padding; ``OH = (H - K) // stride + 1`` (``stride``
    defaults to ``kernel``). ``and_mask`` (``[C]`` bits, default all 0) marks channels
    pooled with the min (the max of a decreasing function's input, see ``bnnhw.frontend``).
    """
    x = as_int64(x)
    if element_bits not in (1, 2):
        raise ValueError(f"maxpool element_bits must be 1 or 2, not {element_bits!r}")
    _check_bits("x", x, element_bits)
    k = int(kernel)
    s = k if stride is None else int(stride)
    if x.dim() < 3 or k < 1 or s < 1 or k > x.shape[-3] or k > x.shape[-2]:
        raise ValueError(f"maxpool needs an [..., H, W, C] map at least {k}x{k} and "
                         f"stride >= 1, not shape {tuple(x.shape)} and stride {s}")
    oh, ow = (x.shape[-3] - k) // s + 1, (x.shape[-2] - k) // s + 1
    ored = anded = None
    for ky in range(k):  # k * k strided views of the output size: cheaper than unfold
        for kx in range(k):
            tap = x[..., ky:ky + (oh - 1) * s + 1:s, kx:kx + (ow - 1) * s + 1:s, :]
            ored = tap if ored is None else torch.maximum(ored, tap)
            anded = tap if anded is None else torch.minimum(anded, tap)
    assert ored is not None and anded is not None
    if and_mask is None:
        return ored.clone()
    mask = as_int64(and_mask)
    if mask.shape != (x.shape[-1],):
        raise ValueError(f"and_mask must have one bit per channel ({x.shape[-1]}), not shape "
                         f"{tuple(mask.shape)}")
    _check_bits("and_mask", mask)
    return torch.where(mask.bool(), anded, ored)
