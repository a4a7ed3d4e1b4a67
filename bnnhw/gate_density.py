"""Gate densities of precision-gated layers, measured on data (FracBNN's sparse LSB path).

A gated layer's engine (``rtl_gen.gated_mvtu``) runs its LSB pass only for the neuron folds
(``pe`` rows at one output pixel) in which at least one row's gate is open, so its cycles
per image are ``P * NF * SF * (1 + d)`` with ``d`` the *item density*: the fraction of
(pixel, neuron fold) items with an open gate (``bnnhw.folding``). ``d`` depends on ``pe``;
the *channel density* is the fraction of open gates itself (``d`` at ``pe = 1``).

``measure`` runs the golden model's gates (``bnnhw.golden.gate_maps``) on images and
returns, per gated node, both densities for every ``pe`` dividing its rows; ``attach``
stores them in the graph's meta (``"gate_density"``), where the folding, the cycle model
and the optimiser read them. ``model_file.load`` measures them on the test images of the
data set the checkpoint was trained on (the bundled MNIST when that set is gone).
"""

from __future__ import annotations

from typing import Any

import torch

from . import golden, ir

DEFAULT_IMAGES = 256


def item_density(gates: torch.Tensor, pe: int) -> float:
    """The fraction of (pixel, neuron fold) items of gate bits ``gates[..., R]`` with at
    least one open gate among their ``pe`` rows."""
    r = gates.shape[-1]
    items = gates.reshape(-1, r // pe, pe).amax(dim=-1)
    return float(items.to(torch.float64).mean()) if items.numel() else 0.0


def measure(graph: ir.Graph, images: Any) -> dict[str, dict[str, Any]]:
    """Per gated node: ``{"channel": d, "items": {pe: d_pe}}`` measured on ``images``."""
    out = {}
    for name, g in golden.gate_maps(graph, images).items():
        r = g.shape[-1]
        items = {str(pe): item_density(g, pe) for pe in range(1, r + 1) if r % pe == 0}
        out[name] = {"channel": items["1"], "items": items}
    return out


def attach(graph: ir.Graph, images: Any, source: str) -> ir.Graph:
    """``graph`` with its gate densities measured on ``images`` in its meta (unchanged for a
    graph without gated layers)."""
    layers = measure(graph, images)
    if not layers:
        return graph
    meta = {**graph.meta, "gate_density": {"images": len(images), "source": source,
                                           "layers": layers}}
    return ir.Graph(graph.nodes, meta)


def has_gates(graph: ir.Graph) -> bool:
    return any(isinstance(n, (ir.Conv, ir.Dense)) and n.gated for n in graph.nodes)


def training_images(meta: dict[str, Any], shape: tuple[int, int, int],
                    count: int = DEFAULT_IMAGES) -> tuple[torch.Tensor, str]:
    """Up to ``count`` test images of the data set a checkpoint's ``meta`` names, fitted to
    the model's input ``shape`` (C, H, W); the bundled MNIST when that set cannot be read."""
    from .data import adapt, load_dataset
    from .errors import BnnhwError

    name, folder = meta.get("data") or "mnist", meta.get("data_dir")
    try:
        data = load_dataset(name, folder)
    except BnnhwError:
        name, data = "mnist", load_dataset("mnist")
    try:
        x = adapt(data.test_x[:count], shape)
    except BnnhwError:  # the model's input does not take these images: random pixels
        from .check import random_images

        return random_images(shape, count), f"{count} random images"
    return x, f"{len(x)} test images of {name}"


def attach_for_checkpoint(graph: ir.Graph, meta: dict[str, Any],
                          shape: tuple[int, int, int]) -> ir.Graph:
    """``attach`` on ``training_images`` for a lowered checkpoint with gated layers."""
    if not has_gates(graph):
        return graph
    images, source = training_images(meta, shape)
    return attach(graph, images, source)
