"""The board top on its serial pins: frames at 12 Mbaud from a 100 MHz clock, bit by bit,
into the UART and the board core, and the answers decoded from ``tx``."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from amaranth.sim import Simulator

from bnnhw import golden
from bnnhw.check import random_images
from bnnhw.folding import default_folding
from bnnhw.frontend import compile_model
from bnnhw.protocol import FrameDecoder, Identity, Op, encode_frame
from rtl_gen.board_core import BoardCoreParams
from rtl_gen.board_top import BoardTop, BoardTopParams
from tests.bnn_cases import spec_model

CLOCK, BAUD = 100_000_000, 12_000_000
LAYERS = [{"type": "dense", "out": 8}, {"type": "dense", "out": 4}]


def line_levels(data: bytes, bit: Fraction, start: int = 20):
    """``rx`` level per cycle for ``data`` sent back to back from cycle ``start``."""
    edges = []
    t = Fraction(start)
    for byte in data:
        for b in [0, *((byte >> i) & 1 for i in range(8)), 1]:
            edges.append((t, b))
            t += bit
    return edges


def talk(top, data: bytes, responses: int, max_cycles: int = 200_000):
    bit = Fraction(CLOCK, BAUD)
    edges = line_levels(data, bit)
    frames, decoder = [], FrameDecoder()
    sim = Simulator(top)
    sim.add_clock(1e-8)

    async def bench(ctx):
        i, level = 0, 1
        rx_bits, t_fall, prev = [], None, 1
        for cycle in range(max_cycles):
            while i < len(edges) and edges[i][0] <= cycle:
                level = edges[i][1]
                i += 1
            ctx.set(top.rx, level)
            await ctx.tick()
            tx = ctx.get(top.tx)
            # decode tx: a falling edge starts a frame; sample bit k at its centre
            if t_fall is None and prev == 1 and tx == 0:
                t_fall, rx_bits = cycle, []
            if t_fall is not None:
                k = len(rx_bits)
                if cycle >= t_fall + bit * k + bit / 2:
                    rx_bits.append(tx)
                    if len(rx_bits) == 10:
                        assert rx_bits[0] == 0 and rx_bits[9] == 1, rx_bits
                        byte = sum(b << j for j, b in enumerate(rx_bits[1:9]))
                        frames.extend(decoder.feed(bytes([byte])))
                        t_fall = None
                        if len(frames) == responses:
                            return
            prev = tx
        raise TimeoutError(f"{len(frames)} of {responses} answers")

    sim.add_testbench(bench)
    sim.run()
    return frames


def test_identify_and_infer_over_the_pins():
    graph = compile_model(spec_model(LAYERS, "binary", (1, 4, 4), seed=3))
    core = BoardCoreParams(graph, default_folding(graph), clock_hz=CLOCK, baud=BAUD,
                           max_payload=64, board="test")
    top = BoardTop(BoardTopParams(core))
    images = random_images((1, 4, 4), 3, 1)
    mf = core.manifest
    data = encode_frame(Op.IDENTIFY, 1) + encode_frame(
        Op.INFER, 2, bytes([3]) + b"".join(mf.encode_images(images)))
    ident, results = talk(top, data, 2)
    assert Identity.unpack(ident.payload[2:]) == core.identity
    scores, classes = mf.decode_results(results.payload[3:])
    gold = golden.run(graph, images)
    assert np.array_equal(scores, gold.scores.numpy())
    assert np.array_equal(classes, gold.classes.numpy())
