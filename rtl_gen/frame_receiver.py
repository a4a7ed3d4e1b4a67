"""The link's frame receiver: bytes in, checked frames out (``docs/protocol.md``).

Input: the byte stream from the PHY (``i_stream``). Every frame's payload is written into
one of two buffer banks of ``max_payload`` bytes (``rd`` reads them: bank ``b``, offset
``i`` at address ``b * max_payload + i``, data one cycle after the address), and a frame
descriptor ``{op, seq, length, crc, error, bank}`` (``FRAME_INFO``) is offered on
``o_stream`` when the frame ends. ``error`` is 0 for a good frame, else a
``bnnhw.protocol.Nack`` reason: ``BAD_CRC``; ``BAD_LENGTH`` (the header announced more
than ``max_payload``: the descriptor is offered at once and the receiver hunts again);
``TIMEOUT`` (no byte for ``timeout_cycles`` cycles in the middle of a frame). The consumer
holds the descriptor (valid, not taken) while it reads the bank, and takes it when done:
that frees the bank. Banks are used in turn, so descriptors come out in frame order,
and the receiver takes a frame's bytes while the consumer works on the previous one.

Between frames the receiver hunts for ``SYNC``; bytes that are not a sync are dropped. A
byte is refused (``i_stream.ready`` low) only while hunting with both banks held by the
consumer. The CRC (``rtl_gen.crc``) is updated as the bytes pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Module, Mux, Signal
from amaranth.lib import data, enum
from amaranth.lib.memory import Memory, ReadPort
from amaranth.lib.wiring import Out

from bnnhw.protocol import CRC_INIT, SYNC, Nack
from bnnhw.validate import integer

from .block import StreamBlock
from .crc import crc16_next

__all__ = ["FRAME_INFO", "FrameReceiver", "FrameReceiverParams"]

FRAME_INFO = data.StructLayout({"op": 8, "seq": 8, "length": 16, "crc": 16, "error": 3,
                                "bank": 1})


class _State(enum.Enum, shape=3):
    HUNT = 0
    TYPE = 1
    SEQ = 2
    LEN0 = 3
    LEN1 = 4
    PAYLOAD = 5
    CRC0 = 6
    CRC1 = 7


@dataclass(frozen=True)
class FrameReceiverParams:
    """Banks of ``max_payload`` bytes; a frame silent for ``timeout_cycles`` is dropped."""

    max_payload: int
    timeout_cycles: int
    name: str = "frame_receiver"

    def __post_init__(self):
        integer(self.name, "max_payload", self.max_payload, 1, 0xFFFF)
        integer(self.name, "timeout_cycles", self.timeout_cycles, 1)

    @property
    def depth(self) -> int:
        return 2 * self.max_payload

    @property
    def addr_width(self) -> int:
        return (self.depth - 1).bit_length()

    @property
    def i_width(self) -> int:
        return 8

    @property
    def o_width(self):
        return FRAME_INFO


class FrameReceiver(StreamBlock):
    """Bytes in, frame descriptors out, payloads in two banks (see the module docstring).
    ``receiving`` is high in the middle of a frame."""

    Params = FrameReceiverParams

    @classmethod
    def extra_members(cls, params):
        return {"rd": Out(ReadPort.Signature(addr_width=params.addr_width, shape=8)),
                "receiving": Out(1)}

    def elaborate(self, platform):
        p = self.params
        m = Module()
        m.submodules.buffer = mem = Memory(shape=8, depth=p.depth, init=[])
        rd, wr = mem.read_port(), mem.write_port()
        m.d.comb += [rd.addr.eq(self.rd.addr), rd.en.eq(self.rd.en),
                     self.rd.data.eq(rd.data)]

        state = Signal(_State)
        op, seq = Signal(8), Signal(8)
        length = Signal(16)
        count = Signal(16)             # payload bytes received
        crc, rcrc = Signal(16, init=CRC_INIT), Signal(8)
        silence = Signal(range(p.timeout_cycles + 1))
        wbank, rbank = Signal(), Signal()
        pending = Signal(2)
        infos = [Signal(FRAME_INFO, name=f"info{b}") for b in range(2)]

        byte = self.i_stream.payload
        hunting = state == _State.HUNT
        m.d.comb += [self.i_stream.ready.eq(~(hunting & pending.bit_select(wbank, 1))),
                     self.receiving.eq(~hunting)]
        accept = self.i_stream.valid & self.i_stream.ready

        # the oldest held descriptor
        m.d.comb += [self.o_stream.valid.eq(pending.bit_select(rbank, 1)),
                     self.o_stream.payload.eq(Mux(rbank, infos[1], infos[0]))]
        release = self.o_stream.valid & self.o_stream.ready
        with m.If(release):
            m.d.sync += rbank.eq(~rbank)

        emit = Signal()       # the frame being filled ends this cycle
        error = Signal(3)

        def offer(err):
            """Offer the frame's descriptor (with ``err``) in the bank being filled."""
            m.d.comb += [emit.eq(1), error.eq(err)]
            m.d.sync += [state.eq(_State.HUNT), wbank.eq(~wbank)]

        # pending bits: set on offer (bank wbank), cleared on release (bank rbank)
        set_mask = Mux(emit, Mux(wbank, 0b10, 0b01), 0)
        clear_mask = Mux(release, Mux(rbank, 0b10, 0b01), 0)
        m.d.sync += pending.eq((pending & ~clear_mask) | set_mask)
        for b, info in enumerate(infos):
            with m.If(emit & (wbank == b)):
                m.d.sync += [info.op.eq(op), info.seq.eq(seq), info.length.eq(length),
                             info.crc.eq(Mux(state == _State.CRC1, (byte << 8) | rcrc,
                                             0)), info.error.eq(error), info.bank.eq(b)]

        # silence in the middle of a frame
        with m.If(hunting | accept):
            m.d.sync += silence.eq(0)
        with m.Elif(silence != p.timeout_cycles):
            m.d.sync += silence.eq(silence + 1)

        m.d.comb += [wr.addr.eq(Mux(wbank, p.max_payload + count, count)[:p.addr_width]),
                     wr.data.eq(byte), wr.en.eq(accept & (state == _State.PAYLOAD))]
        next_crc = crc16_next(crc, byte)

        with m.If(~hunting & ~accept & (silence == p.timeout_cycles)):
            offer(Nack.TIMEOUT)
        with m.If(accept), m.Switch(state):
            with m.Case(_State.HUNT), m.If(byte == SYNC):
                m.d.sync += [state.eq(_State.TYPE), crc.eq(CRC_INIT), op.eq(0),
                             seq.eq(0), length.eq(0)]
            with m.Case(_State.TYPE):
                m.d.sync += [op.eq(byte), crc.eq(next_crc), state.eq(_State.SEQ)]
            with m.Case(_State.SEQ):
                m.d.sync += [seq.eq(byte), crc.eq(next_crc), state.eq(_State.LEN0)]
            with m.Case(_State.LEN0):
                m.d.sync += [length[:8].eq(byte), crc.eq(next_crc),
                             state.eq(_State.LEN1)]
            with m.Case(_State.LEN1):
                full = (byte << 8) | length[:8]
                m.d.sync += [length.eq(full), crc.eq(next_crc), count.eq(0)]
                with m.If(full > p.max_payload):
                    offer(Nack.BAD_LENGTH)
                with m.Elif(full == 0):
                    m.d.sync += state.eq(_State.CRC0)
                with m.Else():
                    m.d.sync += state.eq(_State.PAYLOAD)
            with m.Case(_State.PAYLOAD):
                m.d.sync += [crc.eq(next_crc), count.eq(count + 1)]
                with m.If(count + 1 == length):
                    m.d.sync += state.eq(_State.CRC0)
            with m.Case(_State.CRC0):
                m.d.sync += [rcrc.eq(byte), state.eq(_State.CRC1)]
            with m.Case(_State.CRC1):
                offer(Mux(((byte << 8) | rcrc) == crc, 0, Nack.BAD_CRC))
        return m
