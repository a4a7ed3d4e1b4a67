# amaranth: UnusedElaboratable=no
"""Threshold unit against bnnhw.reference.threshold, under random stalls, with border
classes, signed and unsigned accumulators and thresholds outside the accumulator range."""

import numpy as np
import pytest

from bnnhw.packing import beats, unpack
from bnnhw.reference import threshold
from rtl_gen.threshold import Threshold, ThresholdParams
from sim.stream_sim import run_stream
from tests.stream_helpers import assert_stalled


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


def run(params, acc, seed):
    aw = params.acc_shape.width
    inputs = [b for image in acc for pixel in image.reshape(-1, params.channels)
              for b in beats(pixel, params.pe, aw)]
    n_out = len(inputs)
    out = run_stream(Threshold(params), inputs, n_out, seed=seed)
    assert_stalled(out)
    bits = np.concatenate([unpack(word, params.pe) for word in out])
    return bits.reshape(acc.shape)


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
