"""The classifier's integer class map (``bnnhw.frontend.class_map``, pass 6).

With one common scale the integer argmax must equal the exact argmax of the float64 map
(first index on ties) for every pair of reachable dot products: checked exhaustively on
small ranges. With distinct scales it may differ only where the stated rounding bound
allows, which ``bnnhw.check.class_tie`` counts as a tie. A wrong map is caught by the same
checks.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnhw import frontend, golden, ir
from bnnhw.check import check_model, class_tie, random_images
from tests.bnn_cases import random_model, zoo_model


def float_argmax(scale, bias, dots):
    return np.argmax(dots * scale + bias, axis=-1)


def int_argmax(m, b, dots):
    return np.argmax(dots.astype(np.int64) * m + b, axis=-1)


def all_dots(classes, dot_max, step=1):
    axis = np.arange(-dot_max, dot_max + 1, step)
    return np.array(list(itertools.product(axis, repeat=classes)), dtype=np.int64)


def exact_argmax(scale, bias, dots):
    """The first index of the largest logit ``scale * dot + bias``, computed exactly on the
    float64 values (no rounding at all)."""
    coef = [Fraction(float(a)) for a in scale]
    off = [Fraction(float(c)) for c in bias]
    return np.array([max(range(len(row)), key=lambda c: (coef[c] * int(row[c]) + off[c], -c))
                     for row in dots])


def exhaustive_disagreements(scale, bias, m, b, dot_max, step=1):
    dots = all_dots(len(scale), dot_max, step)
    return int((exact_argmax(scale, bias, dots) != int_argmax(m, b, dots)).sum())


COMMON = [  # (scale, bias): one common scale, biases of every kind
    ([0.3, 0.3, 0.3], [0.0, 0.0, 0.0]),
    ([0.3, 0.3, 0.3], [0.1, -0.25, 0.45]),
    ([1.0, 1.0, 1.0], [0.5, 1.5, -0.5]),           # exact half steps: ties at integers
    ([0.07, 0.07, 0.0], [0.02, -0.11, 0.3]),        # a constant class
    ([2.0, 2.0, 2.0, 2.0], [1e-9, 0.0, -1e-9, 3.0]),  # near-ties need a large shift
    ([0.5, 0.5, 0.5], [40.0, 0.0, -40.0]),          # offsets beyond the dot range
]


@pytest.mark.parametrize("scale,bias", COMMON)
def test_common_scale_is_exact_for_every_reachable_pair(scale, bias):
    scale, bias = np.array(scale), np.array(bias)
    dot_max = 6
    m, b, _gain, exact = frontend.class_map(scale, bias, dot_max)
    assert exact
    assert exhaustive_disagreements(scale, bias, m, b, dot_max) == 0
    assert set(m.tolist()) <= {0, int(m.max())}  # one multiplier (and 0 for constants)


def test_equal_biases_need_no_multiplier():
    m, b, _, exact = frontend.class_map(np.full(4, 0.2), np.full(4, -0.3), 50)
    assert exact and m.tolist() == [1, 1, 1, 1] and len(set(b.tolist())) == 1


def test_smallest_shift_is_used():
    # bias steps that only move thresholds between integers need no shift; classes 1 and
    # 2 a quarter step apart against class 0 half a step away need 2 bits
    m1, _, _, _ = frontend.class_map(np.full(3, 0.5), np.array([0.125, 0.0, -1.0]), 9)
    m2, _, _, _ = frontend.class_map(np.full(3, 0.5), np.array([0.25, 0.0, 0.125]), 9)
    assert m1.tolist() == [1, 1, 1] and m2.tolist() == [4, 4, 4]


def test_a_near_tie_falls_back_to_the_rounding_bound():
    """Class 1 loses to class 0 at dot difference -1 by 2**-40 of a logit: no shift up to
    16 bits separates that from a tie, so the map is not exact; the disagreements that
    follow are within the bound."""
    scale, bias = np.full(3, 0.5), np.array([0.0, -0.5 + 2.0 ** -40, 2.0])
    m, b, gain, exact = frontend.class_map(scale, bias, 6)
    assert not exact and len(set(m.tolist())) == 1
    dots = all_dots(3, 6)
    fa, ia = float_argmax(scale, bias, dots), int_argmax(m, b, dots)
    node = _classifier(scale, bias, m, b, gain, exact, 6)
    bad = np.flatnonzero(fa != ia)
    assert len(bad) and all(class_tie(node, dots[i], int(ia[i]), int(fa[i]), eps=0.0)
                            for i in bad)


@pytest.mark.parametrize("seed", range(6))
def test_distinct_scales_differ_only_within_the_bound(seed):
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.01, 0.2, 3)
    bias = rng.normal(0, 0.3, 3)
    dot_max = 8
    m, b, gain, exact = frontend.class_map(scale, bias, dot_max)
    assert not exact and m.max() < 1 << frontend.CLASS_SCALE_BITS
    dots = all_dots(3, dot_max)
    fa, ia = float_argmax(scale, bias, dots), int_argmax(m, b, dots)
    node = _classifier(scale, bias, m, b, gain, exact, dot_max)
    for i in np.flatnonzero(fa != ia):
        assert class_tie(node, dots[i], int(ia[i]), int(fa[i]), eps=0.0), dots[i]


def test_the_exhaustive_check_catches_a_wrong_map():
    scale, bias = np.full(3, 0.3), np.array([0.1, -0.2, 0.45])
    m, b, _, _ = frontend.class_map(scale, bias, 6)
    wrong = b.copy()
    wrong[1] += int(m.max())  # class 1 one dot step too high
    assert exhaustive_disagreements(scale, bias, m, wrong, 6) > 0


def test_offsets_are_clamped_without_changing_the_argmax():
    scale = np.array([1e-3, 1e-3, 1e-3])
    bias = np.array([1e6, 0.0, -1e6])  # class 0 always wins, class 2 never
    m, b, _, exact = frontend.class_map(scale, bias, 20)
    assert exact and int(np.abs(b).max()) < 1 << 20
    assert exhaustive_disagreements(scale, bias, m, b, 20, step=4) == 0


def _classifier(scale, bias, m, b, gain, exact, dot_max):
    w = np.zeros((len(scale), dot_max), np.uint8)
    return ir.Dense("c", (dot_max,), w, scale, bias, class_scale=m, class_offset=b,
                    class_gain=gain, class_exact=exact)


def test_lowering_flips_negative_rows_and_keeps_the_float_logits():
    model = zoo_model("tfc", seed=4, calibration=2)
    with torch.no_grad():
        model.layers[-1].scale.copy_(torch.tensor([-1.0, 2, -3, 4, 5, 6, 7, 8, 9, 10]) / 30)
    graph = frontend.compile_model(model)
    last = graph.nodes[-1]
    assert last.classifier and (last.scale >= 0).all() and (last.class_scale >= 0).all()
    images = random_images(model.spec["input"]["shape"], 50, 1)
    gold = golden.run(graph, images)
    with torch.no_grad():
        logits = model(images.float()).double()
    assert torch.allclose(gold.logits, logits, rtol=1e-5, atol=1e-5)  # float view, not exact
    report = check_model(model, images, graph)
    assert report.ok and report.class_bugs == 0, report.format()


def test_golden_classes_are_the_integer_argmax_on_random_models():
    for seed in range(4):
        model = random_model(seed)
        graph = frontend.compile_model(model)
        last = graph.nodes[-1]
        images = random_images(model.spec["input"]["shape"], 20, seed)
        gold = golden.run(graph, images)
        want = np.argmax(gold.scores.numpy() * last.class_scale + last.class_offset, axis=1)
        assert np.array_equal(gold.classes.numpy(), want)
        assert check_model(model, images, graph).ok


def test_check_reports_a_wrong_class_map_as_a_bug():
    model = zoo_model("tfc", seed=2, calibration=2)
    graph = frontend.compile_model(model)
    last = graph.nodes[-1]
    images = random_images(model.spec["input"]["shape"], 40, 3)
    gold = golden.run(graph, images)
    popular = int(np.bincount(gold.classes.numpy()).argmax())
    offsets = last.class_offset.copy()
    offsets[popular] -= int(last.class_scale.max()) * 4 * last.cols  # never wins now
    bad = graph.replace([*graph.nodes[:-1], last.replace(class_offset=offsets)])
    report = check_model(model, images, bad)
    assert not report.ok and report.class_bugs > 0 and report.class_ties == 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-2, 2, allow_nan=False), min_size=2, max_size=4),
       st.floats(0.01, 3), st.integers(1, 4))
def test_common_scale_maps_are_exact_property(biases, scale, dot_max):
    """Any common scale and biases: the integer argmax is the exact argmax of the float64
    map, or (where a near-tie needs more than the largest shift) within the bound."""
    scale_v, bias = np.full(len(biases), scale), np.array(biases)
    m, b, gain, exact = frontend.class_map(scale_v, bias, dot_max)
    dots = all_dots(len(biases), dot_max)
    fa, ia = exact_argmax(scale_v, bias, dots), int_argmax(m, b, dots)
    if exact:
        assert np.array_equal(fa, ia)
    else:
        node = _classifier(scale_v, bias, m, b, gain, exact, dot_max)
        assert all(class_tie(node, dots[i], int(ia[i]), int(fa[i]), eps=0.0)
                   for i in np.flatnonzero(fa != ia))
