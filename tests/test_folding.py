"""The folding: matrix-layer shapes, the cycle model, and the cheapest folding per target."""

from __future__ import annotations

import itertools

import pytest

from bnnhw.errors import BnnhwError
from bnnhw.folding import (
    Fold,
    MatrixLayer,
    default_folding,
    default_target,
    fold_for_target,
    initiation_interval,
    load_folding,
    matrix_layers,
    save_folding,
    two_foldings,
)
from bnnhw.frontend import compile_model
from tests.bnn_cases import zoo_model


@pytest.fixture(scope="module")
def tiny():
    return compile_model(zoo_model("tiny", seed=0))


def test_matrix_layers_of_a_conv_net(tiny):
    conv, dense1, dense2 = matrix_layers(tiny)
    assert (conv.rows, conv.cols, conv.pixels, conv.simd_base) == (8, 9, 13 * 13, 1)
    assert (dense1.rows, dense1.cols, dense1.pixels, dense1.simd_base) == (32, 288, 1, 288)
    assert dense2.rows == 10 and dense2.cols == 32


def test_cycle_model():
    layer = MatrixLayer("c", rows=64, cols=576, pixels=900, simd_base=64)
    assert layer.cycles(Fold(16, 32)) == 900 * 4 * 18
    assert layer.cycles(Fold(1, 1)) == 900 * 64 * 576


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


@pytest.mark.parametrize("target", [50, 400, 2000, 20000])
def test_fold_for_target_is_the_cheapest_that_meets_it(target):
    layers = [MatrixLayer("a", 24, 36, 20, 4), MatrixLayer("b", 10, 48, 1, 48)]
    folds = fold_for_target(layers, target)
    for layer in layers:
        options = [Fold(p, s) for p, s in itertools.product(_divisors(layer.rows),
                                                            _divisors(layer.simd_base))]
        meeting = [f for f in options if layer.cycles(f) <= target]
        got = folds[layer.name]
        layer.check(got)
        if meeting:
            assert layer.cycles(got) <= target
            assert got.pe * got.simd == min(f.pe * f.simd for f in meeting)
        else:  # unreachable: the fastest folding
            assert layer.cycles(got) == min(layer.cycles(f) for f in options)


def test_default_folding_and_its_faster_twin(tiny):
    layers = matrix_layers(tiny)
    target = default_target(tiny)
    assert target >= 28 * 28  # never faster than one pixel per cycle
    folds = default_folding(tiny)
    assert folds == fold_for_target(layers, target)
    # conv0 reads one channel, so simd is 1: its 169 x 9 window beats bound the II
    assert initiation_interval(layers, folds) == 169 * 9 > target
    sfc = compile_model(zoo_model("sfc", seed=0, calibration=2))
    pair, layers = two_foldings(sfc), matrix_layers(sfc)
    default = initiation_interval(layers, pair["default"])
    assert default <= default_target(sfc)
    assert initiation_interval(layers, pair["fast"]) <= default // 4


def test_check_names_the_layer_and_the_value():
    layer = MatrixLayer("conv3", 64, 576, 100, 64)
    with pytest.raises(BnnhwError, match="layer conv3: pe must divide the 64 output channels, "
                                         "not 7"):
        layer.check(Fold(7, 1))
    with pytest.raises(BnnhwError, match="simd must divide the 64 input channels, not 3"):
        layer.check(Fold(1, 3))
    with pytest.raises(BnnhwError, match="simd must divide the 48 inputs, not 5"):
        MatrixLayer("dense1", 8, 48, 1, 48).check(Fold(1, 5))


def test_folding_file_round_trip(tiny, tmp_path):
    folds = default_folding(tiny)
    save_folding(tmp_path / "f.json", folds)
    assert load_folding(tmp_path / "f.json", matrix_layers(tiny)) == folds
