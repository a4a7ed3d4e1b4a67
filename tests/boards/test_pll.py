"""PLL settings: every setting keeps its primitive's limits and makes exactly the frequency
it claims; a requested frequency is made exactly when the dividers allow it, else the
nearest one is given (checked by brute force), and IceStorm's ``icepll`` and Trellis'
``ecppll`` agree."""

from __future__ import annotations

import re
import subprocess
from fractions import Fraction

import pytest

import boards
from boards.board import tool_command
from boards.pll import Ecp5Pll, Ice40Pll, Xc7Mmcm, Xc7Pll, format_hz

MHZ = 1_000_000
MODELS = {
    "ecp5": (Ecp5Pll(), 25 * MHZ),
    "ice40": (Ice40Pll(), 12 * MHZ),
    "mmcm": (Xc7Mmcm("1L"), 100 * MHZ),
    "plle2": (Xc7Pll("1L"), 100 * MHZ),
}
TARGETS = [10 * MHZ, 16_125_000, 18 * MHZ, 24 * MHZ, 25 * MHZ, 33_333_333, 40 * MHZ,
           48 * MHZ, 50 * MHZ, 65 * MHZ, 66 * MHZ, 82 * MHZ, 100 * MHZ, 125 * MHZ,
           150 * MHZ, 200 * MHZ, 275 * MHZ]


@pytest.mark.parametrize("kind", MODELS)
def test_settings_keep_the_limits_and_make_what_they_claim(kind):
    model, fin = MODELS[kind]
    lo, hi = model.limits.output
    for target in TARGETS:
        if not lo <= target <= hi:
            continue
        s = model.settings(fin, target)
        assert model.violations(s) == [], (target, s.describe())
        assert model.output_of(s) == s.output_hz
        assert s.pfd_hz == Fraction(fin, s.params.get("CLKI_DIV", s.params.get(
            "DIVCLK_DIVIDE", s.params.get("DIVR", 0) + 1)))
        assert s.exact == (s.output_hz == target)
        if s.exact:
            assert s.error_hz == 0 and s.error_ppm == 0.0


def test_known_settings():
    e = MODELS["ecp5"][0].settings(25 * MHZ, 50 * MHZ)
    assert e.params == {"CLKI_DIV": 1, "CLKFB_DIV": 2, "CLKOP_DIV": 12, "CLKOP_CPHASE": 11,
                        "CLKOP_FPHASE": 0}
    assert e.vco_hz == 600 * MHZ
    i = MODELS["ice40"][0].settings(12 * MHZ, 18 * MHZ)
    assert i.params == {"DIVR": 0, "DIVF": 47, "DIVQ": 5, "FILTER_RANGE": 1}
    assert i.vco_hz == 576 * MHZ
    m = MODELS["mmcm"][0].settings(100 * MHZ, 33 * MHZ)        # 100 / 4 * 33 / 25
    assert m.exact and m.params == {"DIVCLK_DIVIDE": 4, "CLKFBOUT_MULT_F": 33.0,
                                    "CLKOUT0_DIVIDE_F": 25.0}
    near = MODELS["mmcm"][0].settings(100 * MHZ, 106_666_666)      # 320 / 3 MHz is not
    assert not near.exact and abs(near.error_hz) < 1                   # whole Hz
    p = MODELS["plle2"][0].settings(100 * MHZ, 125 * MHZ)
    assert p.exact and p.vco_hz == 1000 * MHZ and 800 * MHZ <= p.vco_hz <= 1600 * MHZ


def test_mmcm_fractional_dividers_make_what_integers_cannot():
    mmcm, pll = MODELS["mmcm"][0], MODELS["plle2"][0]
    # 67 MHz = 100 MHz / 5 * 50.25 / 15: the MMCM's multiplier in eighths; PLLE2 cannot
    s = mmcm.settings(100 * MHZ, 67 * MHZ)
    assert s.exact and s.params["CLKFBOUT_MULT_F"] == 50.25 and mmcm.violations(s) == []
    assert not pll.settings(100 * MHZ, 67 * MHZ).exact
    # integer dividers are preferred when both make the frequency
    assert mmcm.settings(100 * MHZ, 50 * MHZ).params == {
        "DIVCLK_DIVIDE": 1, "CLKFBOUT_MULT_F": 9.0, "CLKOUT0_DIVIDE_F": 18.0}
    # every frequency PLLE2 makes from 100 MHz, the MMCM makes too
    assert set(pll.achievable(100 * MHZ, 10 * MHZ, 400 * MHZ)) <= \
        set(mmcm.achievable(100 * MHZ, 10 * MHZ, 400 * MHZ))


def _brute_nearest_ecp5(model, fin, target):
    lim, best = model.limits, None
    for ci in range(1, 129):
        if not lim.pfd[0] <= Fraction(fin, ci) <= lim.pfd[1]:
            continue
        for fb in range(1, 81):
            f = Fraction(fin * fb, ci)
            if not lim.output[0] <= f <= lim.output[1]:
                continue
            if any(lim.vco[0] <= f * op <= lim.vco[1] for op in range(1, 129)):
                err = abs(f - target)
                best = err if best is None or err < best else best
    return best


def _brute_nearest_ice40(model, fin, target):
    lim, best = model.limits, None
    for r in range(16):
        pfd = Fraction(fin, r + 1)
        if not lim.pfd[0] <= pfd <= lim.pfd[1]:
            continue
        for f in range(128):
            vco = pfd * (f + 1)
            if not lim.vco[0] <= vco <= lim.vco[1]:
                continue
            for q in range(1, 7):
                out = vco / (1 << q)
                if lim.output[0] <= out <= lim.output[1]:
                    err = abs(out - target)
                    best = err if best is None or err < best else best
    return best


@pytest.mark.parametrize("target", [11_111_111, 33_000_000, 66 * MHZ, 82_300_000,
                                    123_456_789])
def test_nearest_is_the_nearest(target):
    for kind, brute in (("ecp5", _brute_nearest_ecp5), ("ice40", _brute_nearest_ice40)):
        model, fin = MODELS[kind]
        if not model.limits.output[0] <= target <= model.limits.output[1]:
            continue
        s = model.settings(fin, target)
        assert abs(s.error_hz) == brute(model, fin, target), (kind, target)


@pytest.mark.parametrize("kind", MODELS)
def test_achievable_lists_exact_frequencies(kind):
    model, fin = MODELS[kind]
    got = model.achievable(fin, 10 * MHZ, 130 * MHZ)
    assert got and got == sorted(got)
    for f in got:
        assert model.settings(fin, f).exact
    lo = model.limits.output[0]
    for f in range(max(lo, 10 * MHZ), 130 * MHZ + 1, 7 * MHZ):      # a sample of the grid
        assert (f in got) == model.settings(fin, f).exact


def test_achievable_examples():
    ice = boards.get("icebreaker")
    # DIVQ 6 gives 16.125 and 16.5 MHz, DIVQ 5 every 375 kHz from 16.875 MHz
    assert ice.clock_frequencies(16 * MHZ, 18 * MHZ, step_hz=125_000) == [
        16_125_000, 16_500_000, 16_875_000, 17_250_000, 17_625_000, 18 * MHZ]
    assert boards.get("ulx3s").clock_frequencies(40 * MHZ, 60 * MHZ) == [
        40 * MHZ, 45 * MHZ, 50 * MHZ, 55 * MHZ, 60 * MHZ]
    arty = boards.get("arty").clock_frequencies(95 * MHZ, 105 * MHZ)
    assert arty == list(range(95 * MHZ, 105 * MHZ + 1, MHZ))  # 97 MHz = 100 / 5 * 48.5 / 10


def test_unachievable_clock_names_the_nearest():
    with pytest.raises(ValueError) as e:
        boards.get("ulx3s").clock_settings(82_300_000)
    text = str(e.value)
    assert "cannot make exactly 82.3 MHz" in text and "25 MHz board clock" in text
    assert "81.25 MHz and 85 MHz" in text and "nearest: ~82.142857 MHz" in text
    with pytest.raises(ValueError, match="whole number of Hz"):
        boards.get("ulx3s").clock_settings(50e6 + 0.5)
    with pytest.raises(ValueError, match="outside its input range"):
        Ice40Pll().settings(5 * MHZ, 20 * MHZ)
    with pytest.raises(ValueError, match="10 MHz is outside its output range 16 MHz"):
        boards.get("icebreaker").clock_settings(10 * MHZ)


def test_format_hz():
    assert format_hz(50 * MHZ) == "50 MHz"
    assert format_hz(16_125_000) == "16.125 MHz"
    assert format_hz(Fraction(575 * MHZ, 7)) == "~82.142857 MHz"


def _tool(name: str) -> str:
    command = tool_command(name)
    if command is None:
        pytest.skip(f"{name} is not installed")
    return command


def test_icepll_agrees():
    icepll = _tool("icepll")
    model = Ice40Pll()
    for mhz in ("18", "24", "30", "16.125", "48", "100", "31.4"):
        out = subprocess.run([icepll, "-i", "12", "-o", mhz], capture_output=True,
                             text=True, check=True).stdout
        achieved = Fraction(re.search(r"F_PLLOUT:\s+([\d.]+) MHz \(achieved\)", out)[1])
        s = model.settings(12 * MHZ, round(Fraction(mhz) * MHZ))
        assert abs(s.output_hz / MHZ - achieved) < Fraction(1, 1000), (mhz, out)
        fields = {k: int(v) for k, v in re.findall(r"(DIVR|DIVF|DIVQ|FILTER_RANGE):\s+(\d+)",
                                                   out)}
        if s.params["DIVR"] == fields["DIVR"]:
            assert s.params["FILTER_RANGE"] == fields["FILTER_RANGE"]
        if s.exact:
            assert s.output_hz == achieved * MHZ


def test_ecppll_agrees():
    ecppll = _tool("ecppll")
    model = Ecp5Pll()
    for mhz in ("50", "40", "100", "12.5", "82.3", "66", "200"):
        out = subprocess.run([ecppll, "-i", "25", "-o", mhz], capture_output=True,
                             text=True, check=True).stdout
        theirs = Fraction(re.search(r"clkout0 frequency: ([\d.]+) MHz", out)[1])
        target = Fraction(mhz)
        s = model.settings(25 * MHZ, round(target * MHZ))
        # never further from the target than ecppll (which prints 6 significant digits)
        assert abs(s.output_hz / MHZ - target) <= abs(theirs - target) + Fraction(1, 10**4)
        vco = Fraction(re.search(r"VCO frequency: ([\d.]+)", out)[1])
        assert model.limits.vco[0] <= vco * MHZ <= model.limits.vco[1]
