"""A board's whole design: the board clock, the PLL, the power-on reset, the UART pins and
the status LEDs around a ``rtl_gen.board_top.BoardTop``.

``BoardDesign(board, top)`` is the elaboratable a platform builds. Its design clock is the
core's ``clock_hz`` (``top.params.core.clock_hz``), which the board must make exactly
(``Board.clock_settings``): the board clock itself, or the board's PLL:

- ECP5: pin -> input buffer -> ``EHXPLLL`` (CLKOP fed back); nextpnr puts the output on a
  global network;
- iCE40: the board clock's global buffer (``SB_GB_IO``), or ``SB_PLL40_PAD`` on the PLL's
  own pin (``SB_PLL40_CORE`` from the fabric elsewhere), ``PLLOUTGLOBAL``;
- Xilinx 7-series: ``IBUF`` -> ``MMCME2_BASE`` (or ``PLLE2_BASE``) -> ``BUFG``, or
  ``IBUF`` -> ``BUFG`` alone.

Timing constraints: the platform constrains the board clock's pin; nextpnr and Vivado
derive the PLL's output clock from it (nextpnr: "Derived frequency constraint"), so
place-and-route reports the design clock's Fmax against its frequency.

Reset (``clock_domains``, ``PowerOnReset``): the ``sync`` domain, defined in the top
module, is held in reset until the PLL has locked and then for ``reset_cycles`` more cycles
of the design clock (at least 20 us, which also covers the iCE40's block RAMs, unreadable
for ~3 us after configuration); the lock is brought into the design clock by a reset
synchroniser, so reset is released synchronously.

Pins: the UART resource's ``rx``/``tx`` go to ``BoardTop.rx``/``tx`` through IO buffers
(ULX3S: ``uart_tx_enable`` driven high); ``StatusLeds`` drives the board's LEDs
(``boards.board.LED_ROLES``). Only the resources' pins are named, so the module is the same
for every platform ``amaranth_boards`` describes; the clock tree is the one
family-specific part.
"""

from __future__ import annotations

from amaranth import ClockDomain, ClockSignal, Elaboratable, Module, ResetSignal, Signal
from amaranth.hdl import Instance
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from .board import Board

__all__ = ["BoardDesign", "PowerOnReset", "StatusLeds", "clock_domains", "dram_controller",
           "pulse_cycles"]


def dram_controller(board: Board):
    """``(DramControllerParams, {file name: text})`` of ``board``'s DDR3 controller: the
    LiteDRAM core generated for it (``boards.litedram``, cached), its streams crossing into
    the design clock. Raises ``BnnhwError`` naming what to install when the generator or
    its compiler is missing, ``ValueError`` for a board without DRAM."""
    from rtl_gen.dram_controller import DramControllerParams

    from . import litedram

    if board.dram is None:
        raise ValueError(f"{board.name} has no DRAM for weights")
    core = litedram.generate(litedram.arty_config(cpu=board.dram.get("cpu", "vexriscv")))
    params = DramControllerParams.from_core(core, cross_domain="sync", ref_domain="dram_ref",
                                            pins=board.dram["resource"])
    files = (*core.verilog, *core.data_files)
    return params, {f.name: f.read_bytes() for f in files}

RESET_SECONDS = 20e-6
MIN_RESET_CYCLES = 64
STRETCH_SECONDS = 0.05      # an LED event stays visible this long
HEARTBEAT_HZ = 1


def pulse_cycles(clock_hz: int, seconds: float) -> int:
    """Whole design-clock cycles in ``seconds`` (at least 1)."""
    return max(1, round(clock_hz * seconds))


class PowerOnReset(Elaboratable):
    """``ready`` rises ``cycles`` cycles after ``locked`` did, in the ``por`` domain (which
    the parent defines on the design clock, see ``clock_domains``): ``~locked`` resets it
    through a ``ResetSynchronizer``, asserted at once and released on a clock edge."""

    def __init__(self, locked, cycles: int):
        if cycles < 1:
            raise ValueError(f"reset cycles must be at least 1, not {cycles}")
        self.locked, self.cycles = locked, cycles
        self.ready = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.lock_sync = ResetSynchronizer(~self.locked, domain="por")
        timer = Signal(range(self.cycles + 1))
        with m.If(timer == self.cycles):
            m.d.por += self.ready.eq(1)
        with m.Else():
            m.d.por += timer.eq(timer + 1)
        return m


def clock_domains(m: Module, clk, locked, cycles: int) -> PowerOnReset:
    """Define in ``m`` the ``sync`` domain on ``clk``, held in reset until ``cycles``
    cycles after ``locked`` rose, and the local ``por`` domain that counts them."""
    m.domains.sync = cd_sync = ClockDomain("sync")
    m.domains.por = cd_por = ClockDomain("por", local=True)
    m.d.comb += [cd_sync.clk.eq(clk), cd_por.clk.eq(clk)]
    m.submodules.power_on_reset = por = PowerOnReset(locked, cycles)
    m.d.comb += cd_sync.rst.eq(~por.ready)
    return por


class Stretcher(Elaboratable):
    """``o`` rises with ``i`` and stays high for ``cycles`` cycles counted from the last
    cycle ``i`` was high."""

    def __init__(self, cycles: int):
        self.cycles = cycles
        self.i = Signal()
        self.o = Signal()

    def elaborate(self, platform):
        m = Module()
        left = Signal(range(self.cycles + 1))
        with m.If(self.i):
            m.d.sync += left.eq(self.cycles)
        with m.Elif(left != 0):
            m.d.sync += left.eq(left - 1)
        m.d.comb += self.o.eq(self.i | (left != 0))
        return m


class StatusLeds(wiring.Component):
    """The LED roles of ``boards.board.LED_ROLES`` from the board top's pins.

    ``busy`` and ``tx`` (a low line is a byte going out) are stretched to at least
    ``stretch_cycles``; ``link_error`` is latched; ``heartbeat`` toggles every
    ``heartbeat_cycles``, so it blinks only while the clock runs out of reset."""

    def __init__(self, stretch_cycles: int, heartbeat_cycles: int):
        if stretch_cycles < 1 or heartbeat_cycles < 1:
            raise ValueError("LED stretch and heartbeat periods must be at least 1 cycle")
        self.stretch_cycles = stretch_cycles
        self.heartbeat_cycles = heartbeat_cycles
        super().__init__({"busy": In(1), "tx": In(1, init=1), "link_error": In(1),
                          "heartbeat": Out(1), "activity": Out(1), "response": Out(1),
                          "error": Out(1)})

    @classmethod
    def for_clock(cls, clock_hz: int) -> StatusLeds:
        return cls(pulse_cycles(clock_hz, STRETCH_SECONDS),
                   pulse_cycles(clock_hz, 0.5 / HEARTBEAT_HZ))

    def elaborate(self, platform):
        m = Module()
        m.submodules.busy = busy = Stretcher(self.stretch_cycles)
        m.submodules.sending = sending = Stretcher(self.stretch_cycles)
        m.d.comb += [busy.i.eq(self.busy), sending.i.eq(~self.tx),
                     self.activity.eq(busy.o), self.response.eq(sending.o)]
        with m.If(self.link_error):
            m.d.sync += self.error.eq(1)
        beat = Signal(range(self.heartbeat_cycles))
        with m.If(beat == self.heartbeat_cycles - 1):
            m.d.sync += [beat.eq(0), self.heartbeat.eq(~self.heartbeat)]
        with m.Else():
            m.d.sync += beat.eq(beat + 1)
        return m


class BoardDesign(Elaboratable):
    """``top`` (a ``BoardTop``) on ``board``'s pins (see the module docstring).

    ``clock_hz``, if given, must be the core's clock. Raises ``ValueError`` when the board
    cannot make that clock exactly, when the core was made for another board, or when the
    board's USB bridge does not carry the core's baud."""

    def __init__(self, board: Board, top, clock_hz: int | None = None, dram=None):
        core = top.params.core
        if clock_hz is not None and int(clock_hz) != core.clock_hz:
            raise ValueError(f"{board.name}: the design clock {clock_hz} Hz is not the "
                             f"core's clock_hz {core.clock_hz}")
        if core.board != board.name:
            raise ValueError(f"the board core was made for board {core.board!r}, not "
                             f"{board.name!r}: build it with board.core_params(...)")
        board.check_baud(core.baud)
        self.board = board
        self.top = top
        self.clock_hz = core.clock_hz
        self.pll = board.clock_settings(core.clock_hz)
        self.reset_cycles = max(MIN_RESET_CYCLES, pulse_cycles(self.clock_hz, RESET_SECONDS))
        self.dram = None
        if "dram" in top.signature.members:
            if dram is None:
                raise ValueError(f"{board.name}: the design keeps weights in DRAM; give the "
                                 f"board's DRAM controller (boards.top.dram_controller)")
            self.dram = dram

    def elaborate(self, platform):
        b = self.board
        m = Module()
        clk, locked = self._clock(m, platform)
        clock_domains(m, clk, locked, self.reset_cycles)

        m.submodules.board_top = top = self.top
        subsignals = platform.lookup(b.uart.resource, b.uart.number).ios
        uart = platform.request(b.uart.resource, b.uart.number,
                                dir={s.name: "-" for s in subsignals if hasattr(s, "name")})
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [top.rx.eq(rx.i), tx.o.eq(top.tx)]
        if b.uart.tx_enable is not None:
            m.submodules.uart_tx_enable = en = io.Buffer(
                "o", platform.request(*b.uart.tx_enable, dir="-"))
            m.d.comb += en.o.eq(1)

        if self.dram is not None:
            self._dram(m, platform, top)

        m.submodules.leds = leds = StatusLeds.for_clock(self.clock_hz)
        m.d.comb += [leds.busy.eq(top.busy), leds.tx.eq(top.tx),
                     leds.link_error.eq(top.link_error)]
        for role, (resource, number) in b.leds.items():
            m.submodules[f"led_{role}"] = led = io.Buffer(
                "o", platform.request(resource, number, dir="-"))
            m.d.comb += led.o.eq(getattr(leds, role))
        return m

    def _dram(self, m: Module, platform, top) -> None:
        """The DDR3 controller on the top's ``dram`` port, its streams crossing into the
        design clock, its reference the board clock (``self.board_clk``), its Verilog
        files added to the build."""
        from rtl_gen.dram_controller import DramController

        params, files = self.dram
        m.domains.dram_ref = ClockDomain("dram_ref", reset_less=False)
        m.d.comb += [ClockSignal("dram_ref").eq(self.board_clk),
                     ResetSignal("dram_ref").eq(ResetSignal("sync"))]
        m.submodules.dram = ctrl = DramController(params)
        wiring.connect(m, top.dram.cmd, ctrl.cmd)
        wiring.connect(m, top.dram.wdata, ctrl.wdata)
        wiring.connect(m, ctrl.rdata, top.dram.rdata)
        for name, text in files.items():
            platform.add_file(name, text)

    def _clock(self, m: Module, platform):
        """The design clock and the PLL's lock (1 without a PLL)."""
        b, s = self.board, self.pll
        family = b.fpga.family
        pin = platform.request(b.clock.resource, b.clock.number, dir="-")
        clk = Signal(name="design_clk")
        locked = Signal(name="pll_locked")
        self.board_clk = clk
        if s is None:
            m.submodules.clk_buf = buf = io.Buffer("i", pin)
            if family == "xc7":
                m.submodules.bufg = Instance("BUFG", i_I=buf.i, o_O=clk)
            else:
                m.d.comb += clk.eq(buf.i)
            m.d.comb += locked.eq(1)
            return clk, locked
        if family == "ice40" and getattr(b.pll, "pad", False):
            m.submodules.pll = b.pll.instance(s, pin.io, clk, locked)
            return clk, locked
        m.submodules.clk_buf = buf = io.Buffer("i", pin)
        if family == "xc7":
            raw, feedback = Signal(name="pll_clkout0"), Signal(name="pll_feedback")
            m.submodules.pll = b.pll.instance(s, buf.i, raw, locked, feedback)
            m.submodules.bufg = Instance("BUFG", i_I=raw, o_O=clk)
            if self.dram is not None:
                self.board_clk = Signal(name="board_clk")
                m.submodules.board_bufg = Instance("BUFG", i_I=buf.i, o_O=self.board_clk)
        else:
            m.submodules.pll = b.pll.instance(s, buf.i, clk, locked)
        return clk, locked
