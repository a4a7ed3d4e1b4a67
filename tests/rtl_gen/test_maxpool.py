"""Binary max-pool against ``bnnhw.reference.maxpool``: random shapes and AND masks, both
structures (windows apart and overlapping), images back to back, random stalls."""

import random

import numpy as np
import pytest
from amaranth.back import verilog

from bnnhw import reference
from bnnhw.packing import beats
from rtl_gen.maxpool import MaxPool, MaxPoolParams
from sim.stream_sim import run_stream
from tests.stream_helpers import assert_stalled, output_cycles, steady_cycles


def check(params, images=2, seed=0, dut=None, stall=0.3):
    """``(hardware beats, reference beats)`` for ``images`` random binary maps."""
    rng = np.random.default_rng(seed)
    # biased bits so that both OR and AND windows see mixed and uniform inputs
    x = (rng.random((images, params.height, params.width, params.channels))
         < rng.choice([0.2, 0.5, 0.8])).astype(np.int64)
    pooled = reference.maxpool(x, params.kernel, params.step, params.and_mask)
    expected = beats(pooled.reshape(-1).tolist(), params.simd)
    got = run_stream(dut or MaxPool(params), beats(x.reshape(-1), params.simd),
                     len(expected), seed=seed, stall_in=stall, stall_out=stall)
    if stall:
        assert_stalled(got)
    return got, expected


def random_params(rng: random.Random, overlapping: bool) -> MaxPoolParams:
    while True:
        k = rng.randint(1, 3)
        s = rng.randint(1, k - 1) if overlapping and k > 1 else rng.randint(k, k + 1)
        if overlapping and k == 1:
            continue
        h, w = rng.randint(k, 7), rng.randint(k, 7)
        c = rng.choice([1, 3, 4, 5, 6])
        simd = rng.choice([d for d in range(1, c + 1) if c % d == 0])
        mask = rng.choice([None, tuple(rng.randint(0, 1) for _ in range(c))])
        p = MaxPoolParams(h, w, c, k, s, simd, mask)
        if p.cycles_per_image <= 300:
            return p


@pytest.mark.parametrize("seed", range(8))
def test_windows_apart_match_reference(seed):
    p = random_params(random.Random(seed), overlapping=False)
    assert not p.overlapping
    got, expected = check(p, images=3, seed=seed)
    assert got == expected, p


@pytest.mark.parametrize("seed", range(5))
def test_overlapping_windows_match_reference(seed):
    p = random_params(random.Random(100 + seed), overlapping=True)
    assert p.overlapping
    got, expected = check(p, images=2, seed=seed)
    assert got == expected, p


@pytest.mark.parametrize("p", [
    MaxPoolParams(6, 6, 4, 2, simd=2, and_mask=(1, 0, 0, 1)),   # 2x2/2
    MaxPoolParams(7, 5, 3, 2, 3),                               # gaps, dropped edge
    MaxPoolParams(7, 7, 2, 3, 2, simd=2, and_mask=(0, 1)),      # overlapping
])
def test_cycles_per_image_matches_model(p):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 2, size=(3, p.height, p.width, p.channels))
    stamps, _ = output_cycles(MaxPool(p), beats(x.reshape(-1), p.simd), 3 * p.out_beats)
    for measured in steady_cycles(stamps, p.out_beats):
        assert abs(measured - p.cycles_per_image) <= 0.05 * p.cycles_per_image


def test_ignored_and_mask_is_caught():
    """Planted fault: every channel pooled with OR, the AND mask forgotten."""

    class OrOnly(MaxPoolParams):
        def mask_words(self):
            return [0] * self.beats_per_pixel

    p = MaxPoolParams(4, 4, 4, 2, simd=2, and_mask=(1, 0, 1, 1))
    got, expected = check(p, images=2, seed=5, dut=MaxPool(OrOnly(**vars(p))))
    assert got != expected


def test_params_are_validated():
    with pytest.raises(ValueError, match=r"pool1: and_mask must have shape \[3\]"):
        MaxPoolParams(4, 4, 3, 2, and_mask=(1, 0), name="pool1")
    with pytest.raises(ValueError, match="and_mask must hold bits 0/1"):
        MaxPoolParams(4, 4, 2, 2, and_mask=(1, 2))
    with pytest.raises(ValueError, match="simd must divide the 6 channels, not 4"):
        MaxPoolParams(4, 4, 6, 2, simd=4)
    with pytest.raises(ValueError, match="kernel 5 is larger than the 4x8 input map"):
        MaxPoolParams(4, 8, 1, 5)


def test_derived_figures():
    p = MaxPoolParams(28, 28, 64, 2, simd=16)
    assert (p.step, p.out_height, p.out_width, p.beats_per_pixel) == (2, 14, 14, 4)
    assert p.cycles_per_image == 28 * 28 * 4
    assert p.memory_bits == 14 * 64
    assert p.mask_words() == [0, 0, 0, 0]
    assert MaxPoolParams(3, 3, 3, 1, and_mask=(1, 0, 1)).mask_words() == [1, 0, 1]


@pytest.mark.parametrize("p", [MaxPoolParams(6, 6, 4, 2, simd=2, and_mask=(1, 0, 0, 1)),
                               MaxPoolParams(6, 6, 4, 3, 2, simd=2)], ids=["apart", "overlap"])
def test_converts_to_verilog(p):
    assert "module pool" in verilog.convert(MaxPool(p), name="pool")
