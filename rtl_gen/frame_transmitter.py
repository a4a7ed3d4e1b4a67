"""The link's frame transmitter: a response header and its payload bytes in, frame bytes
out (``docs/protocol.md``).

``i_header`` takes ``{op, seq, length}`` (``HEADER``); ``i_stream`` then delivers exactly
``length`` payload bytes; ``o_stream`` sends ``SYNC``, the type, the sequence number, the
length (little-endian), the payload and the CRC-16 of all but the sync (``rtl_gen.crc``),
one byte per cycle when the PHY takes them. The header is taken when its frame's last
byte leaves, so a new response waits until the previous one is out.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Module, Mux, Signal
from amaranth.lib import data, enum, stream
from amaranth.lib.wiring import In

from bnnhw.protocol import CRC_INIT, SYNC

from .block import StreamBlock
from .crc import crc16_next

__all__ = ["HEADER", "FrameTransmitter", "FrameTransmitterParams"]

HEADER = data.StructLayout({"op": 8, "seq": 8, "length": 16})


class _State(enum.Enum, shape=3):
    IDLE = 0
    SYNC = 1
    TYPE = 2
    SEQ = 3
    LEN0 = 4
    LEN1 = 5
    PAYLOAD = 6
    CRC = 7


@dataclass(frozen=True)
class FrameTransmitterParams:
    name: str = "frame_transmitter"

    i_width = 8
    o_width = 8


class FrameTransmitter(StreamBlock):
    """Header and payload in, frame bytes out (see the module docstring); ``sending`` is
    high while a frame goes out."""

    Params = FrameTransmitterParams

    @classmethod
    def extra_members(cls, params):
        from amaranth.lib.wiring import Out

        return {"i_header": In(stream.Signature(HEADER)), "sending": Out(1)}

    def elaborate(self, platform):
        m = Module()
        hdr = self.i_header.payload
        state = Signal(_State)
        count = Signal(16)
        crc = Signal(16, init=CRC_INIT)
        crc_hi = Signal()        # the CRC's second byte is next
        o = self.o_stream
        byte = Signal(8)
        valid = Signal()
        with m.Switch(state):
            with m.Case(_State.SYNC):
                m.d.comb += [byte.eq(SYNC), valid.eq(1)]
            with m.Case(_State.TYPE):
                m.d.comb += [byte.eq(hdr.op), valid.eq(1)]
            with m.Case(_State.SEQ):
                m.d.comb += [byte.eq(hdr.seq), valid.eq(1)]
            with m.Case(_State.LEN0):
                m.d.comb += [byte.eq(hdr.length[:8]), valid.eq(1)]
            with m.Case(_State.LEN1):
                m.d.comb += [byte.eq(hdr.length[8:]), valid.eq(1)]
            with m.Case(_State.PAYLOAD):
                m.d.comb += [byte.eq(self.i_stream.payload), valid.eq(self.i_stream.valid),
                             self.i_stream.ready.eq(o.ready)]
            with m.Case(_State.CRC):
                m.d.comb += [byte.eq(Mux(crc_hi, crc[8:], crc[:8])), valid.eq(1)]
        m.d.comb += [o.payload.eq(byte), o.valid.eq(valid), self.sending.eq(state != _State.IDLE)]
        sent = o.valid & o.ready
        counted = (state != _State.SYNC) & (state != _State.CRC)

        with m.If(sent & counted):
            m.d.sync += crc.eq(crc16_next(crc, byte))
        with m.Switch(state):
            with m.Case(_State.IDLE), m.If(self.i_header.valid):
                m.d.sync += [state.eq(_State.SYNC), crc.eq(CRC_INIT), count.eq(0),
                             crc_hi.eq(0)]
            with m.Case(_State.SYNC), m.If(sent):
                m.d.sync += state.eq(_State.TYPE)
            with m.Case(_State.TYPE), m.If(sent):
                m.d.sync += state.eq(_State.SEQ)
            with m.Case(_State.SEQ), m.If(sent):
                m.d.sync += state.eq(_State.LEN0)
            with m.Case(_State.LEN0), m.If(sent):
                m.d.sync += state.eq(_State.LEN1)
            with m.Case(_State.LEN1), m.If(sent):
                m.d.sync += state.eq(Mux(hdr.length == 0, _State.CRC, _State.PAYLOAD))
            with m.Case(_State.PAYLOAD), m.If(sent):
                m.d.sync += count.eq(count + 1)
                with m.If(count + 1 == hdr.length):
                    m.d.sync += state.eq(_State.CRC)
            with m.Case(_State.CRC), m.If(sent):
                m.d.sync += crc_hi.eq(1)
                with m.If(crc_hi):
                    m.d.sync += state.eq(_State.IDLE)
        m.d.comb += self.i_header.ready.eq((state == _State.CRC) & crc_hi & sent)
        return m
