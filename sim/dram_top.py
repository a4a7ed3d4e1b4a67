"""Simulation tops for networks with weights in DRAM, on LiteDRAM's simulation core.

The weight-tiled units (``rtl_gen.tiled_mvtu``) read the DRAM through the controller the
board uses, with LiteDRAM's DRAM model (``SDRAMPHYModel``) in place of the PHY and chips
(``boards.litedram.SIM_CONFIG``), so a simulation sees the controller's real latency,
bandwidth, refreshes and bank conflicts.

- ``stream_top(params)``: ``bnnhw verify``'s design. The network's streams
  (``i_stream``, ``o_stream``, ``frame_error``, ``gate_stats``) as the plain network has
  them, so the stream harnesses run it unchanged. After reset it writes the DRAM image
  from a ROM (``rtl_gen.beat_rom``) through the arbiter's writer, waits for the writes,
  resets the network (``rtl_gen.dram_network``'s loading order) and only then takes
  images: the first input beat is accepted after the load, so latencies are measured from
  it as for any network.
- ``board_top(core_params)``: the simulated board's design: the board core
  (``rtl_gen.board_core``) with the controller on its ``dram`` port; the host uploads the
  weights over the link.

Both return Verilog text: the Amaranth design followed by the generated core's Verilog.
``stall`` gives the DRAM side of the arbiter random stalls (both directions).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from amaranth import Module, Signal
from amaranth.lib import wiring

from rtl_gen.beat_rom import BeatRom, BeatRomParams
from rtl_gen.block import forward
from rtl_gen.board_core import BoardCore, BoardCoreParams
from rtl_gen.dram_controller import DramController, DramControllerParams
from rtl_gen.dram_network import DramNetwork
from rtl_gen.network import NetworkParams

__all__ = ["DramStreamTop", "WithDram", "board_top", "sim_core", "stream_top"]

_INNER = ("dram", "net_reset", "dram_load", "dram_busy", "dram_hold")


def sim_core():
    """The generated LiteDRAM simulation core (cached, ``boards.litedram``)."""
    from boards import litedram

    return litedram.generate(litedram.SIM_CONFIG, sim=True)


class WithDram(wiring.Component):
    """``inner`` (a component with a ``dram`` port) with a ``DramController`` on that
    port; every other member of ``inner`` is passed through."""

    def __init__(self, inner: wiring.Component, controller: DramControllerParams):
        self.inner, self.controller = inner, DramController(controller)
        super().__init__({k: v for k, v in inner.signature.members.items() if k != "dram"})

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self.inner
        m.submodules.dram = ctrl = self.controller
        for name in self.signature.members:
            forward(m, self, inner, name)
        wiring.connect(m, inner.dram.cmd, ctrl.cmd)
        wiring.connect(m, inner.dram.wdata, ctrl.wdata)
        wiring.connect(m, ctrl.rdata, inner.dram.rdata)
        return m


class DramStreamTop(wiring.Component):
    """A ``DramNetwork`` that loads its DRAM from a ROM, then runs (module docstring)."""

    def __init__(self, params: NetworkParams,
                 blocks: Mapping[str, Callable[[Any], wiring.Component]] | None = None, *,
                 stall: float = 0.0, seed: int = 1):
        self.net = DramNetwork(params, blocks, stall=stall, seed=seed)
        self.rom = BeatRom(BeatRomParams(tuple(_load_beats(params)), 64, name="dram_image"))
        members = {k: v for k, v in self.net.signature.members.items() if k not in _INNER}
        members["dram"] = self.net.signature.members["dram"]
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.net = net = self.net
        m.submodules.rom = rom = self.rom
        wiring.connect(m, rom.o_stream, net.dram_load)
        wiring.connect(m, net.dram, wiring.flipped(self.dram))
        for name in ("o_stream", "frame_error", "gate_stats"):
            if name in self.signature.members:
                forward(m, self, net, name)
        # loading -> one cycle of net_reset once every write is done -> running
        running, released = Signal(), Signal()
        settle = Signal(range(16))          # writes leave the arbiter before it says busy
        with m.If(rom.done & ~running):
            m.d.sync += settle.eq(settle + (settle != 15))
        m.d.comb += released.eq(rom.done & (settle == 15) & ~net.dram_busy & ~running)
        with m.If(released):
            m.d.sync += running.eq(1)
        m.d.comb += [net.net_reset.eq(released),
                     net.i_stream.payload.eq(self.i_stream.payload),
                     net.i_stream.valid.eq(self.i_stream.valid & running),
                     self.i_stream.ready.eq(net.i_stream.ready & running)]
        return m


def _load_beats(params: NetworkParams) -> list[int]:
    from bnnhw.packing import MemSel, cfg_beats
    from rtl_gen.tiled_mvtu import DRAM_WORD_BITS

    return cfg_beats(int(MemSel.WEIGHTS), params.dram_image(), DRAM_WORD_BITS)


def _with_core(design: wiring.Component, toplevel: str) -> str:
    from sim.verilator import to_verilog

    core = sim_core()
    top = WithDram(design, DramControllerParams.from_core(core))
    return to_verilog(top, toplevel) + "\n" + core.verilog[0].read_text()


def stream_top(params: NetworkParams,
               blocks: Mapping[str, Callable[[Any], wiring.Component]] | None = None, *,
               stall: float = 0.0, seed: int = 1, toplevel: str = "top") -> str:
    """Verilog of ``DramStreamTop`` on the simulation core (module docstring)."""
    return _with_core(DramStreamTop(params, blocks, stall=stall, seed=seed), toplevel)


def board_top(params: BoardCoreParams, toplevel: str = "top") -> str:
    """Verilog of the board core with the simulation core on its ``dram`` port."""
    return _with_core(BoardCore(params), toplevel)
