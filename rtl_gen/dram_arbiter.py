"""One DRAM port shared by the weight-tiled units' read ports and the configuration writer.

Ports (one clock domain):

- ``reader_<i>``, ``i < readers``: ``In(dram_read_signature(addr_width))``, the unit side
  of a read port (``rtl_gen.tiled_mvtu``): ``cmd`` carries word addresses in, ``rdata``
  the 128-bit words out, in the reader's command order. A ``TiledMVTU``'s ``dram``
  member connects to it with ``wiring.connect``.
- ``cfg``: ``In(stream.Signature(64))``, configuration beats (``rtl_gen.weight_memory``:
  data 0..31, chunk 32..41, addr 42..61, sel 62..63). A beat writes its 32 ``data`` bits
  as chunk ``chunk`` of the 128-bit DRAM word ``addr``: one write command and one
  ``wdata`` beat whose ``data`` holds them at bits ``[32 chunk, 32 chunk + 32)`` (zeros
  elsewhere) and whose byte enables ``we`` are the 4 bytes there. ``sel`` is ignored, so
  ``bnnhw.packing.cfg_beats(sel, image, 128, base)`` (4 beats per word) uploads a DRAM
  image with the beats the host sends to on-chip memories. A beat with ``chunk >= 4``, or
  an ``addr`` past a narrower ``addr_width``, is dropped (taken, nothing written). The
  field reaches words ``0 .. 2**20 - 1`` only. ``cfg.ready`` is low while the DRAM side
  cannot take the write.
- ``dram``: the controller side, ``cmd`` (out, ``{we, addr}``,
  ``rtl_gen.dram_controller.cmd_layout``), ``wdata`` (out, ``{data, we}``,
  ``wdata_layout``) and ``rdata`` (in): the members of a ``DramController`` of the same
  widths, connected one by one (``wiring.connect(m, arb.dram.cmd, ctrl.cmd)``, ...).
- ``busy``: 1 while the arbiter holds work it has taken: a command not yet taken by the
  controller, a write's data not yet taken, or reads whose words have not all been
  handed to their readers. Once the last configuration beat is taken and ``busy`` is 0,
  every write has reached the controller (which commits them in command order).

Arbitration: one command per cycle, into a command register (``valid`` and payload from
registers, so the stream rule holds by construction). The ``readers + 1`` requesters
(reader ``i`` is requester ``i``, the writer ``readers``) are served round-robin: the
search starts after the one served last, so each requester with a beat waiting is served
within ``readers + 1`` commands. A reader takes part while fewer than ``outstanding``
reads are in flight; the writer while the write data register is free (empty, or being
emptied this cycle). A write's command and data are loaded together; ``wdata.valid``
rises in the cycle ``cmd.valid`` rises for that write, never before, and either beat may
then be taken first: a controller that takes a write's data after its command (LiteDRAM's
native port) and one that takes the data first (``DramController``'s buffered port: its
write command waits for the data) both work.

Ordering: every read granted pushes its reader's index into a FIFO of ``outstanding``
entries (``amaranth.lib.fifo.SyncFIFO``); the controller returns words in command order,
so the head of the FIFO names the reader of the word on ``dram.rdata``. The word is
offered to that reader only (``valid`` to it, the payload to all) and
``dram.rdata.ready`` is that reader's ``ready``; the head is popped when the word is
taken. So each reader gets exactly its words in its own order, and a reader that does
not take its word holds up the words behind it (reads return in order).

Stall option (``stall``, ``0 <= stall < 1``, for verification): an xorshift32 LFSR
seeded with ``seed`` steps every cycle; two of its bytes below ``stall_threshold``
(``round(256 stall)``) stall the command side and the read-data side in that cycle, each
with probability ``stall_threshold / 256``. A command-side stall loads no command (every
requester's ``ready`` low) and does not raise ``cmd.valid`` (a command already offered
stays offered); a read-data side stall does not raise the reader's ``valid`` and keeps
``dram.rdata.ready`` low (a word already offered to its reader stays offered). With
``stall`` 0 the LFSR is not built.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from bnnhw.folding import DRAM_WORD_BITS
from bnnhw.packing import CFG_ADDR_BITS, CFG_DATA_BITS
from bnnhw.validate import ParameterError, integer

from .dram_controller import cmd_layout, wdata_layout
from .tiled_mvtu import dram_read_signature
from .weight_memory import CFG_LAYOUT, cfg_signature

__all__ = ["DramArbiter", "DramArbiterParams", "dram_port_signature"]


def dram_port_signature(addr_width: int, data_width: int = DRAM_WORD_BITS) -> wiring.Signature:
    """The controller side of the arbiter, from the arbiter's side: ``cmd`` and ``wdata``
    out, ``rdata`` in (the flip of a ``DramController``'s members of the same widths)."""
    return wiring.Signature({"cmd": Out(stream.Signature(cmd_layout(addr_width))),
                             "wdata": Out(stream.Signature(wdata_layout(data_width))),
                             "rdata": In(stream.Signature(data_width))})


@dataclass(frozen=True, kw_only=True)
class DramArbiterParams:
    """``readers`` read ports, ``addr_width``-bit word addresses, ``data_width``-bit words
    (the readers' 128), at most ``outstanding`` reads in flight, random stalls with
    probability about ``stall`` (LFSR seed ``seed``, 1 .. 2**32 - 1)."""

    readers: int
    addr_width: int = 24
    data_width: int = DRAM_WORD_BITS
    outstanding: int = 16
    stall: float = 0.0
    seed: int = 1
    name: str = "dram_arbiter"

    def __post_init__(self):
        n = self.name
        integer(n, "readers", self.readers, 1)
        integer(n, "addr_width", self.addr_width, 1)
        integer(n, "outstanding", self.outstanding, 1)
        integer(n, "seed", self.seed, 1, (1 << 32) - 1)
        if self.data_width != DRAM_WORD_BITS:
            raise ParameterError(f"{n}: data_width must be {DRAM_WORD_BITS} (the readers' "
                                 f"DRAM word), not {self.data_width!r}")
        s = self.stall
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < 1:
            raise ParameterError(f"{n}: stall must be a probability in [0, 1), not {s!r}")

    @property
    def requesters(self) -> int:
        """Round-robin requesters: the readers, then the writer."""
        return self.readers + 1

    @property
    def chunks(self) -> int:
        """Configuration beats per DRAM word (4)."""
        return self.data_width // CFG_DATA_BITS

    @property
    def stall_threshold(self) -> int:
        """A side stalls in a cycle when its LFSR byte is below this (0: never)."""
        if not self.stall:
            return 0
        return max(1, min(255, round(256 * self.stall)))


class DramArbiter(wiring.Component):
    """One DRAM port shared by ``readers`` read ports and ``cfg`` (module docstring)."""

    def __init__(self, params: DramArbiterParams):
        self.params = p = params
        members = {f"reader_{i}": In(dram_read_signature(p.addr_width))
                   for i in range(p.readers)}
        members.update(cfg=In(cfg_signature()),
                       dram=Out(dram_port_signature(p.addr_width, p.data_width)),
                       busy=Out(1))
        super().__init__(members)

    @property
    def readers(self) -> list:
        return [getattr(self, f"reader_{i}") for i in range(self.params.readers)]

    # route, write_beat, wdata_valid and busy_when are methods so that a test can plant a
    # fault in each.
    def route(self, head):
        """The reader of the word on ``dram.rdata``: the FIFO head."""
        return head

    def write_beat(self, beat):
        """``(data, byte enables)`` of the write of configuration beat ``beat``."""
        p = self.params
        lanes = [beat.chunk == c for c in range(p.chunks)]
        return (Cat(Mux(hit, beat.data, 0) for hit in lanes),
                Cat(hit.replicate(CFG_DATA_BITS // 8) for hit in lanes))

    def wdata_valid(self, wdata_full, write_cmd_hidden):
        """``wdata.valid``: the data register is full and its write's command is not still
        waiting unoffered in the command register."""
        return wdata_full & ~write_cmd_hidden

    def busy_when(self, cmd_full, wdata_full, reads_in_flight):
        """``busy``: a command or a write's data not yet taken, or reads in flight."""
        return cmd_full | wdata_full | reads_in_flight

    def elaborate(self, platform):
        m = Module()
        p = self.params
        readers, dram = self.readers, self.dram
        stall_cmd, stall_rdata = self._stalls(m)

        m.submodules.in_flight = fifo = SyncFIFO(
            width=max(1, (p.readers - 1).bit_length()), depth=p.outstanding)

        # The command register and the write data register.
        cmd = Signal(cmd_layout(p.addr_width))
        cmd_full, cmd_shown = Signal(), Signal()
        wdata = Signal(wdata_layout(p.data_width))
        wdata_full = Signal()
        m.d.comb += [dram.cmd.payload.eq(cmd), dram.wdata.payload.eq(wdata),
                     dram.cmd.valid.eq(cmd_full & (cmd_shown | ~stall_cmd)),
                     dram.wdata.valid.eq(self.wdata_valid(
                         wdata_full, cmd_full & cmd.we & ~dram.cmd.valid))]
        cmd_taken = dram.cmd.valid & dram.cmd.ready
        wdata_taken = dram.wdata.valid & dram.wdata.ready
        m.d.sync += cmd_shown.eq(dram.cmd.valid & ~dram.cmd.ready)

        # Requests: readers while a read fits in flight, the writer while its data
        # register is free; a beat to drop is taken at once.
        beat = data.View(CFG_LAYOUT, self.cfg.payload)
        drop = beat.chunk >= p.chunks
        if p.addr_width < CFG_ADDR_BITS:
            drop |= beat.addr >= 1 << p.addr_width
        requests = [r.cmd.valid & fifo.w_stream.ready for r in readers]
        requests.append(self.cfg.valid & ~drop & (~wdata_full | wdata_taken))
        grant, last = Signal(range(p.requesters)), Signal(range(p.requesters),
                                                           init=p.requesters - 1)
        self._round_robin(m, requests, grant, last)
        load = Signal()
        m.d.comb += load.eq((~cmd_full | cmd_taken) & ~stall_cmd & Cat(requests).any())
        writer = grant == p.readers
        for i, r in enumerate(readers):
            m.d.comb += r.cmd.ready.eq(load & (grant == i))
        m.d.comb += [self.cfg.ready.eq((self.cfg.valid & drop) | (load & writer)),
                     fifo.w_stream.valid.eq(load & ~writer),
                     fifo.w_stream.payload.eq(grant)]

        addr = Mux(writer, beat.addr, 0)
        for i, r in enumerate(readers):
            addr = Mux(grant == i, r.cmd.payload, addr)
        with m.If(load):
            m.d.sync += [cmd_full.eq(1), cmd.we.eq(writer), cmd.addr.eq(addr), last.eq(grant)]
        with m.Elif(cmd_taken):
            m.d.sync += cmd_full.eq(0)
        wd, we = self.write_beat(beat)
        with m.If(load & writer):
            m.d.sync += [wdata_full.eq(1), wdata.data.eq(wd), wdata.we.eq(we)]
        with m.Elif(wdata_taken):
            m.d.sync += wdata_full.eq(0)

        # Read data: offered to the reader at the head of the FIFO only.
        head = self.route(fifo.r_stream.payload)
        offered, shown = Signal(), Signal()
        m.d.comb += offered.eq(dram.rdata.valid & fifo.r_stream.valid & (shown | ~stall_rdata))
        head_ready = Cat(r.rdata.ready for r in readers).bit_select(head, 1)
        for i, r in enumerate(readers):
            m.d.comb += [r.rdata.payload.eq(dram.rdata.payload),
                         r.rdata.valid.eq(offered & (head == i))]
        m.d.comb += [dram.rdata.ready.eq(offered & head_ready),
                     fifo.r_stream.ready.eq(offered & head_ready)]
        m.d.sync += shown.eq(offered & ~head_ready)

        m.d.comb += self.busy.eq(self.busy_when(cmd_full, wdata_full, fifo.level != 0))
        return m

    def _round_robin(self, m, requests, grant, last):
        """``grant``: the first requester with a request after ``last`` (cyclically)."""
        n = len(requests)
        with m.Switch(last):
            for served in range(n):
                with m.Case(served):
                    order = [(served + 1 + k) % n for k in range(n)]
                    with m.If(requests[order[0]]):
                        m.d.comb += grant.eq(order[0])
                    for k in order[1:]:
                        with m.Elif(requests[k]):
                            m.d.comb += grant.eq(k)

    def _stalls(self, m):
        """(command-side stall, read-data side stall) of this cycle: two bytes of an
        xorshift32 LFSR below ``stall_threshold``; constant 0 without stalls."""
        p = self.params
        if not p.stall_threshold:
            return Const(0), Const(0)
        s = Signal(32, init=p.seed, name="stall_lfsr")
        x = (s ^ (s << 13))[:32]
        x = x ^ (x >> 17)
        x = (x ^ (x << 5))[:32]
        m.d.sync += s.eq(x)
        return s[:8] < p.stall_threshold, s[8:16] < p.stall_threshold
