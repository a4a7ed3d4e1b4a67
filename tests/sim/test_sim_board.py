"""The simulated board (the board core under Verilator behind a loopback socket) through
the host driver: another model's weights loaded over the link give that model's golden
results; the same through a link that corrupts and drops bytes both ways; and random bytes
never hang the frame parser, which answers identify afterwards with counters that agree
with the answers it gave."""

from __future__ import annotations

import random
import socket
import time

import numpy as np
import pytest

from bnnhw import golden
from bnnhw.check import random_images
from bnnhw.folding import default_folding
from bnnhw.frontend import compile_model
from bnnhw.protocol import Counters, FrameDecoder, Op, encode_frame
from host import Accelerator, FaultProxy, Faults
from rtl_gen.board_core import BoardCore, BoardCoreParams
from sim.board import SimBoard
from tests.bnn_cases import spec_model

LAYERS = [{"type": "dense", "out": 8}, {"type": "dense", "out": 4}]


def fuzz(port: int, garbage: bytes, deadline_s: float = 60.0):
    """RESET, then ``garbage``, then IDENTIFY until it is answered, then STATUS; return
    every answer decoded after the RESET's (in order) and the counters."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(0.2)
    decoder = FrameDecoder()
    answers = []

    def drain(until):
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            try:
                data = s.recv(65536)
            except TimeoutError:
                data = b""
            answers.extend(decoder.feed(data))
            if until():
                return True
        return False

    s.sendall(encode_frame(Op.RESET, 1))  # counters from 0 (the RESET counts itself)
    assert drain(lambda: any(a.op == Op.ACK and a.seq == 1 for a in answers))
    answers.clear()
    for i in range(0, len(garbage), 4096):
        s.sendall(garbage[i:i + 4096])
        drain(lambda: True)
    seq = 200
    for _ in range(40):
        s.sendall(encode_frame(Op.IDENTIFY, seq))
        if _wait(drain, answers, seq):
            break
        seq = (seq + 1) % 256
    else:
        pytest.fail("the board never answered IDENTIFY after the random bytes")
    before = len(answers)
    s.sendall(encode_frame(Op.STATUS, 7))
    assert drain(lambda: any(a.op == Op.COUNTERS for a in answers[before:]))
    s.close()
    status = next(a for a in answers[before:] if a.op == Op.COUNTERS)
    return answers[:before], Counters.unpack(status.payload[2:])


def _wait(drain, answers, seq):
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        drain(lambda: True)
        if any(a.op == Op.IDENTITY and a.seq == seq for a in answers):
            return True
    return False


@pytest.fixture(scope="module")
def design():
    return compile_model(spec_model(LAYERS, "binary", (1, 4, 4), seed=0))


@pytest.fixture(scope="module")
def board(design):
    params = BoardCoreParams(design, default_folding(design), max_payload=256,
                             timeout_cycles=20_000)
    with SimBoard(BoardCore(params)) as b:
        yield b


@pytest.fixture(scope="module")
def other():
    """Another model of the same topology: its weights go over the link."""
    return compile_model(spec_model(LAYERS, "binary", (1, 4, 4), seed=7))


def same(got, graph, images):
    gold = golden.run(graph, images)
    return (np.array_equal(got[0], gold.scores.numpy())
            and np.array_equal(got[1], gold.classes.numpy()))


def test_weights_over_the_link_give_their_golden_results(board, design, other):
    images = random_images((1, 4, 4), 200, 5)
    with Accelerator.open(board.url, timeout_s=1.0) as acc:
        acc.load(other)
        got = acc.infer(images)
        assert same(got, other, images) and not same(got, design, images)
        assert acc.stats.retries == 0
        acc.load(design)
        assert same(acc.infer(images), design, images)


def test_a_lossy_link_loses_nothing(board, other):
    """1% of the bytes corrupted and 0.5% dropped, both ways: every result exact."""
    images = random_images((1, 4, 4), 300, 6)
    with FaultProxy(board.url, Faults(11, flip=0.01, drop=0.005)) as proxy, \
            Accelerator.open(proxy.url, timeout_s=0.2, window=16) as acc:
        acc.load(other)
        got = acc.infer(images)
        assert same(got, other, images)
        assert acc.stats.retries > 0 and proxy.faults.counts("up").faults > 0


def test_random_bytes_never_hang_the_parser(board):
    garbage = random.Random(1).randbytes(100_000)
    answers, counters = fuzz(board.port, garbage)
    assert any(a.op == Op.IDENTITY for a in answers)
    # every answer before STATUS is a frame the board counted, good or bad (and the RESET)
    assert counters.frames_good + counters.frames_bad == len(answers) + 1
    assert counters.frames_bad == sum(a.op == Op.NACK for a in answers)
