"""Class specialisation: a trained model narrowed to a subset of its classes.

``specialise`` gives the spec and starting parameters of the model that keeps only the
classifier rows (and their logit scales and biases) of the chosen classes, every other
parameter as trained; ``subset_classes`` gives the data set of those classes, relabelled
``0..k-1`` in the order given. Fine-tuning it with kernel-sparsity pruning
(``bnnhw.methods``) lets the hidden layers shed the filters the other classes needed.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from .data import Dataset
from .nn import build_model, normalize_spec


def specialise(spec: dict[str, Any], state: dict[str, torch.Tensor], classes: list[int]
               ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(spec, state_dict)`` of ``spec``'s model keeping only ``classes`` (indices of its
    classifier's rows, in the order wanted)."""
    spec = copy.deepcopy(normalize_spec(spec))
    old = spec["layers"][-1]["out"]
    spec["layers"][-1]["out"] = len(classes)
    spec = normalize_spec(spec)
    want = build_model(spec).state_dict()
    rows = torch.tensor(classes, dtype=torch.long)
    out = {}
    for key, value in want.items():
        parent = state[key]
        if parent.shape != value.shape:
            # a classifier tensor: one entry (row) per class
            assert parent.shape[0] == old and value.shape[0] == len(classes), key
            parent = parent[rows]
        out[key] = parent.clone()
    return spec, out


def subset_classes(data: Dataset, classes: list[int]) -> Dataset:
    """The images of ``classes`` only, label ``classes[i]`` becoming ``i``."""
    remap = torch.full((len(data.classes),), -1, dtype=torch.int64)
    remap[torch.tensor(classes)] = torch.arange(len(classes))

    def pick(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = remap[y] >= 0
        return x[keep], remap[y[keep]]

    train_x, train_y = pick(data.train_x, data.train_y)
    test_x, test_y = pick(data.test_x, data.test_y)
    name = f"{data.name}[{','.join(data.classes[c] for c in classes)}]"
    return Dataset(name, train_x, train_y, test_x, test_y,
                   tuple(data.classes[c] for c in classes), data.shape)
