"""Binarizers with straight-through estimators.

Convention (docs/architecture.md, "Numeric conventions"): a binary value is +1 or -1 and
``sign(0) = +1``.
"""

from __future__ import annotations

import torch


def sign(x: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``x >= 0``, ``-1`` elsewhere (so ``sign(0) = +1``), same dtype as ``x``."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class _SignIdentitySTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _SignClippedSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, window):
        ctx.save_for_backward(x)
        ctx.window = window
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= ctx.window).to(grad.dtype) / ctx.window, None


def binarize_weight(w: torch.Tensor) -> torch.Tensor:
    """Sign of latent weights; the gradient passes through unchanged (identity STE)."""
    return _SignIdentitySTE.apply(w)


def binarize_activation(x: torch.Tensor, window: float = 1.0) -> torch.Tensor:
    """Sign of activations; the gradient is that of ``hardtanh(x / window)``: ``1 / window``
    where ``|x| <= window``, 0 elsewhere (clipped STE)."""
    return _SignClippedSTE.apply(x, float(window))
