"""The accelerator behind its host link: bytes in, bytes out (``docs/protocol.md``).

``BoardCore`` is what a board runs between its UART PHY and the network, and what the
simulated board runs without a PHY: ``rx`` takes the bytes from the host, ``tx`` gives
the bytes to the host, ``busy`` is high while anything is in flight (a frame being
received, held or executed, a response going out). Inside: ``rtl_gen.frame_receiver`` ->
``rtl_gen.dispatcher`` (which drives the network and its configuration stream) ->
``rtl_gen.frame_transmitter``. The network is ``rtl_gen.network.Network`` of the same
graph and folding, run-time writable unless ``writable`` is off; its registers (not its
memories) are reset by a ``RESET`` frame.

``BoardCoreParams.manifest`` is the build's ``bnnhw.manifest.Manifest``; the identity the
board answers with carries its digest. A network with weights in DRAM
(``rtl_gen.dram_network``) gives the core a ``dram`` port for the controller; its DRAM is
the manifest's last ``WRITE`` target, also when the on-chip weights are built in
(``writable`` off: then the other targets' beats are dropped).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from amaranth import Module, ResetInserter
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bnnhw import ir
from bnnhw.folding import Fold
from bnnhw.manifest import Manifest
from bnnhw.protocol import PROTOCOL_VERSION, Identity
from bnnhw.validate import integer

from .dispatcher import Dispatcher, DispatcherParams
from .dram_network import DramNetwork
from .frame_receiver import FrameReceiver, FrameReceiverParams
from .frame_transmitter import FrameTransmitter, FrameTransmitterParams
from .network import Network, NetworkParams

__all__ = ["BoardCore", "BoardCoreParams"]


@dataclass(frozen=True, eq=False)
class BoardCoreParams:
    """A graph and its folding behind the link; the board's name, clock and baud go into
    the manifest and the identity; a frame silent for ``timeout_cycles`` is dropped.
    ``memory_styles`` gives the network's memories their styles
    (``rtl_gen.network.NetworkParams.memory_styles``, e.g. ``bnnhw.optimiser``'s)."""

    graph: ir.Graph
    folds: Mapping[str, Fold]
    board: str = "sim"
    clock_hz: int = 100_000_000
    baud: int = 3_000_000
    writable: bool = True
    max_payload: int = 4096
    timeout_cycles: int = 1 << 22
    fifo_depth: int = 4
    memory_styles: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        integer("board core", "max_payload", self.max_payload, 16, 0xFFFF)
        integer("board core", "timeout_cycles", self.timeout_cycles, 1)
        _ = self.network  # validates the graph and the folding
        if self.manifest.images_per_frame < 1:
            raise ValueError(f"board core: one image ({self.manifest.image_bytes} bytes) "
                             f"does not fit a {self.max_payload}-byte frame; raise "
                             f"max_payload")

    @cached_property
    def network(self) -> NetworkParams:
        return NetworkParams(self.graph, self.folds, fifo_depth=self.fifo_depth,
                             runtime_writable=self.writable,
                             memory_styles=self.memory_styles)

    @cached_property
    def manifest(self) -> Manifest:
        return Manifest.of(self.graph, self.folds, board=self.board, clock_hz=self.clock_hz,
                           baud=self.baud, writable=self.writable,
                           max_payload=self.max_payload)

    @property
    def identity(self) -> Identity:
        mf = self.manifest
        return Identity(PROTOCOL_VERSION, self.writable, mf.digest, self.clock_hz, self.baud,
                        self.max_payload, mf.image_bytes, mf.result_bytes, mf.classes,
                        self.board)

    @property
    def receiver(self) -> FrameReceiverParams:
        return FrameReceiverParams(self.max_payload, self.timeout_cycles)

    @property
    def dispatcher(self) -> DispatcherParams:
        mf = self.manifest
        h, w, c = self.graph.input.in_shape
        return DispatcherParams(
            max_payload=self.max_payload, images_per_frame=mf.images_per_frame,
            pixels=h * w, channels=c, binary=mf.binary_image, classes=mf.classes,
            score_width=int(mf.doc["score_width"]),
            targets=len(mf.targets) if self.writable or self.network.dram_stages else 0,
            identity=tuple(self.identity.pack()),
            addr_width=self.receiver.addr_width)


class BoardCore(wiring.Component):
    """The link and the network (see the module docstring)."""

    def __init__(self, params: BoardCoreParams):
        self.params = params
        members = {"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                   "busy": Out(1)}
        self.net = None
        if params.network.dram_stages:
            self.net = DramNetwork(params.network)
            members["dram"] = self.net.signature.members["dram"]
        super().__init__(members)

    def elaborate(self, platform):
        p = self.params
        m = Module()
        m.submodules.receiver = rx = FrameReceiver(p.receiver)
        m.submodules.dispatcher = disp = Dispatcher(p.dispatcher)
        m.submodules.transmitter = tx = FrameTransmitter(FrameTransmitterParams())
        if self.net is None:
            net = Network(p.network)
            m.submodules.network = ResetInserter(disp.net_reset)(net)
        else:  # the DRAM's arbiter outlives a reset of the network (rtl_gen.dram_network)
            m.submodules.network = net = self.net
            m.d.comb += net.net_reset.eq(disp.net_reset)
            wiring.connect(m, net.dram, wiring.flipped(self.dram))

        wiring.connect(m, wiring.flipped(self.rx), rx.i_stream)
        wiring.connect(m, rx.o_stream, disp.i_stream)
        wiring.connect(m, rx.rd, disp.rd)
        wiring.connect(m, disp.o_header, tx.i_header)
        wiring.connect(m, disp.o_stream, tx.i_stream)
        wiring.connect(m, tx.o_stream, wiring.flipped(self.tx))
        wiring.connect(m, disp.net_in, net.i_stream)
        wiring.connect(m, net.o_stream, disp.net_out)
        if p.writable:
            wiring.connect(m, disp.net_cfg, net.cfg)
        elif self.net is not None:   # built-in weights: WRITE frames reach the DRAM only
            to_dram = disp.net_cfg.payload.target == len(p.manifest.targets) - 1
            m.d.comb += [net.dram_load.payload.eq(disp.net_cfg.payload.beat),
                         net.dram_load.valid.eq(disp.net_cfg.valid & to_dram),
                         disp.net_cfg.ready.eq(~to_dram | net.dram_load.ready)]
        busy = rx.receiving | rx.o_stream.valid | disp.busy | tx.sending
        if self.net is not None:
            busy |= self.net.dram_busy
        m.d.comb += self.busy.eq(busy)
        return m
