# amaranth: UnusedElaboratable=no
"""Threshold unit against bnnhw.reference.threshold (one bit per lane) and
bnnhw.reference.multi_threshold (three thresholds, a 2-bit code per lane), under random
stalls, with border classes, signed and unsigned accumulators and thresholds outside the
accumulator range."""

import numpy as np
import pytest
from amaranth import Cat

from bnnhw.packing import beats, unpack
from bnnhw.reference import multi_threshold, threshold
from rtl_gen.threshold import Threshold, ThresholdParams
from sim.stream_sim import run_stream
from tests.stream_helpers import assert_stalled, output_cycles, steady_cycles


def make_case(seed, channels, pe, oh, ow, ny, nx, acc_min, acc_max, images=2):
    rng = np.random.default_rng(seed)
    t = rng.integers(acc_min - 3, acc_max + 4, size=(ny, nx, channels))
    row_class = rng.integers(0, ny, size=oh)
    col_class = rng.integers(0, nx, size=ow)
    row_class[:ny], col_class[:nx] = np.arange(ny), np.arange(nx)  # every class used
    acc = rng.integers(acc_min, acc_max + 1, size=(images, oh, ow, channels))
    # Half the accumulators sit on or next to their threshold, where >= versus > shows.
    full = t[row_class][:, col_class]
    near = np.clip(full + rng.integers(-1, 2, size=acc.shape), acc_min, acc_max)
    acc = np.where(rng.random(acc.shape) < 0.5, near, acc)
    return t, row_class, col_class, acc


def run(params, acc, seed, dut=None):
    aw = params.acc_shape.width
    inputs = [b for image in acc for pixel in image.reshape(-1, params.channels)
              for b in beats(pixel, params.pe, aw)]
    n_out = len(inputs)
    out = run_stream(dut or Threshold(params), inputs, n_out, seed=seed)
    assert_stalled(out)
    lanes = np.concatenate([unpack(word, params.pe, params.out_bits) for word in out])
    return lanes.reshape(acc.shape)


@pytest.mark.parametrize("seed,channels,pe,oh,ow,ny,nx,acc_min,acc_max", [
    (0, 4, 4, 1, 1, 1, 1, 0, 27),        # dense layer, NF = 1, one class
    (1, 6, 2, 3, 3, 3, 3, 0, 72),        # conv, NF = 3, 9 border classes
    (2, 4, 1, 2, 3, 1, 2, -765, 765),    # signed accumulators (uint8 first layer)
])
def test_threshold_matches_reference(seed, channels, pe, oh, ow, ny, nx, acc_min, acc_max):
    images = 8 if oh * ow * channels == pe else 2   # enough beats for stalls to happen
    t, rc, cc, acc = make_case(seed, channels, pe, oh, ow, ny, nx, acc_min, acc_max, images)
    params = ThresholdParams(name="conv", channels=channels, pe=pe, acc_min=acc_min,
                             acc_max=acc_max, thresholds=t, pixels=oh * ow, row_class=rc,
                             col_class=cc)
    got = run(params, acc, seed)
    assert np.array_equal(got, threshold(acc, t, rc, cc).numpy())
    assert params.cycles_per_image == oh * ow * channels // pe


def test_wrong_threshold_is_caught():
    t, rc, cc, acc = make_case(3, 4, 2, 2, 2, 2, 2, 0, 18)
    # Planted fault: one threshold that some accumulator equals is off by one in memory.
    full = t[rc][:, cc]
    _, y, x, r = np.argwhere(acc == full[None])[0]
    bad = t.copy()
    bad[rc[y], cc[x], r] += 1
    params = ThresholdParams(name="conv", channels=4, pe=2, acc_min=0, acc_max=18,
                             thresholds=bad, pixels=4, row_class=rc, col_class=cc)
    assert not np.array_equal(run(params, acc, 0), threshold(acc, t, rc, cc).numpy())


def test_clamped_words_keep_out_of_range_thresholds_constant():
    t = np.array([[[-5, 0, 10, 11, 99]]])
    params = ThresholdParams(name="fc", channels=5, pe=5, acc_min=0, acc_max=10, thresholds=t)
    assert params.threshold_shape.width == 4  # 0..11 fits 4 bits, whatever T was
    assert unpack(params.threshold_words()[0], 5, 4).tolist() == [0, 0, 10, 11, 11]


BASE = {"name": "conv3", "channels": 8, "pe": 2, "acc_min": 0, "acc_max": 9,
        "thresholds": np.zeros((1, 1, 8), np.int64)}


@pytest.mark.parametrize("change,message", [
    ({"pe": 3}, "conv3: pe must divide the 8 output channels, not 3"),
    ({"pixels": 0}, "conv3: pixels must be a positive integer, not 0"),
    ({"acc_min": 10}, "conv3: acc_max must be an integer >= 10, not 9"),
    ({"thresholds": np.zeros((1, 8), np.int64)},
     r"conv3: thresholds must have 3 dimension\(s\), not shape \[1, 8\]"),
    ({"thresholds": np.zeros((1, 1, 8))}, "conv3: thresholds must hold integers"),
    ({"thresholds": np.zeros((1, 1, 4), np.int64)},
     r"conv3: thresholds must have shape \[NY, NX, 8\], not \[1, 1, 4\]"),
    ({"row_class": np.zeros(2, np.int64)}, "conv3: give both row_class and col_class"),
    ({"pixels": 4, "row_class": np.zeros(2, np.int64), "col_class": np.zeros(3, np.int64)},
     r"conv3: row_class \(2\) x col_class \(3\) must cover the 4 output pixels"),
    ({"pixels": 4, "row_class": np.array([0, 1]), "col_class": np.zeros(2, np.int64)},
     r"conv3: row_class must lie in 0..0, found 0..1"),
])
def test_bad_parameters(change, message):
    with pytest.raises(ValueError, match=message):
        ThresholdParams(**{**BASE, **change})


def make_frac_case(seed, channels, pe, oh, ow, ny, nx, acc_min, acc_max, images=2):
    """Three ascending thresholds per channel (some equal, some outside the range) and
    accumulators on, next to and between them, so every code and every ``>=`` edge shows."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(acc_min - 3, acc_max + 4, size=(ny, nx, channels, 3)), axis=-1)
    t[0, 0, 0, 1] = t[0, 0, 0, 0]                         # T0 == T1: code 1 never occurs
    t.reshape(-1, 3)[-1] = [acc_min - 2, acc_min - 1, acc_max + 1]  # codes 2 or 3 only
    row_class = rng.integers(0, ny, size=oh)
    col_class = rng.integers(0, nx, size=ow)
    row_class[:ny], col_class[:nx] = np.arange(ny), np.arange(nx)
    acc = rng.integers(acc_min, acc_max + 1, size=(images, oh, ow, channels))
    full = t[row_class][:, col_class]                     # [OH, OW, R, 3]
    k = rng.integers(0, 3, size=acc.shape)
    on = np.take_along_axis(full[None], k[..., None], axis=-1)[..., 0]
    near = np.clip(on + rng.integers(-1, 2, size=acc.shape), acc_min, acc_max)
    acc = np.where(rng.random(acc.shape) < 0.6, near, acc)
    return t, row_class, col_class, acc


def frac_params(t, rc, cc, acc_min, acc_max, pe, **extra):
    return ThresholdParams(name="conv", channels=t.shape[2], pe=pe, acc_min=acc_min,
                           acc_max=acc_max, thresholds=t, pixels=len(rc) * len(cc),
                           row_class=rc, col_class=cc, **extra)


FRAC_CASES = [  # seed, channels, pe, oh, ow, ny, nx, acc_min, acc_max
    (10, 4, 4, 1, 1, 1, 1, 0, 27),       # dense, NF = 1
    (11, 6, 2, 3, 3, 3, 3, 0, 72),       # conv, NF = 3, 9 border classes
    (12, 4, 1, 2, 3, 1, 2, -765, 765),   # signed accumulators (uint8 first layer)
    (13, 6, 3, 2, 2, 2, 1, -54, 54),     # signed, as a gated layer's acc = 2 msb + g lsb
]


@pytest.mark.parametrize("case", FRAC_CASES, ids=lambda c: f"seed{c[0]}")
def test_three_thresholds_match_reference(case):
    seed, channels, pe, oh, ow, ny, nx, acc_min, acc_max = case
    images = 8 if oh * ow * channels == pe else 2
    t, rc, cc, acc = make_frac_case(seed, channels, pe, oh, ow, ny, nx, acc_min, acc_max,
                                    images)
    params = frac_params(t, rc, cc, acc_min, acc_max, pe)
    assert (params.levels, params.out_bits, params.o_width) == (3, 2, 2 * pe)
    want = multi_threshold(acc, t, rc, cc).numpy()
    assert set(np.unique(want)) == {0, 1, 2, 3}
    assert np.array_equal(run(params, acc, seed), want)
    assert params.cycles_per_image == oh * ow * channels // pe and params.latency == 1


def _binary_weighted(compares):
    """Planted fault: the outer comparisons taken as the code's two bits."""
    return Cat(compares[0], compares[2])


def _planes_swapped(compares):
    """Planted fault: the code MSB first in its lane."""
    code = sum(compares)[:2]
    return Cat(code[1], code[0])


@pytest.mark.parametrize("fault", [_binary_weighted, _planes_swapped])
def test_wrongly_summed_thresholds_are_caught(fault):
    class Faulty(Threshold):
        lane_code = staticmethod(fault)

    t, rc, cc, acc = make_frac_case(11, 6, 2, 3, 3, 3, 3, 0, 72)
    params = frac_params(t, rc, cc, 0, 72, 2)
    want = multi_threshold(acc, t, rc, cc).numpy()
    assert np.array_equal(run(params, acc, 1), want)
    assert not np.array_equal(run(params, acc, 1, dut=Faulty(params)), want)


def test_three_thresholds_at_full_rate():
    t, rc, cc, acc = make_frac_case(14, 6, 2, 2, 2, 2, 2, 0, 40, images=3)
    params = frac_params(t, rc, cc, 0, 40, 2)
    inputs = [b for image in acc for pixel in image.reshape(-1, 6) for b in beats(pixel, 2, 6)]
    stamps, words = output_cycles(Threshold(params), inputs, len(inputs))
    lanes = np.concatenate([unpack(w, 2, 2) for w in words]).reshape(acc.shape)
    assert np.array_equal(lanes, multi_threshold(acc, t, rc, cc).numpy())
    assert steady_cycles(stamps, params.pixels * params.nf) == [params.cycles_per_image] * 2


def test_three_threshold_words():
    t = np.array([[[[-5, 0, 3], [4, 4, 11], [10, 11, 99]]]])
    params = ThresholdParams(name="fc", channels=3, pe=3, acc_min=0, acc_max=10, thresholds=t)
    assert params.memory.width == 3 * 3 * 4
    # lane i's three clamped thresholds at entries 3i, 3i + 1, 3i + 2 of the word
    assert unpack(params.threshold_words()[0], 9, 4).tolist() == [0, 0, 3, 4, 4, 11, 10, 11,
                                                                  11]
    folded = ThresholdParams(name="fc", channels=4, pe=2, acc_min=-8, acc_max=7,
                             thresholds=np.arange(12).reshape(1, 1, 4, 3) - 6)
    words = folded.threshold_words()
    assert [unpack(w, 6, 5, signed=True).tolist() for w in words] == [
        [-6, -5, -4, -3, -2, -1], [0, 1, 2, 3, 4, 5]]


FRAC_BASE = {**BASE, "thresholds": np.zeros((1, 1, 8, 3), np.int64)}


@pytest.mark.parametrize("change,message", [
    ({"thresholds": np.zeros((1, 1, 8, 2), np.int64)},
     r"conv3: thresholds must have shape \[NY, NX, 8, 3\], not \[1, 1, 8, 2\]"),
    ({"thresholds": np.zeros((1, 1, 6, 3), np.int64)},
     r"conv3: thresholds must have shape \[NY, NX, 8, 3\], not \[1, 1, 6, 3\]"),
    ({"thresholds": np.zeros((1, 1, 1, 8, 3), np.int64)},
     r"conv3: thresholds must have 3 dimension\(s\), not shape \[1, 1, 1, 8, 3\] \(or 4"),
    ({"thresholds": np.zeros((1, 1, 8, 3))}, "conv3: thresholds must hold integers"),
    ({"thresholds": np.tile([1, 5, 4], (2, 3, 8, 1))},
     (r"conv3: the three thresholds of channel 0 \(border class 0, 0\) must ascend, "
      r"T0 <= T1 <= T2, not 1, 5, 4")),
])
def test_bad_three_thresholds(change, message):
    with pytest.raises(ValueError, match=message):
        ThresholdParams(**{**FRAC_BASE, **change})


def test_descending_thresholds_name_the_channel():
    t = np.zeros((2, 2, 8, 3), np.int64)
    t[1, 0, 5] = [3, 2, 7]
    with pytest.raises(ValueError, match=r"channel 5 \(border class 1, 0\) .* not 3, 2, 7"):
        ThresholdParams(**{**FRAC_BASE, "thresholds": t, "pixels": 4,
                           "row_class": np.array([0, 1]), "col_class": np.array([0, 1])})
    params = ThresholdParams(**FRAC_BASE, runtime_writable=True)
    bad = np.zeros((1, 1, 8, 3), np.int64)
    bad[0, 0, 7] = [0, 1, 0]
    with pytest.raises(ValueError, match=r"conv3: the three thresholds of channel 7"):
        params.threshold_words(bad)
