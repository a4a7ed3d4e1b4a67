"""Declarative model specs: a plain JSON-able dict fully describes a model.

```
{"input": {"shape": [1, 28, 28], "encoding": "binary"},
 "layers": [{"type": "conv", "out": 64, "kernel": 3, "stride": 1, "padding": 0},
            {"type": "maxpool", "kernel": 2},
            {"type": "dense", "out": 256},
            {"type": "dense", "out": 10}]}
```

Every ``conv``/``dense`` except the last is followed by BatchNorm (unless ``"batchnorm":
false``) and its activation, binary (``sign``) or fractional (``"activation": "frac2"``,
``FracActivation``: 2-bit codes of value -1, -1/3, +1/3, +1); the last layer must be a
``dense`` classifier, whose integer dot products are mapped to logits by a per-class
float scale and bias (``Scores``). A ``maxpool`` follows the activation of the layer
before it, or, with ``"before_bn": true``, pools that conv's output before its BatchNorm
and activation.

Keys and defaults:

- ``input``: ``shape`` [C, H, W] (required), ``encoding`` ``binary`` | ``uint8`` |
  ``thermometer`` (``binary``), ``threshold`` 0..255 for ``binary`` (128), ``levels``
  1..255 for ``thermometer`` (8);
- ``conv``: ``out``, ``kernel`` (required), ``stride`` (1), ``padding`` (0),
  ``pad_value`` 0 | 1 | -1 (0: zero padding), ``scale`` (false, XNOR-Net per-channel
  scale), ``bias`` (false), ``batchnorm`` (true), ``pruned`` ([]), ``activation``
  ``binary`` | ``frac2`` (``binary``), ``gate`` (below);
- ``maxpool``: ``kernel`` (required), ``stride`` (= kernel), ``before_bn`` (false);
- ``dense``: ``out`` (required), ``scale`` (false), ``bias`` (false), ``batchnorm``
  (true), ``pruned`` ([]), ``activation`` (``binary``; the classifier's must stay
  ``binary``: it has none), ``gate`` (below).

A conv or dense whose input is fractional (the conv/dense before it, through any
max-pools, has ``activation: frac2``) is precision-gated (``GatedConv2d``,
``GatedLinear``): its ``gate`` is an object of gate options, every one filled in
(``bnnhw.nn.layers.GATE_DEFAULTS``): ``target_rate`` (0.1, the fraction of LSB gates
the training regulariser aims at), ``weight`` (1.0, that regulariser's weight in the
objective; 0 turns it off) and ``init`` (0.0, the initial gate threshold). Null or ``{}``
asks for the defaults. Every other layer's ``gate`` normalises to ``null``; options
there are refused. A gated conv that pads must pad with ``pad_value`` 1 or -1 (a frac2
code): zero padding is refused. The classifier can be gated.

``batchnorm: false`` drops a hidden layer's BatchNorm: its bit is the sign of the dot
product plus its bias (give ``bias: true`` for a learnt threshold). Its activation's
straight-through window is scaled by ``1 / sqrt(fan-in)`` (``BinaryActivation.gain``),
which does not change the sign; a frac2 activation quantises ``gain * x`` itself
(``FracActivation.gain``), so there the gain sets its levels' scale against the dot
product and the bias. The classifier has no BatchNorm: ``batchnorm`` must stay
true there. ``pruned`` lists output channels removed by kernel-sparsity pruning
(ascending, at least one channel left; not on the classifier): their binarised weights
are zero, so each outputs a constant bit, and the frontend removes them from the
hardware (``bnnhw.frontend.remove_pruned_channels``).

``normalize_spec`` validates a spec and returns it with every default filled in: that is
what checkpoints store.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from torch import nn

from .. import numerics as nx
from ..validate import ParameterError, choice, flag, integer
from .layers import (
    GATE_DEFAULTS,
    BinaryActivation,
    BinaryConv2d,
    BinaryLinear,
    FracActivation,
    GatedConv2d,
    GatedLinear,
    InputEncoder,
    Scores,
)


class SpecError(ParameterError):
    """A model spec that cannot describe a model; the message names the layer and value."""


_INPUT_KEYS = {"shape": None, "encoding": "binary", "threshold": 128, "levels": 8}
_LAYER_KEYS = {
    "conv": {"type": None, "out": None, "kernel": None, "stride": 1, "padding": 0,
             "pad_value": 0, "scale": False, "bias": False, "batchnorm": True, "pruned": [],
             "activation": "binary", "gate": None},
    "maxpool": {"type": None, "kernel": None, "stride": None, "before_bn": False},
    "dense": {"type": None, "out": None, "scale": False, "bias": False, "batchnorm": True,
              "pruned": [], "activation": "binary", "gate": None},
}
ACTIVATIONS = ("binary", "frac2")
_OPTIONAL = ("stride", "gate")  # keys whose default None is filled in later


def _int(where: str, key: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    return integer(where, key, value, minimum, maximum, error=SpecError, plain=True)


def _bool(where: str, key: str, value: Any) -> bool:
    return flag(where, key, value, error=SpecError)


def _pruned(where: str, value: Any, out: int, last: bool) -> list[int]:
    """The ``pruned`` channel list of a layer with ``out`` outputs, checked."""
    if not isinstance(value, (list, tuple)):
        raise SpecError(f"{where}: pruned must be a list of channel indices, not {value!r}")
    chans = [_int(where, "pruned channel", v, 0, out - 1) for v in value]
    if chans != sorted(set(chans)):
        raise SpecError(f"{where}: pruned channels must be ascending without repeats, not "
                        f"{list(value)!r}")
    if chans and last:
        raise SpecError(f"{where}: the classifier cannot be pruned (its rows are the "
                        f"classes; train with --classes to keep some)")
    if len(chans) >= out:
        raise SpecError(f"{where}: pruned lists all {out} channels; at least one must remain")
    return chans


def _activation(where: str, value: Any, last: bool) -> str:
    """The ``activation`` of a conv/dense layer, checked (the classifier has none)."""
    choice(where, "activation", value, ACTIVATIONS, error=SpecError)
    if last and value != "binary":
        raise SpecError(f"{where}: the classifier has no activation (its integer scores go "
                        f"to the host); activation {value!r} applies to hidden layers only")
    return value


def _gate(where: str, value: Any, gated: bool) -> dict[str, float] | None:
    """The ``gate`` options of a conv/dense layer: filled in on a layer whose input is
    fractional, ``None`` on any other (where only null or {} are accepted)."""
    if value is None or value == {}:
        value = {}
    elif not isinstance(value, dict):
        raise SpecError(f"{where}: gate must be an object of gate options or null, not "
                        f"{value!r}")
    elif not gated:
        raise SpecError(f"{where}: gate options apply to a layer whose input is fractional "
                        f"(the conv/dense before it has activation frac2); this layer's is "
                        f"not, so give no gate")
    if not gated:
        return None
    unknown = sorted(set(value) - set(GATE_DEFAULTS))
    if unknown:
        raise SpecError(f"{where}: unknown gate option {unknown[0]!r} "
                        f"(known: {', '.join(GATE_DEFAULTS)})")
    out = {}
    for key, default in GATE_DEFAULTS.items():
        v = value.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise SpecError(f"{where}: gate {key} must be a finite number, not {v!r}")
        out[key] = float(v)
    if not 0 <= out["target_rate"] <= 1:
        raise SpecError(f"{where}: gate target_rate must be a fraction in [0, 1], not "
                        f"{out['target_rate']!r}")
    if out["weight"] < 0:
        raise SpecError(f"{where}: gate weight must be >= 0, not {out['weight']!r}")
    return out


def _fill(where: str, given: Any, keys: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(given, dict):
        raise SpecError(f"{where} must be an object, not {type(given).__name__}")
    unknown = sorted(set(given) - set(keys))
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(keys)})")
    out = {}
    for key, default in keys.items():
        if key in given:
            out[key] = given[key]
        elif default is None and key not in _OPTIONAL:
            raise SpecError(f"{where}: missing required key {key!r}")
        else:
            out[key] = copy.copy(default)
    return out


def normalize_spec(spec: Any) -> dict[str, Any]:
    """Validate ``spec`` and return a copy with every default filled in.

    Raises ``SpecError`` naming the layer and the offending value, including for shapes
    that cannot be computed (a kernel larger than its padded input, ...).
    """
    return _normalize(spec)[0]


def _normalize(spec: Any) -> tuple[dict[str, Any], list[tuple[int, ...]]]:
    """``normalize_spec`` and the output shape of every layer (see ``layer_shapes``)."""
    if not isinstance(spec, dict):
        raise SpecError(f"a model spec must be an object, not {type(spec).__name__}")
    unknown = sorted(set(spec) - {"input", "layers", "name"})
    if unknown:
        raise SpecError(f"model spec: unknown key {unknown[0]!r} (known: input, layers, name)")
    if "input" not in spec or "layers" not in spec:
        raise SpecError("a model spec needs both 'input' and 'layers'")
    spec = copy.deepcopy(spec)
    inp = _fill("input", spec["input"], _INPUT_KEYS)
    shape = inp["shape"]
    if (not isinstance(shape, (list, tuple)) or len(shape) != 3
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape)):
        raise SpecError(f"input: shape must be three positive integers [C, H, W], not {shape!r}")
    inp["shape"] = list(shape)
    choice("input", "encoding", inp["encoding"], nx.ENCODINGS, error=SpecError)
    _int("input", "threshold", inp["threshold"], 0, nx.PIXEL_MAX)
    _int("input", "levels", inp["levels"], 1, nx.MAX_THERMOMETER_LEVELS)

    layers = spec["layers"]
    if not isinstance(layers, list) or not layers:
        raise SpecError("model spec: 'layers' must be a non-empty list")
    c, h, w = inp["shape"]
    c = nx.encoded_channels(c, inp["encoding"], inp["levels"])
    flat = None  # feature count once flattened by a dense layer
    out_layers = []
    shapes: list[tuple[int, ...]] = []
    prev = None
    fractional = False  # the next matrix layer's input is frac2
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise SpecError(f"layer {i} must be an object, not {type(layer).__name__}")
        kind = layer.get("type")
        if kind not in _LAYER_KEYS:
            raise SpecError(f"layer {i}: unknown layer type {kind!r} "
                            f"(known: {', '.join(_LAYER_KEYS)})")
        where = f"layer {i} ({kind})"
        lay = _fill(where, layer, _LAYER_KEYS[kind])
        if kind == "conv":
            if flat is not None:
                raise SpecError(f"{where}: a conv cannot follow a dense layer")
            out = _int(where, "out", lay["out"], 1)
            k = _int(where, "kernel", lay["kernel"], 1)
            s = _int(where, "stride", lay["stride"], 1)
            p = _int(where, "padding", lay["padding"], 0)
            choice(where, "pad_value", lay["pad_value"], nx.PAD_VALUES, error=SpecError)
            if i == 0 and inp["encoding"] == "uint8" and p and lay["pad_value"] != 0:
                raise SpecError(f"{where}: a conv on uint8 pixels pads with zeros only, "
                                f"not pad_value {lay['pad_value']}")
            _bool(where, "scale", lay["scale"])
            _bool(where, "bias", lay["bias"])
            _bool(where, "batchnorm", lay["batchnorm"])
            lay["pruned"] = _pruned(where, lay["pruned"], out, False)
            if fractional and p and lay["pad_value"] == 0:
                raise SpecError(f"{where}: its input is fractional, so it pads with a frac2 "
                                f"code: give pad_value 1 or -1, not 0 (zero padding)")
            lay["gate"] = _gate(where, lay["gate"], fractional)
            fractional = _activation(where, lay["activation"], False) == "frac2"
            if k > h + 2 * p or k > w + 2 * p:
                raise SpecError(f"{where}: kernel {k} is larger than its padded input "
                                f"{h + 2 * p}x{w + 2 * p}")
            c, h, w = out, nx.conv_out_size(h, k, s, p), nx.conv_out_size(w, k, s, p)
        elif kind == "maxpool":
            if prev is None or flat is not None:
                raise SpecError(f"{where}: a maxpool must follow a conv or another maxpool")
            k = _int(where, "kernel", lay["kernel"], 1)
            lay["stride"] = k if lay["stride"] is None else lay["stride"]
            s = _int(where, "stride", lay["stride"], 1)
            if _bool(where, "before_bn", lay["before_bn"]) and prev["type"] != "conv":
                raise SpecError(f"{where}: before_bn pooling must directly follow a conv")
            if prev["type"] == "maxpool" and prev["before_bn"] and lay["before_bn"]:
                raise SpecError(f"{where}: only one maxpool can pool before BatchNorm")
            if k > h or k > w:
                raise SpecError(f"{where}: kernel {k} is larger than its input {h}x{w}")
            h, w = nx.conv_out_size(h, k, s), nx.conv_out_size(w, k, s)
        else:
            out = _int(where, "out", lay["out"], 1)
            _bool(where, "scale", lay["scale"])
            _bool(where, "bias", lay["bias"])
            last = i == len(layers) - 1
            if not _bool(where, "batchnorm", lay["batchnorm"]) and last:
                raise SpecError(f"{where}: the classifier has no BatchNorm; batchnorm false "
                                f"applies to hidden layers only")
            lay["pruned"] = _pruned(where, lay["pruned"], out, last)
            lay["gate"] = _gate(where, lay["gate"], fractional)
            fractional = _activation(where, lay["activation"], last) == "frac2"
            flat = out
        out_layers.append(lay)
        shapes.append((c, h, w) if flat is None else (flat,))
        prev = lay
    if out_layers[-1]["type"] != "dense":
        raise SpecError(f"layer {len(out_layers) - 1}: the last layer must be a dense "
                        f"classifier, not {out_layers[-1]['type']}")
    result: dict[str, Any] = {"input": inp, "layers": out_layers}
    if "name" in spec:
        result["name"] = str(spec["name"])
    return result, shapes


def without_batchnorm(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with every hidden conv/dense layer's BatchNorm dropped and a bias added
    (each bit becomes the sign of its dot product plus that bias)."""
    spec = normalize_spec(spec)
    for lay in spec["layers"][:-1]:
        if lay["type"] != "maxpool":
            lay["batchnorm"], lay["bias"] = False, True
    return normalize_spec(spec)


def uses_batchnorm(spec: dict[str, Any]) -> bool:
    """Whether every hidden conv/dense layer of ``spec`` has its BatchNorm."""
    return all(lay["batchnorm"] for lay in normalize_spec(spec)["layers"]
               if lay["type"] != "maxpool")


def has_frac(spec: dict[str, Any]) -> bool:
    """Whether any layer of ``spec`` has a frac2 activation."""
    return any(lay.get("activation") == "frac2" for lay in normalize_spec(spec)["layers"])


def layer_shapes(spec: dict[str, Any]) -> list[tuple[int, ...]]:
    """Output shape of every spec layer (``(C, H, W)`` or ``(N,)``), spec normalised first."""
    return _normalize(spec)[1]


class BNN(nn.Module):
    """A binary network built from a spec: ``encoder`` then the flat ``layers`` sequence.

    ``layers`` holds, in order, for each spec layer: ``BinaryConv2d`` [``MaxPool2d`` if
    pooling before BN] [``BatchNorm2d``] ``BinaryActivation``; a ``MaxPool2d``; a
    ``Flatten`` before the first dense after a conv; ``BinaryLinear`` [``BatchNorm1d``]
    ``BinaryActivation``; and the classifier ``BinaryLinear`` ``Scores``. A frac2 layer
    has a ``FracActivation`` in place of its ``BinaryActivation``; a gated layer is a
    ``GatedConv2d`` / ``GatedLinear`` in place of its ``BinaryConv2d`` / ``BinaryLinear``.
    Input: 8-bit pixel values (0..255) as a float tensor, NCHW.
    """

    def __init__(self, spec: dict[str, Any]):
        super().__init__()
        self.spec = normalize_spec(spec)
        inp = self.spec["input"]
        self.encoder = InputEncoder(inp["encoding"], inp["threshold"], inp["levels"])
        c, h, w = inp["shape"]
        c = nx.encoded_channels(c, inp["encoding"], inp["levels"])
        shapes = layer_shapes(self.spec)
        specs = self.spec["layers"]
        mods: list[nn.Module] = []
        features = None
        pending: list[nn.Module] = []  # BatchNorm and activation of a conv pooled first
        for i, lay in enumerate(specs):
            last = i == len(specs) - 1
            pool_next = (i + 1 < len(specs) and specs[i + 1]["type"] == "maxpool"
                         and specs[i + 1]["before_bn"])
            if lay["type"] == "conv":
                args = (c, lay["out"], lay["kernel"], lay["stride"], lay["padding"],
                        lay["pad_value"], lay["scale"], lay["bias"])
                mods.append(BinaryConv2d(*args, pruned=lay["pruned"]) if lay["gate"] is None
                            else GatedConv2d(*args, pruned=lay["pruned"], gate=lay["gate"]))
                tail = _norm_and_sign(lay, nn.BatchNorm2d, c * lay["kernel"] ** 2)
                if pool_next:
                    pending = tail
                else:
                    mods += tail
            elif lay["type"] == "maxpool":
                mods.append(nn.MaxPool2d(lay["kernel"], lay["stride"]))
                if lay["before_bn"]:
                    mods += pending
                    pending = []
            else:
                if features is None:
                    mods.append(nn.Flatten())
                    features = c * h * w
                args = (features, lay["out"], lay["scale"], lay["bias"])
                mods.append(BinaryLinear(*args, pruned=lay["pruned"]) if lay["gate"] is None
                            else GatedLinear(*args, pruned=lay["pruned"], gate=lay["gate"]))
                if last:
                    mods.append(Scores(lay["out"], features))
                else:
                    mods += _norm_and_sign(lay, nn.BatchNorm1d, features)
                features = lay["out"]
            shape = shapes[i]
            if len(shape) == 3:
                c, h, w = shape
        self.layers = nn.Sequential(*mods)

    def forward(self, x):
        return self.layers(self.encoder(x))


def _norm_and_sign(lay: dict[str, Any], norm: type[nn.Module], fan_in: int
                   ) -> list[nn.Module]:
    """BatchNorm and activation after a hidden layer; without BatchNorm the activation's
    straight-through window is scaled to the layer's fan-in (the sign is unchanged)."""
    act = FracActivation if lay["activation"] == "frac2" else BinaryActivation
    if lay["batchnorm"]:
        return [norm(lay["out"]), act()]
    return [act(gain=fan_in ** -0.5)]


def build_model(spec: dict[str, Any]) -> BNN:
    """Build the ``nn.Module`` a spec describes (raises ``SpecError`` for a bad spec)."""
    return BNN(spec)


def binary_weight_count(model: nn.Module) -> int:
    """Number of binary weights across the conv and dense layers (BN excluded)."""
    return sum(m.weight.numel() for m in model.modules()
               if isinstance(m, (BinaryConv2d, BinaryLinear)))


