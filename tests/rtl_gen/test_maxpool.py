"""Max-pool against ``bnnhw.reference.maxpool``: binary maps and 2-bit codes, random shapes
and AND masks, both structures (windows apart and overlapping), images back to back, random
stalls."""

import random

import numpy as np
import pytest
from amaranth import Cat
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
    shape = (images, params.height, params.width, params.channels)
    ew = params.elem_width
    if ew == 1:
        x = (rng.random(shape) < rng.choice([0.2, 0.5, 0.8])).astype(np.int64)
    else:  # codes of skewed frequencies; windows where only codes 1 and 2 meet
        x = rng.choice(4, size=shape, p=rng.dirichlet(np.ones(4)))
        k = params.kernel
        x[:, :k, :k] = rng.choice([1, 2], size=(images, k, k, params.channels))
    pooled = reference.maxpool(x, params.kernel, params.step, params.and_mask,
                               element_bits=ew)
    expected = beats(pooled.reshape(-1).tolist(), params.simd, ew)
    got = run_stream(dut or MaxPool(params), beats(x.reshape(-1), params.simd, ew),
                     len(expected), seed=seed, stall_in=stall, stall_out=stall)
    if stall:
        assert_stalled(got)
    return got, expected


def random_params(rng: random.Random, overlapping: bool, elem_width: int = 1) -> MaxPoolParams:
    while True:
        k = rng.randint(1, 3)
        s = rng.randint(1, k - 1) if overlapping and k > 1 else rng.randint(k, k + 1)
        if overlapping and k == 1:
            continue
        h, w = rng.randint(k, 7), rng.randint(k, 7)
        c = rng.choice([1, 3, 4, 5, 6])
        simd = rng.choice([d for d in range(1, c + 1) if c % d == 0])
        mask = rng.choice([None, tuple(rng.randint(0, 1) for _ in range(c))])
        p = MaxPoolParams(h, w, c, k, s, simd, mask, elem_width=elem_width)
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


@pytest.mark.parametrize("overlapping", [False, True], ids=["apart", "overlap"])
@pytest.mark.parametrize("seed", range(3))
def test_two_bit_codes_match_reference(seed, overlapping):
    p = random_params(random.Random(300 + seed + 10 * overlapping), overlapping, elem_width=2)
    assert p.overlapping == overlapping and p.i_width == 2 * p.simd
    got, expected = check(p, images=2, seed=seed)
    assert got == expected, p


class BitwiseCodes(MaxPool):
    """Planted fault: 2-bit codes pooled bit by bit (OR, AND on AND lanes), which turns
    codes 1 and 2 into 3."""

    def fold(self, acc, x, and_lanes):
        both = Cat(*(b.replicate(2) for b in and_lanes))
        return ((acc | x) & ~both) | (acc & x & both)


@pytest.mark.parametrize("p", [MaxPoolParams(4, 4, 4, 2, simd=2, and_mask=(1, 0, 0, 1),
                                             elem_width=2),
                               MaxPoolParams(5, 5, 2, 3, 2, simd=1, elem_width=2)],
                         ids=["apart", "overlap"])
def test_bitwise_pooling_of_codes_is_caught(p):
    got, expected = check(p, images=2, seed=6)
    assert got == expected
    got, expected = check(p, images=2, seed=6, dut=BitwiseCodes(p))
    assert got != expected


@pytest.mark.parametrize("p", [
    MaxPoolParams(6, 6, 4, 2, simd=2, and_mask=(1, 0, 0, 1), elem_width=2),  # 2x2/2
    MaxPoolParams(7, 7, 2, 3, 2, simd=2, and_mask=(0, 1), elem_width=2),     # overlapping
], ids=["apart", "overlap"])
def test_two_bit_cycles_per_image_match_model(p):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, size=(3, p.height, p.width, p.channels))
    stamps, _ = output_cycles(MaxPool(p), beats(x.reshape(-1), p.simd, 2), 3 * p.out_beats)
    for measured in steady_cycles(stamps, p.out_beats):
        assert abs(measured - p.cycles_per_image) <= 0.05 * p.cycles_per_image
    one_bit = MaxPoolParams(p.height, p.width, p.channels, p.kernel, p.stride, p.simd,
                            p.and_mask)
    assert (p.cycles_per_image, p.latency) == (one_bit.cycles_per_image, one_bit.latency)


def test_two_bit_params():
    p = MaxPoolParams(28, 28, 64, 2, simd=16, elem_width=2)
    assert (p.i_width, p.o_width, p.memory_bits) == (32, 32, 14 * 64 * 2)
    q = MaxPoolParams(7, 7, 4, 3, 2, simd=2, elem_width=2)
    assert q.window_params.elem_width == 2
    assert q.memory_bits == 2 * 4 + q.window_params.memory_bits
    with pytest.raises(ValueError, match="pool2: elem_width must be one of 1, 2, not 8"):
        MaxPoolParams(4, 4, 2, 2, name="pool2", elem_width=8)
    text = verilog.convert(MaxPool(MaxPoolParams(4, 4, 4, 2, simd=2, and_mask=(1, 0, 0, 1),
                                                 elem_width=2)), name="pool")
    assert "module pool" in text
