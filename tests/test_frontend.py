"""Frontend: each pass alone (structure and semantics), the threshold maths exhaustively,
and the one-sentence refusals."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnnhw import frontend, golden, ir
from bnnhw.errors import BnnhwError
from bnnhw.nn import BinaryActivation, BinaryLinear, Scores
from tests.bnn_cases import spec_model

RNG = np.random.default_rng(0)


def _bits(*shape):
    return RNG.integers(0, 2, size=shape).astype(np.uint8)


def _graph(*nodes):
    return ir.Graph((ir.InputEncoder("input", (6, 6, 2)),) + nodes)


def _conv(scale, bias, k=1, name="conv", in_shape=(6, 6, 2), **kw):
    r = len(scale)
    return ir.Conv(name, in_shape, k, _bits(r, k * k * in_shape[2]), scale, bias, **kw)


def _final(in_shape):
    n = int(np.prod(in_shape))
    return ir.Dense("final", in_shape, _bits(2, n), np.ones(2), np.zeros(2))


def _ops(graph):
    return [n.op for n in graph.nodes]


def _pool_real(z, k, s, mask):
    """Max (min where mask) pool of real NHWC values, by loops."""
    n, h, w, c = z.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    out = np.empty((n, oh, ow, c))
    for oy in range(oh):
        for ox in range(ow):
            win = z[:, oy * s:oy * s + k, ox * s:ox * s + k, :]
            out[:, oy, ox, :] = np.where(mask.astype(bool), win.min(axis=(1, 2)),
                                         win.max(axis=(1, 2)))
    return out


# --- pass 1: commute_affine_through_pool -----------------------------------------------------

def test_commute_affine_through_pool():
    scale, bias = np.array([1.5, -2.0, 0.0]), np.array([0.25, 1.0, -0.5])
    pool = ir.MaxPool("pool", (6, 6, 3), 2, 2, np.array([0, 0, 1], np.uint8))
    g = _graph(_conv(np.ones(3), np.zeros(3)), pool,
               ir.Affine("bn", (3, 3, 3), scale, bias), ir.Sign("sign", (3, 3, 3)),
               _final((3, 3, 3)))
    out = frontend.commute_affine_through_pool(g)
    assert _ops(out) == ["input", "conv", "affine", "maxpool", "sign", "dense"]
    assert out["bn"].shape == (6, 6, 3)
    # negative scale flips max <-> min; an already-min channel with scale 0 stays min
    assert out["pool"].and_mask.tolist() == [0, 1, 1]
    _check_affine_pool_commute(scale, bias, pool.and_mask, out["pool"].and_mask)


def _check_affine_pool_commute(scale, bias, mask_before, mask_after):
    z = RNG.normal(size=(2, 6, 6, 3))
    before = _pool_real(z, 2, 2, mask_before) * scale + bias
    after = _pool_real(z * scale + bias, 2, 2, mask_after)
    assert np.array_equal(before, after)


# --- pass 2: merge_affine ------------------------------------------------------------------------

def test_fold_affine_composes_exactly():
    conv = _conv(np.array([0.5, 2.0, 0.25]), np.array([1.0, -0.5, 0.0]), source=("layers.0",))
    g = _graph(conv, ir.Affine("bn", (6, 6, 3), [2.0, -0.25, 4.0], [0.125, 1.0, -3.0],
                               ("layers.1",)),
               ir.Sign("sign", (6, 6, 3)), _final((6, 6, 3)))
    out = frontend.merge_affine(g)
    assert _ops(out) == ["input", "conv", "sign", "dense"]
    assert out["conv"].scale.tolist() == [1.0, -0.5, 1.0]  # s * a
    assert out["conv"].bias.tolist() == [2.125, 1.125, -3.0]  # s * b + t
    assert out["conv"].source == ("layers.0", "layers.1")


def test_fold_affine_leaves_an_affine_after_a_sign():
    g = _graph(_conv(np.ones(3), np.zeros(3)), ir.Sign("sign", (6, 6, 3)),
               ir.Affine("bn", (6, 6, 3), np.ones(3), np.zeros(3)),
               ir.Sign("sign2", (6, 6, 3)), _final((6, 6, 3)))
    assert frontend.merge_affine(g) == g


# --- pass 3: commute_sign_through_pool ----------------------------------------------------------

def test_commute_sign_through_pool():
    pool = ir.MaxPool("pool", (6, 6, 3), 3, 1, np.array([0, 1, 0], np.uint8))
    g = _graph(_conv(np.ones(3), np.zeros(3)), pool, ir.Sign("sign", (4, 4, 3)),
               _final((4, 4, 3)))
    out = frontend.commute_sign_through_pool(g)
    assert _ops(out) == ["input", "conv", "sign", "maxpool", "dense"]
    assert out["sign"].shape == (6, 6, 3) and out["pool"] == pool
    y = RNG.integers(-2, 3, size=(2, 6, 6, 3)).astype(np.float64)  # zeros included

    def sign(v):
        return (v >= 0).astype(np.float64)

    assert np.array_equal(sign(_pool_real(y, 3, 1, pool.and_mask)),
                          _pool_real(sign(y), 3, 1, pool.and_mask))


# --- pass 4: flip_negative_rows -----------------------------------------------------------------

def test_flip_negative_rows_keeps_every_pre_activation():
    scale, bias = np.array([1.0, -2.0, 0.0, -0.5]), np.array([0.5, 0.25, -1.0, 3.0])
    dense = ir.Dense("d", (6, 6, 2), _bits(4, 72), scale, bias)
    g = _graph(dense, ir.Sign("sign", (4,)), _final((4,)))
    out = frontend.flip_negative_rows(g)
    new = out["d"]
    assert new.scale.tolist() == [1.0, 2.0, 0.0, 0.5] and np.array_equal(new.bias, bias)
    assert np.array_equal(new.weights[[0, 2]], dense.weights[[0, 2]])
    assert np.array_equal(new.weights[[1, 3]], 1 - dense.weights[[1, 3]])
    _check_same_pre_activation(dense, new)


def _check_same_pre_activation(old, new):
    x = 2 * RNG.integers(0, 2, size=(20, old.cols)) - 1

    def y(node):  # dyadic values: exact in float64
        return (x @ (2 * node.weights.astype(np.int64).T - 1)) * node.scale + node.bias

    assert np.array_equal(y(old), y(new))


def test_flip_negative_rows_needs_a_sign():
    g = _graph(ir.Dense("d", (6, 6, 2), _bits(2, 72), [-1.0, 1.0], [0.0, 0.0]))
    assert frontend.flip_negative_rows(g) == g  # the classifier keeps its weights


# --- pass 5: make_thresholds and its maths ------------------------------------------------------

def test_border_classes_by_hand():
    cls, taps = frontend.border_classes(5, 3, 1, 1)
    assert cls.tolist() == [0, 1, 1, 1, 2] and taps == [(0,), (), (2,)]
    cls, taps = frontend.border_classes(6, 3, 2, 2)
    assert cls.tolist() == [0, 1, 1, 2] and taps == [(0, 1), (), (2,)]
    cls, taps = frontend.border_classes(2, 5, 1, 2)
    assert cls.tolist() == [0, 1] and taps == [(0, 1, 4), (0, 3, 4)]


def test_dot_thresholds_exact_at_the_boundary():
    # 0.5 * 3 - 1.5 == 0 exactly: sign(0) = +1, so D = 3 (a float ceil could say 4)
    d = frontend.dot_thresholds(np.array([0.5, 0.1, 0.0, 0.0, 0.0, 1e-300, 1e-300]),
                                np.array([-1.5, -0.3, 0.0, -0.0, -1e-300, 1.0, -1.0]),
                                -10, 10)
    # 0.1 and 0.3 as float64: -c/a = 0.3/0.1 = 2.9999999999999996 -> 3
    assert Fraction(0.1) * 3 - Fraction(0.3) >= 0 > Fraction(0.1) * 2 - Fraction(0.3)
    assert d.tolist() == [3, 3, -10, -10, 11, -10, 11]
    with pytest.raises(ValueError, match="negative scale"):
        frontend.dot_thresholds(np.array([-1.0]), np.array([0.0]), -1, 1)


def _random_affine(rows, rng):
    a = rng.normal(size=rows) * rng.choice([1e-3, 1.0, 30.0], size=rows)
    a = np.abs(a)
    a[0] = 0.0
    c = rng.normal(size=rows) * 5
    c[1], a[1] = -1.5, 0.5  # an exact tie at dot = 3
    return a, c


@pytest.mark.parametrize("kind", ["binary", "uint8"])
def test_fold_thresholds_dense_is_exact_on_every_accumulator(kind):
    rng = np.random.default_rng(1)
    n = 7 if kind == "binary" else 2
    a, c = _random_affine(9, rng)
    shape = (1, 1, n)
    d = ir.Dense("d", shape, _bits(9, n), a, c, input_kind=kind)
    g = ir.Graph((ir.InputEncoder("input", shape, "binary" if kind == "binary" else "uint8"),
                  d, ir.Sign("s", (9,)), _final((9,))))
    node = frontend.make_thresholds(g)[1]
    assert node.thresholded and node.thresholds.shape == (1, 1, 9)
    _check_dense_thresholds(node, a, c)


def _check_dense_thresholds(node, a, c):
    """Every reachable accumulator, compared with ``a * dot + c >= 0`` in exact rationals."""
    n, binary = node.cols, node.input_kind == "binary"
    accs = range(n + 1) if binary else range(-255 * n, 255 * n + 1)
    for r in range(node.rows):
        for acc in accs:
            dot = 2 * acc - n if binary else acc
            want = Fraction(a[r]) * dot + Fraction(c[r]) >= 0
            assert (acc >= node.thresholds[0, 0, r]) == want, (r, acc)


@pytest.mark.parametrize("seed", range(6))
def test_fold_thresholds_zero_padding_matches_a_zero_padded_convolution(seed):
    rng = np.random.default_rng(seed)
    k, s, p = int(rng.integers(2, 5)), int(rng.integers(1, 3)), int(rng.integers(1, 3))
    h, w, c, r = int(rng.integers(k, 8)), int(rng.integers(k, 8)), 2, 5
    a, bias = _random_affine(r, rng)
    conv = ir.Conv("conv", (h, w, c), k, _bits(r, k * k * c), a, bias, stride=s, padding=p,
                   zero_padding=True)
    g = ir.Graph((ir.InputEncoder("input", (h, w, c)), conv,
                  ir.Sign("s", conv.out_shape), _final(conv.out_shape)))
    node = frontend.make_thresholds(g)[1]
    _check_zero_padded_conv(node, rng)
    assert node.border_classes == (len(frontend.border_classes(h, k, s, p)[1]),
                                   len(frontend.border_classes(w, k, s, p)[1]))


def _check_zero_padded_conv(node, rng):
    """Golden bits of a thresholded conv == sign(a * dot + c) of the zero-padded model conv."""
    (h, w, c), k, s, p, r = node.in_shape, node.kernel, node.stride, node.padding, node.rows
    x = rng.integers(0, 2, size=(3, h, w, c))
    got = golden.run_node(node, x).numpy()
    # the model's view: +-1 activations, zero padding, exact integer float conv
    xf = torch.from_numpy(2.0 * x - 1).permute(0, 3, 1, 2)
    wf = torch.from_numpy(2.0 * node.weights - 1).view(r, k, k, c).permute(0, 3, 1, 2)
    dot = F.conv2d(F.pad(xf, (p,) * 4), wf, stride=s).permute(0, 2, 3, 1).numpy()
    a, bias = node.scale, node.bias
    want = np.vectorize(lambda d, ch: int(Fraction(a[ch]) * int(d) + Fraction(bias[ch]) >= 0))(
        dot, np.arange(r))
    assert np.array_equal(got, want)


def test_thresholds_are_clamped_to_the_accumulator_range():
    d = ir.Dense("d", (6, 6, 2), _bits(3, 72), [1e-9, 1e-9, 0.0], [1e3, -1e3, -1.0])
    g = _graph(d, ir.Sign("s", (3,)), _final((3,)))
    node = frontend.make_thresholds(g)[1]
    assert node.thresholds[0, 0].tolist() == [0, 73, 73]  # always on, always off, off


def test_chw_columns_to_hwc():
    c, h, w = 3, 4, 5
    wt = RNG.integers(0, 2, size=(6, c * h * w))
    x = RNG.integers(0, 2, size=(c, h, w))
    _check_hwc_columns(wt, x, frontend.chw_columns_to_hwc(wt, (h, w, c)))


def _check_hwc_columns(chw_weights, x_chw, hwc_weights):
    assert np.array_equal(chw_weights @ x_chw.reshape(-1),
                          hwc_weights @ x_chw.transpose(1, 2, 0).reshape(-1))


def test_frontend_checkers_catch_planted_faults():
    """Each semantic checker above rejects a plausible wrong lowering."""
    with pytest.raises(AssertionError):  # forgot to swap max/min for a negative scale
        _check_affine_pool_commute(np.array([1.0, -2.0, 1.0]), np.zeros(3),
                                   np.zeros(3, np.uint8), np.zeros(3, np.uint8))
    dense = ir.Dense("d", (4,), _bits(3, 4), [1.0, -2.0, 0.5], [0.5, 0.25, -1.0])
    with pytest.raises(AssertionError):  # flipped the weights but kept the negative scale
        _check_same_pre_activation(dense, dense.replace(weights=1 - dense.weights))
    a, c = np.array([0.5, 1.0]), np.array([-1.5, 0.25])
    g = ir.Graph((ir.InputEncoder("input", (1, 1, 7)),
                  ir.Dense("d", (1, 1, 7), _bits(2, 7), a, c), ir.Sign("s", (2,)),
                  _final((2,))))
    node = frontend.make_thresholds(g)[1]
    with pytest.raises(AssertionError):  # one threshold off by one
        _check_dense_thresholds(node.replace(thresholds=node.thresholds + [[[1, 0]]]), a, c)
    conv = ir.Conv("conv", (5, 5, 2), 3, _bits(4, 18), [1.0, 0.5, 2.0, 1.0],
                   [0.5, -1.0, 3.0, 0.0], padding=1, zero_padding=True)
    g = ir.Graph((ir.InputEncoder("input", (5, 5, 2)), conv, ir.Sign("s", conv.out_shape),
                  _final(conv.out_shape)))
    node = frontend.make_thresholds(g)[1]
    interior = node.thresholds[node.row_class[2], node.col_class[2]]
    with pytest.raises(AssertionError):  # no border correction: interior thresholds everywhere
        _check_zero_padded_conv(node.replace(thresholds=np.broadcast_to(
            interior, node.thresholds.shape)), np.random.default_rng(0))
    wt, x = RNG.integers(0, 2, size=(6, 60)), RNG.integers(0, 2, size=(3, 4, 5))
    with pytest.raises(AssertionError):  # columns left in torch's CHW order
        _check_hwc_columns(wt, x, wt)


# --- the whole list ----------------------------------------------------------------------------

def test_pool_before_bn_lowers_to_and_masks():
    model = spec_model([{"type": "conv", "out": 7, "kernel": 3, "padding": 1},
                         {"type": "maxpool", "kernel": 2, "before_bn": True},
                         {"type": "dense", "out": 3}])
    graph = frontend.compile_model(model)
    assert _ops(graph) == ["input", "conv", "maxpool", "dense"]
    gamma = model.layers[2].weight.detach().numpy()
    assert graph[2].and_mask.tolist() == (gamma < 0).astype(int).tolist()
    assert graph[1].source == ("layers.0", "layers.2", "layers.3")
    assert graph[1].zero_padding and graph[1].border_classes == (3, 3)


def test_passes_are_the_documented_list():
    assert [p.__name__ for p in frontend.PASSES] == [
        "commute_affine_through_pool", "merge_affine", "commute_sign_through_pool",
        "flip_negative_rows", "make_thresholds", "lower_class_map",
        "remove_pruned_channels"]
    model = spec_model([{"type": "conv", "out": 3, "kernel": 3}, {"type": "dense", "out": 2}])
    g = frontend.import_model(model)
    for p in frontend.PASSES:
        g = p(g)
    assert g == frontend.compile_model(model)


def test_tensor_scale_per_output_channel_folds_like_xnor_scale():
    layers = [{"type": "conv", "out": 3, "kernel": 3, "scale": True},
              {"type": "dense", "out": 2}]
    model = spec_model(layers)
    want = frontend.compile_model(model)
    conv = model.layers[0]
    with torch.no_grad():
        alpha = conv.weight.abs().mean(dim=(1, 2, 3))
    conv.scale = alpha.view(-1, 1, 1, 1)
    assert frontend.compile_model(model) == want


# --- refusals ----------------------------------------------------------------------------------

def _fc_model():
    return spec_model([{"type": "dense", "out": 5}, {"type": "dense", "out": 3}],
                       shape=(1, 4, 4))


def _refuses(model, pattern):
    with pytest.raises(BnnhwError, match=pattern) as e:
        frontend.compile_model(model)
    text = str(e.value)
    assert text.count(". ") == 0 and "\n" not in text  # one sentence


def test_refuses_unknown_layer_types():
    model = _fc_model()
    model.layers[3] = nn.ReLU()
    _refuses(model, r"layers\.3 \(ReLU\): the frontend does not know this layer type")


def test_refuses_scales_varying_along_the_reduction_axis():
    model = spec_model([{"type": "conv", "out": 3, "kernel": 3, "scale": True},
                         {"type": "dense", "out": 2}])
    model.layers[0].scale = torch.rand(1, 2, 1, 1) + 0.5
    _refuses(model, r"layers\.0 \(BinaryConv2d\): its weight scale varies along the "
                    r"reduction axis")


@pytest.mark.parametrize(("where", "what", "pattern"), [
    ("running_var", float("nan"), "running_var holds NaN"),
    ("running_mean", float("inf"), "running_mean holds NaN or infinite"),
    ("weight", float("nan"), r"weight \(gamma\) holds NaN"),
    ("running_var", -1.0, "running_var \\+ eps must be positive"),
])
def test_refuses_bad_batchnorm(where, what, pattern):
    model = _fc_model()
    with torch.no_grad():
        getattr(model.layers[2], where)[1] = what
    _refuses(model, r"layers\.2 \(BatchNorm1d\): (its )?" + pattern)


def test_refuses_nan_weights():
    model = _fc_model()
    with torch.no_grad():
        model.layers[1].weight[0, 0] = float("nan")
    _refuses(model, r"layers\.1 \(BinaryLinear\): its weights hold NaN")


def test_refuses_shape_mismatches():
    model = _fc_model()
    model.layers[4] = BinaryLinear(6, 3)
    _refuses(model, r"layers\.4 \(BinaryLinear\): expects 6 inputs but the layer before it "
                    r"gives 5")


def test_refuses_layer_orders_that_do_not_lower():
    model = _fc_model()  # Flatten, Linear, BN, Act, Linear, Scores
    mods = list(model.layers)
    model.layers = nn.Sequential(mods[0], mods[1], BinaryActivation(), mods[2], mods[3],
                                 mods[4], mods[5])
    _refuses(model, r"layers\.3: this BatchNorm or Scores does not follow a conv or dense")
    model.layers = nn.Sequential(*mods[:4])
    _refuses(model, r"layers\.1, layers\.2, layers\.3: the network must end with a "
                    r"BinaryLinear classifier")
    model.layers = nn.Sequential(mods[0], mods[1], mods[4], mods[5])
    _refuses(model, r"layers\.2 \(BinaryLinear\): its input is not binary")
    model.layers = nn.Sequential(mods[0], mods[2])
    _refuses(model, r"layers\.0 \(Flatten\): must be followed by a BinaryLinear")


def test_refuses_non_bnn_models_and_uint8_sign_padding():
    _refuses(nn.Linear(3, 3), "takes a bnnhw BNN model")
    model = spec_model([{"type": "conv", "out": 3, "kernel": 3, "padding": 1},
                         {"type": "dense", "out": 2}], encoding="uint8")
    model.layers[0].pad_value = 1
    _refuses(model, r"layers\.0 \(BinaryConv2d\): a convolution on uint8 pixels pads with "
                    r"zeros only")


def test_scores_must_match_the_classifier():
    model = _fc_model()
    model.layers[5] = Scores(4, 5)
    _refuses(model, r"layers\.5 \(Scores\): scales 4 classes")


def test_import_keeps_float64_of_the_float32_parameters():
    model = spec_model([{"type": "dense", "out": 3, "scale": True, "bias": True},
                         {"type": "dense", "out": 2}], shape=(1, 3, 3))
    g = frontend.import_model(model)
    lin, bn = model.layers[1], model.layers[2]
    alpha32 = lin.weight.detach().abs().mean(dim=1)  # float32, as the model computes it
    assert np.array_equal(g[1].scale, alpha32.double().numpy())
    with torch.no_grad():
        s = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        t = bn.bias.double() - s * bn.running_mean.double()
    assert np.array_equal(g[2].scale, s.numpy()) and np.array_equal(g[2].bias, t.numpy())
