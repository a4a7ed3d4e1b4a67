"""Training methods beyond plain STE backpropagation, each giving an ordinary ``BNN``.

- ``self-binarizing`` (Lahoud et al., "Self-Binarizing Networks"): weights and
  activations go through ``tanh(slope * x)``; the slope grows geometrically from
  ``slope_start`` each epoch (``slope_at``) until the smooth network is close to the
  binary one, which is what is saved (``set_slope(model, None)``). BatchNorm followed by
  the sharpened activation is the usual threshold. The BatchNorm statistics are measured
  again on the binary network at the end (``recalibrate_batchnorm``): the smooth weights'
  dot products are not quite the binary ones.
- ``dfa`` (Direct Feedback Alignment) and ``drtp`` (Direct Random Target Projection), as
  adapted to binary networks by Crulis et al. (SAC 2023): the forward pass is the binary
  network; each hidden layer's block (matrix layer, BatchNorm, activation, and the pools
  before it) learns from a signal sent straight from the output through a fixed random
  matrix ``B_l`` (``FeedbackAlignment``): the output error ``softmax - onehot`` for DFA,
  the one-hot target itself (``-onehot``) for DRTP. Inside a block the gradient is the
  local one (the activation's clipped STE, BatchNorm, the weights' identity STE); the
  classifier learns from the loss itself.
- kernel-sparsity pruning (Berthelier's thesis, ch. 3): per filter the pseudo-norm
  ``n_k = mean |W_k|`` of its latent weights; the loss gets ``lambda * ||N||_1 / ||N||_2``
  over the filters of every hidden layer (``sparsity_loss``); after each epoch
  ``prune_filters`` normalises ``N`` to sum 1, sorts it ascending and prunes the filters
  whose cumulative sum stays below ``t``: their latent weights are zeroed and stay zero
  (``zero_pruned``) and the spec lists them (``pruned``), so the frontend removes them from
  the hardware. At least one filter of each layer is kept.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .nn import BinaryActivation, BinaryConv2d, BinaryLinear

METHODS = ("ste", "self-binarizing", "dfa", "drtp")
FEEDBACK_METHODS = ("dfa", "drtp")
DEFAULT_SLOPE_START = 1.0
DEFAULT_SLOPE_FINAL = 200.0
DEFAULT_PRUNE_T = 0.01
DEFAULT_PRUNE_MULTIPLE = 8


# --- self-binarizing -------------------------------------------------------------------------

def slope_at(epoch: int, epochs: int, start: float, final: float | None,
             growth: float | None) -> float:
    """The slope of epoch ``epoch`` (1-based): ``start * growth ** (epoch - 1)``, where
    ``growth`` is given or makes the last epoch's slope ``final``."""
    if growth is None:
        final = DEFAULT_SLOPE_FINAL if final is None else final
        growth = (final / start) ** (1.0 / (epochs - 1)) if epochs > 1 else 1.0
        if epochs == 1:
            return final
    return start * growth ** (epoch - 1)


def set_slope(model: nn.Module, slope: float | None) -> None:
    """Smooth (``tanh(slope * x)``) or, with ``None``, binary weights and activations."""
    for m in model.modules():
        if isinstance(m, (BinaryConv2d, BinaryLinear, BinaryActivation)):
            m.slope = slope


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> None:
    """Measure every BatchNorm's running statistics again on images ``x`` (cumulative
    average over the batches); the model is left in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    for i in range(0, len(x), batch_size):
        model(x[i:i + batch_size].to(torch.float32))
    for bn, mom in zip(bns, saved):
        bn.momentum = mom
    model.eval()


@torch.no_grad()
def centre_biases(model: nn.Module, x: torch.Tensor) -> bool:
    """Start every hidden layer without BatchNorm (and with a bias) at the bias that
    centres its pre-activations on images ``x``: ``-mean(dot)`` per channel, layer by
    layer. Without it, a binary input's large common offset (MNIST's background) makes
    every first-layer bit the same for every image. Returns whether any bias was set."""
    mods = list(model.layers)
    targets = [i for i, m in enumerate(mods) if isinstance(m, (BinaryConv2d, BinaryLinear))
               and m.bias is not None and i + 1 < len(mods)
               and isinstance(mods[i + 1], BinaryActivation)]
    if not targets:
        return False
    was = model.training
    model.eval()
    for t in targets:
        z = model.encoder(x.to(torch.float32))
        for i, m in enumerate(mods):
            z = m(z)
            if i == t:
                dims = (0, 2, 3) if z.dim() == 4 else (0,)
                mods[t].bias -= z.mean(dim=dims)
                break
    model.train(was)
    return True


# --- feedback alignment ----------------------------------------------------------------------

class FeedbackAlignment:
    """DFA or DRTP on a ``BNN``: ``forward`` cuts the graph after every hidden activation,
    ``backward`` sends each cut its projected signal (module docstring).

    The fixed matrices are drawn (uniform in ``[-1, 1] / sqrt(classes)``) from ``seed`` the
    first time a cut's shape is seen.
    """

    def __init__(self, method: str, classes: int, seed: int):
        if method not in FEEDBACK_METHODS:
            raise ValueError(f"feedback method must be one of {FEEDBACK_METHODS}, not "
                             f"{method!r}")
        self.method = method
        self.classes = classes
        self.gen = torch.Generator().manual_seed(seed)
        self.matrices: list[torch.Tensor] = []

    def forward(self, model: nn.Module, x: torch.Tensor
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the hidden activations (each cut from what follows it)."""
        taps = []
        z = model.encoder(x)
        for m in model.layers:
            z = m(z)
            if isinstance(m, BinaryActivation):
                taps.append(z)
                z = z.detach()
        return z, taps

    def _matrix(self, i: int, features: int) -> torch.Tensor:
        while len(self.matrices) <= i:
            self.matrices.append(torch.empty(0))
        if self.matrices[i].numel() == 0:
            b = torch.rand(self.classes, features, generator=self.gen) * 2 - 1
            self.matrices[i] = b / math.sqrt(self.classes)
        return self.matrices[i]

    def backward(self, loss: torch.Tensor, logits: torch.Tensor, taps: list[torch.Tensor],
                 target: torch.Tensor) -> None:
        """Gradients: the loss's for the classifier (and any term of ``loss`` on the
        weights), the projected signal for every hidden block."""
        n = logits.shape[0]
        onehot = F.one_hot(target, self.classes).to(logits.dtype)
        if self.method == "dfa":
            signal = torch.softmax(logits.detach(), dim=1) - onehot
        else:
            signal = -onehot
        grads = []
        for i, t in enumerate(taps):
            b = self._matrix(i, t[0].numel())
            grads.append((signal @ b).view_as(t) / n)
        torch.autograd.backward([loss, *taps], [None, *grads])


# --- kernel-sparsity pruning -----------------------------------------------------------------

def hidden_layers(model: nn.Module) -> list[BinaryConv2d | BinaryLinear]:
    """The binary matrix layers of ``model`` but its classifier (the last one)."""
    layers = [m for m in model.layers if isinstance(m, (BinaryConv2d, BinaryLinear))]
    return layers[:-1]


def _norms(layers: list[BinaryConv2d | BinaryLinear]) -> list[torch.Tensor]:
    return [m.weight.abs().mean(dim=tuple(range(1, m.weight.dim()))) for m in layers]


def sparsity_loss(model: nn.Module) -> torch.Tensor:
    """``||N||_1 / ||N||_2`` over the filter pseudo-norms of every hidden layer."""
    n = torch.cat(_norms(hidden_layers(model)))
    return n.sum() / n.norm().clamp_min(1e-12)


def _set_pruned(model: nn.Module, layer: BinaryConv2d | BinaryLinear,
                pruned: list[int]) -> None:
    layer.pruned = tuple(pruned)
    layer.keep.fill_(1.0)
    layer.keep[pruned] = 0.0
    index = list(model.layers).index(layer)
    # the spec layer of module ``index``: count matrix layers up to it
    matrix = [i for i, m in enumerate(model.layers) if isinstance(m, (BinaryConv2d,
                                                                      BinaryLinear))]
    spec_layers = [lay for lay in model.spec["layers"] if lay["type"] != "maxpool"]
    spec_layers[matrix.index(index)]["pruned"] = list(pruned)


@torch.no_grad()
def zero_pruned(model: nn.Module) -> None:
    """Keep the latent weights of pruned filters at zero (call after each step)."""
    for m in hidden_layers(model):
        if m.pruned:
            m.weight[list(m.pruned)] = 0.0


@torch.no_grad()
def prune_filters(model: nn.Module, t: float, multiple: int = 1) -> int:
    """Prune the filters whose normalised pseudo-norms, sorted ascending, sum below
    ``t`` (already pruned ones included); return how many were newly pruned.

    Each layer prunes a multiple of ``multiple`` filters (the candidates of largest norm
    are spared until it does), so its width keeps the divisors its folding had: 256
    filters become 248, 240, ... for ``multiple`` 8, never a prime number like 251 that
    leaves the folding no PE count between 1 and 251. At least one filter of each layer
    is kept."""
    layers = hidden_layers(model)
    norms = _norms(layers)
    flat = torch.cat(norms).to(torch.float64)
    total = float(flat.sum())
    if total <= 0:
        return 0
    order = torch.argsort(flat / total, stable=True)
    below = torch.cumsum((flat / total)[order], 0) < t
    chosen = set(order[below].tolist())
    added, start = 0, 0
    for m, n in zip(layers, norms):
        rows = len(n)
        old = set(m.pruned)
        fresh = sorted((i - start for i in chosen if start <= i < start + rows
                        and i - start not in old), key=lambda i: float(n[i]))
        count = len(old) + len(fresh)
        count -= count % multiple
        while count >= rows:
            count -= multiple if multiple < rows else rows - 1
        new = sorted(old | set(fresh[:max(0, count - len(old))]))
        if new != list(m.pruned):
            added += len(set(new) - old)
            _set_pruned(model, m, new)
        start += rows
    zero_pruned(model)
    return added


def pruning_figures(model: nn.Module) -> dict[str, Any]:
    """Filters per hidden layer and how many are pruned."""
    layers = hidden_layers(model)
    filters = [int(m.weight.shape[0]) for m in layers]
    pruned = [len(m.pruned) for m in layers]
    return {"filters": filters, "pruned": pruned,
            "pruned_fraction": sum(pruned) / max(1, sum(filters))}
