"""1BitSquared iCEBreaker: Lattice iCE40UP5K (``icebreaker``), SG48; 12 MHz oscillator on
the PLL's own pad (pin 35); FT2232H USB-UART.

Design clock: the 12 MHz board clock through its global buffer (the default), or an
``SB_PLL40_PAD`` (``boards.pll.Ice40Pll``) fed straight from pin 35: 16..275 MHz, in steps
of 375 kHz from 16.875 MHz (``DIVQ`` 5). UART: ``uart`` 0 (pin 6 rx, pin 9 tx); 3 Mbaud
at 12 MHz is 4 cycles a bit, the least ``rtl_gen.uart`` samples; 12 Mbaud needs a 48 MHz
clock. LEDs: the green one on the board (``led`` 1) is the heartbeat, the red one
(``led`` 0) the error; LED1 and LED2 of the break-off PMOD (``led`` 2 and 3, on PMOD2)
show activity and responses.

The whole open flow runs here: Yosys ``synth_ice40``, nextpnr-ice40, icepack.
"""

from __future__ import annotations

from amaranth_boards.icebreaker import ICEBreakerPlatform

from .board import Board, Budget, ClockInput, Fpga, Uart
from .pll import Ice40Pll

__all__ = ["ICEBREAKER"]

ICEBREAKER = Board(
    name="icebreaker", title="1BitSquared iCEBreaker (iCE40UP5K)",
    platform_class=ICEBreakerPlatform,
    fpga=Fpga("ice40", "iCE40UP5K", "SG48", ""),
    clock=ClockInput("clk12", 0, 12_000_000, pll_pad=True), pll=Ice40Pll(pad=True),
    default_clock_hz=12_000_000,
    uart=Uart("uart", 0, bridge="FT2232H", max_baud=12_000_000),
    leds={"heartbeat": ("led", 1), "error": ("led", 0), "activity": ("led", 2),
          "response": ("led", 3)},
    extra_resources=tuple(ICEBreakerPlatform.break_off_pmod),
    # 5280 LUT4 and FF; 30 EBR of 4 Kbit; 4 SPRAM of 256 Kbit; 8 SB_MAC16
    budget=Budget("iCE40UP5K", "ice40", lut=5_280, ff=5_280, bram=30, dsp=8, spram=4),
)
