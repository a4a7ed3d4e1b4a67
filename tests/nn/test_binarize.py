"""Binarizers: sign(0) = +1 and the two straight-through estimators."""

import pytest
import torch

from bnnhw.nn import binarize_activation, binarize_weight, sign

VALUES = [-3.0, -1.5, -1.0, -0.5, -0.0, 0.0, 1e-30, 0.5, 1.0, 1.0000001, 2.0, 7.0]


def test_sign_maps_zero_to_plus_one():
    x = torch.tensor(VALUES)
    expected = torch.tensor([1.0 if v >= 0 else -1.0 for v in VALUES])
    assert torch.equal(sign(x), expected)
    assert torch.equal(binarize_weight(x), expected)
    assert torch.equal(binarize_activation(x), expected)


def _grad(fn, values, upstream):
    x = torch.tensor(values, requires_grad=True)
    fn(x).backward(torch.tensor(upstream))
    return x.grad


def check_identity_ste(fn):
    """The gradient passes through unchanged, whatever the input."""
    up = [float(i + 1) for i in range(len(VALUES))]
    assert torch.equal(_grad(fn, VALUES, up), torch.tensor(up))


def check_clipped_ste(fn):
    """The gradient passes where |x| <= 1 and is zero elsewhere."""
    up = [float(i + 1) for i in range(len(VALUES))]
    expected = [g if abs(v) <= 1 else 0.0 for v, g in zip(VALUES, up)]
    assert torch.equal(_grad(fn, VALUES, up), torch.tensor(expected))


def test_weight_ste_is_identity():
    check_identity_ste(binarize_weight)


def test_activation_ste_is_clipped():
    check_clipped_ste(binarize_activation)


def test_ste_checkers_catch_swapped_estimators():
    with pytest.raises(AssertionError):
        check_identity_ste(binarize_activation)
    with pytest.raises(AssertionError):
        check_clipped_ste(binarize_weight)


def test_binarizers_keep_dtype_and_shape():
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    for fn in (sign, binarize_weight, binarize_activation):
        y = fn(x)
        assert y.dtype == x.dtype and y.shape == x.shape
        assert set(y.unique().tolist()) <= {-1.0, 1.0}
