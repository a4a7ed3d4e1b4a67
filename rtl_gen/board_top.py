"""A board's accelerator on its pins: the UART PHY (``rtl_gen.uart``) in front of the
board core (``rtl_gen.board_core``).

``rx``/``tx`` are the serial pins (idle high), at ``BoardTopParams.baud`` from the design
clock ``core.clock_hz``. ``busy`` follows the core (an activity LED) and ``link_error``
is sticky: high once a byte arrived with a framing error, a break, or while the core
could not take it (overrun). A core with weights in DRAM passes its ``dram`` port out
(``rtl_gen.dram_network``), for the board design to put the controller on. A byte lost that way breaks its frame, which the core
refuses with a ``NACK`` or a timeout, and the host sends again.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .board_core import BoardCore, BoardCoreParams
from .uart import UART, UARTParams

__all__ = ["BoardTop", "BoardTopParams"]


@dataclass(frozen=True, eq=False)
class BoardTopParams:
    """The board core and the UART that carries its link."""

    core: BoardCoreParams

    @cached_property
    def uart(self) -> UARTParams:
        return UARTParams(self.core.clock_hz, self.core.baud, name="uart")


class BoardTop(wiring.Component):
    """UART pins to the board core (see the module docstring)."""

    def __init__(self, params: BoardTopParams):
        self.params = params
        _ = params.uart  # validates the baud against the clock
        self.core = BoardCore(params.core)
        members = {"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1),
                   "link_error": Out(1)}
        if "dram" in self.core.signature.members:   # weights in DRAM: the controller's port
            members["dram"] = self.core.signature.members["dram"]
        super().__init__(members)

    def elaborate(self, platform):
        p = self.params
        m = Module()
        m.submodules.uart = uart = UART(p.uart)
        m.submodules.core = core = self.core
        if "dram" in self.signature.members:
            wiring.connect(m, core.dram, wiring.flipped(self.dram))
        m.d.comb += [uart.rx.eq(self.rx), self.tx.eq(uart.tx), self.busy.eq(core.busy)]
        wiring.connect(m, uart.o_stream, core.rx)
        wiring.connect(m, core.tx, uart.i_stream)
        with m.If(uart.framing_error | uart.overrun | uart.break_detect):
            m.d.sync += self.link_error.eq(1)
        return m
