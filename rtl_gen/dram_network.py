"""A network with weights in DRAM: ``rtl_gen.network.Network`` and the DRAM arbiter its
weight-tiled units share (``rtl_gen.dram_arbiter``), behind one controller port.

``DramNetwork`` has the network's ports (``i_stream``, ``o_stream``, ``frame_error``,
``cfg``, ``gate_stats``) and:

- ``dram``: the controller side of the arbiter (``cmd``, ``wdata``, ``rdata``), which
  connects to ``rtl_gen.dram_controller.DramController``'s streams;
- ``net_reset``: resets the network's registers (not its memories, not the arbiter);
- ``dram_load`` (a network that is not run-time writable): configuration beats
  (``rtl_gen.weight_memory``'s format) that write the DRAM, four per 128-bit word
  (``rtl_gen.dram_arbiter``); a run-time writable network takes them on ``cfg`` as its
  last target (``dram_target``, after the network's own targets), as the host link sends
  them (``bnnhw.manifest``);
- ``dram_busy``: DRAM writes pending or reads in flight; ``dram_hold``: see below.

Loading order. A tiled unit fetches its first tiles as soon as it leaves reset, so the
DRAM must hold the weights before: ``dram_hold`` is 1 from power-on and again from any
DRAM write beat until the next ``net_reset``, and while it is 1 the arbiter takes no read
command from the units (reads already in flight complete). So a load is: write the DRAM
(``dram_load`` or the ``cfg`` target), then pulse ``net_reset``, which drops whatever the
units fetched before and lets them fetch again. The host link's load ends with a
``RESET`` frame for this reason (``host.accelerator``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from amaranth import Module, ResetInserter, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .block import forward
from .dram_arbiter import DramArbiter, DramArbiterParams
from .network import Network, NetworkParams

__all__ = ["DramNetwork"]


class DramNetwork(wiring.Component):
    """A network whose tiled units read DRAM through one arbiter (module docstring).
    ``stall`` and ``seed`` give the arbiter's DRAM side random stalls (verification)."""

    def __init__(self, params: NetworkParams,
                 blocks: Mapping[str, Callable[[Any], wiring.Component]] | None = None, *,
                 stall: float = 0.0, seed: int = 1):
        if not params.dram_stages:
            raise ValueError("DramNetwork: the network has no layer with weights in DRAM")
        self.params = params
        self.network = Network(params, blocks)
        self.arbiter_params = DramArbiterParams(
            readers=len(params.dram_stages), addr_width=params.dram_addr_width,
            stall=stall, seed=seed, name="dram_arbiter")
        self.arbiter = DramArbiter(self.arbiter_params)
        members = {k: v for k, v in self.network.signature.members.items()
                   if not k.startswith("dram_")}
        members.update({
            "dram": Out(self.arbiter.signature.members["dram"].signature),
            "net_reset": In(1),
            "dram_busy": Out(1),
            "dram_hold": Out(1),
        })
        if not params.runtime_writable:
            members["dram_load"] = In(stream.Signature(64))
        super().__init__(members)

    @property
    def dram_target(self) -> int:
        """The ``cfg`` target index of the DRAM (after the network's own targets)."""
        return len(self.params.targets)

    def elaborate(self, platform):
        p = self.params
        m = Module()
        net = self.network
        m.submodules.network = ResetInserter(self.net_reset)(net)
        m.submodules.arbiter = arb = self.arbiter

        for name in ("i_stream", "o_stream", "frame_error", "gate_stats"):
            if name in net.signature.members:
                forward(m, self, net, name)
        wiring.connect(m, arb.dram, wiring.flipped(self.dram))

        hold = Signal(init=1)
        m.d.comb += [self.dram_hold.eq(hold), self.dram_busy.eq(arb.busy)]
        for i, _ in enumerate(p.dram_stages):
            unit, port = getattr(net, f"dram_{i}"), getattr(arb, f"reader_{i}")
            m.d.comb += [port.cmd.payload.eq(unit.cmd.payload),
                         port.cmd.valid.eq(unit.cmd.valid & ~hold),
                         unit.cmd.ready.eq(port.cmd.ready & ~hold)]
            wiring.connect(m, port.rdata, unit.rdata)

        if p.runtime_writable:
            to_dram = self.cfg.payload.target == self.dram_target
            m.d.comb += [net.cfg.payload.eq(self.cfg.payload),
                         net.cfg.valid.eq(self.cfg.valid & ~to_dram),
                         arb.cfg.payload.eq(self.cfg.payload.beat),
                         arb.cfg.valid.eq(self.cfg.valid & to_dram),
                         self.cfg.ready.eq(~to_dram | arb.cfg.ready)]
            load = self.cfg.valid & to_dram
        else:
            wiring.connect(m, wiring.flipped(self.dram_load), arb.cfg)
            load = self.dram_load.valid
        with m.If(load):
            m.d.sync += hold.eq(1)
        with m.If(self.net_reset):
            m.d.sync += hold.eq(0)
        return m
