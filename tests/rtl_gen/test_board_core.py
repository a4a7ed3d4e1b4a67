"""The accelerator behind its link, in the Amaranth simulator: frames in, frames out.

Every request of ``docs/protocol.md`` against a small network: identify, status, infer
(results equal to the golden model), write another model's weights (its golden results
then), reset; and every refusal: bad CRC, too long, unknown type, bad payload, a frame
that stops half-way, garbage between frames. The byte-level blocks (image unpacking,
result packing) against the manifest's encodings under random stalls.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from bnnhw import golden
from bnnhw.check import random_images
from bnnhw.folding import default_folding
from bnnhw.frontend import compile_model
from bnnhw.manifest import Manifest
from bnnhw.protocol import (
    CFG_BEAT_BYTES,
    Counters,
    FrameDecoder,
    Identity,
    Nack,
    Op,
    crc16,
    encode_frame,
)
from rtl_gen.board_core import BoardCore, BoardCoreParams
from rtl_gen.image_unpacker import ImageUnpacker, ImageUnpackerParams
from rtl_gen.result_packer import ResultPacker, ResultPackerParams
from sim.stream_sim import run_stream
from tests.bnn_cases import spec_model
from tests.stream_helpers import assert_stalled

LAYERS = [{"type": "conv", "out": 4, "kernel": 3, "padding": 1},
          {"type": "maxpool", "kernel": 2},
          {"type": "dense", "out": 8},
          {"type": "dense", "out": 5, "scale": True, "bias": True}]
SHAPE = (1, 6, 6)


@pytest.fixture(scope="module")
def models():
    a = compile_model(spec_model(LAYERS, "binary", SHAPE, seed=1))
    b = compile_model(spec_model(LAYERS, "binary", SHAPE, seed=2))
    return a, b


@pytest.fixture(scope="module")
def params(models):
    return BoardCoreParams(models[0], default_folding(models[0]), max_payload=64,
                           timeout_cycles=300)


def exchange(params, data: bytes, responses: int, *, max_cycles=60_000, gap_after=None):
    """Send ``data`` into ``rx`` (a byte per cycle when ready; ``gap_after`` = (i, n):
    idle ``n`` cycles after byte ``i``) and decode ``responses`` frames from ``tx``."""
    core = BoardCore(params)
    sim = Simulator(core)
    sim.add_clock(1e-8)
    frames, cycles = [], []
    decoder = FrameDecoder()

    async def bench(ctx):
        ctx.set(core.tx.ready, 1)
        i, idle = 0, 0
        for cycle in range(max_cycles):
            if idle:
                idle -= 1
                ctx.set(core.rx.valid, 0)
            elif i < len(data):
                ctx.set(core.rx.payload, data[i])
                ctx.set(core.rx.valid, 1)
            else:
                ctx.set(core.rx.valid, 0)
            *_, rv, rr, tv, tp = await ctx.tick().sample(core.rx.valid, core.rx.ready,
                                                         core.tx.valid, core.tx.payload)
            if rv and rr:
                if gap_after and i == gap_after[0]:
                    idle = gap_after[1]
                i += 1
            if tv:
                new = list(decoder.feed(bytes([tp])))
                frames.extend(new)
                cycles.extend([cycle] * len(new))
                if len(frames) == responses:
                    return
        raise TimeoutError(f"{len(frames)} of {responses} responses in {max_cycles} cycles")

    sim.add_testbench(bench)
    sim.run()
    exchange.cycles = cycles
    return frames


def answers(frames, requests):
    """Each response answers its request: same sequence number, its CRC first."""
    for f, r in zip(frames, requests, strict=True):
        assert f.seq == r[2], (f, r)
        if f.op != Op.NACK:
            assert f.request_crc == int.from_bytes(r[-2:], "little")


def test_identify_and_status(params):
    reqs = [encode_frame(Op.IDENTIFY, 3), encode_frame(Op.STATUS, 4)]
    ident, counters = exchange(params, b"".join(reqs), 2)
    answers([ident, counters], reqs)
    assert ident.op == Op.IDENTITY and Identity.unpack(ident.payload[2:]) == params.identity
    assert counters.op == Op.COUNTERS
    assert Counters.unpack(counters.payload[2:]) == Counters(1, 0, 0, 0)


def infer_frame(manifest, images, seq):
    return encode_frame(Op.INFER, seq, bytes([len(images)]) + b"".join(
        manifest.encode_images(images)))


def test_infer_gives_the_golden_results(models, params):
    mf = params.manifest
    images = random_images(SHAPE, 7, 1)
    reqs = [infer_frame(mf, images[:4], 10), infer_frame(mf, images[4:], 11)]
    frames = exchange(params, b"".join(reqs), 2)
    answers(frames, reqs)
    gold = golden.run(models[0], images)
    scores, classes = zip(*(mf.decode_results(f.payload[3:]) for f in frames))
    assert [f.payload[2] for f in frames] == [4, 3]
    assert np.array_equal(np.concatenate(scores), gold.scores.numpy())
    assert np.array_equal(np.concatenate(classes), gold.classes.numpy())


def write_frames(manifest, graph, seq, per_frame=6):
    out = []
    for t in range(len(manifest.targets)):
        beats = manifest.target_beats(graph, t)
        for i in range(0, len(beats), per_frame):
            payload = bytes([t]) + b"".join(b.to_bytes(CFG_BEAT_BYTES, "little")
                                            for b in beats[i:i + per_frame])
            out.append(encode_frame(Op.WRITE, (seq + len(out)) % 256, payload))
    return out


def test_written_weights_serve_another_model(models, params):
    a, b = models
    mf = params.manifest
    assert Manifest.of(b, params.folds, max_payload=64, board="sim").digest == mf.digest
    images = random_images(SHAPE, 3, 2)
    writes = write_frames(mf, b, 20)
    reqs = [*writes, infer_frame(mf, images, 99)]
    frames = exchange(params, b"".join(reqs), len(reqs), max_cycles=200_000)
    answers(frames, reqs)
    assert all(f.op == Op.ACK for f in frames[:-1])
    scores, classes = mf.decode_results(frames[-1].payload[3:])
    gold = golden.run(b, images)
    assert np.array_equal(scores, gold.scores.numpy())
    assert np.array_equal(classes, gold.classes.numpy())
    assert not np.array_equal(scores, golden.run(a, images).scores.numpy())


def corrupt_crc(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 0x40])


def test_refusals_are_nacked_and_the_link_recovers(params):
    mf = params.manifest
    images = random_images(SHAPE, 1, 3)
    good = infer_frame(mf, images, 7)
    reqs = [
        corrupt_crc(good),                                    # BAD_CRC
        encode_frame(Op.INFER, 8, bytes(100)),               # longer than max_payload 64
        encode_frame(0x33, 9),                               # unknown type
        encode_frame(Op.INFER, 10, bytes([0])),              # a count of 0
        encode_frame(Op.INFER, 11, bytes([2]) + bytes(mf.image_bytes)),  # count 2, 1 image
        encode_frame(Op.WRITE, 12, bytes([9]) + bytes(8)),   # no target 9
        encode_frame(Op.IDENTIFY, 13, b"x"),                 # IDENTIFY takes no payload
        b"\x00\x13\x01\x77" + good,                         # garbage, then a good frame
    ]
    frames = exchange(params, b"".join(reqs), 8)
    nacks = [(f.op, f.payload[0], f.seq) for f in frames[:7]]
    assert nacks == [(Op.NACK, Nack.BAD_CRC, 7), (Op.NACK, Nack.BAD_LENGTH, 8),
                     (Op.NACK, Nack.UNKNOWN_TYPE, 9), (Op.NACK, Nack.BAD_PAYLOAD, 10),
                     (Op.NACK, Nack.BAD_PAYLOAD, 11), (Op.NACK, Nack.BAD_PAYLOAD, 12),
                     (Op.NACK, Nack.BAD_PAYLOAD, 13)]
    assert frames[0].payload[1:] == corrupt_crc(good)[-2:]  # the received CRC field
    assert frames[7].op == Op.RESULTS and frames[7].seq == 7


def test_bad_length_does_not_swallow_the_next_frame(params):
    """After a BAD_LENGTH header the receiver hunts again at the next byte."""
    reqs = [b"\xa5\x03\x01\xff\x7f", encode_frame(Op.IDENTIFY, 2)]
    frames = exchange(params, b"".join(reqs), 2)
    assert [(f.op, f.seq) for f in frames] == [(Op.NACK, 1), (Op.IDENTITY, 2)]


def test_a_stalled_half_frame_times_out(params):
    half = infer_frame(params.manifest, random_images(SHAPE, 1, 4), 5)
    reqs = [half[:9], encode_frame(Op.STATUS, 6)]
    frames = exchange(params, b"".join(reqs), 2, gap_after=(8, 400))
    assert (frames[0].op, frames[0].payload[0], frames[0].seq) == (Op.NACK, Nack.TIMEOUT, 5)
    assert Counters.unpack(frames[1].payload[2:]) == Counters(0, 1, 0, 1)


def test_reset_clears_the_counters(params):
    reqs = [encode_frame(Op.IDENTIFY, 1), corrupt_crc(encode_frame(Op.STATUS, 2)),
            encode_frame(Op.RESET, 3), encode_frame(Op.STATUS, 4)]
    frames = exchange(params, b"".join(reqs), 4)
    assert [f.op for f in frames] == [Op.IDENTITY, Op.NACK, Op.ACK, Op.COUNTERS]
    assert frames[2].request_crc == crc16(reqs[2][1:-2])
    assert Counters.unpack(frames[3].payload[2:]) == Counters(1, 0, 0, 0)  # the RESET itself


@pytest.mark.parametrize("pixels,channels,binary", [(36, 1, True), (10, 3, True),
                                                    (7, 3, False), (5, 1, False)])
def test_image_unpacker_matches_the_manifest_encoding(pixels, channels, binary):
    p = ImageUnpackerParams(pixels, channels, binary)
    rng = np.random.default_rng(pixels)
    images = rng.integers(0, 256, (3, channels, 1, pixels), dtype=np.uint8)
    if binary:
        images = np.where(images >= 128, 255, 0).astype(np.uint8)
    mf = _manifest(pixels, channels, "binary" if binary else "uint8")
    data = b"".join(mf.encode_images(images))
    assert len(data) == 3 * p.image_bytes
    out = run_stream(ImageUnpacker(p), list(data), 3 * pixels, seed=2)
    assert_stalled(out)
    want = [sum(int(v) << (8 * c) for c, v in enumerate(px)) | (int(i == 0) << 8 * channels)
            | (int(i == pixels - 1) << (8 * channels + 1))
            for img in np.moveaxis(images, 1, -1).reshape(3, pixels, channels)
            for i, px in enumerate(img)]
    assert [int(b) for b in out] == want


def _manifest(pixels, channels, encoding):
    graph = compile_model(spec_model([{"type": "dense", "out": 2}], encoding,
                                     (channels, 1, pixels), seed=0))
    return Manifest.of(graph, default_folding(graph))


@pytest.mark.parametrize("classes,width", [(5, 6), (10, 11), (3, 17)])
def test_result_packer_matches_the_manifest_encoding(classes, width):
    from bnnhw.beats import TopFormat

    p = ResultPackerParams(classes, width)
    fmt = TopFormat(1, 1, 1, classes, width)
    rng = np.random.default_rng(width)
    lim = 1 << (width - 1)
    results = [(rng.integers(-lim, lim, classes), int(rng.integers(0, classes)))
               for _ in range(6)]
    out = run_stream(ResultPacker(p), [fmt.result_beat(s, a) for s, a in results],
                     6 * p.result_bytes, seed=1)
    assert_stalled(out)
    want = b"".join(_result_bytes(classes, width, s, a) for s, a in results)
    assert bytes(int(b) for b in out) == want


def _result_bytes(classes, width, scores, cls):
    sb = -(-width // 8)
    return int(cls).to_bytes(1, "little") + b"".join(
        int(v).to_bytes(sb, "little", signed=True) for v in scores)


def test_frames_overlap_in_the_network(models, params):
    """The next frame's images enter the network while this frame's results are coming:
    one-image frames follow each other at the network's initiation interval, not at its
    latency."""
    mf = params.manifest
    images = random_images(SHAPE, 4, 9)
    one = exchange(params, infer_frame(mf, images[:1], 1), 1)
    t_one = exchange.cycles[-1]
    reqs = [infer_frame(mf, images[k:k + 1], k) for k in range(4)]
    frames = exchange(params, b"".join(reqs), 4)
    t_four = exchange.cycles[-1]
    assert [f.op for f in frames] == [Op.RESULTS] * 4 and one[0].op == Op.RESULTS
    scores = np.concatenate([mf.decode_results(f.payload[3:])[0] for f in frames])
    assert np.array_equal(scores, golden.run(models[0], images).scores.numpy())
    ii, latency = params.network.cycles_per_image, params.network.latency
    assert ii < latency and t_four - t_one <= 3 * ii + 30, (t_one, t_four, ii, latency)
