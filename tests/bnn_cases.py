"""Models for the frontend / golden / check tests: zoo models with far-from-trivial
BatchNorm statistics, and random specs covering every feature the frontend lowers."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from bnnhw.check import randomize_batchnorm
from bnnhw.nn import BNN, SpecError, build_model, normalize_spec, zoo


def zoo_model(name: str, seed: int = 0, calibration: int = 8, **kwargs: Any) -> BNN:
    torch.manual_seed(seed)
    model = build_model(zoo.get_spec(name, **kwargs))
    for m in model.modules():  # nonzero biases / scores so every term of the maths is used
        if hasattr(m, "bias") and isinstance(m.bias, torch.Tensor) and m.bias.requires_grad \
                and not isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                m.bias.normal_(0, 0.3)
    return randomize_batchnorm(model, seed, calibration)


def random_spec(rng: np.random.Generator) -> dict[str, Any]:
    """A random valid spec: every encoding, odd channel counts, kernels 1-5, strides 1-2,
    paddings 0-2 with pad values 0/+1/-1, pools before and after BN, scale/bias on/off."""
    while True:
        enc = str(rng.choice(["binary", "uint8", "thermometer"]))
        spec: dict[str, Any] = {"input": {
            "shape": [int(rng.integers(1, 4)), int(rng.integers(5, 13)),
                      int(rng.integers(5, 13))],
            "encoding": enc, "threshold": int(rng.integers(1, 255)),
            "levels": int(rng.integers(1, 4))}, "layers": []}
        layers = spec["layers"]
        for i in range(int(rng.integers(0, 3))):
            pad_value = 0 if (i == 0 and enc == "uint8") else int(rng.choice([0, 1, -1]))
            layers.append({"type": "conv", "out": int(rng.choice([1, 3, 5, 7, 9])),
                           "kernel": int(rng.integers(1, 6)), "stride": int(rng.integers(1, 3)),
                           "padding": int(rng.integers(0, 3)), "pad_value": pad_value,
                           "scale": bool(rng.random() < 0.5), "bias": bool(rng.random() < 0.5)})
            if rng.random() < 0.6:
                layers.append({"type": "maxpool", "kernel": int(rng.integers(1, 4)),
                               "stride": int(rng.integers(1, 3)),
                               "before_bn": bool(rng.random() < 0.5)})
        for _ in range(int(rng.integers(0 if layers else 1, 3))):
            layers.append({"type": "dense", "out": int(rng.choice([1, 3, 5, 7, 11])),
                           "scale": bool(rng.random() < 0.5), "bias": bool(rng.random() < 0.5)})
        layers.append({"type": "dense", "out": int(rng.integers(2, 6)),
                       "scale": bool(rng.random() < 0.5), "bias": bool(rng.random() < 0.5)})
        try:
            return normalize_spec(spec)
        except SpecError:
            continue


def random_model(seed: int) -> BNN:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = build_model(random_spec(rng))
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "bias") and isinstance(m.bias, torch.Tensor) \
                    and not isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.bias.normal_(0, 0.5)
    return randomize_batchnorm(model, seed)


def spec_model(layers: list[dict[str, Any]], encoding: str = "binary",
               shape: tuple[int, int, int] = (2, 9, 9), seed: int = 0) -> BNN:
    """A model of the given layers with randomised BatchNorm (see ``randomize_batchnorm``)."""
    torch.manual_seed(seed)
    model = build_model({"input": {"shape": list(shape), "encoding": encoding},
                         "layers": layers})
    return randomize_batchnorm(model, seed)


def cnv_small():
    """CNV-shaped: uint8 input, valid convolutions, two pools."""
    return spec_model([{"type": "conv", "out": 8, "kernel": 3},
                       {"type": "conv", "out": 8, "kernel": 3},
                       {"type": "maxpool", "kernel": 2},
                       {"type": "conv", "out": 16, "kernel": 3},
                       {"type": "maxpool", "kernel": 2},
                       {"type": "dense", "out": 16},
                       {"type": "dense", "out": 10}],
                      encoding="uint8", shape=(3, 16, 16), seed=4)


def padded_small():
    """Zero padding 1 on binary maps (border-class thresholds) and a pool before BN."""
    return spec_model([{"type": "conv", "out": 6, "kernel": 3, "padding": 1},
                       {"type": "conv", "out": 8, "kernel": 3, "padding": 1},
                       {"type": "maxpool", "kernel": 2, "before_bn": True},
                       {"type": "conv", "out": 8, "kernel": 3, "padding": 1, "pad_value": -1},
                       {"type": "dense", "out": 10}],
                      encoding="thermometer", shape=(1, 10, 10), seed=5)


VERIFY_MODELS = {
    "tfc": lambda: zoo_model("tfc", seed=0, calibration=2),
    "sfc": lambda: zoo_model("sfc", seed=0, calibration=2),
    "cnv_small": cnv_small,
    "padded_small": padded_small,
}
