"""Binary layers, input encoders and padding against naive loop references (exact)."""

import itertools

import pytest
import torch
from torch import nn

from bnnhw.nn import (
    BinaryActivation,
    BinaryConv2d,
    BinaryLinear,
    InputEncoder,
    clip_latent_weights,
    thermometer_thresholds,
)


def pm1(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, shape, generator=g).to(torch.float32) * 2 - 1


def latent(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1


def sgn(v):
    return 1 if v >= 0 else -1


# -- naive references -------------------------------------------------------------------

def ref_linear(x, w):
    """y[n][r] = sum_c x[n][c] * sign(w[r][c]) with Python integers."""
    w = w.detach()
    return torch.tensor([[sum(int(x[n, c]) * sgn(float(w[r, c])) for c in range(w.shape[1]))
                          for r in range(w.shape[0])] for n in range(x.shape[0])],
                        dtype=torch.float32)


def ref_conv(x, w, stride, pad, pad_value):
    """Direct convolution; positions outside the image read ``pad_value``."""
    w = w.detach()
    n, c, h, wd = x.shape
    r, _, k, _ = w.shape
    oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = torch.zeros(n, r, oh, ow)
    for b, o, oy, ox in itertools.product(range(n), range(r), range(oh), range(ow)):
        acc = 0
        for ci, ky, kx in itertools.product(range(c), range(k), range(k)):
            iy, ix = oy * stride + ky - pad, ox * stride + kx - pad
            v = int(x[b, ci, iy, ix]) if 0 <= iy < h and 0 <= ix < wd else pad_value
            acc += v * sgn(float(w[o, ci, ky, kx]))
        out[b, o, oy, ox] = acc
    return out


# -- dense ------------------------------------------------------------------------------

def test_binary_linear_matches_reference():
    layer = BinaryLinear(13, 5)
    with torch.no_grad():
        layer.weight.copy_(latent(5, 13))
        layer.weight[0, 0] = 0.0  # sign(0) = +1
    x = pm1(4, 13, seed=1)
    assert torch.equal(layer(x), ref_linear(x, layer.weight))


def test_linear_reference_catches_one_flipped_weight():
    layer = BinaryLinear(8, 3)
    x = pm1(2, 8, seed=4)
    w = layer.weight.detach().clone()
    w[1, 5] = -w[1, 5] if w[1, 5] != 0 else -1.0
    assert not torch.equal(layer(x), ref_linear(x, w))


def test_binary_linear_xnor_scale_and_bias():
    # |w| in {0.25, 0.5} so every row mean is exact in float32.
    w = torch.tensor([[0.5, -0.25, 0.25, -0.5], [-0.5, -0.5, 0.5, 0.5]])
    layer = BinaryLinear(4, 2, scale=True, bias=True)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(torch.tensor([1.0, -2.0]))
    x = torch.tensor([[1.0, 1.0, -1.0, 1.0]])
    # row 0: signs + - + -, dot = 1 - 1 - 1 - 1 = -2, scale 0.375; row 1: dot = -1-1-1+1 = -2
    assert torch.equal(layer(x), torch.tensor([[-2 * 0.375 + 1.0, -2 * 0.5 - 2.0]]))


def test_latent_weight_gradient_passes_straight_through():
    layer = BinaryLinear(6, 3)
    x = pm1(5, 6, seed=2)
    g = pm1(5, 3, seed=3)
    layer(x).backward(g)
    # y = x @ sign(W)^T with an identity STE: dL/dW = g^T x.
    expected = torch.tensor([[sum(int(g[n, r]) * int(x[n, c]) for n in range(5))
                              for c in range(6)] for r in range(3)], dtype=torch.float32)
    assert torch.equal(layer.weight.grad, expected)


# -- convolution and padding ------------------------------------------------------------

@pytest.mark.parametrize("pad_value", [0, 1, -1])
@pytest.mark.parametrize("stride,pad", [(1, 0), (1, 1), (2, 1), (2, 2)])
def test_binary_conv_matches_reference(pad_value, stride, pad):
    layer = BinaryConv2d(3, 4, 3, stride=stride, padding=pad, pad_value=pad_value)
    with torch.no_grad():
        layer.weight.copy_(latent(4, 3, 3, 3, seed=stride + 3 * pad))
    x = pm1(2, 3, 6, 7, seed=5)
    assert torch.equal(layer(x), ref_conv(x, layer.weight, stride, pad, pad_value))


def test_conv_reference_catches_a_wrong_pad_constant():
    layer = BinaryConv2d(2, 3, 3, padding=1, pad_value=1)
    x = pm1(1, 2, 5, 5, seed=6)
    assert not torch.equal(layer(x), ref_conv(x, layer.weight, 1, 1, -1))


@pytest.mark.parametrize("pad_value", [0, 1, -1])
def test_padding_constant_counts(pad_value):
    # All weights +1 and all inputs +1: each output counts in-image taps as +1 and padded
    # taps as pad_value. With a 3x3 kernel and padding 1 on a 4x4 map, a corner output
    # sees 4 in-image and 5 padded taps, an edge output 6 and 3, an inner one 9 and 0.
    layer = BinaryConv2d(1, 1, 3, padding=1, pad_value=pad_value)
    with torch.no_grad():
        layer.weight.fill_(0.5)
    y = layer(torch.ones(1, 1, 4, 4))[0, 0]
    assert y[0, 0] == 4 + 5 * pad_value
    assert y[0, 1] == 6 + 3 * pad_value
    assert y[1, 1] == 9


def test_conv_scale_is_per_output_channel():
    layer = BinaryConv2d(1, 2, 2, scale=True)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[[[0.5, 0.5], [0.5, 0.5]]],
                                         [[[-0.25, 0.25], [0.25, 0.25]]]]))
    y = layer(torch.ones(1, 1, 2, 2))
    assert torch.equal(y.flatten(), torch.tensor([4 * 0.5, 2 * 0.25]))


def test_bad_pad_value_is_refused():
    with pytest.raises(ValueError, match="pad_value must be one of"):
        BinaryConv2d(1, 1, 3, padding=1, pad_value=2)


# -- activation and clipping -------------------------------------------------------------

def test_binary_activation_forward_and_clipped_gradient():
    x = torch.tensor([-2.0, -1.0, -0.3, 0.0, 0.7, 1.0, 1.5], requires_grad=True)
    y = BinaryActivation()(x)
    assert torch.equal(y, torch.tensor([-1.0, -1, -1, 1, 1, 1, 1]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1, 1, 1, 1, 1, 0]))


def test_clip_latent_weights_touches_binary_layers_only():
    model = nn.Sequential(BinaryConv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(),
                          BinaryLinear(2, 2), nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([3.0, -5.0, 0.2] * 6).view(2, 1, 3, 3))
        model[3].weight.copy_(torch.tensor([[1.5, -0.5], [-1.0, 9.0]]))
        model[1].weight.fill_(4.0)
        model[4].weight.fill_(-7.0)
    clip_latent_weights(model)
    assert torch.equal(model[0].weight.flatten(), torch.tensor([1.0, -1.0, 0.2] * 6))
    assert torch.equal(model[3].weight, torch.tensor([[1.0, -0.5], [-1.0, 1.0]]))
    assert torch.equal(model[1].weight, torch.full((2,), 4.0))
    assert torch.equal(model[4].weight, torch.full((2, 2), -7.0))


# -- input encoders ----------------------------------------------------------------------

ALL_PIXELS = torch.arange(256, dtype=torch.float32).view(1, 1, 16, 16)


@pytest.mark.parametrize("threshold", [0, 1, 128, 255])
def test_binary_encoding(threshold):
    y = InputEncoder("binary", threshold=threshold)(ALL_PIXELS)
    expected = torch.tensor([1.0 if p >= threshold else -1.0 for p in range(256)])
    assert torch.equal(y.flatten(), expected)


def test_uint8_encoding_is_the_pixel_value():
    x = torch.tensor([[[[0, 1], [254, 255]]]], dtype=torch.uint8)
    y = InputEncoder("uint8")(x)
    assert y.dtype == torch.float32
    assert torch.equal(y, torch.tensor([[[[0.0, 1.0], [254.0, 255.0]]]]))


def test_thermometer_thresholds_are_evenly_spread():
    assert thermometer_thresholds(1) == [128]
    assert thermometer_thresholds(3) == [64, 128, 192]
    assert thermometer_thresholds(7) == [32, 64, 96, 128, 160, 192, 224]
    assert thermometer_thresholds(255) == list(range(1, 256))


@pytest.mark.parametrize("levels", [1, 3, 8])
def test_thermometer_encoding_channel_order(levels):
    g = torch.Generator().manual_seed(levels)
    x = torch.randint(0, 256, (2, 3, 4, 5), generator=g).to(torch.float32)
    y = InputEncoder("thermometer", levels=levels)(x)
    assert y.shape == (2, 3 * levels, 4, 5)
    t = thermometer_thresholds(levels)
    for n, c, k, i, j in itertools.product(range(2), range(3), range(levels), range(4),
                                           range(5)):
        assert y[n, c * levels + k, i, j] == (1 if x[n, c, i, j] >= t[k] else -1)
    # The code is a thermometer: the number of +1 levels grows with the pixel value.
    ones = (InputEncoder("thermometer", levels=levels)(ALL_PIXELS) > 0).sum(dim=1).flatten()
    assert torch.all(ones[1:] >= ones[:-1]) and ones[0] == 0 and ones[255] == levels


def test_thermometer_check_catches_level_major_channel_order():
    # The order c * levels + k is what the hardware encoder emits; k * C + c must fail.
    x = torch.randint(0, 256, (1, 2, 3, 3)).to(torch.float32)
    y = InputEncoder("thermometer", levels=4)(x)
    t = thermometer_thresholds(4)
    level_major = torch.stack([torch.where(x[0, c] >= t[k], 1.0, -1.0)
                               for k in range(4) for c in range(2)])
    channel_major = torch.stack([torch.where(x[0, c] >= t[k], 1.0, -1.0)
                                 for c in range(2) for k in range(4)])
    assert torch.equal(y[0], channel_major)
    assert not torch.equal(y[0], level_major)


def test_unknown_encoding_is_refused():
    with pytest.raises(ValueError, match="input encoding must be one of"):
        InputEncoder("float")
