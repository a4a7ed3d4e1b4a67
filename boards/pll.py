"""Clock synthesis: the PLLs that turn a board's clock into the design clock, computed
exactly from each primitive's divider ranges and frequency limits.

A model (``Ecp5Pll``, ``Ice40Pll``, ``Xc7Mmcm``, ``Xc7Pll``) knows its primitive's output
equation and limits (``PllLimits``: reference input, phase-detector, VCO and output
ranges, in Hz). ``settings(input_hz, output_hz)`` searches every legal divider
combination in exact rational arithmetic and gives the best one (``PllSettings``): the
requested frequency exactly when it can be made, else the nearest one (``exact`` says
which). Among settings of equal error it prefers integer dividers (MMCM), the smallest
reference divider (the highest phase-detector frequency, the least jitter) and then the
VCO nearest the middle of its range. ``achievable(input_hz, lo, hi, step)`` lists the
frequencies on a grid of ``step`` Hz that are made exactly. ``instance(settings, ...)``
gives the primitive, ready for an Amaranth module.

Output equations (feedback from the output, no phase shift):

- ECP5 ``EHXPLLL``: ``f = fin * CLKFB_DIV / CLKI_DIV``, ``f_vco = f * CLKOP_DIV``
  (``CLKI_DIV`` 1..128, ``CLKFB_DIV`` 1..80, ``CLKOP_DIV`` 1..128; limits of Project
  Trellis' ``ecppll``: input 8..400 MHz, PFD 3.125..400 MHz, VCO 400..800 MHz, output
  10..400 MHz).
- iCE40 ``SB_PLL40_PAD`` / ``SB_PLL40_CORE`` in SIMPLE feedback:
  ``f = fin * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)`` (``DIVR`` 0..15, ``DIVF`` 0..127,
  ``DIVQ`` 1..6; PFD 10..133 MHz, VCO 533..1066 MHz, output 16..275 MHz, as IceStorm's
  ``icepll``); ``FILTER_RANGE`` follows from the PFD frequency.
- Xilinx 7-series ``MMCME2_BASE``:
  ``f = fin * CLKFBOUT_MULT_F / (DIVCLK_DIVIDE * CLKOUT0_DIVIDE_F)`` with ``DIVCLK_DIVIDE``
  1..106, ``CLKFBOUT_MULT_F`` 2.000..64.000 and ``CLKOUT0_DIVIDE_F`` 1 or 2.000..128.000 in
  steps of 0.125; ``PLLE2_BASE``: ``f = fin * CLKFBOUT_MULT / (DIVCLK_DIVIDE *
  CLKOUT0_DIVIDE)``, 1..56, 2..64, 1..128. Limits by speed grade from the Artix-7 data sheet
  (``xc7_mmcm_limits``, ``xc7_pll_limits``); the output is also kept within what a BUFG
  carries.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

__all__ = ["Ecp5Pll", "Ice40Pll", "PllLimits", "PllModel", "PllSettings", "Xc7Mmcm", "Xc7Pll",
           "format_hz", "xc7_mmcm_limits", "xc7_pll_limits"]

MHZ = 1_000_000


def format_hz(hz: int | Fraction) -> str:
    """``50 MHz``, ``16.125 MHz``, ``82.142857 MHz``: exact when it can be said in six
    decimals of MHz, rounded to them otherwise (marked with ``~``)."""
    q = Fraction(hz) / MHZ
    text = f"{float(q):.6f}".rstrip("0").rstrip(".")
    exact = (q * 10**6).denominator == 1
    return f"{text} MHz" if exact else f"~{text} MHz"


@dataclass(frozen=True)
class PllLimits:
    """Frequency ranges (Hz, inclusive) a PLL must keep to."""

    input: tuple[int, int]
    pfd: tuple[int, int]
    vco: tuple[int, int]
    output: tuple[int, int]

    def violations(self, fin, pfd, vco, fout) -> list[str]:
        out = []
        for what, value, (lo, hi) in (("input", fin, self.input), ("PFD", pfd, self.pfd),
                                      ("VCO", vco, self.vco), ("output", fout, self.output)):
            if not lo <= value <= hi:
                out.append(f"{what} {format_hz(value)} outside {format_hz(lo)}.."
                           f"{format_hz(hi)}")
        return out


@dataclass(frozen=True)
class PllSettings:
    """One legal configuration of a PLL and the frequency it makes (exactly)."""

    primitive: str
    input_hz: int
    requested_hz: int
    output_hz: Fraction
    pfd_hz: Fraction
    vco_hz: Fraction
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return self.output_hz == self.requested_hz

    @property
    def error_hz(self) -> Fraction:
        return self.output_hz - self.requested_hz

    @property
    def error_ppm(self) -> float:
        return float(self.error_hz / self.requested_hz * 10**6)

    def describe(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return (f"{self.primitive} {format_hz(self.input_hz)} -> {format_hz(self.output_hz)} "
                f"(PFD {format_hz(self.pfd_hz)}, VCO {format_hz(self.vco_hz)}; {params})")


class PllModel:
    """The divider search shared by every family; subclasses enumerate their settings."""

    primitive: str = ""
    limits: PllLimits

    def _candidates(self, fin: int, target: int) -> Iterator[tuple[tuple, PllSettings]]:
        """Legal settings worth comparing for ``target``, each with its preference key
        after the error (lower is better)."""
        raise NotImplementedError

    def _exact_candidates(self, fin: int, target: int) -> Iterator[tuple[tuple, PllSettings]]:
        """The legal settings that make ``target`` exactly (a model may find them faster
        than by filtering ``_candidates``)."""
        return ((pref, s) for pref, s in self._candidates(fin, target)
                if s.output_hz == target)

    def check_input(self, fin: int) -> None:
        lo, hi = self.limits.input
        if not lo <= fin <= hi:
            raise ValueError(f"{self.primitive}: a {format_hz(fin)} reference is outside "
                             f"its input range {format_hz(lo)}..{format_hz(hi)}")

    def settings(self, input_hz: int, output_hz: int) -> PllSettings:
        """The best legal settings for ``output_hz`` from ``input_hz``: exact if possible,
        else the nearest frequency the PLL can make (``PllSettings.exact`` is False)."""
        fin, target = int(input_hz), int(output_hz)
        self.check_input(fin)
        lo, hi = self.limits.output
        if not lo <= target <= hi:
            raise ValueError(f"{self.primitive}: {format_hz(target)} is outside its output "
                             f"range {format_hz(lo)}..{format_hz(hi)}")
        best = None
        exact = [(pref, s) for pref, s in self._exact_candidates(fin, target)]
        for pref, s in exact or self._candidates(fin, target):
            key = (abs(s.output_hz - target), *pref)
            if best is None or key < best[0]:
                best = (key, s)
        if best is None:
            lo, hi = self.limits.output
            raise ValueError(f"{self.primitive}: no legal setting from {format_hz(fin)} "
                             f"(outputs {format_hz(lo)}..{format_hz(hi)})")
        return best[1]

    def achievable(self, input_hz: int, lo_hz: int | None = None, hi_hz: int | None = None,
                   step_hz: int = MHZ) -> list[int]:
        """Frequencies ``k * step_hz`` in ``lo_hz..hi_hz`` (default: the output range) that
        this PLL makes exactly from ``input_hz``."""
        lo = self.limits.output[0] if lo_hz is None else int(lo_hz)
        hi = self.limits.output[1] if hi_hz is None else int(hi_hz)
        step_hz = int(step_hz)
        first = -(-lo // step_hz) * step_hz
        self.check_input(int(input_hz))
        return [f for f in range(first, hi + 1, step_hz)
                if f > 0 and next(iter(self._exact_candidates(int(input_hz), f)), None)]

    def nearest_exact(self, input_hz: int, output_hz: int, step_hz: int = MHZ,
                      span: int = 64) -> tuple[int | None, int | None]:
        """The nearest frequencies on the ``step_hz`` grid below and above ``output_hz``
        (within ``span`` steps) that this PLL makes exactly; None where there is none."""
        fin = int(input_hz)
        base = output_hz // step_hz * step_hz
        below = next((f for f in range(base, base - span * step_hz, -step_hz)
                      if 0 < f < output_hz and any(self._exact_candidates(fin, f))), None)
        above = next((f for f in range(base + step_hz, base + span * step_hz, step_hz)
                      if f > output_hz and any(self._exact_candidates(fin, f))), None)
        return below, above

    def violations(self, s: PllSettings) -> list[str]:
        """What ``s`` breaks: frequency limits or divider ranges (empty when legal)."""
        return self.limits.violations(s.input_hz, s.pfd_hz, s.vco_hz, s.output_hz) \
            + self._divider_violations(s)

    def _divider_violations(self, s: PllSettings) -> list[str]:
        raise NotImplementedError

    def output_of(self, s: PllSettings) -> Fraction:
        """The output frequency recomputed from the settings' parameters alone."""
        raise NotImplementedError


def _centre(value, rng) -> Fraction:
    return abs(Fraction(value) - Fraction(rng[0] + rng[1], 2))


def _out_of(name: str, value, lo, hi) -> list[str]:
    return [] if lo <= value <= hi else [f"{name} {value} outside {lo}..{hi}"]


# -- Lattice ECP5 -----------------------------------------------------------------------------

class Ecp5Pll(PllModel):
    """ECP5 ``EHXPLLL``, CLKOP fed back (see the module docstring)."""

    primitive = "EHXPLLL"
    limits = PllLimits(input=(8 * MHZ, 400 * MHZ), pfd=(3_125_000, 400 * MHZ),
                       vco=(400 * MHZ, 800 * MHZ), output=(10 * MHZ, 400 * MHZ))
    CLKI_DIV = (1, 128)
    CLKFB_DIV = (1, 80)
    CLKOP_DIV = (1, 128)

    def _make(self, fin, target, ci, fb, op) -> PllSettings:
        fout = Fraction(fin * fb, ci)
        return PllSettings(self.primitive, fin, target, fout, Fraction(fin, ci), fout * op,
                           {"CLKI_DIV": ci, "CLKFB_DIV": fb, "CLKOP_DIV": op,
                            "CLKOP_CPHASE": op - 1, "CLKOP_FPHASE": 0})

    def _candidates(self, fin, target, exact_only: bool = False):
        lim = self.limits
        for ci in range(self.CLKI_DIV[0], self.CLKI_DIV[1] + 1):
            if not lim.pfd[0] * ci <= fin <= lim.pfd[1] * ci:
                continue
            # only the feedback dividers next to the target are worth looking at
            ideal = Fraction(target * ci, fin)
            if exact_only and ideal.denominator != 1:
                continue
            for fb in {math.floor(ideal), math.ceil(ideal)}:
                if not self.CLKFB_DIV[0] <= fb <= self.CLKFB_DIV[1]:
                    continue
                fout = Fraction(fin * fb, ci)
                if not lim.output[0] <= fout <= lim.output[1]:
                    continue
                # the VCO nearest the middle of its range: CLKOP_DIV near mid / fout
                mid = Fraction(lim.vco[0] + lim.vco[1], 2) / fout
                ops = [op for op in {math.floor(mid), math.ceil(mid), math.ceil(lim.vco[0] / fout),
                                     math.floor(lim.vco[1] / fout)}
                       if self.CLKOP_DIV[0] <= op <= self.CLKOP_DIV[1]
                       and lim.vco[0] <= fout * op <= lim.vco[1]]
                if ops:
                    op = min(ops, key=lambda o: (_centre(fout * o, lim.vco), o))
                    yield (ci, _centre(fout * op, lim.vco)), self._make(fin, target, ci, fb, op)

    def _exact_candidates(self, fin, target):
        return self._candidates(fin, target, exact_only=True)

    def _divider_violations(self, s):
        p = s.params
        return (_out_of("CLKI_DIV", p["CLKI_DIV"], *self.CLKI_DIV)
                + _out_of("CLKFB_DIV", p["CLKFB_DIV"], *self.CLKFB_DIV)
                + _out_of("CLKOP_DIV", p["CLKOP_DIV"], *self.CLKOP_DIV))

    def output_of(self, s):
        return Fraction(s.input_hz * s.params["CLKFB_DIV"], s.params["CLKI_DIV"])

    def instance(self, s: PllSettings, clk_in, clk_out, locked):
        from amaranth.hdl import Instance

        p = s.params
        return Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=_mhz_text(s.input_hz),
            a_FREQUENCY_PIN_CLKOP=_mhz_text(s.output_hz),
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=p["CLKI_DIV"], p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["CLKOP_DIV"],
            p_CLKOP_CPHASE=p["CLKOP_CPHASE"], p_CLKOP_FPHASE=p["CLKOP_FPHASE"],
            p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=p["CLKFB_DIV"],
            i_RST=0, i_STDBY=0, i_CLKI=clk_in, o_CLKOP=clk_out, i_CLKFB=clk_out,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)


def _mhz_text(hz) -> str:
    return format_hz(hz).removeprefix("~").removesuffix(" MHz")


# -- Lattice iCE40 ----------------------------------------------------------------------------

class Ice40Pll(PllModel):
    """iCE40 ``SB_PLL40_PAD`` (``pad=True``: fed straight from its dedicated clock pin) or
    ``SB_PLL40_CORE`` (fed from the fabric), SIMPLE feedback, global output."""

    limits = PllLimits(input=(10 * MHZ, 133 * MHZ), pfd=(10 * MHZ, 133 * MHZ),
                       vco=(533 * MHZ, 1066 * MHZ), output=(16 * MHZ, 275 * MHZ))
    DIVR = (0, 15)
    DIVF = (0, 127)
    DIVQ = (1, 6)

    def __init__(self, pad: bool = True):
        self.pad = pad
        self.primitive = "SB_PLL40_PAD" if pad else "SB_PLL40_CORE"

    @staticmethod
    def filter_range(pfd_hz) -> int:
        """``FILTER_RANGE`` for a phase-detector frequency (IceStorm's ``icepll`` table)."""
        mhz = Fraction(pfd_hz) / MHZ
        for bound, value in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
            if mhz < bound:
                return value
        return 6

    def _candidates(self, fin, target, exact_only: bool = False):
        lim = self.limits
        for r in range(self.DIVR[0], self.DIVR[1] + 1):
            pfd = Fraction(fin, r + 1)
            if not lim.pfd[0] <= pfd <= lim.pfd[1]:
                continue
            for q in range(self.DIVQ[0], self.DIVQ[1] + 1):
                ideal = target * (1 << q) / pfd
                if exact_only and ideal.denominator != 1:
                    continue
                for f1 in {math.floor(ideal), math.ceil(ideal)}:
                    f = f1 - 1
                    if not self.DIVF[0] <= f <= self.DIVF[1]:
                        continue
                    vco = pfd * f1
                    fout = vco / (1 << q)
                    if lim.vco[0] <= vco <= lim.vco[1] and lim.output[0] <= fout <= lim.output[1]:
                        s = PllSettings(self.primitive, fin, target, fout, pfd, vco,
                                        {"DIVR": r, "DIVF": f, "DIVQ": q,
                                         "FILTER_RANGE": self.filter_range(pfd)})
                        yield (r, _centre(vco, lim.vco)), s

    def _exact_candidates(self, fin, target):
        return self._candidates(fin, target, exact_only=True)

    def _divider_violations(self, s):
        p = s.params
        return (_out_of("DIVR", p["DIVR"], *self.DIVR) + _out_of("DIVF", p["DIVF"], *self.DIVF)
                + _out_of("DIVQ", p["DIVQ"], *self.DIVQ)
                + ([] if p["FILTER_RANGE"] == self.filter_range(s.pfd_hz)
                   else [f"FILTER_RANGE {p['FILTER_RANGE']} does not suit the PFD"]))

    def output_of(self, s):
        p = s.params
        return Fraction(s.input_hz * (p["DIVF"] + 1), (p["DIVR"] + 1) << p["DIVQ"])

    def instance(self, s: PllSettings, clk_in, clk_out, locked):
        """``clk_in`` is the clock pin (an IO value: ``port.io``) for ``SB_PLL40_PAD``, or a
        fabric clock for ``SB_PLL40_CORE``."""
        from amaranth.hdl import Instance

        p = s.params
        source = {"i_PACKAGEPIN": clk_in} if self.pad else {"i_REFERENCECLK": clk_in}
        return Instance(
            self.primitive,
            p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT="GENCLK",
            p_DIVR=p["DIVR"], p_DIVF=p["DIVF"], p_DIVQ=p["DIVQ"],
            p_FILTER_RANGE=p["FILTER_RANGE"],
            **source, i_RESETB=1, i_BYPASS=0, o_PLLOUTGLOBAL=clk_out, o_LOCK=locked)


# -- Xilinx 7-series --------------------------------------------------------------------------

def _speed_grade(speed: str) -> int:
    """``"1L"``/``"1LI"`` -> 1, ``"2"`` -> 2, ``"-3"`` -> 3 (the low-power grades run at the
    limits of their base grade's column for the clocking blocks)."""
    digits = "".join(c for c in str(speed) if c.isdigit())
    if digits not in ("1", "2", "3"):
        raise ValueError(f"unknown 7-series speed grade {speed!r}")
    return int(digits)


# (VCO max, PFD max, BUFG max) by speed grade, Artix-7 (DS181)
_XC7_MMCM = {1: (1200 * MHZ, 450 * MHZ, 464 * MHZ), 2: (1440 * MHZ, 500 * MHZ, 628 * MHZ),
             3: (1600 * MHZ, 550 * MHZ, 628 * MHZ)}
_XC7_PLL = {1: (1600 * MHZ, 450 * MHZ, 464 * MHZ), 2: (1866 * MHZ, 500 * MHZ, 628 * MHZ),
            3: (2133 * MHZ, 550 * MHZ, 628 * MHZ)}


def xc7_mmcm_limits(speed: str) -> PllLimits:
    vco, pfd, bufg = _XC7_MMCM[_speed_grade(speed)]
    return PllLimits(input=(10 * MHZ, 800 * MHZ), pfd=(10 * MHZ, pfd), vco=(600 * MHZ, vco),
                     output=(4_690_000, bufg))


def xc7_pll_limits(speed: str) -> PllLimits:
    vco, pfd, bufg = _XC7_PLL[_speed_grade(speed)]
    return PllLimits(input=(19 * MHZ, 800 * MHZ), pfd=(19 * MHZ, pfd), vco=(800 * MHZ, vco),
                     output=(6_250_000, bufg))


class Xc7Mmcm(PllModel):
    """7-series ``MMCME2_BASE``, CLKFBOUT fed back to CLKFBIN, CLKOUT0 to a BUFG. The
    multiplier and CLKOUT0's divider are kept in eighths (``M8``, ``O8``) internally."""

    primitive = "MMCME2_BASE"
    DIVCLK = (1, 106)
    MULT8 = (16, 512)            # CLKFBOUT_MULT_F 2.000..64.000
    OUT8 = (16, 1024)            # CLKOUT0_DIVIDE_F 2.000..128.000 (or exactly 1)

    def __init__(self, speed: str = "1"):
        self.limits = xc7_mmcm_limits(speed)

    def _legal_o8(self, o8: int) -> bool:
        return o8 == 8 or self.OUT8[0] <= o8 <= self.OUT8[1]

    def _candidates(self, fin, target):
        lim = self.limits
        for d in range(self.DIVCLK[0], self.DIVCLK[1] + 1):
            if fin < lim.pfd[0] * d:
                break
            if fin > lim.pfd[1] * d:
                continue
            for m8 in range(self.MULT8[0], self.MULT8[1] + 1):
                vco = Fraction(fin * m8, 8 * d)
                if vco < lim.vco[0]:
                    continue
                if vco > lim.vco[1]:
                    break
                ideal = 8 * vco / target
                for o8 in {math.floor(ideal), math.ceil(ideal)}:
                    if not self._legal_o8(o8):
                        continue
                    fout = 8 * vco / o8
                    if not lim.output[0] <= fout <= lim.output[1]:
                        continue
                    fractional = (m8 % 8 != 0) + (o8 % 8 != 0)
                    s = PllSettings(self.primitive, fin, target, fout, Fraction(fin, d), vco,
                                    {"DIVCLK_DIVIDE": d, "CLKFBOUT_MULT_F": m8 / 8,
                                     "CLKOUT0_DIVIDE_F": o8 / 8})
                    yield (fractional, d, _centre(vco, lim.vco)), s

    def _exact_candidates(self, fin, target):
        # fin * M8 == target * D * O8: M8 and O8 are multiples of the reduced ratio
        lim = self.limits
        for d in range(self.DIVCLK[0], self.DIVCLK[1] + 1):
            if fin < lim.pfd[0] * d:
                break
            if fin > lim.pfd[1] * d or target <= 0:
                continue
            g = math.gcd(fin, target * d)
            a, b = target * d // g, fin // g
            k = 1
            while k * a <= self.MULT8[1] and k * b <= self.OUT8[1]:
                m8, o8 = k * a, k * b
                k += 1
                vco = Fraction(fin * m8, 8 * d)
                if m8 < self.MULT8[0] or not self._legal_o8(o8) \
                        or not lim.vco[0] <= vco <= lim.vco[1] \
                        or not lim.output[0] <= target <= lim.output[1]:
                    continue
                fractional = (m8 % 8 != 0) + (o8 % 8 != 0)
                yield (fractional, d, _centre(vco, lim.vco)), PllSettings(
                    self.primitive, fin, target, Fraction(target), Fraction(fin, d), vco,
                    {"DIVCLK_DIVIDE": d, "CLKFBOUT_MULT_F": m8 / 8,
                     "CLKOUT0_DIVIDE_F": o8 / 8})

    def _divider_violations(self, s):
        p = s.params
        m8, o8 = p["CLKFBOUT_MULT_F"] * 8, p["CLKOUT0_DIVIDE_F"] * 8
        out = _out_of("DIVCLK_DIVIDE", p["DIVCLK_DIVIDE"], *self.DIVCLK)
        if m8 != int(m8) or not self.MULT8[0] <= m8 <= self.MULT8[1]:
            out.append(f"CLKFBOUT_MULT_F {p['CLKFBOUT_MULT_F']} not in 2.000..64.000 by 0.125")
        if o8 != int(o8) or not self._legal_o8(int(o8)):
            out.append(f"CLKOUT0_DIVIDE_F {p['CLKOUT0_DIVIDE_F']} not 1 or 2.000..128.000 "
                       f"by 0.125")
        return out

    def output_of(self, s):
        p = s.params
        return (Fraction(s.input_hz) * Fraction(p["CLKFBOUT_MULT_F"])
                / (p["DIVCLK_DIVIDE"] * Fraction(p["CLKOUT0_DIVIDE_F"])))

    def instance(self, s: PllSettings, clk_in, clk_out, locked, feedback):
        """``clk_out`` is CLKOUT0 before its BUFG; ``feedback`` a signal for CLKFBOUT."""
        from amaranth.hdl import Instance

        p = s.params
        return Instance(
            "MMCME2_BASE",
            p_BANDWIDTH="OPTIMIZED", p_STARTUP_WAIT="FALSE",
            p_CLKIN1_PERIOD=float(Fraction(10**9, s.input_hz)),
            p_DIVCLK_DIVIDE=p["DIVCLK_DIVIDE"], p_CLKFBOUT_MULT_F=float(p["CLKFBOUT_MULT_F"]),
            p_CLKFBOUT_PHASE=0.0, p_CLKOUT0_DIVIDE_F=float(p["CLKOUT0_DIVIDE_F"]),
            p_CLKOUT0_PHASE=0.0, p_CLKOUT0_DUTY_CYCLE=0.5, p_REF_JITTER1=0.01,
            i_CLKIN1=clk_in, i_CLKFBIN=feedback, o_CLKFBOUT=feedback, o_CLKOUT0=clk_out,
            i_RST=0, i_PWRDWN=0, o_LOCKED=locked)


class Xc7Pll(PllModel):
    """7-series ``PLLE2_BASE`` (integer dividers only)."""

    primitive = "PLLE2_BASE"
    DIVCLK = (1, 56)
    MULT = (2, 64)
    OUT = (1, 128)

    def __init__(self, speed: str = "1"):
        self.limits = xc7_pll_limits(speed)

    def _candidates(self, fin, target):
        lim = self.limits
        for d in range(self.DIVCLK[0], self.DIVCLK[1] + 1):
            if fin < lim.pfd[0] * d:
                break
            if fin > lim.pfd[1] * d:
                continue
            for m in range(self.MULT[0], self.MULT[1] + 1):
                vco = Fraction(fin * m, d)
                if not lim.vco[0] <= vco <= lim.vco[1]:
                    continue
                ideal = vco / target
                for o in {math.floor(ideal), math.ceil(ideal)}:
                    if not self.OUT[0] <= o <= self.OUT[1]:
                        continue
                    fout = vco / o
                    if lim.output[0] <= fout <= lim.output[1]:
                        s = PllSettings(self.primitive, fin, target, fout, Fraction(fin, d),
                                        vco, {"DIVCLK_DIVIDE": d, "CLKFBOUT_MULT": m,
                                              "CLKOUT0_DIVIDE": o})
                        yield (d, _centre(vco, lim.vco)), s

    def _exact_candidates(self, fin, target):
        lim = self.limits
        for d in range(self.DIVCLK[0], self.DIVCLK[1] + 1):
            if fin < lim.pfd[0] * d:
                break
            if fin > lim.pfd[1] * d or target <= 0:
                continue
            g = math.gcd(fin, target * d)
            a, b = target * d // g, fin // g
            k = 1
            while k * a <= self.MULT[1] and k * b <= self.OUT[1]:
                m, o = k * a, k * b
                k += 1
                vco = Fraction(fin * m, d)
                if m < self.MULT[0] or o < self.OUT[0] or not lim.vco[0] <= vco <= lim.vco[1] \
                        or not lim.output[0] <= target <= lim.output[1]:
                    continue
                yield (d, _centre(vco, lim.vco)), PllSettings(
                    self.primitive, fin, target, Fraction(target), Fraction(fin, d), vco,
                    {"DIVCLK_DIVIDE": d, "CLKFBOUT_MULT": m, "CLKOUT0_DIVIDE": o})

    def _divider_violations(self, s):
        p = s.params
        return (_out_of("DIVCLK_DIVIDE", p["DIVCLK_DIVIDE"], *self.DIVCLK)
                + _out_of("CLKFBOUT_MULT", p["CLKFBOUT_MULT"], *self.MULT)
                + _out_of("CLKOUT0_DIVIDE", p["CLKOUT0_DIVIDE"], *self.OUT))

    def output_of(self, s):
        p = s.params
        return Fraction(s.input_hz * p["CLKFBOUT_MULT"],
                        p["DIVCLK_DIVIDE"] * p["CLKOUT0_DIVIDE"])

    def instance(self, s: PllSettings, clk_in, clk_out, locked, feedback):
        from amaranth.hdl import Instance

        p = s.params
        return Instance(
            "PLLE2_BASE",
            p_BANDWIDTH="OPTIMIZED", p_STARTUP_WAIT="FALSE",
            p_CLKIN1_PERIOD=float(Fraction(10**9, s.input_hz)),
            p_DIVCLK_DIVIDE=p["DIVCLK_DIVIDE"], p_CLKFBOUT_MULT=p["CLKFBOUT_MULT"],
            p_CLKOUT0_DIVIDE=p["CLKOUT0_DIVIDE"], p_CLKOUT0_PHASE=0.0,
            p_CLKOUT0_DUTY_CYCLE=0.5,
            i_CLKIN1=clk_in, i_CLKFBIN=feedback, o_CLKFBOUT=feedback, o_CLKOUT0=clk_out,
            i_RST=0, i_PWRDWN=0, o_LOCKED=locked)
