"""Digilent Arty A7: Xilinx Artix-7 XC7A35T (``arty``, ``arty-a7-35``) or XC7A100T
(``arty-a7-100``), CSG324, speed grade -1L; 100 MHz oscillator; FT2232H USB-UART.

Design clock: the 100 MHz board clock straight through a BUFG, or an ``MMCME2_BASE``
(``boards.pll.Xc7Mmcm``, -1 limits: VCO 600..1200 MHz) then a BUFG. UART: ``uart`` 0
(A9 rx, D10 tx); the FT2232H makes 12 Mbaud, which 100 MHz samples at 8.3 cycles a bit.
LEDs LD4..LD7 (``led`` 0..3): heartbeat, activity, response, error.

No open place-and-route for Artix-7 runs here: a build writes the Vivado project (Verilog,
XDC, Tcl) and, without Vivado, estimates the resources with Yosys' ``synth_xilinx``.
"""

from __future__ import annotations

from amaranth_boards.arty_a7 import ArtyA7_35Platform, ArtyA7_100Platform

from bnnhw.resources import DramPort

from .board import Board, Budget, ClockInput, Fpga, Uart
from .pll import Xc7Mmcm

__all__ = ["ARTY_A7_35", "ARTY_A7_100", "DDR3"]

_SPEED = "1L"
_CLOCK = ClockInput("clk100", 0, 100_000_000)
_UART = Uart("uart", 0, bridge="FT2232H", max_baud=12_000_000)
_LEDS = {"heartbeat": ("led", 0), "activity": ("led", 1), "response": ("led", 2),
         "error": ("led", 3)}

# The DDR3 (one MT41K128M16, x16, 256 MB) for the LiteDRAM controller (boards.litedram,
# rtl_gen.dram_controller): amaranth-boards' resource, pins and I/O standards as on the
# board's schematic: SSTL135 (1.35 V bank 34), DIFF_SSTL135 for clk and dqs, dq with
# IN_TERM UNTUNED_SPLIT_40, SLEW FAST; requested raw (dir="-") since LiteDRAM's PHY
# instantiates its own I/O buffers. Bank 34 takes its SSTL135 reference from the FPGA
# (INTERNAL_VREF 0.675 V, which amaranth-boards' platform writes into the XDC); "cpu" is
# the core's calibration CPU.
DDR3 = {"resource": ("ddr3", 0), "module": "MT41K128M16", "bytes": 256 << 20,
        "io_standard": "SSTL135", "diff_io_standard": "DIFF_SSTL135", "cpu": "vexriscv"}

ARTY_A7_35 = Board(
    name="arty-a7-35", title="Digilent Arty A7-35T", aliases=("arty",),
    platform_class=ArtyA7_35Platform,
    fpga=Fpga("xc7", "XC7A35T", "CSG324", _SPEED),
    clock=_CLOCK, pll=Xc7Mmcm(_SPEED), default_clock_hz=100_000_000,
    uart=_UART, leds=_LEDS, dram=DDR3,
    # 5200 slices of 4 LUT6 + 8 FF; 50 RAMB36 (= 100 RAMB18) of 36 Kbit; 90 DSP48E1
    budget=Budget("XC7A35T", "xc7", lut=20_800, ff=41_600, bram=50, dsp=90,
                  dram=DramPort(DDR3["bytes"] // 16, words_per_cycle=0.85, latency=24)),
)

ARTY_A7_100 = Board(
    name="arty-a7-100", title="Digilent Arty A7-100T",
    platform_class=ArtyA7_100Platform,
    fpga=Fpga("xc7", "XC7A100T", "CSG324", _SPEED),
    clock=_CLOCK, pll=Xc7Mmcm(_SPEED), default_clock_hz=100_000_000,
    uart=_UART, leds=_LEDS, dram=DDR3,
    # 15850 slices; 135 RAMB36 (= 270 RAMB18); 240 DSP48E1
    budget=Budget("XC7A100T", "xc7", lut=63_400, ff=126_800, bram=135, dsp=240,
                  dram=DramPort(DDR3["bytes"] // 16, words_per_cycle=0.85, latency=24)),
)
