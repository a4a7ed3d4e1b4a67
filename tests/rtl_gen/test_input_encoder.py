"""Input encoders against ``bnnhw.reference.encode``: binary, thermometer and uint8 (plain
and through a pixel table), pixels on and around every threshold, images back to back,
random stalls."""

import numpy as np
import pytest
from amaranth.back import verilog

from bnnhw import reference
from bnnhw.nn import thermometer_thresholds
from bnnhw.packing import beats
from rtl_gen.input_encoder import InputEncoder, InputEncoderParams
from sim.stream_sim import run_stream
from tests.stream_helpers import assert_stalled, clocked, output_cycles

# Brevitas' CNV input quantiser on pixels k / 255: round(128 (2k / 255 - 1)) clipped to
# -128..127, plus 128 (254 and 255 share a code, none maps to 128)
CNV_INPUT = tuple(int(min(max(np.round(128 * (2 * k / 255 - 1)), -128), 127)) + 128
                  for k in range(256))
RANDOM_TABLE = tuple(int(v) for v in np.random.default_rng(5).integers(0, 256, 256))


def pixels(params, images, rng):
    """Random pixels, half of them on or next to a threshold of ``params``."""
    edges = {"binary": [params.threshold], "uint8": [],
             "thermometer": thermometer_thresholds(params.levels)}[params.encoding] + [0, 255]
    near = np.clip(np.array(edges)[:, None] + np.array([-1, 0, 1]), 0, 255).reshape(-1)
    shape = (images, params.height, params.width, params.channels)
    return np.where(rng.random(shape) < 0.5, rng.choice(near, shape),
                    rng.integers(0, 256, shape))


def check(params, images=2, seed=0, dut=None, stall=0.3):
    """``(hardware beats, reference beats)`` for ``images`` random images."""
    rng = np.random.default_rng(seed)
    x = pixels(params, images, rng)
    enc = reference.encode(x, params.encoding, params.threshold, params.levels, params.table)
    width = 8 if params.encoding == "uint8" else 1
    expected = beats(enc.reshape(-1).tolist(), params.o_width // width, width)
    got = run_stream(clocked(dut or InputEncoder(params)),
                     beats(x.reshape(-1), params.elements, 8), len(expected), seed=seed,
                     stall_in=stall, stall_out=stall)
    if stall:
        assert_stalled(got)
    return got, expected


@pytest.mark.parametrize("p", [
    InputEncoderParams(3, 4, 3, "binary", simd=3, threshold=128),
    InputEncoderParams(4, 3, 1, "binary", threshold=0),
    InputEncoderParams(3, 3, 3, "thermometer", simd=1, levels=8),
    InputEncoderParams(2, 5, 3, "thermometer", simd=3, levels=3),
    InputEncoderParams(3, 2, 5, "thermometer", simd=5, levels=1),
    InputEncoderParams(3, 3, 3, "uint8", simd=3),
    InputEncoderParams(3, 3, 3, "uint8", simd=3, table=CNV_INPUT),
    InputEncoderParams(2, 4, 3, "uint8", simd=3, pixels=2, table=RANDOM_TABLE),
], ids=["bin3", "bin-t0", "therm8", "therm3", "therm1", "uint8", "table", "table-2px"])
def test_matches_reference(p):
    got, expected = check(p, images=3, seed=p.levels + p.simd)
    assert got == expected


def test_one_beat_per_cycle_no_latency():
    p = InputEncoderParams(2, 2, 3, "thermometer", simd=3, levels=4)
    stamps, _ = output_cycles(InputEncoder(p), list(range(8)), 8)
    assert stamps == list(range(8))
    assert p.cycles_per_image == 4


def test_strict_comparison_is_caught():
    """Planted fault: ``pixel > threshold`` instead of ``>=`` (the DUT is built with the
    threshold one higher), on pixels that include the threshold itself."""
    p = InputEncoderParams(3, 3, 3, "binary", simd=3, threshold=100)
    faulty = InputEncoderParams(3, 3, 3, "binary", simd=3, threshold=101)
    got, expected = check(p, seed=1, dut=InputEncoder(faulty))
    assert got != expected


# FC's narrow 8-bit input: round(127 (2k / 255 - 1)) + 127
NARROW_INPUT = tuple(int(np.round(127 * (2 * k / 255 - 1))) + 127 for k in range(256))


@pytest.mark.parametrize("table", [RANDOM_TABLE, CNV_INPUT, NARROW_INPUT],
                         ids=["random", "cnv", "narrow"])
def test_every_table_entry_is_looked_up(table):
    """All 256 pixel values through a table; planted fault: one entry changed in the
    DUT's table is caught."""
    p = InputEncoderParams(8, 8, 4, "uint8", simd=4, table=table)
    x = np.random.default_rng(2).permutation(256).reshape(1, 8, 8, 4)
    want = reference.encode(x, "uint8", table=p.table)
    assert sorted(x.reshape(-1).tolist()) == list(range(256))

    def run(params):
        return run_stream(clocked(InputEncoder(params)), beats(x.reshape(-1), 4, 8), 64,
                          seed=1, stall_in=0.2, stall_out=0.2)

    assert run(p) == beats(want.reshape(-1).tolist(), 4, 8)
    bad = list(p.table)
    bad[77] ^= 1
    faulty = InputEncoderParams(8, 8, 4, "uint8", simd=4, table=tuple(bad))
    assert run(faulty) != beats(want.reshape(-1).tolist(), 4, 8)


def test_params_are_validated():
    with pytest.raises(ValueError, match="enc: encoding must be one of binary, uint8, "
                                         "thermometer, not 'gray'"):
        InputEncoderParams(4, 4, 3, "gray", name="enc")
    with pytest.raises(ValueError, match="threshold must be an integer in 0..255, not 256"):
        InputEncoderParams(4, 4, 3, threshold=256)
    with pytest.raises(ValueError, match="simd must divide the 3 channels, not 2"):
        InputEncoderParams(4, 4, 3, simd=2)
    with pytest.raises(ValueError, match="enc: a pixel table needs the uint8 encoding, not "
                                         "binary"):
        InputEncoderParams(4, 4, 3, table=RANDOM_TABLE, name="enc")
    with pytest.raises(ValueError, match="table entry must be an integer in 0..255, not 256"):
        InputEncoderParams(4, 4, 3, "uint8", table=(256,) * 256)


def test_derived_figures():
    p = InputEncoderParams(32, 32, 3, "thermometer", simd=3, levels=8)
    assert (p.i_width, p.o_width, p.out_channels) == (24, 24, 24)
    assert p.cycles_per_image == 32 * 32


@pytest.mark.parametrize("encoding", ["binary", "thermometer", "uint8"])
def test_converts_to_verilog(encoding):
    p = InputEncoderParams(4, 4, 3, encoding, simd=3, levels=4)
    assert "module enc" in verilog.convert(InputEncoder(p), name="enc")


@pytest.mark.parametrize("p", [
    InputEncoderParams(4, 4, 1, "binary", simd=1, threshold=100, pixels=8),
    InputEncoderParams(3, 4, 3, "thermometer", simd=3, levels=3, pixels=4),
    InputEncoderParams(2, 6, 2, "uint8", simd=2, pixels=12),
], ids=["bin-k8", "therm-k4", "uint8-k12"])
def test_several_pixels_per_beat_in_one_cycle(p):
    """``pixels`` whole pixels per beat, all encoded in the same cycle."""
    got, expected = check(p, images=12, seed=p.pixels)
    assert got == expected
    assert p.cycles_per_image == p.height * p.width // p.pixels
    assert p.i_width == 8 * p.channels * p.pixels
    stamps, _ = output_cycles(InputEncoder(p), list(range(4)), 4)
    assert stamps == list(range(4))


def test_pixels_per_beat_is_validated():
    with pytest.raises(ValueError, match="enc: with 2 pixels per beat simd must be all 3 "
                                         "channels, not 1"):
        InputEncoderParams(4, 4, 3, simd=1, pixels=2, name="enc")
    with pytest.raises(ValueError, match="enc: pixels must divide the 16 pixels of an image, "
                                         "not 3"):
        InputEncoderParams(4, 4, 3, simd=3, pixels=3, name="enc")
