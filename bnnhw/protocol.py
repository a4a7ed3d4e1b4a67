"""The host link's wire protocol, defined once for the gateware and the host.

Torch-free and amaranth-free: ``rtl_gen`` builds its frame parser and responder from the
constants here, and ``host`` packs and unpacks frames with the functions here. The frame
(``docs/protocol.md`` has the diagram), all multi-byte fields little-endian:

==========  =======  ==========================================================
offset      bytes    field
==========  =======  ==========================================================
0           1        ``SYNC`` (0xA5)
1           1        type (``Op``)
2           1        sequence number, chosen by the host, echoed by the board
3           2        payload length ``L`` (at most the board's ``max_payload``)
5           L        payload
5 + L       2        CRC-16/CCITT-FALSE of bytes 1 .. 4 + L (type to payload)
==========  =======  ==========================================================

The host sends requests; the board answers every good request with exactly one response
carrying the same sequence number and, first in its payload, the CRC of the request it
answers (so a late duplicate can never be paired with a newer request), and answers a
frame it cannot take (bad CRC, bad length, unknown type, a stalled half-frame) with a
``NACK`` naming why. Requests are executed in the order they arrive; executing one twice
(a retry whose first answer was lost) changes nothing but the counters.
"""

from __future__ import annotations

import binascii
import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "CRC_BYTES",
    "HEADER_BYTES",
    "PROTOCOL_VERSION",
    "SYNC",
    "Frame",
    "FrameDecoder",
    "Identity",
    "Nack",
    "Op",
    "crc16",
    "encode_frame",
    "frame_overhead",
]

PROTOCOL_VERSION = 1
SYNC = 0xA5
HEADER_BYTES = 5          # sync, type, seq, length
CRC_BYTES = 2
CRC_INIT = 0xFFFF
CRC_POLY = 0x1021
MAX_LENGTH = 0xFFFF       # what the length field can say; a board states its own limit
CFG_BEAT_BYTES = 8        # one configuration beat (rtl_gen.weight_memory), LSB first


class Op(enum.IntEnum):
    """Frame types. Requests (host to board) below 0x80, responses at 0x80 and above."""

    IDENTIFY = 0x01   # no payload -> IDENTITY
    WRITE = 0x02      # target (1 byte), then cfg beats of CFG_BEAT_BYTES -> ACK
    INFER = 0x03      # count (1 byte), then count images -> RESULTS
    STATUS = 0x04     # no payload -> COUNTERS
    RESET = 0x05      # no payload -> ACK; flushes the pipeline, clears the counters
    IDENTITY = 0x81   # request CRC (2), then Identity
    ACK = 0x82        # request CRC (2)
    RESULTS = 0x83    # request CRC (2), count (1), then count results
    COUNTERS = 0x84   # request CRC (2), then the counters (Counters)
    NACK = 0x8F       # reason (1, Nack), the received CRC field (2)


class Nack(enum.IntEnum):
    """Why a frame was refused."""

    BAD_CRC = 1
    BAD_LENGTH = 2      # longer than the board's max_payload
    UNKNOWN_TYPE = 3
    BAD_PAYLOAD = 4     # a payload that does not fit its type (count, target, size)
    TIMEOUT = 5         # the frame stopped arriving half-way


def crc16(data: bytes | bytearray | memoryview, crc: int = CRC_INIT) -> int:
    """CRC-16/CCITT-FALSE (polynomial 0x1021, initial 0xFFFF, no reflection, no final
    XOR) of ``data``, continuing from ``crc`` (``binascii.crc_hqx`` computes exactly this
    CRC; ``tests/rtl_gen/test_crc.py`` checks it against the bit-serial definition)."""
    return binascii.crc_hqx(bytes(data), crc)


def crc16_bitwise(data: bytes, crc: int = CRC_INIT) -> int:
    """The definition, bit by bit (the reference ``crc16`` is checked against)."""
    for byte in bytes(data):
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def frame_overhead() -> int:
    """Bytes a frame adds to its payload."""
    return HEADER_BYTES + CRC_BYTES


def encode_frame(op: int, seq: int, payload: bytes = b"") -> bytes:
    """The bytes of one frame."""
    if not 0 <= seq <= 0xFF:
        raise ValueError(f"sequence number must lie in 0..255, not {seq}")
    if len(payload) > MAX_LENGTH:
        raise ValueError(f"a payload of {len(payload)} bytes exceeds {MAX_LENGTH}")
    body = struct.pack("<BBH", int(op), seq, len(payload)) + bytes(payload)
    return bytes([SYNC]) + body + struct.pack("<H", crc16(body))


@dataclass(frozen=True)
class Frame:
    """A received frame whose CRC was right; ``crc`` is its CRC field."""

    op: int
    seq: int
    payload: bytes
    crc: int

    @property
    def request_crc(self) -> int:
        """The CRC of the request a response answers (its first two payload bytes)."""
        return struct.unpack_from("<H", self.payload)[0]


class FrameDecoder:
    """Reassembles frames from a byte stream (the host's side of the link).

    Hunts for ``SYNC``. A header announcing more than ``max_length`` bytes, or a complete
    frame with a bad CRC, counts as a bad frame and the hunt restarts one byte after its
    sync. While a candidate frame is still incomplete, a complete frame with a good CRC
    starting at a later sync wins over it: a garbage byte that looked like a sync, with a
    large length behind it, cannot hold back the good frames that follow.
    """

    def __init__(self, max_length: int = MAX_LENGTH):
        self.max_length = max_length
        self.buffer = bytearray()
        self.bad_frames = 0
        self.skipped_bytes = 0

    def _at(self, pos: int) -> Frame | bool | None:
        """The frame at ``pos`` (a sync): a ``Frame``, False if bad, None if incomplete."""
        buf = self.buffer
        if len(buf) - pos < HEADER_BYTES:
            return None
        op, seq, length = struct.unpack_from("<BBH", buf, pos + 1)
        if length > self.max_length:
            return False
        end = pos + HEADER_BYTES + length + CRC_BYTES
        if len(buf) < end:
            return None
        crc = struct.unpack_from("<H", buf, end - CRC_BYTES)[0]
        if crc16(memoryview(buf)[pos + 1:end - CRC_BYTES]) != crc:
            return False
        return Frame(op, seq, bytes(buf[pos + HEADER_BYTES:end - CRC_BYTES]), crc)

    def _drop(self, count: int, bad: bool) -> None:
        self.skipped_bytes += count
        self.bad_frames += bad
        del self.buffer[:count]

    def feed(self, data: bytes) -> Iterator[Frame]:
        """Add ``data`` and yield every good frame now complete, in order."""
        self.buffer += data
        buf = self.buffer
        while True:
            start = buf.find(SYNC)
            if start < 0:
                self._drop(len(buf), False)
                return
            self._drop(start, False)
            frame = self._at(0)
            if frame is False:
                self._drop(1, True)
                continue
            if frame is None:  # incomplete: a later complete good frame wins
                later = buf.find(SYNC, 1)
                while later > 0:
                    f = self._at(later)
                    if isinstance(f, Frame):
                        self._drop(later, True)
                        break
                    later = buf.find(SYNC, later + 1)
                else:
                    return
                continue
            del buf[:HEADER_BYTES + len(frame.payload) + CRC_BYTES]
            yield frame


@dataclass(frozen=True)
class Identity:
    """What a board says of itself (the ``IDENTITY`` payload after the request CRC)."""

    version: int
    writable: bool          # weights, thresholds and the class map take WRITE frames
    manifest_hash: bytes    # 8 bytes: bnnhw.manifest.Manifest.digest
    clock_hz: int
    baud: int
    max_payload: int
    image_bytes: int        # one image in an INFER frame
    result_bytes: int       # one result in a RESULTS frame
    classes: int
    board: str

    _FIXED = struct.Struct("<BB8sIIHHHH")

    def pack(self) -> bytes:
        name = self.board.encode("ascii")
        return self._FIXED.pack(self.version, int(self.writable), self.manifest_hash,
                                self.clock_hz, self.baud, self.max_payload, self.image_bytes,
                                self.result_bytes, self.classes) + bytes([len(name)]) + name

    @classmethod
    def unpack(cls, data: bytes) -> Identity:
        fixed = cls._FIXED.size
        if len(data) < fixed + 1:
            raise ValueError(f"an identity needs at least {fixed + 1} bytes, not {len(data)}")
        v, flags, digest, clock, baud, maxp, ib, rb, classes = cls._FIXED.unpack_from(data)
        n = data[fixed]
        name = bytes(data[fixed + 1:fixed + 1 + n])
        if len(name) != n:
            raise ValueError("the identity's board name is cut short")
        return cls(v, bool(flags & 1), digest, clock, baud, maxp, ib, rb, classes,
                   name.decode("ascii", "replace"))


@dataclass(frozen=True)
class Counters:
    """The ``COUNTERS`` payload after the request CRC: 32-bit counts since the last reset
    (or power-up), wrapping."""

    frames_good: int
    frames_bad: int
    images_done: int
    timeouts: int

    _FIXED = struct.Struct("<IIII")

    def pack(self) -> bytes:
        return self._FIXED.pack(self.frames_good, self.frames_bad, self.images_done,
                                self.timeouts)

    @classmethod
    def unpack(cls, data: bytes) -> Counters:
        if len(data) != cls._FIXED.size:
            raise ValueError(f"counters are {cls._FIXED.size} bytes, not {len(data)}")
        return cls(*cls._FIXED.unpack(data))
