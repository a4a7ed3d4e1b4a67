# amaranth: UnusedElaboratable=no
"""MVTU against bnnhw.reference (popcount_matvec / signed_matvec + threshold or
multi_threshold) under random stalls on both sides: binary and uint8 inputs, 1-bit and
2-bit outputs and scores layers, NF and SF of 1 and more, border classes, cycle count (full-rate and throttled input: arrival and compute
overlap), latency, run-time rewrite and Verilog conversion."""

import random

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from bnnhw.packing import beats, unpack
from bnnhw.reference import multi_threshold, popcount_matvec, signed_matvec, threshold
from rtl_gen.mvtu import MVTU, MVTUParams
from rtl_gen.weight_memory import MemSel, cfg_beats
from sim.stream_sim import (
    Stalls,
    StreamResult,
    check_stream_rule,
    run_stream,
    stream_get,
    stream_put,
)
from tests.stream_helpers import SerialInput, assert_stalled, output_cycles, steady_cycles


def random_layer(seed, kind, rows, cols, oh, ow, ny, nx, scores, images, levels=1):
    """Weights, inputs, class tables and (unless scores) thresholds drawn near the actual
    accumulators, so that ``acc == T`` happens and some thresholds fall outside the range;
    ``levels`` 3 draws three ascending thresholds per channel (``[NY, NX, R, 3]``)."""
    rng = np.random.default_rng(seed)
    w = rng.integers(0, 2, size=(rows, cols))
    hi = 1 if kind == "binary" else 255
    x = rng.integers(0, hi + 1, size=(images, oh * ow, cols))
    if kind == "uint8":  # plenty of 0 and 255, the ends of the accumulator range
        x = np.where(rng.random(x.shape) < 0.3, rng.choice([0, 255], size=x.shape), x)
    rc, cc = rng.integers(0, ny, size=oh), rng.integers(0, nx, size=ow)
    rc[:ny], cc[:nx] = np.arange(ny), np.arange(nx)
    if scores:
        return w, x, rc, cc, None
    acc = reference_acc(kind, x, w).reshape(images, oh, ow, rows)
    if levels == 3:
        return w, x, rc, cc, three_thresholds(rng, kind, cols, acc, rc, cc, ny, nx)
    t = np.empty((ny, nx, rows), np.int64)
    for cy in range(ny):
        for cx in range(nx):
            pix = acc[:, rc == cy][:, :, cc == cx].reshape(-1, rows)
            pick = pix[rng.integers(0, len(pix), size=rows), np.arange(rows)]
            t[cy, cx] = pick + rng.integers(-1, 2, size=rows)
    lo, top = (0, cols) if kind == "binary" else (-255 * cols, 255 * cols)
    t.reshape(-1)[0], t.reshape(-1)[-1] = lo - 7, top + 9  # constant channels
    return w, x, rc, cc, t


def three_thresholds(rng, kind, cols, acc, rc, cc, ny, nx):
    """``[NY, NX, R, 3]``: per class and channel three accumulators of its pixels, jittered
    and sorted; one channel always at code 3, one always at code 0."""
    rows = acc.shape[-1]
    t = np.empty((ny, nx, rows, 3), np.int64)
    for cy in range(ny):
        for cx in range(nx):
            pix = acc[:, rc == cy][:, :, cc == cx].reshape(-1, rows)
            pick = pix[rng.integers(0, len(pix), size=(rows, 3)), np.arange(rows)[:, None]]
            t[cy, cx] = np.sort(pick + rng.integers(-1, 2, size=(rows, 3)), axis=-1)
    lo, top = (0, cols) if kind == "binary" else (-255 * cols, 255 * cols)
    t.reshape(-1, 3)[0] = [lo - 7, lo - 1, lo]
    t.reshape(-1, 3)[-1] = [top + 1, top + 1, top + 9]
    return t


def reference_acc(kind, x, w):
    f = popcount_matvec if kind == "binary" else signed_matvec
    return f(x, w).numpy()


def reference(params, x, w=None, t=None):
    """Expected output lanes ``[images, P, R]`` from the shared reference functions."""
    w = params.weights if w is None else w
    acc = reference_acc(params.input_kind, x, w)
    if params.is_scores:
        return 2 * acc - params.cols if params.input_kind == "binary" else acc
    oh, ow = len(params.row_class), len(params.col_class)
    t = params.thresholds if t is None else t
    compare = threshold if t.ndim == 3 else multi_threshold
    bits = compare(acc.reshape(len(x), oh, ow, params.rows), t, params.row_class,
                   params.col_class)
    return bits.numpy().reshape(acc.shape)


def stream_in(params, x):
    return [b for image in x for pixel in image
            for b in beats(pixel, params.simd, params.elem_width)]


def decode(params, words, images):
    lanes = [unpack(word, params.pe, params.out_bits, signed=params.is_scores)
             for word in words]
    return np.concatenate(lanes).reshape(images, params.pixels, params.rows)


CASES = {
    # name: (kind, rows, cols, pe, simd, oh, ow, ny, nx, scores, images)
    "binary_nf1_sf1": ("binary", 4, 8, 4, 8, 1, 1, 1, 1, False, 6),
    "binary_classes": ("binary", 6, 18, 2, 6, 3, 3, 3, 3, False, 2),
    "binary_nf4_sf1": ("binary", 4, 8, 1, 8, 3, 1, 2, 1, False, 2),
    "binary_wide": ("binary", 16, 64, 4, 16, 2, 2, 2, 2, False, 2),
    "uint8_threshold": ("uint8", 4, 27, 2, 3, 2, 2, 2, 1, False, 2),
    "binary_scores": ("binary", 10, 32, 5, 8, 1, 1, 1, 1, True, 3),
    "uint8_scores": ("uint8", 3, 12, 3, 4, 2, 1, 1, 1, True, 2),
}


def build(name, seed, levels=1, **extra):
    kind, rows, cols, pe, simd, oh, ow, ny, nx, scores, images = CASES[name]
    w, x, rc, cc, t = random_layer(seed, kind, rows, cols, oh, ow, ny, nx, scores, images,
                                   levels)
    params = MVTUParams(name=name, rows=rows, cols=cols, pe=pe, simd=simd, weights=w,
                        input_kind=kind, pixels=oh * ow, thresholds=t, row_class=rc,
                        col_class=cc, **extra)
    return params, x


@pytest.mark.parametrize("name", list(CASES))
def test_mvtu_matches_reference(name):
    seed = list(CASES).index(name)
    params, x = build(name, seed, levels_per_stage=1 + seed % 2)
    want = reference(params, x)
    words = run_stream(MVTU(params), stream_in(params, x), want.size // params.pe, seed=seed)
    assert np.array_equal(decode(params, words, len(x)), want)
    assert_stalled(words)


@pytest.mark.parametrize("seed", range(10))
def test_mvtu_random_shapes(seed):
    rng = random.Random(100 + seed)
    kind = rng.choice(["binary", "uint8"])
    pe, simd = rng.randint(1, 4), rng.randint(1, 7)
    rows, cols = pe * rng.randint(1, 3), simd * rng.randint(1, 4)
    oh, ow = rng.randint(1, 3), rng.randint(1, 3)
    ny, nx = rng.randint(1, oh), rng.randint(1, ow)
    scores = rng.random() < 0.3
    per_image = oh * ow * min(cols // simd, rows // pe)   # beats of the quieter side
    images = max(2, -(-12 // per_image))                 # enough beats to stall both
    w, x, rc, cc, t = random_layer(seed, kind, rows, cols, oh, ow, ny, nx, scores, images)
    params = MVTUParams(name=f"layer{seed}", rows=rows, cols=cols, pe=pe, simd=simd,
                        weights=w, input_kind=kind, pixels=oh * ow, thresholds=t,
                        row_class=None if scores else rc, col_class=None if scores else cc,
                        levels_per_stage=rng.randint(1, 3))
    want = reference(params, x)
    words = run_stream(MVTU(params), stream_in(params, x), want.size // pe, seed=seed,
                       stall_in=rng.choice([0.1, 0.5]), stall_out=rng.choice([0.1, 0.5]))
    assert np.array_equal(decode(params, words, len(x)), want)
    assert_stalled(words)


def test_flipped_weight_bit_is_caught():
    params, x = build("binary_scores", 0)
    bad_w = params.weights.copy()
    bad_w[3, 17] ^= 1  # planted fault: one weight bit flipped in the memory's init
    bad = MVTUParams(name="fc", rows=params.rows, cols=params.cols, pe=params.pe,
                     simd=params.simd, weights=bad_w)
    want = reference(params, x)
    words = run_stream(MVTU(bad), stream_in(params, x), want.size // params.pe)
    assert not np.array_equal(decode(params, words, len(x)), want)


def test_cycles_per_image_and_latency_without_stalls():
    params, x = build("uint8_threshold", 7)
    images = 4
    x = np.concatenate([x, x])[:images]
    per_image = params.pixels * params.nf
    stamps, words = output_cycles(MVTU(params), stream_in(params, x), images * per_image)
    assert np.array_equal(decode(params, words, images), reference(params, x))
    assert params.cycles_per_image == 4 * 2 * 9
    # Output beats of an image end exactly cycles_per_image apart once the pipeline runs.
    assert steady_cycles(stamps, per_image) == [params.cycles_per_image] * (images - 1)
    # The first pixel's last input beat is accepted on edge SF - 1.
    assert stamps[0] == params.sf - 1 + params.latency


def paced_cycles(dut, inputs, n_outputs, every, max_cycles=20_000):
    """Drive ``dut.i_stream`` at a fixed rate, one beat offered ``every`` cycles after the
    previous one was accepted (no random stalls), with ``o_stream.ready`` always high.
    Returns ``(accepted, stamps, payloads)``: the cycle at which each input beat was
    accepted, and each output beat taken (cycle 0 is the first clock edge)."""
    accepted, stamps, payloads = [], [], []
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def source(ctx):
        cycle = -1
        for item in inputs:
            ctx.set(dut.i_stream.payload, item)
            ctx.set(dut.i_stream.valid, 1)
            while True:
                *_, ready = await ctx.tick().sample(dut.i_stream.ready)
                cycle += 1
                if ready:
                    accepted.append(cycle)
                    break
            ctx.set(dut.i_stream.valid, 0)
            for _ in range(every - 1):
                await ctx.tick()
                cycle += 1

    async def sink(ctx):
        ctx.set(dut.o_stream.ready, 1)
        for cycle in range(max_cycles):
            *_, valid, payload = await ctx.tick().sample(dut.o_stream.valid,
                                                         dut.o_stream.payload)
            if valid:
                stamps.append(cycle)
                payloads.append(payload)
                if len(stamps) == n_outputs:
                    return
        raise TimeoutError(f"{len(stamps)} of {n_outputs} outputs after {max_cycles} cycles")

    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return accepted, stamps, payloads


def within(measured, model, tolerance=0.05):
    return all(abs(c - model) <= tolerance * model for c in measured)


PACED = {
    # name: (case, every): a pixel's beats take SF * every cycles to arrive
    "input_bound_nf4": ("binary_wide", 7),       # 4 * 7 = 28 per pixel > NF * SF = 16
    "compute_bound_nf4": ("binary_wide", 3),     # 12 < 16
    "input_bound_nf3_classes": ("binary_classes", 5),
    "input_bound_uint8": ("uint8_threshold", 4),  # 9 * 4 = 36 > 18
    "input_bound_nf1": ("uint8_scores", 3),       # streams through: 3 * 3 per pixel
}


@pytest.mark.parametrize("name", list(PACED))
def test_throttled_input_overlaps_compute(name):
    """With input beats arriving every ``k`` cycles an image takes ``P * max(SF * k, NF *
    SF)`` cycles: input arrival and compute overlap instead of adding up."""
    case, every = PACED[name]
    params, x = build(case, 21)
    images = 3
    x = np.concatenate([x] * images)[:images]
    per_image = params.pixels * params.nf
    model = params.pixels * max(params.sf * every, params.nf * params.sf)
    accepted, stamps, words = paced_cycles(MVTU(params), stream_in(params, x),
                                           images * per_image, every)
    assert np.array_equal(decode(params, words, images), reference(params, x))
    assert within(steady_cycles(stamps, per_image), model)
    if params.sf * every >= params.nf * params.sf:
        # The unit waits for its input: every pixel's first output beat comes `latency`
        # cycles after its last input beat, the buffer adds nothing to that path.
        last_in = accepted[params.sf - 1::params.sf]
        first_out = stamps[::params.nf]
        assert [o - i for i, o in zip(last_in, first_out)] == [params.latency] * len(last_in)


def test_throttle_check_catches_a_serial_input():
    """The cycle check fails on a unit that refuses input while it replays a pixel (the
    single-buffer behaviour: arrival + (NF - 1) * SF per pixel)."""
    params, x = build("binary_wide", 21)
    every, images = 7, 3
    x = np.concatenate([x] * images)[:images]
    per_image = params.pixels * params.nf
    model = params.pixels * max(params.sf * every, params.nf * params.sf)
    dut = SerialInput(MVTU(params), params.sf, (params.nf - 1) * params.sf)
    _, stamps, words = paced_cycles(dut, stream_in(params, x), images * per_image, every)
    assert np.array_equal(decode(params, words, images), reference(params, x))
    assert not within(steady_cycles(stamps, per_image), model)


@pytest.mark.parametrize("case", ["binary_wide", "binary_classes", "binary_nf4_sf1"])
def test_full_rate_input_takes_cycles_per_image(case):
    params, x = build(case, 5)
    images = 3
    x = np.concatenate([x] * images)[:images]
    per_image = params.pixels * params.nf
    stamps, words = output_cycles(MVTU(params), stream_in(params, x), images * per_image)
    assert np.array_equal(decode(params, words, images), reference(params, x))
    assert within(steady_cycles(stamps, per_image), params.cycles_per_image)
    assert stamps[0] == params.sf - 1 + params.latency


@pytest.mark.parametrize("stall_in,stall_out", [(0.0, 0.85), (0.85, 0.0), (0.6, 0.6)])
def test_input_buffer_under_one_sided_stalls(stall_in, stall_out):
    """An input far ahead of a stalled output (both banks full, the write side waiting)
    and the reverse (steps waiting on single beats through the bypass)."""
    params, x = build("binary_wide", 9)
    x = np.concatenate([x, x[::-1]])
    want = reference(params, x)
    words = run_stream(MVTU(params), stream_in(params, x), want.size // params.pe, seed=4,
                       stall_in=stall_in, stall_out=stall_out)
    assert np.array_equal(decode(params, words, len(x)), want)
    assert_stalled(words, inputs=stall_in > 0, outputs=stall_out > 0)


def run_with_cfg(dut, cfg, inputs, n_outputs, seed):
    """Like run_stream, but the source first sends ``cfg`` beats on ``dut.cfg``."""
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    outputs, stalls = [], Stalls(0.3, 0.3)

    async def source(ctx):
        for beat in cfg:
            await stream_put(ctx, dut.cfg, beat, rng_in, 0.3, stalls)
        for item in inputs:
            await stream_put(ctx, dut.i_stream, item, rng_in, 0.3, stalls)

    async def sink(ctx):
        for _ in range(n_outputs):
            outputs.append(await stream_get(ctx, dut.o_stream, rng_out, 0.3, stalls=stalls))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source, background=True)
    for name in ("cfg", "i_stream", "o_stream"):
        sim.add_testbench(check_stream_rule(getattr(dut, name), f"MVTU.{name}"),
                          background=True)
    sim.add_testbench(sink)
    sim.run()
    return StreamResult(outputs, stalls)


def test_runtime_rewrite_of_weights_and_thresholds():
    params, x = build("binary_classes", 11, runtime_writable=True)
    new, _ = build("binary_classes", 12)  # other weights and thresholds, same shapes
    cfg = (cfg_beats(MemSel.WEIGHTS, params.weight_words(new.weights),
                     params.weight_memory.width)
           + cfg_beats(MemSel.THRESHOLDS, params.threshold_words(new.thresholds),
                       params.threshold_params.memory.width))
    want = reference(params, x, new.weights, new.thresholds)
    assert not np.array_equal(want, reference(params, x))
    words = run_with_cfg(MVTU(params), cfg, stream_in(params, x), want.size // params.pe, 3)
    assert np.array_equal(decode(params, words, len(x)), want)
    assert_stalled(words)


def test_mid_size_mvtu_converts_to_verilog():
    rng = np.random.default_rng(0)
    rows, cols = 32, 3 * 3 * 32
    t = rng.integers(100, 200, size=(3, 3, rows))
    params = MVTUParams(name="conv2", rows=rows, cols=cols, pe=8, simd=32,
                        weights=rng.integers(0, 2, size=(rows, cols)), pixels=14 * 14,
                        thresholds=t, row_class=np.array([0] + [1] * 12 + [2]),
                        col_class=np.array([0] + [1] * 12 + [2]), runtime_writable=True)
    text = verilog.convert(MVTU(params), name="conv2")
    assert "module conv2" in text
    assert params.cycles_per_image == 14 * 14 * 4 * 9


BASE = {"name": "conv1", "rows": 6, "cols": 8, "pe": 2, "simd": 4,
        "weights": np.zeros((6, 8), np.int64)}


@pytest.mark.parametrize("change,message", [
    ({"pe": 4}, "conv1: pe must divide the 6 output channels, not 4"),
    ({"simd": 3}, "conv1: simd must divide the 8 inputs, not 3"),
    ({"input_kind": "int4"}, "conv1: input_kind must be one of binary, uint8, not 'int4'"),
    ({"weights": np.zeros((8, 6), np.int64)},
     r"conv1: weights must have shape \[6, 8\], not \[8, 6\]"),
    ({"weights": np.full((6, 8), 2)}, "conv1: weights must hold bits 0/1, found 2..2"),
    ({"thresholds": np.zeros((1, 1, 5), np.int64)},
     r"conv1: thresholds must have shape \[NY, NX, 6\], not \[1, 1, 5\]"),
    ({"pixels": 2, "row_class": np.array([0, 1]), "col_class": np.array([0])},
     r"conv1: row_class must lie in 0..0"),
    ({"levels_per_stage": 0}, "conv1: levels_per_stage must be a positive integer, not 0"),
])
def test_bad_parameters(change, message):
    with pytest.raises(ValueError, match=message):
        MVTUParams(**{**BASE, **change})


FRAC_CASES = ["binary_nf1_sf1", "binary_classes", "binary_nf4_sf1", "uint8_threshold"]


@pytest.mark.parametrize("name", FRAC_CASES)
def test_two_bit_outputs_match_reference(name):
    """Three thresholds per channel: a 2-bit code per lane, every code seen."""
    seed = 40 + FRAC_CASES.index(name)
    params, x = build(name, seed, levels=3, levels_per_stage=1 + seed % 2)
    assert params.out_bits == 2 and params.o_width == 2 * params.pe
    want = reference(params, x)
    assert set(np.unique(want)) == {0, 1, 2, 3}
    words = run_stream(MVTU(params), stream_in(params, x), want.size // params.pe, seed=seed)
    assert np.array_equal(decode(params, words, len(x)), want)
    assert_stalled(words)


@pytest.mark.parametrize("seed", range(4))
def test_two_bit_outputs_random_shapes(seed):
    rng = random.Random(200 + seed)
    kind = rng.choice(["binary", "uint8"])
    pe, simd = rng.randint(1, 4), rng.randint(1, 7)
    rows, cols = pe * rng.randint(1, 3), simd * rng.randint(1, 4)
    oh, ow = rng.randint(1, 3), rng.randint(1, 3)
    ny, nx = rng.randint(1, oh), rng.randint(1, ow)
    per_image = oh * ow * min(cols // simd, rows // pe)
    images = max(2, -(-12 // per_image))
    w, x, rc, cc, t = random_layer(seed, kind, rows, cols, oh, ow, ny, nx, False, images, 3)
    params = MVTUParams(name=f"layer{seed}", rows=rows, cols=cols, pe=pe, simd=simd,
                        weights=w, input_kind=kind, pixels=oh * ow, thresholds=t,
                        row_class=rc, col_class=cc, levels_per_stage=rng.randint(1, 3))
    want = reference(params, x)
    words = run_stream(MVTU(params), stream_in(params, x), want.size // pe, seed=seed,
                       stall_in=rng.choice([0.1, 0.5]), stall_out=rng.choice([0.1, 0.5]))
    assert np.array_equal(decode(params, words, len(x)), want)
    assert_stalled(words)


def test_shifted_middle_threshold_is_caught():
    """Planted fault: the unit's T1 off by one where an accumulator sits on it."""
    params, x = build("binary_classes", 41, levels=3)
    acc = reference_acc("binary", x, params.weights).reshape(len(x), 3, 3, params.rows)
    full = params.thresholds[params.row_class][:, params.col_class]
    _, y, xx, r = np.argwhere(acc == full[None, ..., 1])[0]
    bad = params.thresholds.copy()
    bad[params.row_class[y], params.col_class[xx], r, 1:] += 1   # keeps them ascending
    faulty = MVTUParams(name="conv", rows=params.rows, cols=params.cols, pe=params.pe,
                        simd=params.simd, weights=params.weights, pixels=params.pixels,
                        thresholds=bad, row_class=params.row_class, col_class=params.col_class)
    want = reference(params, x)
    words = run_stream(MVTU(faulty), stream_in(params, x), want.size // params.pe, seed=2)
    assert not np.array_equal(decode(params, words, len(x)), want)


def test_runtime_rewrite_of_three_thresholds():
    """New weights and three new thresholds per channel over cfg; the threshold word is
    wider than one 32-bit chunk."""
    params, x = build("binary_wide", 43, levels=3, runtime_writable=True)
    new, _ = build("binary_wide", 44, levels=3)
    memory = params.threshold_params.memory
    assert memory.width == params.pe * 3 * params.threshold_params.threshold_shape.width
    assert memory.chunks > 1
    cfg = (cfg_beats(MemSel.WEIGHTS, params.weight_words(new.weights),
                     params.weight_memory.width)
           + cfg_beats(MemSel.THRESHOLDS, params.threshold_words(new.thresholds),
                       memory.width))
    want = reference(params, x, new.weights, new.thresholds)
    assert not np.array_equal(want, reference(params, x))
    words = run_with_cfg(MVTU(params), cfg, stream_in(params, x), want.size // params.pe, 5)
    assert np.array_equal(decode(params, words, len(x)), want)
    assert_stalled(words)


def test_two_bit_output_cycles_and_latency_without_stalls():
    params, x = build("uint8_threshold", 45, levels=3)
    images = 4
    x = np.concatenate([x, x])[:images]
    per_image = params.pixels * params.nf
    stamps, words = output_cycles(MVTU(params), stream_in(params, x), images * per_image)
    assert np.array_equal(decode(params, words, images), reference(params, x))
    assert steady_cycles(stamps, per_image) == [params.cycles_per_image] * (images - 1)
    assert stamps[0] == params.sf - 1 + params.latency
    one_bit, _ = build("uint8_threshold", 45)
    assert (params.cycles_per_image, params.latency) == (one_bit.cycles_per_image,
                                                         one_bit.latency)


def test_bad_three_thresholds_name_the_layer():
    with pytest.raises(ValueError, match=r"conv1: thresholds must have shape \[NY, NX, 6, 3\]"):
        MVTUParams(**{**BASE, "thresholds": np.zeros((1, 1, 6, 2), np.int64)})
    t = np.zeros((1, 1, 6, 3), np.int64)
    t[0, 0, 4] = [2, 1, 3]
    with pytest.raises(ValueError, match=r"conv1: the three thresholds of channel 4 .* "
                                         r"not 2, 1, 3"):
        MVTUParams(**{**BASE, "thresholds": t})
