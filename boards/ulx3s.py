"""Radiona ULX3S with the Lattice ECP5 LFE5U-85F (``ulx3s``), CABGA381, speed grade 6;
25 MHz oscillator; FT231X USB-UART.

Design clock: an ``EHXPLLL`` (``boards.pll.Ecp5Pll``) from the 25 MHz board clock; 100 MHz
by default (25 * 4, VCO 600 MHz): the board designs of zoo TFC and SFC reached 119 and
109 MHz after routing (``bench/board_builds.py --clock ulx3s=100``). UART: ``uart`` 0 (M1 rx, L4 tx), with
``uart_tx_enable`` (L3) driven high; the FT231X makes at most 3 Mbaud. LEDs D0, D1, D2, D7
(``led`` 0, 1, 2, 7): heartbeat, activity, response, error.

The whole open flow runs here: Yosys ``synth_ecp5``, nextpnr-ecp5, ecppack.
"""

from __future__ import annotations

from amaranth_boards.ulx3s import ULX3S_85F_Platform

from .board import Board, Budget, ClockInput, Fpga, Uart
from .pll import Ecp5Pll

__all__ = ["ULX3S_85F"]

ULX3S_85F = Board(
    name="ulx3s", title="Radiona ULX3S (ECP5-85F)", aliases=("ulx3s-85f",),
    platform_class=ULX3S_85F_Platform,
    fpga=Fpga("ecp5", "LFE5U-85F", "CABGA381", "6"),
    clock=ClockInput("clk25", 0, 25_000_000), pll=Ecp5Pll(), default_clock_hz=100_000_000,
    uart=Uart("uart", 0, bridge="FT231X", max_baud=3_000_000,
              tx_enable=("uart_tx_enable", 0)),
    leds={"heartbeat": ("led", 0), "activity": ("led", 1), "response": ("led", 2),
          "error": ("led", 7)},
    # 83640 LUT4 and FF (41820 slices); 208 DP16KD of 18 Kbit; 156 MULT18X18D
    budget=Budget("LFE5U-85F", "ecp5", lut=83_640, ff=83_640, bram=208, dsp=156),
)
