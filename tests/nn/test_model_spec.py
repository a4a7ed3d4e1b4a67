"""Declarative specs: defaults, shapes, the module sequence and every refusal."""

import copy
import re

import pytest
import torch
from torch import nn

from bnnhw.nn import (
    BinaryActivation,
    BinaryConv2d,
    BinaryLinear,
    InputEncoder,
    Scores,
    SpecError,
    build_model,
    layer_shapes,
    normalize_spec,
)

SPEC = {"input": {"shape": [1, 12, 12]},
        "layers": [{"type": "conv", "out": 4, "kernel": 3, "padding": 1, "pad_value": -1},
                   {"type": "maxpool", "kernel": 2, "before_bn": True},
                   {"type": "conv", "out": 6, "kernel": 3, "stride": 2},
                   {"type": "maxpool", "kernel": 2},
                   {"type": "dense", "out": 16},
                   {"type": "dense", "out": 3}]}


def test_normalize_fills_every_default_and_is_idempotent():
    spec = normalize_spec(SPEC)
    assert spec["input"] == {"shape": [1, 12, 12], "encoding": "binary", "threshold": 128,
                             "levels": 8}
    assert spec["layers"][0] == {"type": "conv", "out": 4, "kernel": 3, "stride": 1,
                                 "padding": 1, "pad_value": -1, "scale": False,
                                 "bias": False, "batchnorm": True, "pruned": [],
                                 "activation": "binary", "gate": None}
    assert spec["layers"][1] == {"type": "maxpool", "kernel": 2, "stride": 2,
                                 "before_bn": True}
    assert spec["layers"][5] == {"type": "dense", "out": 3, "scale": False, "bias": False,
                                 "batchnorm": True, "pruned": [], "activation": "binary",
                                 "gate": None}
    assert normalize_spec(spec) == spec
    assert SPEC["layers"][1] == {"type": "maxpool", "kernel": 2, "before_bn": True}


def test_layer_shapes():
    # 12x12 -> conv pad 1 -> 12x12 -> pool 6x6 -> conv k3 s2 -> 2x2 -> pool 1x1
    assert layer_shapes(SPEC) == [(4, 12, 12), (4, 6, 6), (6, 2, 2), (6, 1, 1), (16,), (3,)]
    thermo = {"input": {"shape": [2, 5, 5], "encoding": "thermometer", "levels": 4},
              "layers": [{"type": "dense", "out": 2}]}
    assert layer_shapes(thermo) == [(2,)]
    model = build_model(thermo)
    assert model.layers[1].in_features == 2 * 4 * 5 * 5


def test_module_sequence():
    model = build_model(SPEC)
    kinds = [type(m) for m in model.layers]
    assert kinds == [BinaryConv2d, nn.MaxPool2d, nn.BatchNorm2d, BinaryActivation,
                     BinaryConv2d, nn.BatchNorm2d, BinaryActivation, nn.MaxPool2d,
                     nn.Flatten, BinaryLinear, nn.BatchNorm1d, BinaryActivation,
                     BinaryLinear, Scores]
    assert isinstance(model.encoder, InputEncoder)
    conv = model.layers[0]
    assert (conv.pad_amount, conv.pad_value, conv.stride) == (1, -1, (1, 1))
    assert model.layers[2].num_features == 4
    assert model.layers[9].in_features == 6
    out = model.eval()(torch.randint(0, 256, (2, 1, 12, 12)).float())
    assert out.shape == (2, 3)


def test_binary_map_after_sign_pool():
    # After the sign, max-pool of +-1 values is an OR of the bits: any +1 gives +1.
    model = build_model(SPEC).eval()
    acts = {}
    model.layers[6].register_forward_hook(lambda m, i, o: acts.update(sign=o))
    model.layers[7].register_forward_hook(lambda m, i, o: acts.update(pool=o))
    model(torch.randint(0, 256, (3, 1, 12, 12)).float())
    s = acts["sign"]
    assert set(s.unique().tolist()) <= {-1.0, 1.0}
    any_plus = (s[:, :, 0::2, 0::2] > 0) | (s[:, :, 0::2, 1::2] > 0) \
        | (s[:, :, 1::2, 0::2] > 0) | (s[:, :, 1::2, 1::2] > 0)
    assert torch.equal(acts["pool"], torch.where(any_plus, 1.0, -1.0))


def _with(path, value):
    spec = copy.deepcopy(SPEC)
    target = spec
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return spec


_DELETE = object()

BAD = [
    ((), None, "a model spec must be an object"),
    (("layers",), [], "'layers' must be a non-empty list"),
    (("input",), _DELETE, "needs both 'input' and 'layers'"),
    (("extra",), 1, "unknown key 'extra'"),
    (("input", "shape"), [1, 12], "shape must be three positive integers"),
    (("input", "shape"), [1, 0, 12], "shape must be three positive integers"),
    (("input", "encoding"), "float", "encoding must be one of"),
    (("input", "threshold"), 256, "threshold must be an integer in 0..255"),
    (("input", "levels"), 0, "levels must be an integer in 1..255, not 0"),
    (("input", "levels"), 256, "levels must be an integer in 1..255, not 256"),
    (("layers", 0, "type"), "lstm", "layer 0: unknown layer type 'lstm'"),
    (("layers", 0, "out"), _DELETE, "layer 0 (conv): missing required key 'out'"),
    (("layers", 0, "out"), 0, "layer 0 (conv): out must be a positive integer, not 0"),
    (("layers", 0, "out"), True, "out must be a positive integer, not True"),
    (("layers", 0, "kernel"), 2.0, "kernel must be a positive integer, not 2.0"),
    (("layers", 0, "kernel"), 15, "kernel 15 is larger than its padded input 14x14"),
    (("layers", 0, "padding"), -1, "padding must be an integer >= 0"),
    (("layers", 0, "pad_value"), 2, "pad_value must be one of 0, 1, -1"),
    (("layers", 0, "pad_value"), True, "pad_value must be one of 0, 1, -1"),
    (("layers", 0, "pad_value"), 1.0, "pad_value must be one of 0, 1, -1"),
    (("layers", 0, "scale"), 1, "scale must be true or false"),
    (("layers", 0, "dilation"), 2, "unknown key 'dilation'"),
    (("layers", 3, "kernel"), 3, "layer 3 (maxpool): kernel 3 is larger than its input 2x2"),
    (("layers", 0), {"type": "maxpool", "kernel": 2},
     "layer 0 (maxpool): a maxpool must follow a conv"),
    (("layers", 5), {"type": "conv", "out": 3, "kernel": 1},
     "layer 5 (conv): a conv cannot follow a dense layer"),
    (("layers", 5), {"type": "maxpool", "kernel": 1},
     "layer 5 (maxpool): a maxpool must follow a conv"),
    (("layers", 1), "maxpool", "layer 1 must be an object"),
]


@pytest.mark.parametrize("path,value,message", BAD, ids=[m for _, _, m in BAD])
def test_bad_specs_are_refused_with_the_layer_and_value(path, value, message):
    spec = value if path == () else _with(path, value)
    with pytest.raises(SpecError, match=re.escape(message)):
        normalize_spec(spec)
    with pytest.raises(SpecError):
        build_model(spec)


def test_before_bn_pool_must_follow_a_conv_directly():
    spec = copy.deepcopy(SPEC)
    spec["layers"].insert(2, {"type": "maxpool", "kernel": 1, "before_bn": True})
    with pytest.raises(SpecError, match=re.escape(
            "layer 2 (maxpool): before_bn pooling must directly follow a conv")):
        normalize_spec(spec)


def test_last_layer_must_be_a_classifier():
    spec = {"input": {"shape": [1, 8, 8]},
            "layers": [{"type": "conv", "out": 2, "kernel": 3}]}
    with pytest.raises(SpecError, match="layer 0: the last layer must be a dense classifier"):
        normalize_spec(spec)


def test_uint8_input_pads_with_zeros_only():
    spec = {"input": {"shape": [3, 8, 8], "encoding": "uint8"},
            "layers": [{"type": "conv", "out": 2, "kernel": 3, "padding": 1, "pad_value": 1},
                       {"type": "dense", "out": 2}]}
    with pytest.raises(SpecError, match="a conv on uint8 pixels pads with zeros only"):
        normalize_spec(spec)
    spec["layers"][0]["pad_value"] = 0
    assert build_model(spec).layers[0].pad_value == 0


def test_spec_error_is_a_value_error():
    assert issubclass(SpecError, ValueError)
