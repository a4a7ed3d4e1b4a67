"""The simulated board under random bytes: the frame parser never hangs, answers identify
afterwards, and its counters agree with the answers it gave."""

from __future__ import annotations

import random
import socket
import time

import pytest

from bnnhw.folding import default_folding
from bnnhw.frontend import compile_model
from bnnhw.protocol import Counters, FrameDecoder, Op, encode_frame
from rtl_gen.board_core import BoardCore, BoardCoreParams
from sim.board import SimBoard
from tests.bnn_cases import spec_model

LAYERS = [{"type": "dense", "out": 8}, {"type": "dense", "out": 4}]


def fuzz(port: int, garbage: bytes, deadline_s: float = 60.0):
    """Send ``garbage``, then IDENTIFY until it is answered, then STATUS; return every
    answer decoded (in order), the index of the first IDENTITY and the counters."""
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
def board():
    graph = compile_model(spec_model(LAYERS, "binary", (1, 4, 4), seed=0))
    params = BoardCoreParams(graph, default_folding(graph), max_payload=256,
                             timeout_cycles=20_000)
    with SimBoard(BoardCore(params)) as b:
        yield b


def test_random_bytes_never_hang_the_parser(board):
    garbage = random.Random(1).randbytes(100_000)
    answers, counters = fuzz(board.port, garbage)
    assert any(a.op == Op.IDENTITY for a in answers)
    # every answer before STATUS is a frame the board counted, good or bad
    assert counters.frames_good + counters.frames_bad == len(answers)
    assert counters.frames_bad == sum(a.op == Op.NACK for a in answers)
