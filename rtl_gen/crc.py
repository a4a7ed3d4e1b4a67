"""CRC-16/CCITT-FALSE in gateware: the link's frame check (``bnnhw.protocol.crc16``).

``crc16_next(crc, byte)`` is the combinational update of a 16-bit CRC by one byte (MSB
first, polynomial ``bnnhw.protocol.CRC_POLY``): the update is linear, so each bit is one
XOR of at most a dozen input bits (a LUT or two), and a receiver or transmitter updates
its CRC once per byte in the cycle the byte passes. The tests compare it with
``bnnhw.protocol.crc16`` on random data.
"""

from __future__ import annotations

from amaranth import Cat, Value

from bnnhw.protocol import CRC_POLY

__all__ = ["crc16_next"]


def _masks() -> list[tuple[int, int]]:
    """Per CRC bit after one byte, the input CRC bits and byte bits XORed into it (the
    update is linear over GF(2)): found by running the bit-serial update on unit vectors."""
    def step(crc: int, byte: int) -> int:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        return crc

    crc_cols = [step(1 << i, 0) for i in range(16)]
    byte_cols = [step(0, 1 << i) for i in range(8)]
    return [(sum(1 << i for i in range(16) if crc_cols[i] >> bit & 1),
             sum(1 << i for i in range(8) if byte_cols[i] >> bit & 1)) for bit in range(16)]


_MASKS = _masks()


def crc16_next(crc: Value, byte: Value) -> Value:
    """The CRC after ``byte``: each bit one flat XOR of the input bits it depends on (the
    eight shift-and-XOR steps of the definition, solved once in Python)."""
    crc, byte = Value.cast(crc), Value.cast(byte)
    bits = []
    for crc_mask, byte_mask in _MASKS:
        terms = [crc[i] for i in range(16) if crc_mask >> i & 1]
        terms += [byte[i] for i in range(8) if byte_mask >> i & 1]
        bit = terms[0]
        for t in terms[1:]:
            bit = bit ^ t
        bits.append(bit)
    return Cat(*bits)
