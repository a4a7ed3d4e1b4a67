"""Width converter against a bit-list model: any widths, frames that do not fill the last
beat, garbage above a frame's last input bits, random stalls on both sides."""

import random

import numpy as np
import pytest
from amaranth.back import verilog

from bnnhw.packing import pack
from rtl_gen.width_converter import WidthConverter, WidthConverterParams
from sim.stream_sim import run_stream
from tests.stream_helpers import assert_stalled, clocked, output_cycles, steady_cycles


def frame_beats(bits, width, garbage=None):
    """A frame's bits cut into ``width``-bit beats, LSB first; the last beat's unused bits
    are zeros, or random bits drawn from ``garbage`` (an rng) when given."""
    words = []
    for i in range(0, len(bits), width):
        chunk = list(bits[i:i + width])
        fill = width - len(chunk)
        chunk += list(garbage.integers(0, 2, fill)) if garbage is not None else [0] * fill
        words.append(pack(chunk))
    return words


def check(params, frames=3, seed=0, dut=None, stall=0.3, count=None):
    """``(hardware beats, model beats)`` for ``frames`` random frames (the first ``count``
    beats of each if given)."""
    rng = np.random.default_rng(seed)
    inputs, expected = [], []
    for _ in range(frames):
        bits = rng.integers(0, 2, params.frame_bits)
        inputs += frame_beats(bits, params.in_width, garbage=rng)
        expected += frame_beats(bits, params.out_width)
    expected = expected[:count]
    got = run_stream(clocked(dut or WidthConverter(params)), inputs, len(expected), seed=seed,
                     stall_in=stall, stall_out=stall)
    if stall:
        assert_stalled(got)
    return got, expected


def random_params(rng: random.Random) -> WidthConverterParams:
    ew = rng.choice([1, 2, 4, 8])
    return WidthConverterParams(in_width=ew * rng.randint(1, 9), out_width=ew * rng.randint(1, 9),
                                frame_elems=rng.randint(1, 24), elem_width=ew)


@pytest.mark.parametrize("seed", range(10))
def test_random_widths_match_model(seed):
    p = random_params(random.Random(seed))
    frames = max(3, -(-12 // min(p.in_beats, p.out_beats)))   # beats enough to stall
    got, expected = check(p, frames=frames, seed=seed)
    assert got == expected, p


@pytest.mark.parametrize("win, wout, frame", [
    (12, 8, 6), (8, 12, 6),        # gearbox, whole beats: 2 x 12 bits = 3 x 8 bits
    (12, 8, 5), (8, 12, 5),        # gearbox, partial beats at the frame end
    (64, 16, 24), (16, 64, 24),    # multiples, last output / input beat partial
    (8, 8, 3), (8, 8, 4),          # same width: padding, and a plain wire
])
def test_named_cases(win, wout, frame):
    p = WidthConverterParams(win, wout, frame, elem_width=4)
    got, expected = check(p, frames=4, seed=win + wout + frame)
    assert got == expected


def test_wire_when_nothing_to_convert():
    assert WidthConverterParams(8, 8, 16, elem_width=4).is_wire
    assert not WidthConverterParams(8, 8, 3, elem_width=4).is_wire


@pytest.mark.parametrize("win, wout, frame", [(12, 8, 24), (64, 16, 32), (16, 64, 20),
                                              (8, 8, 16)])
def test_cycles_per_image_matches_model(win, wout, frame):
    p = WidthConverterParams(win, wout, frame, elem_width=4)
    rng = np.random.default_rng(3)
    inputs = []
    for _ in range(4):
        inputs += frame_beats(rng.integers(0, 2, p.frame_bits), win)
    stamps, _ = output_cycles(WidthConverter(p), inputs, 4 * p.out_beats)
    for measured in steady_cycles(stamps, p.out_beats):
        assert measured == p.cycles_per_image
    # first output beat: valid the cycle after the input beat completing it
    first_in = -(-wout // win) - 1
    assert stamps[0] == first_in + (0 if p.is_wire else 1)


def test_straddling_frames_are_caught():
    """Planted fault: no zero padding at the frame end, so frames share an output beat."""

    class NoPadding(WidthConverterParams):
        @property
        def pad_bits(self):
            return 0

    p = WidthConverterParams(12, 8, 5, elem_width=4)
    # two 20-bit frames: the faulty block emits only 5 beats (40 bits), compare those
    got, expected = check(p, frames=2, seed=1, dut=WidthConverter(NoPadding(**vars(p))),
                          count=5)
    assert got != expected


def test_params_are_validated():
    with pytest.raises(ValueError, match="wc2: out_width must be a multiple of the 4-bit "
                                         "element width, not 10"):
        WidthConverterParams(8, 10, 4, elem_width=4, name="wc2")
    with pytest.raises(ValueError, match="frame_elems must be a positive integer, not 0"):
        WidthConverterParams(8, 8, 0)


def test_derived_figures():
    p = WidthConverterParams(12, 8, 5, elem_width=4)     # 20 bits per frame
    assert (p.in_beats, p.out_beats, p.last_in_bits, p.pad_bits) == (2, 3, 8, 4)
    assert p.cycles_per_image == 3


def test_converts_to_verilog():
    assert "module wc" in verilog.convert(
        WidthConverter(WidthConverterParams(12, 8, 5, elem_width=4)), name="wc")
