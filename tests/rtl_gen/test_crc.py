"""The gateware CRC update against ``bnnhw.protocol.crc16`` (and the protocol's CRC against
the CRC-16/CCITT-FALSE check value)."""

from __future__ import annotations

import random

import pytest
from amaranth import Module, Signal
from amaranth.sim import Simulator

import rtl_gen.crc as crc_mod
from bnnhw.protocol import crc16, crc16_bitwise


def gateware_crc(data: bytes, masks=None) -> int:
    crc, byte, out = Signal(16), Signal(8), Signal(16)
    m = Module()
    if masks is not None:
        saved, crc_mod._MASKS = crc_mod._MASKS, masks
    try:
        m.d.comb += out.eq(crc_mod.crc16_next(crc, byte))
    finally:
        if masks is not None:
            crc_mod._MASKS = saved
    result = []

    async def bench(ctx):
        value = 0xFFFF
        for b in data:
            ctx.set(crc, value)
            ctx.set(byte, b)
            value = ctx.get(out)
        result.append(value)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return result[0]


def test_check_value_and_the_definition():
    assert crc16(b"123456789") == 0x29B1
    data = random.Random(4).randbytes(300)
    assert crc16(data) == crc16_bitwise(data) and crc16(data, 0x1234) == crc16_bitwise(data, 0x1234)


@pytest.mark.parametrize("seed", range(3))
def test_gateware_update_matches_the_protocol(seed):
    data = random.Random(seed).randbytes(64)
    assert gateware_crc(data) == crc16(data)


def test_a_wrong_tap_is_caught():
    masks = list(crc_mod._MASKS)
    masks[5] = (masks[5][0] ^ 1, masks[5][1])
    data = random.Random(9).randbytes(64)
    assert gateware_crc(data, masks) != crc16(data)
