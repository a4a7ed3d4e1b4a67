"""The link's dispatcher: executes checked frames in order and answers each once.

Input (``i_stream``): frame descriptors from ``rtl_gen.frame_receiver`` (``FRAME_INFO``),
whose payloads it reads from the receiver's bank (``rd``) and releases when done. Output:
one response per frame, a header on ``o_header`` and its payload bytes on ``o_stream``
(``rtl_gen.frame_transmitter`` frames them). What each request does (``docs/protocol.md``):

- ``IDENTIFY``: ``IDENTITY`` with the build's identity (constant bytes);
- ``STATUS``: ``COUNTERS`` with a snapshot of the four counters;
- ``RESET``: one cycle of ``net_reset`` (the network's registers, not its memories;
  a register's output),
  counters cleared, ``ACK``;
- ``WRITE`` (writable builds): the target byte, then each 8 payload bytes as one beat on
  ``net_cfg`` (``rtl_gen.network.CFG_TARGET_LAYOUT``), ``ACK``;
- ``INFER``: the count byte, then the images' bytes through an ``ImageUnpacker`` to
  ``net_in``, and the network's results (``net_out``) through a ``ResultPacker`` into the
  ``RESULTS`` payload after its CRC and count, as they come;
- a bad frame (a receiver error), an unknown type, or a payload that does not fit its type
  (wrong length, an image count of 0 or above ``images_per_frame``, a target out of
  range, a ``WRITE`` to a build that is not writable): ``NACK`` with the reason and the
  received CRC field.

Every response starts with the request's CRC. Counters: good frames (executed), bad
frames (``NACK``ed), images done, timeouts, all counted as responses leave.

Two halves joined by a FIFO of response records (``RECORD_DEPTH``): the feeder takes the
frames in order, decides each one's response, feeds an ``INFER`` frame's images into the
network and frees the frame's bank as soon as its bytes are read; the responder sends the
responses in the same order, an ``INFER``'s results as the network gives them. So the
images of the next frame enter the network while the results of this one are still
coming (the pipeline stays full across frames). ``RESET`` and ``WRITE`` wait until every
earlier response is out (no image in flight sees new weights or a reset). ``busy`` is
high while anything is in either half.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, stream
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out

from bnnhw.protocol import CFG_BEAT_BYTES, Nack, Op
from bnnhw.validate import integer

from .block import StreamBlock, output_register, skid_buffer
from .frame_receiver import FRAME_INFO
from .frame_transmitter import HEADER
from .image_unpacker import ImageUnpacker, ImageUnpackerParams
from .result_packer import ResultPacker, ResultPackerParams

__all__ = ["Dispatcher", "DispatcherParams"]


class _State(enum.Enum, shape=4):
    IDLE = 0
    DECODE = 1
    FIRST = 2        # waiting for the first payload byte (target or count)
    CHECK = 3        # the first byte checked against the frame's length
    DRAIN = 4        # RESET and WRITE wait until every earlier response is out
    WRITE = 5
    QUEUE = 6        # the response record goes into the FIFO
    FEED = 7         # an INFER frame's images go into the network
    DONE = 8         # the frame's bank is freed


class _Kind(enum.Enum, shape=3):
    NACK = 0
    ACK = 1
    IDENTITY = 2
    COUNTERS = 3
    RESULTS = 4


_RECORD = data.StructLayout({"kind": _Kind, "seq": 8, "crc": 16, "reason": 3, "count": 8,
                             "length": 16, "reset": 1})
RECORD_DEPTH = 4
"""Responses queued between the feeder and the responder: frames whose results are still
coming; the feeder takes the next frame meanwhile."""


@dataclass(frozen=True, eq=False)
class DispatcherParams:
    """The link's formats (``bnnhw.manifest.Manifest``) and the build's identity bytes."""

    max_payload: int
    images_per_frame: int
    pixels: int
    channels: int
    binary: bool
    classes: int
    score_width: int
    targets: int                 # writable targets (0: the build takes no WRITE)
    identity: tuple[int, ...]
    addr_width: int
    name: str = "dispatcher"

    def __post_init__(self):
        n = self.name
        integer(n, "max_payload", self.max_payload, 1, 0xFFFF)
        integer(n, "images_per_frame", self.images_per_frame, 1, 255)
        integer(n, "targets", self.targets, 0, 255)
        object.__setattr__(self, "identity", tuple(int(b) for b in self.identity))

    @property
    def unpacker(self) -> ImageUnpackerParams:
        return ImageUnpackerParams(self.pixels, self.channels, self.binary)

    @property
    def packer(self) -> ResultPackerParams:
        return ResultPackerParams(self.classes, self.score_width)

    @property
    def image_bytes(self) -> int:
        return self.unpacker.image_bytes

    @property
    def result_bytes(self) -> int:
        return self.packer.result_bytes

    i_width = FRAME_INFO
    o_width = 8


class Dispatcher(StreamBlock):
    """Executes frames (see the module docstring)."""

    Params = DispatcherParams

    @classmethod
    def extra_members(cls, params):
        from .network import CFG_TARGET_LAYOUT

        members = {
            "rd": In(ReadPort.Signature(addr_width=params.addr_width, shape=8)),
            "o_header": Out(stream.Signature(HEADER)),
            "net_in": Out(stream.Signature(params.unpacker.o_width)),
            "net_out": In(stream.Signature(params.packer.i_width)),
            "net_reset": Out(1),
            "busy": Out(1),
        }
        if params.targets:
            members["net_cfg"] = Out(stream.Signature(CFG_TARGET_LAYOUT))
        return members

    def elaborate(self, platform):
        p = self.params
        m = Module()
        m.submodules.unpacker = unpacker = ImageUnpacker(p.unpacker)
        m.submodules.packer = packer = ResultPacker(p.packer)
        # The pixels go to the network through a skid buffer: the network's ready would
        # otherwise run through the unpacker and the payload reader in one cycle.
        skid_buffer(m, unpacker.o_stream, self.net_in, name="net_in_skid")
        # The results come through another: the link's ready (the UART, the
        # transmitter, the packer) would otherwise run on into the network's last blocks
        skid_buffer(m, self.net_out, packer.i_stream, name="net_out_skid")
        m.submodules.records = records = SyncFIFOBuffered(width=_RECORD.size,
                                                         depth=RECORD_DEPTH)
        top = data.View(_RECORD, records.r_data)

        # ======== the feeder: frames in order, images into the network ==================
        state = Signal(_State)
        desc = Signal(FRAME_INFO)

        # The payload reader: the frame's bank as a byte stream, two stages deep: the
        # bank's read port (``a_valid``), then a register (``r_valid``, ``r_byte``). The
        # bank is a block RAM whose clock-to-output (about 6 ns on an ECP5) leaves no time
        # for the checks and the unpacker behind it: they read the register.
        r_addr, r_left = Signal(16), Signal(16)
        a_valid, r_valid, r_ready, r_abort = Signal(), Signal(), Signal(), Signal()
        r_byte = Signal(8)
        advance = ~r_valid | r_ready
        fetch = ~a_valid | advance
        base = Mux(desc.bank, p.max_payload, 0)
        m.d.comb += [self.rd.addr.eq((base + r_addr)[:p.addr_width]),
                     self.rd.en.eq(fetch)]
        with m.If(r_abort):
            m.d.sync += [r_left.eq(0), a_valid.eq(0), r_valid.eq(0)]
        with m.Else():
            with m.If(fetch):
                m.d.sync += a_valid.eq(r_left != 0)
                with m.If(r_left != 0):
                    m.d.sync += [r_addr.eq(r_addr + 1), r_left.eq(r_left - 1)]
            with m.If(advance):
                m.d.sync += [r_valid.eq(a_valid), r_byte.eq(self.rd.data)]
        reading = r_valid | a_valid | (r_left != 0)
        # the first byte and its products, registered (each product is a DSP multiply,
        # which takes most of a cycle: CHECK compares and adds a cycle later)
        first = Signal(8)
        image_prod = Signal(range(1 + 255 * p.image_bytes))     # first * image_bytes
        result_prod = Signal(range(1 + 255 * p.result_bytes))   # first * result_bytes
        length_m1 = Signal(16)      # desc.length - 1: the image bytes an INFER announces

        target = Signal(8)
        beat = Signal(64)
        beat_bytes = Signal(range(CFG_BEAT_BYTES + 1))
        cfg_valid = Signal()

        # a response record goes into the FIFO, then the feeder goes on (to ``after``)
        rec = Signal(_RECORD)
        after = Signal(_State)
        m.d.comb += [records.w_data.eq(rec), records.w_en.eq(state == _State.QUEUE)]
        responder_idle = Signal()
        drained = responder_idle & ~records.r_rdy & (records.level == 0)

        def queue(kind, length, why=0, count=0, then=_State.DONE, reset=0):
            m.d.sync += [rec.kind.eq(kind), rec.seq.eq(desc.seq), rec.crc.eq(desc.crc),
                         rec.reason.eq(why), rec.count.eq(count), rec.length.eq(length),
                         rec.reset.eq(reset), after.eq(then), state.eq(_State.QUEUE)]

        # net_reset leaves from a register: it fans out to every register of the network,
        # which takes most of a cycle on its own. It comes the cycle after the feeder
        # decides, while it queues the ACK (the network is idle by then: drained).
        reset_now = Signal()
        m.d.sync += self.net_reset.eq(reset_now)

        with m.Switch(state):
            with m.Case(_State.IDLE), m.If(self.i_stream.valid):
                m.d.sync += [desc.eq(self.i_stream.payload), state.eq(_State.DECODE)]
            with m.Case(_State.DECODE):
                op, n = desc.op, desc.length
                with m.If(desc.error != 0):
                    queue(_Kind.NACK, 3, desc.error)
                with m.Elif((op == Op.IDENTIFY) & (n == 0)):
                    queue(_Kind.IDENTITY, 2 + len(p.identity))
                with m.Elif((op == Op.STATUS) & (n == 0)):
                    queue(_Kind.COUNTERS, 18)
                with m.Elif((op == Op.RESET) & (n == 0)):
                    m.d.sync += state.eq(_State.DRAIN)
                with m.Elif(((op == Op.WRITE) & (n > CFG_BEAT_BYTES) & bool(p.targets)
                             & ((n - 1)[:3] == 0))
                            | ((op == Op.INFER) & (n >= 2))):
                    m.d.sync += [r_addr.eq(0), r_left.eq(n), length_m1.eq(n - 1),
                                 state.eq(_State.FIRST)]
                with m.Elif((op == Op.IDENTIFY) | (op == Op.STATUS) | (op == Op.RESET)
                            | (op == Op.WRITE) | (op == Op.INFER)):
                    queue(_Kind.NACK, 3, Nack.BAD_PAYLOAD)
                with m.Else():
                    queue(_Kind.NACK, 3, Nack.UNKNOWN_TYPE)
            # RESET and WRITE wait for every image in flight to be answered
            with m.Case(_State.DRAIN), m.If(drained):
                with m.If(desc.op == Op.RESET):
                    m.d.comb += reset_now.eq(1)
                    queue(_Kind.ACK, 2, reset=1)
                with m.Else():
                    m.d.sync += [beat_bytes.eq(0), state.eq(_State.WRITE)]
            with m.Case(_State.FIRST):
                m.d.comb += r_ready.eq(1)
                with m.If(r_valid):
                    m.d.sync += [first.eq(r_byte), image_prod.eq(r_byte * p.image_bytes),
                                 result_prod.eq(r_byte * p.result_bytes),
                                 state.eq(_State.CHECK)]
            with m.Case(_State.CHECK):
                with m.If(desc.op == Op.WRITE):
                    with m.If(first < p.targets):
                        m.d.sync += [target.eq(first), state.eq(_State.DRAIN)]
                    with m.Else():
                        m.d.comb += r_abort.eq(1)
                        queue(_Kind.NACK, 3, Nack.BAD_PAYLOAD)
                with m.Else():
                    fits = ((first >= 1) & (first <= p.images_per_frame)
                            & (length_m1 == image_prod))
                    with m.If(fits):
                        queue(_Kind.RESULTS, 3 + result_prod, count=first, then=_State.FEED)
                    with m.Else():
                        m.d.comb += r_abort.eq(1)
                        queue(_Kind.NACK, 3, Nack.BAD_PAYLOAD)
            with m.Case(_State.WRITE):
                # a beat not taken (the DRAM's writer is busy) holds the bytes back
                held = cfg_valid & ~self.net_cfg.ready if p.targets else Const(0)
                m.d.comb += r_ready.eq(~held)
                with m.If(r_valid & ~held):
                    m.d.sync += [beat.eq(Cat(beat[8:], r_byte)),
                                 beat_bytes.eq(Mux(beat_bytes == CFG_BEAT_BYTES - 1, 0,
                                                   beat_bytes + 1)),
                                 cfg_valid.eq(beat_bytes == CFG_BEAT_BYTES - 1)]
                with m.Elif(~held):
                    m.d.sync += cfg_valid.eq(0)
                with m.If(~reading & ~cfg_valid):
                    queue(_Kind.ACK, 2)
            with m.Case(_State.QUEUE), m.If(records.w_rdy):
                m.d.sync += state.eq(after)
            with m.Case(_State.FEED):
                # the images through the unpacker; the responder sends their results
                m.d.comb += [unpacker.i_stream.payload.eq(r_byte),
                             unpacker.i_stream.valid.eq(r_valid),
                             r_ready.eq(unpacker.i_stream.ready)]
                with m.If(~reading):
                    m.d.sync += state.eq(_State.DONE)
            with m.Case(_State.DONE):
                m.d.comb += self.i_stream.ready.eq(1)   # frees the receiver's bank
                m.d.sync += state.eq(_State.IDLE)

        # The configuration beats straight from registers (``cfg_valid`` is high only in
        # WRITE, and low when it ends): the write enables the memories decode from them
        # take most of a cycle.
        if p.targets:
            m.d.comb += [self.net_cfg.valid.eq(cfg_valid),
                         self.net_cfg.payload.target.eq(target),
                         self.net_cfg.payload.beat.eq(beat)]

        # ======== the responder: one response per record, in order =====================
        good, bad, images, timeouts = (Signal(32, name=n) for n in
                                       ("frames_good", "frames_bad", "images_done",
                                        "timeouts"))
        snapshot = Signal(128)
        cur = Signal(_RECORD)
        busy_out = Signal()
        sent = Signal(16)             # payload bytes sent
        m.d.comb += [responder_idle.eq(~busy_out),
                     records.r_en.eq(~busy_out)]
        # ``pre`` is ``sent < prefix_len`` and ``more`` is ``sent != cur.length``, kept in
        # registers (every response has a prefix of 2 bytes or more): the comparisons of
        # ``sent`` would otherwise sit before the byte multiplexer and the output register.
        pre, more = Signal(), Signal()
        with m.If(~busy_out & records.r_rdy):
            m.d.sync += [cur.eq(top), sent.eq(0), busy_out.eq(1), pre.eq(1), more.eq(1)]
            with m.If(top.kind == _Kind.COUNTERS):
                m.d.sync += snapshot.eq(Cat(good, bad, images, timeouts))

        ident = [Const(b, 8) for b in p.identity] or [Const(0, 8)]
        prefix_len = Signal(8)
        crc_lo, crc_hi = cur.crc[:8], cur.crc[8:]
        with m.Switch(cur.kind):
            with m.Case(_Kind.NACK, _Kind.RESULTS):
                m.d.comb += prefix_len.eq(3)
            with m.Case(_Kind.ACK):
                m.d.comb += prefix_len.eq(2)
            with m.Case(_Kind.IDENTITY):
                m.d.comb += prefix_len.eq(2 + len(p.identity))
            with m.Case(_Kind.COUNTERS):
                m.d.comb += prefix_len.eq(18)
        pbyte = Signal(8)
        i = sent
        id_bytes = [crc_lo, crc_hi, *ident]
        with m.Switch(cur.kind):
            with m.Case(_Kind.NACK):
                m.d.comb += pbyte.eq(Array([cur.reason, crc_lo, crc_hi])[i[:2]])
            with m.Case(_Kind.IDENTITY):
                m.d.comb += pbyte.eq(Array(id_bytes)[i[:max(1, (len(id_bytes) - 1)
                                                               .bit_length())]])
            with m.Case(_Kind.COUNTERS):
                snap_bytes = [snapshot[8 * k:8 * k + 8] for k in range(16)]
                m.d.comb += pbyte.eq(Array([crc_lo, crc_hi, *snap_bytes])[i[:5]])
            with m.Default():  # ACK, RESULTS
                m.d.comb += pbyte.eq(Array([crc_lo, crc_hi, cur.count])[i[:2]])

        # The payload bytes leave from an output register: the choice between the prefix
        # and the packer and the transmitter's CRC update behind it would not fit one
        # cycle together. ``sent`` counts the bytes loaded into it.
        o = self.o_stream
        load = Signal()
        free = output_register(m, o, load)
        with m.If(busy_out & more):
            with m.If(pre):
                m.d.comb += load.eq(free)
                with m.If(free):
                    m.d.sync += o.payload.eq(pbyte)
            with m.Else():
                m.d.comb += [load.eq(packer.o_stream.valid & free),
                             packer.o_stream.ready.eq(free)]
                with m.If(load):
                    m.d.sync += o.payload.eq(packer.o_stream.payload)
        with m.If(load):
            m.d.sync += [sent.eq(sent + 1), more.eq(sent + 1 != cur.length)]
            with m.If(sent + 1 == prefix_len):
                m.d.sync += pre.eq(0)
        op_of = Mux(cur.kind == _Kind.NACK, Op.NACK,
                    Mux(cur.kind == _Kind.ACK, Op.ACK,
                        Mux(cur.kind == _Kind.IDENTITY, Op.IDENTITY,
                            Mux(cur.kind == _Kind.COUNTERS, Op.COUNTERS, Op.RESULTS))))
        m.d.comb += [self.o_header.valid.eq(busy_out),
                     self.o_header.payload.op.eq(op_of),
                     self.o_header.payload.seq.eq(cur.seq),
                     self.o_header.payload.length.eq(cur.length)]
        with m.If(self.o_header.valid & self.o_header.ready):
            # the response is out: count it (a RESET's ACK first clears the counters)
            m.d.sync += busy_out.eq(0)
            is_reset = (cur.kind == _Kind.ACK) & cur.reset
            with m.If(cur.kind == _Kind.NACK):
                m.d.sync += bad.eq(bad + 1)
                with m.If(cur.reason == Nack.TIMEOUT):
                    m.d.sync += timeouts.eq(timeouts + 1)
            with m.Elif(is_reset):
                m.d.sync += [good.eq(1), bad.eq(0), images.eq(0), timeouts.eq(0)]
            with m.Else():
                m.d.sync += good.eq(good + 1)
            with m.If(cur.kind == _Kind.RESULTS):
                m.d.sync += images.eq(images + cur.count)

        m.d.comb += self.busy.eq((state != _State.IDLE) | busy_out | records.r_rdy)
        return m
