"""Named model specs.

- ``tfc``, ``sfc``, ``lfc``: FINN's fully connected MNIST networks, 784 -> 3 x {64, 256,
  1024} -> 10, binary input.
- ``cnv``: FINN/Brevitas CNV, 3x32x32 uint8 input,
  64C3-64C3-MP2-128C3-128C3-MP2-256C3-256C3-FC512-FC512-FC10, valid convolutions.
- ``vgg``: the BinaryConnect VGG, 128C3-128C3-MP2-256C3-256C3-MP2-512C3-512C3-MP2-
  FC1024-FC1024-FC10 with padding 1, channel counts times ``width``.
- ``tiny``: a small conv network on MNIST-sized input for fast tests.
- ``cnv-frac``: CNV's topology with FracBNN-style 2-bit fractional activations in every
  hidden layer (so every layer after the first is precision-gated) and an 8-level
  thermometer input (24 binary channels: 3 bits of each colour, where 4 levels would
  keep 2; the first layer stays binary-input, as in FracBNN, and costs 216 columns).
- ``tiny-frac``: ``tiny`` with frac2 activations (its dense layers gated) on a 2-level
  thermometer input, small enough for quick hardware regressions.
"""

from __future__ import annotations

from typing import Any

from .spec import SpecError, normalize_spec


def _fc(hidden: int) -> dict[str, Any]:
    return {"input": {"shape": [1, 28, 28], "encoding": "binary"},
            "layers": [{"type": "dense", "out": hidden} for _ in range(3)]
            + [{"type": "dense", "out": 10}]}


def _cnv() -> dict[str, Any]:
    conv = [{"type": "conv", "out": n, "kernel": 3} for n in (64, 64, 128, 128, 256, 256)]
    pool = {"type": "maxpool", "kernel": 2}
    return {"input": {"shape": [3, 32, 32], "encoding": "uint8"},
            "layers": conv[:2] + [pool] + conv[2:4] + [pool] + conv[4:]
            + [{"type": "dense", "out": 512}, {"type": "dense", "out": 512},
               {"type": "dense", "out": 10}]}


def _vgg(width: float = 1.0) -> dict[str, Any]:
    def ch(n: int) -> int:
        return max(1, round(n * width))

    layers: list[dict[str, Any]] = []
    for n in (128, 256, 512):
        layers += [{"type": "conv", "out": ch(n), "kernel": 3, "padding": 1}] * 2
        layers.append({"type": "maxpool", "kernel": 2})
    layers += [{"type": "dense", "out": ch(1024)}, {"type": "dense", "out": ch(1024)},
               {"type": "dense", "out": 10}]
    return {"input": {"shape": [3, 32, 32], "encoding": "uint8"},
            "layers": [dict(lay) for lay in layers]}


def _tiny() -> dict[str, Any]:
    return {"input": {"shape": [1, 28, 28], "encoding": "binary"},
            "layers": [{"type": "conv", "out": 8, "kernel": 3, "stride": 2},
                       {"type": "maxpool", "kernel": 2},
                       {"type": "dense", "out": 32},
                       {"type": "dense", "out": 10}]}


def _frac(spec: dict[str, Any], levels: int) -> dict[str, Any]:
    """``spec`` on a ``levels``-level thermometer input with every hidden layer frac2."""
    spec["input"] = {"shape": spec["input"]["shape"], "encoding": "thermometer",
                     "levels": levels}
    matrix = [lay for lay in spec["layers"] if lay["type"] != "maxpool"]
    for lay in matrix[:-1]:
        lay["activation"] = "frac2"
    return spec


_ZOO = {
    "tfc": lambda: _fc(64),
    "sfc": lambda: _fc(256),
    "lfc": lambda: _fc(1024),
    "cnv": _cnv,
    "vgg": _vgg,
    "tiny": _tiny,
    "cnv-frac": lambda: _frac(_cnv(), 8),
    "tiny-frac": lambda: _frac(_tiny(), 2),
}
NAMES = tuple(_ZOO)


def get_spec(name: str, **kwargs: Any) -> dict[str, Any]:
    """The normalised spec of zoo model ``name`` (``vgg`` takes ``width``)."""
    if name not in _ZOO:
        raise SpecError(f"unknown model {name!r}: choose one of {', '.join(NAMES)} "
                        f"or give a spec JSON file")
    spec = _ZOO[name](**kwargs)
    spec["name"] = name
    return normalize_spec(spec)
