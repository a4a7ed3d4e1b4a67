"""Sliding-window generator against ``bnnhw.reference.sliding_window``: random shapes,
several images back to back, random stalls on both sides, exact comparison."""

import random

import numpy as np
import pytest
from amaranth.back import verilog

from bnnhw import reference
from bnnhw.packing import beats
from rtl_gen.sliding_window import SlidingWindow, SlidingWindowParams
from sim.stream_sim import run_stream
from tests.stream_helpers import assert_stalled, output_cycles, steady_cycles


def check(params, images=2, seed=0, dut=None, stall=0.3):
    """``(hardware beats, reference beats)`` for ``images`` random maps."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 1 << params.elem_width,
                     size=(images, params.height, params.width, params.channels))
    win = reference.sliding_window(x, params.kernel, params.stride, params.padding,
                                   params.pad_value)
    expected = beats(win.reshape(-1).tolist(), params.simd, params.elem_width)
    got = run_stream(dut or SlidingWindow(params), beats(x.reshape(-1), params.simd,
                                                         params.elem_width),
                     len(expected), seed=seed, stall_in=stall, stall_out=stall)
    if stall:
        assert_stalled(got)
    return got, expected


def random_params(rng: random.Random) -> SlidingWindowParams:
    """Small random layer: odd channel counts, kernels 1-5, strides 1-2, paddings 0-2."""
    while True:
        k = rng.randint(1, 5)
        s = rng.randint(1, 2)
        pad = rng.randint(0, min(2, k))
        h = rng.randint(max(1, k - 2 * pad), 7)
        w = rng.randint(max(1, k - 2 * pad), 7)
        c = rng.choice([1, 2, 3, 5, 6])
        simd = rng.choice([d for d in range(1, c + 1) if c % d == 0])
        ew = rng.choice([1, 1, 8])
        pad_value = rng.randint(0, 1) if ew == 1 else 0
        p = SlidingWindowParams(h, w, c, k, s, pad, simd, ew, pad_value)
        if p.out_beats <= 700:   # keeps each case well under a second of simulation
            return p


@pytest.mark.parametrize("seed", range(12))
def test_random_layers_match_reference(seed):
    p = random_params(random.Random(seed))
    got, expected = check(p, images=2, seed=seed)
    assert got == expected, p


@pytest.mark.parametrize("p", [
    # stride 2 with K > S row reuse, top/left padding, pad bit 1
    SlidingWindowParams(5, 6, 3, 3, 2, 1, simd=3, pad_value=1),
    # 5x5 'same' on a map smaller than the line buffer; uint8 pixels
    SlidingWindowParams(4, 3, 3, 5, 1, 2, simd=1, elem_width=8),
    # windows lying entirely in the padding, unused rows between strides
    SlidingWindowParams(3, 4, 1, 1, 2, 2),
    # valid convolution: the next image's rows are prefetched
    SlidingWindowParams(4, 4, 5, 3, 1, 0, simd=5),
], ids=["s2k3", "k5-small", "all-pad", "valid"])
def test_edge_cases_three_images(p):
    got, expected = check(p, images=3, seed=7, stall=0.5)
    assert got == expected


@pytest.mark.parametrize("args", [
    (8, 8, 2, 3, 1, 1, 1),   # output-bound, same padding
    (8, 8, 1, 3, 1, 0, 1),   # valid: prefetch of the next image
    (9, 7, 2, 3, 2, 1, 2),   # stride 2
    (6, 6, 3, 1, 2, 0, 3),   # input-bound
    (6, 6, 1, 5, 1, 2, 1),   # K = 5
])
def test_cycles_per_image_matches_model(args):
    p = SlidingWindowParams(*args)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, size=(3, p.height, p.width, p.channels))
    stamps, _ = output_cycles(SlidingWindow(p), beats(x.reshape(-1), p.simd), 3 * p.out_beats)
    for measured in steady_cycles(stamps, p.out_beats):
        assert abs(measured - p.cycles_per_image) <= 0.05 * p.cycles_per_image
    # first window: needs input pixel (K-1-P, K-1-P), accepted at beat index below
    first_pixel = (p.kernel - 1 - p.padding) * p.width + (p.kernel - 1 - p.padding)
    assert stamps[0] == (first_pixel + 1) * p.beats_per_pixel - 1 + 2


@pytest.mark.parametrize("pad_value", [0, 3], ids=["pad-code0", "pad-code3"])
@pytest.mark.parametrize("p", [
    (5, 6, 4, 3, 1, 1, 2),   # height, width, channels, kernel, stride, padding, simd
    (4, 5, 3, 3, 2, 2, 3),
], ids=["same", "s2p2"])
def test_two_bit_map_with_pad_codes(p, pad_value):
    """2-bit activation codes, padded with the code 0 (-1) or 3 (+1)."""
    params = SlidingWindowParams(*p, elem_width=2, pad_value=pad_value)
    assert params.beat_width == 2 * params.simd
    got, expected = check(params, images=2, seed=11 + pad_value)
    assert got == expected
    # the pad code reaches the output: a wrong pad value would be seen
    other = SlidingWindowParams(*p, elem_width=2, pad_value=3 - pad_value)
    _, expected_other = check(other, images=2, seed=11 + pad_value, stall=0)
    assert expected_other != expected


def test_missing_overwrite_guard_is_caught():
    """Planted fault: the write side ignores the read side and overwrites rows in use."""

    class NoGuard(SlidingWindow):
        def elaborate(self, platform):
            m = super().elaborate(platform)
            m.d.comb += self.i_stream.ready.eq(1)
            return m

    p = SlidingWindowParams(6, 5, 1, 3, 1, 1)
    got, expected = check(p, images=2, seed=3, dut=NoGuard(p))
    assert got != expected


def test_params_are_validated():
    with pytest.raises(ValueError, match="conv3: simd must divide the 6 channels, not 4"):
        SlidingWindowParams(4, 4, 6, 3, simd=4, name="conv3")
    with pytest.raises(ValueError, match="kernel 5 is larger than the padded height 4"):
        SlidingWindowParams(2, 8, 1, 5, padding=1)
    with pytest.raises(ValueError, match="pad_value must be an integer in 0..1"):
        SlidingWindowParams(4, 4, 1, 3, pad_value=2)
    with pytest.raises(ValueError, match="stride must be a positive integer, not 0"):
        SlidingWindowParams(4, 4, 1, 3, stride=0)


def test_derived_figures():
    p = SlidingWindowParams(32, 32, 64, 3, 1, 0, simd=16)
    assert (p.out_height, p.out_width, p.beats_per_pixel) == (30, 30, 4)
    assert p.out_beats == 30 * 30 * 9 * 4
    assert p.cycles_per_image == p.out_beats
    assert p.buffer_rows == 6
    assert p.memory_bits == 6 * 32 * 64
    assert SlidingWindowParams(32, 32, 64, 3, 1, 1, simd=16).buffer_rows == 4


def test_converts_to_verilog():
    text = verilog.convert(SlidingWindow(SlidingWindowParams(5, 5, 3, 3, 2, 1, simd=3)),
                           name="swg")
    assert "module swg" in text
