"""The driver (``host.accelerator``) end to end against the model board: identify, check,
load (graph, IR file, checkpoint), infer, status, reset; results equal to the golden
model exactly; delivery (window, NACK, timeout, ordering, duplicates) and every checker
shown once to catch a planted fault."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from bnnhw import frontend
from bnnhw.checkpoint import save_checkpoint
from bnnhw.folding import default_folding
from bnnhw.ir import save_graph
from bnnhw.manifest import Manifest
from bnnhw.protocol import Counters, FrameDecoder, Op, encode_frame
from host import Accelerator, AcceleratorError, Transport
from host.faults import Faults, pipe_pair
from tests.bnn_cases import cnv_small, spec_model, zoo_model
from tests.model_board import ModelBoard, expected, random_images, silent_server


@pytest.fixture(scope="module")
def tfc():
    return frontend.compile_model(zoo_model("tfc", seed=21, calibration=2))


@pytest.fixture(scope="module")
def tfc_b():
    return frontend.compile_model(zoo_model("tfc", seed=22, calibration=2))


@pytest.fixture
def board(tfc):
    with ModelBoard(tfc) as b:
        yield b


def connect(board: ModelBoard, **kwargs) -> Accelerator:
    kwargs.setdefault("timeout_s", 1.0)  # a clean link: no timeout unless a test wants one
    return Accelerator(Transport(board.serve_tcp(), timeout=0.05), **kwargs)


def same(got, graph, images) -> bool:
    scores, classes = expected(graph, images)
    return np.array_equal(got[0], scores) and np.array_equal(got[1], classes)


# -- end to end -----------------------------------------------------------------------------

def test_identify(board):
    with connect(board) as acc:
        ident = acc.identify()
        assert ident == board.identity and acc.identity == ident


def test_load_and_infer_equal_the_golden_model(board, tfc, tfc_b):
    """The board was built with tfc's values; tfc_b's are written over the link."""
    images = random_images(tfc, 100, seed=3)
    with connect(board) as acc:
        manifest = acc.load(tfc_b)
        assert manifest.digest == board.identity.manifest_hash
        got = acc.infer(images)
        assert got[0].dtype == got[1].dtype == np.int64
        assert got[0].shape == (100, 10) and got[1].shape == (100,)
        assert same(got, tfc_b, images) and not same(got, tfc, images)
        assert acc.status() == Counters(board.good - 1, 0, 100, 0)  # before the STATUS
        assert acc.stats.retries == acc.stats.duplicates == acc.stats.stale == 0


def test_writes_fit_the_boards_max_payload(tfc, tfc_b):
    with ModelBoard(tfc, max_payload=200) as board, connect(board) as acc:
        acc.load(tfc_b)
        writes = [r for r in board.requests if r[0] == Op.WRITE]
        beats = sum(len(acc.manifest.target_beats(tfc_b, i))
                    for i in range(len(acc.manifest.targets)))
        assert len(writes) >= beats / ((200 - 1) // 8)
        images = random_images(tfc, 10, seed=4)
        assert same(acc.infer(images), tfc_b, images)
        assert acc.manifest.images_per_frame == 2
        assert sum(r[0] == Op.INFER for r in board.requests) == 5


def cnv_small_seed(seed: int):
    """``tests.bnn_cases.cnv_small``'s topology with other weights."""
    return spec_model([{"type": "conv", "out": 8, "kernel": 3},
                       {"type": "conv", "out": 8, "kernel": 3},
                       {"type": "maxpool", "kernel": 2},
                       {"type": "conv", "out": 16, "kernel": 3},
                       {"type": "maxpool", "kernel": 2},
                       {"type": "dense", "out": 16},
                       {"type": "dense", "out": 10}],
                      encoding="uint8", shape=(3, 16, 16), seed=seed)


def test_a_conv_model():
    graph = frontend.compile_model(cnv_small())
    images = random_images(graph, 12, seed=5)
    built = frontend.compile_model(cnv_small_seed(40))
    assert not same(expected(built, images), graph, images)
    with ModelBoard(built, max_payload=2048) as board, connect(board) as acc:
        acc.load(graph)
        assert acc.manifest.image_bytes == 768 and acc.manifest.images_per_frame == 2
        assert same(acc.infer(images), graph, images)


def test_one_design_serves_retrained_weights(board, tfc, tmp_path):
    """A second checkpoint of the topology (lowered), and an IR file, loaded by path; a
    checkpoint path itself is refused (lowering it needs torch, which the host avoids)."""
    path = save_checkpoint(tmp_path / "retrained.pt", zoo_model("tfc", seed=23, calibration=2),
                           "tfc")
    retrained = frontend.compile_checkpoint(path)
    ir_path = save_graph(frontend.compile_model(zoo_model("tfc", seed=24, calibration=2)),
                         tmp_path / "other.ir")
    images = random_images(tfc, 40, seed=6)
    with connect(board) as acc:
        with pytest.raises(AcceleratorError, match="is a checkpoint: lower it first"):
            acc.load(path)
        acc.load(retrained)
        assert same(acc.infer(images), retrained, images)
        acc.load(ir_path)
        assert same(acc.infer(images), acc.graph, images)
        assert not same(acc.infer(images), retrained, images)


def test_a_different_topology_is_refused_naming_both(board, tfc):
    with connect(board) as acc:
        ident = acc.identify()
        tiny = frontend.compile_model(zoo_model("tiny", seed=0, calibration=2))
        with pytest.raises(AcceleratorError) as e:
            acc.load(tiny)
        msg = str(e.value)
        assert "board 'model' at socket://" in msg
        assert ident.manifest_hash.hex() in msg
        m = Manifest.of(tiny, default_folding(tiny), board="model")
        assert m.digest.hex() in msg and "28x28x1 binary input, conv3x8-maxpool-dense32-" in msg
        assert "differ in topology, folding or weight layout" in msg
        sfc = frontend.compile_model(zoo_model("sfc", seed=0, calibration=2))
        with pytest.raises(AcceleratorError, match=r"result bytes 11 on the board, 21 for the "
                                                   r"model \('score_width'\)"):
            acc.load(sfc)
        conv = frontend.compile_model(cnv_small())
        with pytest.raises(AcceleratorError, match=r"image bytes 98 on the board, 768 for the "
                                                   r"model \('image'\)"):
            acc.load(conv)
        assert acc.manifest is None  # nothing was written, nothing is trusted
        assert not [r for r in board.requests if r[0] == Op.WRITE]


def test_another_folding_is_another_design(board, tfc):
    folds = dict(default_folding(tfc))
    folds["dense10"] = type(folds["dense10"])(pe=2, simd=1)
    with connect(board) as acc, pytest.raises(AcceleratorError, match="folding"):
        acc.load(tfc, folds)


def test_a_design_with_built_in_weights(tfc, tfc_b):
    with ModelBoard(tfc, writable=False) as board, connect(board) as acc:
        with pytest.raises(AcceleratorError, match=r"weights built in \(it takes no WRITE "
                                                   r"frames\): use check\(manifest\)"):
            acc.load(tfc_b)
        with pytest.raises(AcceleratorError, match="call load"):
            acc.infer(random_images(tfc, 1))
        acc.check(Manifest.of(tfc, default_folding(tfc), board="model", writable=False))
        images = random_images(tfc, 5, seed=7)
        assert same(acc.infer(images), tfc, images)
        with pytest.raises(AcceleratorError, match="runs design"):
            acc.check(Manifest.of(tfc, default_folding(tfc), board="model"))


def test_images_that_do_not_fit(board, tfc):
    with connect(board) as acc:
        acc.load(tfc)
        with pytest.raises(AcceleratorError, match=r"do not fit the design's input \[1, 28"):
            acc.infer(np.zeros((2, 3, 28, 28), np.uint8))
        with pytest.raises(AcceleratorError, match="0..255"):
            acc.infer(np.full((1, 1, 28, 28), 256))
        with pytest.raises(AcceleratorError, match="0..255"):
            acc.infer(np.full((1, 1, 28, 28), 0.5))
        s, c = acc.infer(np.zeros((0, 1, 28, 28), np.uint8))
        assert s.shape == (0, 10) and c.shape == (0,)


@pytest.mark.parametrize("batch, window", [(1, 1), (3, 2), (None, 16)])
def test_batches_windows_and_link_efficiency(board, tfc, batch, window):
    images = random_images(tfc, 50, seed=8)
    seen = []
    with connect(board, batch=batch, window=window) as acc:
        acc.load(tfc)
        acc.reset_stats()
        got = acc.infer(images, progress=lambda done, n: seen.append((done, n)))
    assert same(got, tfc, images)
    per = batch or 41
    frames = -(-50 // per)
    assert sum(r[0] == Op.INFER for r in board.requests) == frames
    s = acc.stats
    assert s.images == 50 and s.image_bytes == 50 * 98
    assert s.bytes_written == frames * 8 + 50 * 98
    assert s.link_efficiency == pytest.approx(50 * 98 / (frames * 8 + 50 * 98))
    assert s.images_per_s > 0
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1] == (50, 50)


def test_status_and_reset(board, tfc):
    with connect(board) as acc:
        acc.load(tfc)
        acc.infer(random_images(tfc, 7))
        c = acc.status()
        assert c.images_done == 7 and c.frames_bad == 0 and c.frames_good == board.good - 1
        acc.reset()
        assert acc.status() == Counters(1, 0, 0, 0)


# -- delivery -------------------------------------------------------------------------------

class Recording(Transport):
    """A transport that keeps every frame it writes."""

    def __init__(self, port, **kwargs):
        super().__init__(port, **kwargs)
        self.frames: list[bytes] = []

    def write(self, data: bytes) -> None:
        frames = list(FrameDecoder().feed(data))
        self.frames += [encode_frame(f.op, f.seq, f.payload) for f in frames]
        assert b"".join(self.frames[-len(frames):]) == data
        super().write(data)


class FirstByteFlip(Faults):
    """Flips a bit of the ``n``-th byte going up, once."""

    def __init__(self, n: int):
        super().__init__()
        self.at = n

    def apply(self, direction: str, data: bytes) -> bytes:
        if direction == "up" and 0 <= self.at < len(data):
            data = bytearray(data)
            data[self.at] ^= 0x10
            self.at = -1
        elif direction == "up" and self.at >= 0:
            self.at -= len(data)
        return bytes(data)


def test_a_nack_is_answered_at_once_with_the_same_bytes(tfc):
    host_end, board_end = pipe_pair(FirstByteFlip(2))  # its sequence number: the NACK
    # names another, and its CRC field (as received) tells which request it was
    with ModelBoard(tfc) as board:
        board.attach(board_end)
        t = Recording(host_end, timeout=0.05)
        acc = Accelerator(t, timeout_s=5.0)
        start = time.monotonic()
        ident = acc.identify()
        assert time.monotonic() - start < 1.0  # the NACK, not the 5 s timeout
        assert ident == board.identity
        assert t.frames[0] == t.frames[1] and len(t.frames) == 2
        assert (acc.stats.nacks, acc.stats.retries, acc.stats.timeouts) == (1, 1, 0)
        assert board.counters().frames_bad == 1
        acc.close()


def test_a_timeout_resends_the_oldest_first(tfc):
    faults = Faults()
    host_end, board_end = pipe_pair(faults)
    with ModelBoard(tfc) as board:
        board.attach(board_end)
        t = Recording(host_end, timeout=0.05)
        acc = Accelerator(t, timeout_s=0.3, window=4, batch=2)
        acc.load(tfc)
        faults.silence("up")
        before = len(t.frames)
        out = {}
        th = threading.Thread(target=lambda: out.update(r=acc.infer(random_images(tfc, 8))))
        th.start()
        while len(t.frames) < before + 4:
            time.sleep(0.005)
        faults.resume("up")
        th.join(timeout=10)
        sent = t.frames[before:]
        assert sent[4:8] == sent[:4]  # after the timeout: the same four, oldest first
        assert acc.stats.timeouts == 1 and acc.stats.retries == 4
        infers = [r for r in board.requests if r[0] == Op.INFER]
        assert [r[1] for r in infers] == sorted(r[1] for r in infers)
        assert same(out["r"], tfc, random_images(tfc, 8))
        acc.close()


def test_a_board_that_never_answers():
    url, stop = silent_server()
    try:
        acc = Accelerator(Transport(url), timeout_s=0.05)
        start = time.monotonic()
        with pytest.raises(AcceleratorError, match=r"no answer from socket://127.0.0.1:\d+ to "
                                                   r"IDENTIFY in 4 attempts: check that it is "
                                                   r"the board's port, that the board runs at "
                                                   r"3000000 baud, and that a bnnhw bitstream"):
            acc.identify()
        assert time.monotonic() - start < 2.0
        acc.close()
    finally:
        stop()


def test_noise_that_is_no_protocol():
    host_end, noise = pipe_pair()
    noise.write(bytes(range(256)) * 4)
    acc = Accelerator(Transport(host_end), timeout_s=0.05)
    with pytest.raises(AcceleratorError, match=r"1024 bytes came from pipe:host but not one "
                                               r"bnnhw frame: check that the baud rate"):
        acc.identify()


# -- planted faults: each checker catches one ---------------------------------------------------

def planted(tfc, fault, n=30, **kwargs):
    images = random_images(tfc, n, seed=9)
    with ModelBoard(tfc, fault=fault) as board, connect(board, batch=3, **kwargs) as acc:
        acc.load(tfc)
        acc.reset_stats()
        return acc.infer(images), acc.stats, images


def test_duplicate_answers_are_dropped(tfc):
    got, stats, images = planted(tfc, "duplicate")
    assert same(got, tfc, images)
    assert stats.duplicates == 10 and stats.retries == 0


def test_answers_out_of_order_come_back_in_request_order(tfc):
    got, stats, images = planted(tfc, "reorder")
    assert same(got, tfc, images)
    assert stats.gap_resends > 0  # the board answered a later request first


class SeqOnly(Accelerator):
    """A driver that trusts the sequence number alone."""

    def _matches(self, req, frame) -> bool:
        return True


def test_the_crc_echo_catches_an_answer_to_another_request(tfc):
    got, stats, images = planted(tfc, "stale")
    assert same(got, tfc, images)
    assert stats.stale == 10  # one forged answer before each real one
    # without the check the forged answers would have been taken
    images = random_images(tfc, 30, seed=9)
    with ModelBoard(tfc, fault="stale") as board:
        acc = SeqOnly(Transport(board.serve_tcp()), batch=3, timeout_s=1.0)
        acc.load(tfc)
        assert not same(acc.infer(images), tfc, images)
        acc.close()


def test_answers_that_never_echo_their_request_raise(tfc):
    with pytest.raises(AcceleratorError, match=r"with another request's CRC and never with "
                                               r"its own: its answers cannot be trusted"):
        planted(tfc, "mislabel", n=3, max_retries=2, timeout_s=0.05)


def test_the_golden_comparison_catches_a_lost_write(tfc, tfc_b):
    with ModelBoard(tfc, fault="drop_write") as board, connect(board) as acc:
        acc.load(tfc_b)
        images = random_images(tfc, 50, seed=10)
        assert not same(acc.infer(images), tfc_b, images)  # ACKed but never written
