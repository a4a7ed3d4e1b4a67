"""The fault-injecting link (``host.faults``) and the driver through it: corrupted,
dropped and inserted bytes, a board that goes silent and comes back, a board reset
mid-batch, a board that stops for good. Every result delivered is the golden model's;
none is lost, duplicated or reordered, or the driver raises."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest

from bnnhw import frontend
from bnnhw.protocol import FrameDecoder, Op, encode_frame
from host import Accelerator, AcceleratorError, Transport
from host.faults import FaultProxy, Faults, FaultyPort, Rates, pipe_pair
from tests.bnn_cases import zoo_model
from tests.model_board import ModelBoard, expected, random_images


@pytest.fixture(scope="module")
def tfc():
    return frontend.compile_model(zoo_model("tfc", seed=31, calibration=2))


@pytest.fixture(scope="module")
def tfc_b():
    return frontend.compile_model(zoo_model("tfc", seed=32, calibration=2))


def check_exact(got, graph, images):
    """Every result is there, once, in order, and right."""
    scores, classes = expected(graph, images)
    assert got[0].shape == scores.shape and got[1].shape == classes.shape
    bad = np.flatnonzero((got[0] != scores).any(axis=1) | (got[1] != classes))
    assert not len(bad), f"images {bad[:10].tolist()} wrong"


# -- the faults themselves --------------------------------------------------------------------

def test_a_bytes_fate_does_not_depend_on_the_chunks():
    data = np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes()
    whole = Faults(5, flip=0.02, drop=0.01, insert=0.01).apply("up", data)
    f = Faults(5, flip=0.02, drop=0.01, insert=0.01)
    cuts = [0, 1, 7, 500, 501, 9000, 20000]
    assert b"".join(f.apply("up", data[a:b]) for a, b in itertools.pairwise(cuts)) == whole
    c = f.counts("up")
    assert c.bytes_in == 20000 and c.bytes_out == len(whole) == 20000 - c.dropped + c.inserted
    for n, rate in ((c.flipped, 0.02), (c.dropped, 0.01), (c.inserted, 0.01)):
        assert abs(n - rate * 20000) < 5 * np.sqrt(rate * 20000)
    assert f.counts("down").bytes_in == 0
    assert Faults(6, flip=0.02).apply("up", data) != Faults(5, flip=0.02).apply("up", data)


def test_directions_have_their_own_rates():
    f = Faults(1, up=Rates(drop=1.0), down=Rates())
    assert f.apply("up", b"abc") == b"" and f.apply("down", b"abc") == b"abc"
    f.set_rates("down", flip=1.0)
    assert all((a ^ b).bit_count() == 1 for a, b in zip(f.apply("down", b"abc"), b"abc"))
    with pytest.raises(ValueError):
        Rates(flip=2.0)


def test_silence_and_resume():
    f = Faults(0)
    f.silence("down")
    assert f.apply("down", b"xyz") == b"" and f.apply("up", b"xyz") == b"xyz"
    f.resume()
    assert f.apply("down", b"xyz") == b"xyz"
    assert f.counts("down").silenced == 3 and "3 silenced" in f.summary()


def test_a_faulty_loopback_breaks_frames_and_the_decoder_sees_it():
    frames = b"".join(encode_frame(Op.STATUS, i % 256) for i in range(400))
    clean = FaultyPort(Transport("loop://").port, Faults(0))
    with Transport(clean, timeout=0.01) as t:
        t.write(frames)
        got, dec = b"", FrameDecoder()
        while len(got) < len(frames):
            got += t.read(1 << 16)
        assert len(list(dec.feed(got))) == 400
    faults = Faults(3, flip=0.01, drop=0.005, insert=0.005)
    with Transport(FaultyPort(Transport("loop://").port, faults), timeout=0.01) as t:
        t.write(frames)
        got = b""
        while chunk := t.read(1 << 16):
            got += chunk
        dec = FrameDecoder()
        good = list(dec.feed(got))
        assert 0 < len(good) < 400 and dec.bad_frames > 0
        assert all(f.op == Op.STATUS for f in good)
        assert faults.counts("up").faults > 0 and faults.counts("down").faults > 0


def test_the_proxy_forwards_and_counts(tfc):
    with ModelBoard(tfc) as board, FaultProxy(board.serve_tcp()) as proxy:
        with Accelerator(Transport(proxy.url), timeout_s=2.0) as acc:
            assert acc.identify() == board.identity
        up, down = proxy.faults.counts("up"), proxy.faults.counts("down")
        assert (up.bytes_in, up.bytes_out) == (7, 7) and down.bytes_out > 30
        assert proxy.connections == 1


# -- the driver through faults ---------------------------------------------------------------------

def test_corrupted_and_dropped_bytes_both_ways(tfc, tfc_b):
    """1% of the bytes get a flipped bit and 0.5% are lost, in both directions; a few
    hundred images come back exact."""
    images = random_images(tfc, 300, seed=1)
    faults = Faults(11, flip=0.01, drop=0.005)
    with ModelBoard(tfc) as board, FaultProxy(board.serve_tcp(), faults) as proxy:
        with Accelerator(Transport(proxy.url, timeout=0.02), window=32, timeout_s=0.05,
                         max_retries=200) as acc:
            acc.load(tfc_b)
            got = acc.infer(images)
            check_exact(got, tfc_b, images)
            s = acc.stats
            assert s.retries > 100 and s.nacks > 0
        assert faults.counts("up").flipped > 100 and faults.counts("down").dropped > 5


def test_garbage_inserted_in_process(tfc, tfc_b):
    """The in-process link: 1% of the bytes followed by a garbage byte, both ways."""
    images = random_images(tfc, 200, seed=2)
    faults = Faults(12, insert=0.01)
    host_end, board_end = pipe_pair(faults)
    with ModelBoard(tfc) as board:
        board.attach(board_end)
        with Accelerator(Transport(host_end, timeout=0.02), window=32, timeout_s=0.05,
                         max_retries=200) as acc:
            acc.load(tfc_b)
            check_exact(acc.infer(images), tfc_b, images)
            assert acc.stats.retries > 0
        assert faults.counts("up").inserted > 100


def test_a_board_that_goes_silent_mid_batch_and_comes_back(tfc):
    images = random_images(tfc, 200, seed=3)
    faults = Faults(13)
    with (ModelBoard(tfc) as board, FaultProxy(board.serve_tcp(), faults) as proxy,
          Accelerator(Transport(proxy.url, timeout=0.02), batch=2, window=4, timeout_s=0.05,
                      max_retries=30) as acc):
        acc.load(tfc)
        timer = []

        def progress(done: int, n: int) -> None:
            if done >= 60 and not timer:
                faults.silence()
                timer.append(threading.Timer(0.4, faults.resume))
                timer[0].start()

        start = time.monotonic()
        got = acc.infer(images, progress)
        assert time.monotonic() - start > 0.4
        check_exact(got, tfc, images)
        assert acc.stats.timeouts >= 4 and faults.counts("up").silenced > 0


def test_a_board_reset_mid_batch(tfc, tfc_b):
    """The board loses the frame it was receiving, its input and its counters: every
    result still comes back, right."""
    images = random_images(tfc, 300, seed=4)
    with (ModelBoard(tfc) as board,
          Accelerator(Transport(board.serve_tcp(), timeout=0.02), batch=4, window=16,
                      timeout_s=0.05) as acc):
        acc.load(tfc_b)
        resets = []

        def progress(done: int, n: int) -> None:
            if done >= 100 * (len(resets) + 1) and done < n:
                board.power_reset()
                resets.append(done)

        got = acc.infer(images, progress)
        check_exact(got, tfc_b, images)
        assert len(resets) == 2 and acc.stats.retries > 0
        assert acc.status().images_done < 300  # the counters did restart


def test_a_board_that_goes_silent_for_good_raises(tfc):
    faults = Faults(14)
    with (ModelBoard(tfc) as board, FaultProxy(board.serve_tcp(), faults) as proxy,
          Accelerator(Transport(proxy.url, timeout=0.02), batch=2, timeout_s=0.05,
                      max_retries=5) as acc):
        acc.load(tfc)

        def progress(done: int, n: int) -> None:
            if done >= 20:
                faults.silence()

        with pytest.raises(AcceleratorError, match=r"got no good answer in 6 attempts "
                                                   r"\(last: no answer within .* s\): "
                                                   r"check the link"):
            acc.infer(random_images(tfc, 100), progress)
