"""The DDR3 controller (a generated LiteDRAM core, ``boards.litedram``) as a component with
bnnhw streams: commands, write data and read data of its one native user port.

The core is an ``Instance`` of the Verilog module ``litedram_core``; its Verilog files
must be added to the build (``platform.add_file``) or to the simulation beside this
component's Verilog. ``DramControllerParams.from_core(core)`` takes every figure from a
generated ``boards.litedram.LiteDramCore``.

Ports (all in one clock domain, see Clocking):

- ``cmd``: ``{we, addr}``. ``addr`` counts ``data_width``-bit words (128 bits, 16 bytes,
  on the Arty: 24 bits reach the 256 MB). One beat per word; ``we`` 1 writes, 0 reads.
- ``wdata``: ``{data, we}``, one beat per write command, in command order; ``we`` is a
  byte-enable mask (bit i writes byte i, bits ``8i..8i+7`` of ``data``). The controller
  takes a write command only once its data is in the write buffer, so a writer offers the
  data no later than the command (``rtl_gen.dram_arbiter`` raises both together).
- ``rdata``: ``data_width`` bits, one beat per read command, in command order.
- ``init_done``: 1 once the DDR3 is initialised; until then the core holds every
  ``ready`` and ``valid`` of the user port low (LiteDRAM's ``block_until_ready``).

Every stream follows Amaranth's rules (``valid`` held until ``ready``; payload stable).
Read latency and throughput are the controller's: ``bench/dram_bandwidth.py`` measures
them on the simulation core.

Clocking: the core runs from its own clock, ``user_clk`` (the system clock its PLL makes
from the reference clock it is given, 100 MHz on the Arty; in the simulation core,
``user_clk`` is its ``clk`` input). The component defines the clock domain ``dram``
(clock ``user_clk``, reset ``user_rst``). With ``cross_domain=None`` the streams and
``init_done`` are in ``dram``, and the design's DRAM-side logic must run in ``dram``
too. With ``cross_domain="sync"`` (or another domain name) the streams and
``init_done`` are in that domain: ``cmd`` and ``wdata`` cross into ``dram`` through
``AsyncFIFO``s of ``fifo_depth`` beats, ``rdata`` crosses back through another, and
``init_done`` through an ``FFSynchronizer``. The crossing is needed on the board
whenever the design clock is not ``user_clk`` itself: even a design clock of the same
100 MHz from another MMCM or BUFG has an unknown phase to it.

Initialisation: the simulation core's DRAM model needs no DDR3 sequence; the component
writes 1 to the core's ``ddrctrl_init_done`` CSR over its Wishbone control bus after
reset. A core with a CPU initialises and calibrates by itself. A core with neither
exposes that Wishbone bus as the ``ctrl`` port, for the design to do the DDR3 sequence
and write ``init_done`` itself.

Board pins: the hardware core's ``ddram_*`` ports go to the platform resource named by
``pins`` (default: amaranth-boards' ``ddr3`` 0 of the Arty), requested raw
(``dir="-"``): LiteDRAM's PHY instantiates the I/O buffers itself. The core's ``clk``
input is the clock of ``ref_domain`` (it must be the 100 MHz the core was generated
for) and its ``rst`` that domain's reset.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import ClockDomain, ClockSignal, Const, DomainRenamer, Module, ResetSignal, Signal
from amaranth.hdl import Instance
from amaranth.lib import data, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.fifo import AsyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

__all__ = [
    "LITEDRAM_PINS",
    "DramController",
    "DramControllerParams",
    "cmd_layout",
    "wdata_layout",
    "wishbone_signature",
]

_USER = "user_port_0_"
# LiteDRAM's pad names -> the subsignals of amaranth-boards' Arty ``ddr3`` resource; the
# _n pins are PinsN there, and the raw port is the physical (active-low) pin.
LITEDRAM_PINS = {
    "ddram_a": "a", "ddram_ba": "ba", "ddram_ras_n": "ras", "ddram_cas_n": "cas",
    "ddram_we_n": "we", "ddram_cs_n": "cs", "ddram_dm": "dm", "ddram_dq": "dq",
    "ddram_dqs_p": ("dqs", "p"), "ddram_dqs_n": ("dqs", "n"),
    "ddram_clk_p": ("clk", "p"), "ddram_clk_n": ("clk", "n"), "ddram_cke": "clk_en",
    "ddram_odt": "odt", "ddram_reset_n": "rst",
}
_WISHBONE = (("adr", 30, "i"), ("dat_w", 32, "i"), ("sel", 4, "i"), ("cyc", 1, "i"),
             ("stb", 1, "i"), ("we", 1, "i"), ("cti", 3, "i"), ("bte", 2, "i"),
             ("dat_r", 32, "o"), ("ack", 1, "o"), ("err", 1, "o"))


def cmd_layout(address_width: int) -> data.StructLayout:
    return data.StructLayout({"we": 1, "addr": address_width})


def wdata_layout(data_width: int) -> data.StructLayout:
    return data.StructLayout({"data": data_width, "we": data_width // 8})


def wishbone_signature() -> wiring.Signature:
    """The core's Wishbone control bus (32-bit, word addresses), seen from its master."""
    return wiring.Signature({name: Out(width) if d == "i" else In(width)
                             for name, width, d in _WISHBONE})


@dataclass(frozen=True)
class DramControllerParams:
    """The generated core's figures and how the component wraps it.

    ``kind`` is "sim" (the DRAM-model core), "cpu" (hardware, a CPU initialises) or
    "bare" (hardware, no CPU: the ``ctrl`` port). ``ports`` lists the core's
    ``(name, direction, width)``; ``init_done_csr`` is the CSR's byte address.
    """

    data_width: int = 128
    address_width: int = 24
    kind: str = "sim"
    ports: tuple[tuple[str, str, int], ...] = ()
    init_done_csr: int = 0
    cross_domain: str | None = None
    fifo_depth: int = 16
    ref_domain: str = "sync"
    pins: tuple[str, int] = ("ddr3", 0)
    name: str = "dram"

    def __post_init__(self):
        if self.kind not in ("sim", "cpu", "bare"):
            raise ValueError(f"{self.name}: kind must be 'sim', 'cpu' or 'bare', not "
                             f"{self.kind!r}")
        if self.data_width <= 0 or self.data_width % 8:
            raise ValueError(f"{self.name}: data_width must be a positive multiple of 8, "
                             f"not {self.data_width}")
        if self.address_width <= 0:
            raise ValueError(f"{self.name}: address_width must be positive, not "
                             f"{self.address_width}")
        if self.fifo_depth < 2:
            raise ValueError(f"{self.name}: fifo_depth must be at least 2, not "
                             f"{self.fifo_depth}")

    @classmethod
    def from_core(cls, core, **kwargs) -> DramControllerParams:
        """The parameters of a ``boards.litedram.LiteDramCore``; ``kwargs`` set the rest."""
        kind = "sim" if core.sim else ("bare" if core.cpu is None else "cpu")
        return cls(data_width=core.data_width, address_width=core.address_width, kind=kind,
                   ports=tuple((p.name, p.direction, p.width) for p in core.ports),
                   init_done_csr=core.csr["ddrctrl_init_done"], **kwargs)

    @property
    def bytes_per_word(self) -> int:
        return self.data_width // 8


class DramController(wiring.Component):
    """The LiteDRAM core behind ``cmd``/``wdata``/``rdata`` streams and ``init_done``."""

    def __init__(self, params: DramControllerParams):
        self.params = p = params
        members = {
            "cmd": In(stream.Signature(cmd_layout(p.address_width))),
            "wdata": In(stream.Signature(wdata_layout(p.data_width))),
            "rdata": Out(stream.Signature(p.data_width)),
            "init_done": Out(1),
        }
        if p.kind == "bare":
            members["ctrl"] = In(wishbone_signature())
        super().__init__(members)

    def elaborate(self, platform):
        p = self.params
        m = Module()
        m.domains.dram = ClockDomain("dram")
        user_clk, user_rst = Signal(), Signal()
        m.d.comb += [ClockSignal("dram").eq(user_clk), ResetSignal("dram").eq(user_rst)]

        # The user port as streams, in the dram domain.
        cmd = stream.Signature(cmd_layout(p.address_width)).flip().create()
        wdata = stream.Signature(wdata_layout(p.data_width)).flip().create()
        rdata = stream.Signature(p.data_width).create()
        init_done = Signal()
        core = self._native_port(m, cmd, wdata, rdata)
        if p.cross_domain is None:
            m.d.comb += self.init_done.eq(init_done)
            wiring.connect(m, wiring.flipped(self.cmd), cmd)
            wiring.connect(m, wiring.flipped(self.wdata), wdata)
            wiring.connect(m, rdata, wiring.flipped(self.rdata))
        else:
            self._cross(m, cmd, wdata, rdata, init_done)

        # the design's bus (no CPU), the component's own init write (sim), or idle (CPU)
        wb = self.ctrl if p.kind == "bare" else wishbone_signature().create()
        if p.kind == "sim":
            self._write_init_done(m, wb)

        known = {
            "user_clk": ("o", user_clk), "user_rst": ("o", user_rst),
            "init_done": ("o", init_done),
            **{_USER + name: value for name, value in core.items()},
            "clk": ("i", ClockSignal(p.ref_domain) if p.kind != "sim" else ClockSignal("sync")),
            "rst": ("i", ResetSignal(p.ref_domain)),
        }
        known.update({f"wb_ctrl_{name}": (d, getattr(wb, name)) for name, _, d in _WISHBONE})
        pads = None
        kwargs = {}
        for name, direction, width in p.ports:
            if name in known:
                d, value = known[name]
                kwargs[f"{d}_{name}"] = value
            elif name.startswith("ddram_"):
                if pads is None:
                    pads = platform.request(*p.pins, dir="-")
                kwargs[f"io_{name}"] = _pin(pads, name)
            elif direction == "input":
                # sim_trace, and a CPU's uart_rx: an idle UART line is high.
                kwargs[f"i_{name}"] = Const(1 if name.endswith("rx") else 0, width)
            # other outputs (pll_locked, init_error, a CPU's uart_tx) stay unconnected
        m.submodules.core = Instance("litedram_core", **kwargs)
        return m

    def _native_port(self, m, cmd, wdata, rdata):
        """Streams over LiteDRAM's native port, which is not one: its ``wdata_ready`` is a
        strobe at which the controller takes ``wdata_data`` whether valid or not, and its
        ``rdata_valid`` a pulse that ignores ``rdata_ready``. So write data waits in a
        FIFO and a write command is passed on only when its data is already there; read
        data lands in a FIFO and a read command is passed on only while the reads in
        flight fit in it. Returns the core's user-port signals (without the prefix)."""
        p = self.params
        depth = p.fifo_depth
        m.submodules.wdata_buffer = wbuf = DomainRenamer("dram")(
            SyncFIFOBuffered(width=wdata.payload.shape().size, depth=depth))
        m.submodules.rdata_buffer = rbuf = DomainRenamer("dram")(
            SyncFIFOBuffered(width=p.data_width, depth=depth))
        m.d.comb += [wbuf.w_stream.payload.eq(wdata.payload),
                     wbuf.w_stream.valid.eq(wdata.valid), wdata.ready.eq(wbuf.w_stream.ready),
                     rdata.payload.eq(rbuf.r_stream.payload),
                     rdata.valid.eq(rbuf.r_stream.valid), rbuf.r_stream.ready.eq(rdata.ready)]
        count = range(-1, depth + 2)
        writes_waiting = Signal(count)   # write commands taken whose data is not yet taken
        reads_flying = Signal(count)     # read commands taken whose data has not come back
        core = {"cmd_ready": Signal(), "wdata_ready": Signal(), "rdata_valid": Signal(),
                "rdata_data": Signal(p.data_width)}
        allowed = Signal()
        with m.If(cmd.payload.we):
            m.d.comb += allowed.eq(wbuf.level > writes_waiting)
        with m.Else():
            m.d.comb += allowed.eq(reads_flying + rbuf.level < depth)
        taken = cmd.valid & allowed & core["cmd_ready"]
        m.d.comb += cmd.ready.eq(allowed & core["cmd_ready"])
        m.d.dram += [
            writes_waiting.eq(writes_waiting + (taken & cmd.payload.we)
                              - core["wdata_ready"]),
            reads_flying.eq(reads_flying + (taken & ~cmd.payload.we) - core["rdata_valid"]),
        ]
        m.d.comb += [wbuf.r_stream.ready.eq(core["wdata_ready"]),
                     rbuf.w_stream.valid.eq(core["rdata_valid"]),
                     rbuf.w_stream.payload.eq(core["rdata_data"])]
        wpayload = Signal(wdata_layout(p.data_width))
        m.d.comb += wpayload.eq(wbuf.r_stream.payload)
        return {"cmd_valid": ("i", cmd.valid & allowed), "cmd_ready": ("o", core["cmd_ready"]),
                "cmd_we": ("i", cmd.payload.we), "cmd_addr": ("i", cmd.payload.addr),
                "wdata_valid": ("i", wbuf.r_stream.valid),
                "wdata_ready": ("o", core["wdata_ready"]),
                "wdata_data": ("i", wpayload.data), "wdata_we": ("i", wpayload.we),
                "rdata_valid": ("o", core["rdata_valid"]), "rdata_ready": ("i", Const(1)),
                "rdata_data": ("o", core["rdata_data"])}

    def _cross(self, m, cmd, wdata, rdata, init_done):
        p = self.params
        other = p.cross_domain
        fifos = {
            "cmd_fifo": (AsyncFIFO(width=cmd.payload.shape().size, depth=p.fifo_depth,
                                   w_domain=other, r_domain="dram"), self.cmd, cmd),
            "wdata_fifo": (AsyncFIFO(width=wdata.payload.shape().size, depth=p.fifo_depth,
                                     w_domain=other, r_domain="dram"), self.wdata, wdata),
        }
        for name, (fifo, outer, inner) in fifos.items():
            m.submodules[name] = fifo
            m.d.comb += [fifo.w_data.eq(outer.payload), fifo.w_en.eq(outer.valid),
                         outer.ready.eq(fifo.w_rdy),
                         inner.payload.eq(fifo.r_data), inner.valid.eq(fifo.r_rdy),
                         fifo.r_en.eq(inner.ready)]
        m.submodules.rdata_fifo = fifo = AsyncFIFO(width=p.data_width, depth=p.fifo_depth,
                                                   w_domain="dram", r_domain=other)
        m.d.comb += [fifo.w_data.eq(rdata.payload), fifo.w_en.eq(rdata.valid),
                     rdata.ready.eq(fifo.w_rdy),
                     self.rdata.payload.eq(fifo.r_data), self.rdata.valid.eq(fifo.r_rdy),
                     fifo.r_en.eq(self.rdata.ready)]
        m.submodules.init_sync = FFSynchronizer(init_done, self.init_done, o_domain=other)

    def _write_init_done(self, m, wb):
        """One Wishbone write of 1 to ``ddrctrl_init_done`` after reset, in ``dram``."""
        p = self.params
        pending = Signal(init=1)
        m.d.comb += [wb.cyc.eq(pending), wb.stb.eq(pending), wb.we.eq(1), wb.sel.eq(0xF),
                     wb.adr.eq(p.init_done_csr >> 2), wb.dat_w.eq(1)]
        with m.If(pending & wb.ack):
            m.d.dram += pending.eq(0)


def _pin(pads, name):
    """The raw I/O port of LiteDRAM pad ``name`` in the requested ``ddr3`` resource."""
    path = LITEDRAM_PINS.get(name)
    if path is None:
        raise ValueError(f"LiteDRAM pad {name} has no pin in the board's DDR3 resource")
    if isinstance(path, tuple):
        sub, leg = path
        return getattr(getattr(pads, sub), leg)        # DifferentialPort legs are raw
    return getattr(pads, path).io
