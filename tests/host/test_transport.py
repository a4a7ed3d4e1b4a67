"""The byte stream (``host.transport``), the frames the host builds, and the model board's
side of ``docs/protocol.md`` byte by byte (``tests/model_board.py``)."""

from __future__ import annotations

import binascii
import socket
import struct
import time

import numpy as np
import pytest

from bnnhw import frontend
from bnnhw.packing import cfg_word
from bnnhw.protocol import (
    Counters,
    FrameDecoder,
    Identity,
    Nack,
    Op,
    crc16,
    encode_frame,
)
from host import AcceleratorError, Transport
from host.accelerator import build_frame
from host.faults import pipe_pair
from tests.bnn_cases import zoo_model
from tests.model_board import ModelBoard, expected, random_images


@pytest.fixture(scope="module")
def tfc():
    return frontend.compile_model(zoo_model("tfc", seed=11, calibration=2))


@pytest.fixture(scope="module")
def tfc_other():
    return frontend.compile_model(zoo_model("tfc", seed=12, calibration=2))


@pytest.fixture
def board(tfc):
    with ModelBoard(tfc, max_payload=1024, frame_timeout_s=0.02) as b:
        yield b


@pytest.fixture
def link(board):
    with Transport(board.serve_tcp(), timeout=0.5) as t:
        yield t


def exchange(link: Transport, data: bytes, answers: int, wait: float = 1.0):
    """Send ``data``; the next ``answers`` frames that come back."""
    link.write(data)
    decoder, frames = FrameDecoder(), []
    deadline = time.monotonic() + wait
    while len(frames) < answers and time.monotonic() < deadline:
        frames += decoder.feed(link.read(4096, 0.05))
    return frames


def nack(f) -> tuple[int, int]:
    assert f.op == Op.NACK and len(f.payload) == 3
    return f.payload[0], struct.unpack_from("<H", f.payload, 1)[0]


# -- frames -------------------------------------------------------------------------------

def test_host_frames_are_the_protocols_frames():
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 98, 4000):
        payload = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        data, crc = build_frame(Op.INFER, n % 256, payload)
        assert data == encode_frame(Op.INFER, n % 256, payload)
        assert crc == crc16(data[1:-2]) == binascii.crc_hqx(data[1:-2], 0xFFFF)


# -- the transport ------------------------------------------------------------------------

def test_loop_url_returns_what_was_written_and_nothing_after():
    with Transport("loop://", timeout=0.05) as t:
        t.write(b"\xa5hello")
        assert t.read(3) + t.read(100) == b"\xa5hello"
        start = time.monotonic()
        assert t.read(100, timeout=0.05) == b""
        assert time.monotonic() - start < 0.5
        assert (t.bytes_written, t.bytes_read) == (6, 6)


def test_read_returns_what_arrived_without_waiting_for_more(link):
    link.write(encode_frame(Op.IDENTIFY, 3))
    start = time.monotonic()
    data = b""
    while len(data) < 10:
        data += link.read(1 << 16, timeout=2.0)
    assert time.monotonic() - start < 1.0  # did not wait 2 s for 64 kB


def test_a_pipe_end_is_a_port():
    host_end, board_end = pipe_pair()
    with Transport(host_end, timeout=0.05) as t:
        board_end.write(b"abc")
        assert t.read(10) == b"abc"
        t.write(b"xyz")
        board_end.timeout = 0.1
        assert board_end.read(3) == b"xyz"
    assert board_end.closed


def test_an_unknown_url_scheme_is_a_sentence():
    with pytest.raises(AcceleratorError, match=r"'tcp://x:1' is not a port .*socket://HOST"):
        Transport("tcp://x:1")


def test_a_missing_device_is_a_sentence():
    with pytest.raises(AcceleratorError, match=r"/dev/ttyUSB_bnnhw_none does not exist: "
                                               r"check that the board is plugged in"):
        Transport("/dev/ttyUSB_bnnhw_none")


def test_a_refused_connection_is_a_sentence():
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(AcceleratorError, match=rf"nothing accepts connections at "
                                               rf"127.0.0.1:{port} \(connection refused\): "
                                               rf"start the simulated board"):
        Transport(f"socket://127.0.0.1:{port}")


def test_a_socket_url_without_a_port_is_a_sentence():
    with pytest.raises(AcceleratorError, match="socket://HOST:PORT"):
        Transport("socket://localhost")


def test_a_closed_connection_is_a_sentence(tfc):
    board = ModelBoard(tfc)
    t = Transport(board.serve_tcp(), timeout=0.05)
    board.close()
    with pytest.raises(AcceleratorError, match="closed"):
        for _ in range(100):
            t.read(100, 0.02)
    t.close()


# -- the model board, byte by byte ------------------------------------------------------------

def test_identify_through_garbage(board, link):
    request = encode_frame(Op.IDENTIFY, 9)
    (f,) = exchange(link, b"\x00\x13\xff\x01" + request, 1)
    assert (f.op, f.seq, f.request_crc) == (Op.IDENTITY, 9, crc16(request[1:-2]))
    ident = Identity.unpack(f.payload[2:])
    assert ident == board.identity
    assert (ident.image_bytes, ident.result_bytes, ident.classes, ident.max_payload) == \
        (98, 11, 10, 1024)
    assert ident.manifest_hash == board.manifest.digest


def test_a_false_sync_in_garbage_can_take_the_next_frame_with_it(board, link):
    """No look-back: a garbage 0xA5 starts a header that swallows the real frame's first
    bytes; the host sees a NACK and no answer, and must resend."""
    request = encode_frame(Op.IDENTIFY, 9)
    (f,) = exchange(link, b"\xa5\x01" + request, 1)
    assert nack(f)[0] == Nack.BAD_LENGTH and f.seq == 0xA5  # length 0x0901 from the frame
    assert exchange(link, b"", 1, wait=0.2) == []
    (f,) = exchange(link, request, 1)
    assert f.op == Op.IDENTITY


def test_bad_crc_is_refused_with_the_crc_received_and_the_hunt_goes_on(link):
    bad = bytearray(encode_frame(Op.STATUS, 4))
    bad[-1] ^= 0x40
    frames = exchange(link, bytes(bad) + encode_frame(Op.STATUS, 5), 2)
    assert [f.seq for f in frames] == [4, 5]
    assert nack(frames[0]) == (Nack.BAD_CRC, struct.unpack_from("<H", bad, 5)[0])
    assert frames[1].op == Op.COUNTERS
    assert Counters.unpack(frames[1].payload[2:]) == Counters(0, 1, 0, 0)


def test_a_length_above_max_payload_is_refused_at_the_header(link):
    header = bytes([0xA5, Op.INFER, 6]) + struct.pack("<H", 1025)
    frames = exchange(link, header + encode_frame(Op.STATUS, 7), 2)
    assert nack(frames[0])[0] == Nack.BAD_LENGTH and frames[0].seq == 6
    assert frames[1].op == Op.COUNTERS and frames[1].seq == 7


@pytest.mark.parametrize("op", [0x00, 0x06, 0x7F, Op.IDENTITY, Op.NACK])
def test_unknown_types_are_refused(link, op):
    (f,) = exchange(link, encode_frame(op, 1), 1)
    assert nack(f) == (Nack.UNKNOWN_TYPE, crc16(encode_frame(op, 1)[1:-2]))


def beat_bytes(*beats: int) -> bytes:
    return b"".join(b.to_bytes(8, "little") for b in beats)


@pytest.mark.parametrize("op, payload", [
    (Op.INFER, bytes([0])),                       # no image
    (Op.INFER, bytes([11]) + bytes(10 * 98)),     # more than fit (1024 bytes: 10)
    (Op.INFER, bytes([2]) + bytes(98)),           # fewer bytes than two images
    (Op.INFER, b""),
    (Op.WRITE, bytes([5]) + beat_bytes(0)),       # tfc has targets 0..4
    (Op.WRITE, bytes([0]) + bytes(12)),           # a beat and a half
    (Op.WRITE, b""),
    (Op.STATUS, b"\x00"),
    (Op.IDENTIFY, b"\x00"),
    (Op.RESET, b"\x00"),
])
def test_payloads_that_do_not_fit_are_refused(board, link, op, payload):
    before = board.graph()
    request = encode_frame(op, 2, payload)
    (f,) = exchange(link, request, 1)
    assert nack(f) == (Nack.BAD_PAYLOAD, crc16(request[1:-2]))
    assert board.graph() is before and board.counters() == Counters(0, 1, 0, 0)


@pytest.mark.parametrize("beat", [
    cfg_word(0, 784, 0, 1),   # address beyond the depth
    cfg_word(2, 0, 0, 1),     # no class map in this target
    cfg_word(0, 0, 2, 1),     # a 64-bit word has chunks 0 and 1
])
def test_beats_that_address_no_memory_are_ignored(board, link, beat):
    """As in the gateware (rtl_gen.weight_memory): acknowledged, nothing changes."""
    before = board.graph()
    (f,) = exchange(link, encode_frame(Op.WRITE, 3, bytes([0]) + beat_bytes(beat)), 1)
    assert f.op == Op.ACK
    after = board.graph()
    assert all(a == b for a, b in zip(before.nodes, after.nodes))


def test_a_stalled_half_frame_times_out(board, link):
    request = encode_frame(Op.INFER, 8, bytes([1]) + bytes(98))
    (f,) = exchange(link, request[:50], 1)
    assert nack(f)[0] == Nack.TIMEOUT and f.seq == 8
    (f,) = exchange(link, request, 1)  # the hunt restarts: the whole frame is taken
    assert f.op == Op.RESULTS
    assert board.counters() == Counters(1, 1, 1, 1)


def test_every_good_request_is_answered_once_in_order(board, link, tfc):
    images = random_images(tfc, 30, seed=1)
    encoded = board.manifest.encode_images(images)
    requests = []
    for i in range(10):
        requests.append(encode_frame(Op.INFER, 2 * i, bytes([3]) + b"".join(
            encoded[3 * i:3 * i + 3])))
        requests.append(encode_frame(Op.STATUS if i % 2 else Op.IDENTIFY, 2 * i + 1))
    frames = exchange(link, b"".join(requests), 20, wait=3.0)
    assert len(frames) == 20
    assert [f.seq for f in frames] == list(range(20))
    assert [f.request_crc for f in frames] == [crc16(r[1:-2]) for r in requests]
    results = b"".join(f.payload[3:] for f in frames if f.op == Op.RESULTS)
    scores, classes = board.manifest.decode_results(results)
    want_scores, want_classes = expected(tfc, images)
    assert np.array_equal(scores, want_scores) and np.array_equal(classes, want_classes)
    assert board.counters() == Counters(20, 0, 30, 0)
    (f,) = exchange(link, encode_frame(Op.RESET, 99), 1)
    assert (f.op, f.payload) == (Op.ACK, struct.pack("<H", crc16(encode_frame(Op.RESET, 99)[
        1:-2])))
    assert board.counters() == Counters(1, 0, 0, 0)  # the RESET counts itself


def test_the_board_computes_with_what_was_written(board, link, tfc, tfc_other):
    """Beats of another model of the topology, written frame by frame, decode to that
    model's values: weights, thresholds, class map."""
    m = board.manifest
    for index in range(len(m.targets)):
        beats = m.target_beats(tfc_other, index)
        for i in range(0, len(beats), 100):
            request = encode_frame(Op.WRITE, i % 256, bytes([index]) + beat_bytes(
                *beats[i:i + 100]))
            (f,) = exchange(link, request, 1)
            assert f.op == Op.ACK, nack(f)
    g = board.graph()
    for mine, theirs in zip(g.nodes[1:], tfc_other.nodes[1:]):
        assert np.array_equal(mine.weights, theirs.weights)
        if theirs.thresholded:
            assert np.array_equal(mine.thresholds, theirs.thresholds)
    assert np.array_equal(g.nodes[-1].class_scale, tfc_other.nodes[-1].class_scale)
    assert np.array_equal(g.nodes[-1].class_offset, tfc_other.nodes[-1].class_offset)
    images = random_images(tfc, 4, seed=2)
    (f,) = exchange(link, encode_frame(Op.INFER, 1, bytes([4]) + b"".join(
        m.encode_images(images))), 1)
    scores, _classes = m.decode_results(f.payload[3:])
    assert np.array_equal(scores, expected(tfc_other, images)[0])
    assert not np.array_equal(scores, expected(tfc, images)[0])


def test_a_design_without_writes_refuses_them(tfc):
    with ModelBoard(tfc, writable=False) as board, Transport(board.serve_tcp()) as link:
        assert not board.identity.writable
        (f,) = exchange(link, encode_frame(Op.WRITE, 1, bytes([0]) + beat_bytes(0)), 1)
        assert nack(f)[0] == Nack.BAD_PAYLOAD
