# amaranth: UnusedElaboratable=no
"""Weight-tiled MVTU against bnnhw.reference (popcount_matvec + threshold, or scores) with
its weights in a behavioural DRAM (tests/rtl_gen/dram_model.py): random shapes, several
images back to back, seeded random stalls on the input, the output and both sides of the
DRAM port, one and several tiles, lines of several folded words and words of several
lines; the DRAM image round trip; cycles per image against the model at two port speeds;
planted faults (a tile read from the wrong place, a reorder off by one). Map mode (the
unit stores a conv's input map and reads its windows itself): random geometries (kernel
1/2/3, stride 1/2, padding 0/1, pad bit 0/1) against the reference windows, the same
outputs as SlidingWindow -> window-fed unit, its cycles per image, a wrong pad value and
a window origin off by one caught; thresholds rewritten through cfg."""

import dataclasses
import random

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from bnnhw.packing import beats, unpack
from bnnhw.reference import popcount_matvec, sliding_window, threshold
from bnnhw.validate import ParameterError
from rtl_gen.sliding_window import SlidingWindow, SlidingWindowParams
from rtl_gen.threshold import ThresholdParams
from rtl_gen.tiled_mvtu import TiledMVTU, TiledMVTUParams
from rtl_gen.weight_memory import MemSel, cfg_beats
from sim.stream_sim import Stalls, check_stream_rule, run_stream, stream_get, stream_put
from tests.rtl_gen.dram_model import DramModel
from tests.stream_helpers import assert_stalled, steady_cycles


def random_layer(rng, rows, cols, oh, ow, ny, nx, scores, images, window=None):
    """Weights, inputs, class tables and (unless scores) thresholds drawn near the actual
    accumulators (``acc == T`` happens), one constant channel at each end. ``window``
    (``SlidingWindowParams``): the inputs are maps ``[images, H, W, C]``, else windows
    ``[images, P, cols]``."""
    w = rng.integers(0, 2, size=(rows, cols))
    if window is None:
        x = rng.integers(0, 2, size=(images, oh * ow, cols))
    else:
        x = rng.integers(0, 2, size=(images, window.height, window.width, window.channels))
    rc, cc = rng.integers(0, ny, size=oh), rng.integers(0, nx, size=ow)
    rc[:ny], cc[:nx] = np.arange(ny), np.arange(nx)
    if scores:
        return w, x, None, None, None
    acc = popcount_matvec(windows_of(window, x), w).numpy().reshape(images, oh, ow, rows)
    t = np.empty((ny, nx, rows), np.int64)
    for cy in range(ny):
        for cx in range(nx):
            pix = acc[:, rc == cy][:, :, cc == cx].reshape(-1, rows)
            t[cy, cx] = pix[rng.integers(0, len(pix), size=rows), np.arange(rows)]
            t[cy, cx] += rng.integers(-1, 2, size=rows)
    t.reshape(-1)[0], t.reshape(-1)[-1] = -5, cols + 6
    return w, x, rc, cc, t


def windows_of(window, x):
    """The windows ``[images, P, cols]`` of maps ``x`` (``window`` given), else ``x``."""
    if window is None:
        return x
    win = sliding_window(x, window.kernel, window.stride, window.padding, window.pad_value)
    return win.numpy().reshape(len(x), -1, win.shape[-1])


def reference(params, w, x, thresholds=None):
    """Expected output lanes ``[images, P, R]`` (``thresholds`` instead of the unit's)."""
    acc = popcount_matvec(windows_of(params.window, x), w).numpy()
    if params.is_scores:
        return 2 * acc - params.cols
    oh, ow = len(params.row_class), len(params.col_class)
    t = params.thresholds if thresholds is None else thresholds
    bits = threshold(acc.reshape(len(x), oh, ow, params.rows), t, params.row_class,
                     params.col_class)
    return bits.numpy().reshape(acc.shape)


def decode(params, words, images):
    lane = params.score_shape.width if params.is_scores else 1
    lanes = [unpack(wd, params.pe, lane, signed=params.is_scores) for wd in words]
    return np.concatenate(lanes).reshape(images, params.pixels, params.rows)


def stream_in(params, x):
    """Input beats: per image its windows' beats, or its map's (row-major, C innermost)."""
    return [b for image in x for b in beats(np.asarray(image).reshape(-1), params.simd)]


def build(seed, rows, cols, pe, simd, tile_rows, oh=1, ow=1, ny=1, nx=1, scores=False,
          images=3, base_addr=5, **extra):
    rng = np.random.default_rng(seed)
    w, x, rc, cc, t = random_layer(rng, rows, cols, oh, ow, ny, nx, scores, images)
    params = TiledMVTUParams(name=f"tiled{seed}", rows=rows, cols=cols, pe=pe, simd=simd,
                             tile_rows=tile_rows, pixels=oh * ow, thresholds=t,
                             row_class=rc, col_class=cc, base_addr=base_addr, **extra)
    return params, w, x


def run(dut, inputs, n_outputs, dram, *, seed=0, stall_in=0.3, stall_out=0.3,
        max_cycles=200_000):
    """``run_stream`` with the DRAM model answering ``dut.dram``: the output payloads and
    the ``Stalls``; the stream rule is checked on i_stream, o_stream and dram.cmd."""
    outputs, stalls = [], Stalls(stall_in, stall_out)
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def source(ctx):
        for item in inputs:
            await stream_put(ctx, dut.i_stream, item, rng_in, stall_in, stalls)

    budget = [max_cycles]

    async def sink(ctx):
        for _ in range(n_outputs):
            payload = await stream_get(ctx, dut.o_stream, rng_out, stall_out, budget, stalls)
            if payload is None:
                return
            outputs.append(payload)

    sim.add_testbench(source, background=True)
    sim.add_testbench(dram.testbench(dut.dram), background=True)
    for port, name in ((dut.i_stream, "i_stream"), (dut.o_stream, "o_stream"),
                       (dut.dram.cmd, "dram.cmd")):
        sim.add_testbench(check_stream_rule(port, name), background=True)
    sim.add_testbench(sink)
    sim.run()
    if len(outputs) < n_outputs:
        raise TimeoutError(f"{len(outputs)} of {n_outputs} outputs after {max_cycles} cycles")
    return outputs, stalls


def check(params, w, x, seed, dut=None, image=None, **dram_args):
    """Run the unit on ``x`` with ``w`` in DRAM (``image`` instead if given); return
    (outputs decoded, expected, stalls, DRAM model)."""
    dram = DramModel(params.dram_image(w) if image is None else image, params.base_addr,
                     seed=seed + 7, **dram_args)
    want = reference(params, w, x)
    words, stalls = run(TiledMVTU(params) if dut is None else dut, stream_in(params, x),
                        want.size // params.pe, dram, seed=seed)
    return decode(params, words, len(x)), want, stalls, dram


CASES = {
    # name: (rows, cols, pe, simd, tile_rows, oh, ow, ny, nx, scores)
    "one_tile_classes": (4, 12, 2, 4, 4, 2, 2, 2, 2, False),     # streams straight out
    "dense_scores_2_tiles": (8, 16, 2, 8, 4, 1, 1, 1, 1, True),
    "wide_words_4_tiles": (16, 80, 4, 40, 4, 3, 1, 2, 1, False),  # 160-bit words: k = 2
    "packed_lines_3_tiles": (9, 30, 3, 10, 3, 2, 2, 1, 2, False),  # 4 words a line, padded
    "pe1_simd1": (4, 3, 1, 1, 2, 1, 2, 1, 1, False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_tiled_matches_reference(name):
    seed = list(CASES).index(name)
    rows, cols, pe, simd, tile_rows, oh, ow, ny, nx, scores = CASES[name]
    params, w, x = build(seed, rows, cols, pe, simd, tile_rows, oh, ow, ny, nx, scores,
                         images=5, levels_per_stage=1 + seed % 2)
    got, want, stalls, dram = check(params, w, x, seed, latency=3 + 4 * seed,
                                    words_per_cycle=[1.0, 0.5][seed % 2], stall_cmd=0.3,
                                    stall_rdata=0.5)
    assert np.array_equal(got, want)
    assert_stalled(stalls)
    assert dram.cmd_stalls and dram.rdata_stalls
    # The weights are read once per image, in order, tile after tile.
    layer = list(range(params.base_addr, params.base_addr + params.dram_words))
    assert dram.addresses[:len(x) * params.dram_words] == layer * len(x)


@pytest.mark.parametrize("seed", range(4))
def test_tiled_random_shapes(seed):
    rng = random.Random(300 + seed)
    pe, simd = rng.randint(1, 4), rng.choice([1, 3, 8, 33])
    tiles, tnf = rng.randint(1, 3), rng.randint(1, 2)
    rows, cols = pe * tnf * tiles, simd * rng.randint(1, 3)
    oh, ow = rng.randint(1, 2), rng.randint(1, 3)
    scores = rng.random() < 0.3
    params, w, x = build(seed, rows, cols, pe, simd, pe * tnf, oh, ow, rng.randint(1, oh),
                         rng.randint(1, ow), scores, images=3,
                         base_addr=rng.randint(0, 100), levels_per_stage=rng.randint(1, 3))
    got, want, stalls, _ = check(params, w, x, seed, latency=rng.randint(1, 12),
                                 words_per_cycle=rng.choice([1.0, 0.3]), stall_cmd=0.2,
                                 stall_rdata=0.2)
    assert np.array_equal(got, want)
    assert_stalled(stalls)


def test_dram_image_round_trips():
    rng = np.random.default_rng(5)
    for rows, cols, pe, simd, tile_rows in [(16, 80, 4, 40, 4), (9, 30, 3, 10, 3),
                                            (8, 256, 2, 128, 8), (6, 7, 1, 7, 2)]:
        p = TiledMVTUParams(name="rt", rows=rows, cols=cols, pe=pe, simd=simd,
                            tile_rows=tile_rows)
        w = rng.integers(0, 2, size=(rows, cols))
        image = p.dram_image(w)
        assert len(image) == p.dram_words
        assert all(0 <= v < 1 << 128 for v in image)
        assert np.array_equal(p.weights_from_image(image), w)
        w2 = w.copy()
        w2[-1, -1] ^= 1
        assert p.dram_image(w2) != image


def test_tile_from_the_wrong_place_is_caught():
    """Planted fault: the DRAM holds the layer's tiles in the wrong order (what a loader
    reading from the wrong address sees)."""
    params, w, x = build(1, *CASES["dense_scores_2_tiles"][:5])
    image = params.dram_image(w)
    half = len(image) // 2
    swapped = image[half:] + image[:half]
    got, want, _, _ = check(params, w, x, 1, image=swapped)
    assert not np.array_equal(got, want)


class ReorderOffByOne(TiledMVTU):
    """Planted fault: every result of the last tile lands one slot early."""

    def reorder_address(self, m, pixel_base, nf):
        return pixel_base + nf - (pixel_base % self.params.nf
                                  == self.params.nf - self.params.tile_nf)


def test_reorder_off_by_one_is_caught():
    params, w, x = build(2, *CASES["wide_words_4_tiles"][:5], oh=3)
    got, want, _, _ = check(params, w, x, 2, dut=ReorderOffByOne(params))
    assert not np.array_equal(got, want)


def paced_stamps(params, w, x, dram):
    """Input at full rate, output always ready, DRAM without random stalls: the cycle at
    which each output beat is taken (and the payloads)."""
    dut = TiledMVTU(params)
    inputs, n_out = stream_in(params, x), len(x) * params.pixels * params.nf
    stamps, payloads = [], []
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def source(ctx):
        for item in inputs:
            ctx.set(dut.i_stream.payload, item)
            ctx.set(dut.i_stream.valid, 1)
            await ctx.tick().until(dut.i_stream.ready)
        ctx.set(dut.i_stream.valid, 0)

    async def sink(ctx):
        ctx.set(dut.o_stream.ready, 1)
        for cycle in range(100_000):
            _, _, valid, payload = await ctx.tick().sample(dut.o_stream.valid,
                                                           dut.o_stream.payload)
            if valid:
                stamps.append(cycle)
                payloads.append(payload)
                if len(stamps) == n_out:
                    return
        raise TimeoutError("outputs missing")

    sim.add_testbench(source, background=True)
    sim.add_testbench(dram.testbench(dut.dram), background=True)
    sim.add_testbench(sink)
    sim.run()
    return stamps, payloads


# (words per cycle, latency) of the 16-word tiles below (S = 32): compute-bound,
# bandwidth-bound (I = 64) and latency-bound ((16 + 60 + 32) / 2 = 54)
PORTS = {"fast_port": (1.0, 10), "slow_port": (0.25, 20), "far_port": (1.0, 60)}


def mean_cycles(stamps, params):
    """Mean cycles per image over the steady intervals (an even count: a latency-bound
    unit with an odd number of tiles alternates between two image times)."""
    measured = steady_cycles(stamps, params.pixels * params.nf)
    return sum(measured) / len(measured), measured


@pytest.mark.parametrize("port", list(PORTS))
def test_cycles_per_image_match_the_model(port):
    wpc, latency = PORTS[port]
    params, w, x = build(3, 24, 256, 4, 64, 8, oh=2, ow=2, images=5)
    dram = DramModel(params.dram_image(w), params.base_addr, latency=latency,
                     words_per_cycle=wpc)
    stamps, words = paced_stamps(params, w, x, dram)
    assert np.array_equal(decode(params, words, len(x)), reference(params, w, x))
    model = params.cycles_for_port(wpc, latency)
    mean, measured = mean_cycles(stamps, params)
    print(port, "model", model, "measured", measured)
    assert abs(mean - model) <= 0.05 * model, (model, measured)


def test_model_check_catches_a_missing_latency():
    """The cycle check fails against a model that leaves the read latency out."""
    wpc, latency = PORTS["far_port"]
    params, w, x = build(3, 24, 256, 4, 64, 8, oh=2, ow=2, images=5)
    dram = DramModel(params.dram_image(w), params.base_addr, latency=latency,
                     words_per_cycle=wpc)
    stamps, _ = paced_stamps(params, w, x, dram)
    wrong = params.cycles_for_port(wpc, 0)
    mean, _ = mean_cycles(stamps, params)
    assert abs(mean - params.cycles_for_port(wpc, latency)) <= 0.05 * mean
    assert abs(mean - wrong) > 0.05 * wrong


def test_cost_figures():
    p = TiledMVTUParams(name="fc", rows=16, cols=80, pe=4, simd=40, tile_rows=4, pixels=3)
    assert (p.line_words, p.line_slots, p.tile_lines) == (2, 1, 2)
    assert p.dram_words == 4 * 2 * 2
    assert p.buffers["input"] == 2 * 3 * 2 * 40
    assert p.buffers["tile"] == 2 * 2 * 256
    assert p.buffers["reorder"] == 2 * 3 * 4 * p.o_width
    assert p.buffer_bits == sum(p.buffers.values())


@pytest.mark.parametrize("bad, message", [
    ({"tile_rows": 3}, "tile_rows must divide"),
    ({"tile_rows": 2, "pe": 4}, "tile_rows must be a multiple of pe"),
    ({"input_kind": "uint8"}, "input_kind"),
    ({"images_per_load": 2}, "images_per_load"),
    ({"base_addr": (1 << 24) - 1}, "do not fit"),
])
def test_bad_parameters_are_named(bad, message):
    args = {"name": "fc", "rows": 8, "cols": 16, "pe": 2, "simd": 8, "tile_rows": 4} | bad
    with pytest.raises(ParameterError, match=message):
        TiledMVTUParams(**args)


def test_converts_to_verilog():
    params, _, _ = build(0, *CASES["wide_words_4_tiles"][:5], oh=3)
    text = verilog.convert(TiledMVTU(params), name="tiled")
    assert "dram__cmd__payload" in text



# Map mode: the unit stores the conv's input map and reads the windows from it.

def build_map(seed, h, w, c, k, s, pad, pad_bit, pe, simd, tnf, tiles, ny=1, nx=1,
              scores=False, images=2, **extra):
    """A map-mode layer (``rows = pe * tnf * tiles``) with random weights, maps and
    thresholds: ``(params, weights, maps)``."""
    rng = np.random.default_rng(seed)
    win = SlidingWindowParams(h, w, c, k, s, pad, simd, 1, pad_bit)
    oh, ow, rows = win.out_height, win.out_width, pe * tnf * tiles
    wt, x, rc, cc, t = random_layer(rng, rows, k * k * c, oh, ow, min(ny, oh), min(nx, ow),
                                    scores, images, window=win)
    params = TiledMVTUParams(name=f"map{seed}", rows=rows, cols=k * k * c, pe=pe,
                             simd=simd, tile_rows=pe * tnf, pixels=oh * ow, thresholds=t,
                             row_class=rc, col_class=cc, base_addr=3, in_shape=(h, w, c),
                             kernel=k, stride=s, padding=pad, pad_bit=pad_bit, **extra)
    return params, wt, x


# (kernel, stride, padding, pad_bit): every value of each appears; the rest is drawn
MAP_GEOMETRIES = [(3, 1, 1, 0), (3, 2, 1, 1), (2, 1, 0, 0), (2, 2, 1, 1), (1, 1, 0, 0),
                  (1, 2, 1, 1), (3, 1, 0, 1)]


@pytest.mark.parametrize("case", range(len(MAP_GEOMETRIES)))
def test_map_mode_matches_reference(case):
    k, s, pad, pad_bit = MAP_GEOMETRIES[case]
    rng = random.Random(700 + case)
    simd, cf = rng.choice([(1, 2), (2, 2), (3, 1), (4, 2), (2, 3), (8, 1)])
    h, w = rng.randint(max(2, k - 2 * pad), 4), rng.randint(max(2, k - 2 * pad), 4)
    pe, tnf, tiles = rng.randint(1, 3), rng.randint(1, 2), rng.randint(1, 3)
    params, wt, x = build_map(case, h, w, simd * cf, k, s, pad, pad_bit, pe, simd, tnf,
                              tiles, ny=2, nx=2, scores=case == 4, images=3,
                              levels_per_stage=rng.randint(1, 2))
    assert params.in_beats == h * w * cf
    got, want, stalls, dram = check(params, wt, x, case, latency=rng.randint(1, 9),
                                    words_per_cycle=rng.choice([1.0, 0.5]), stall_cmd=0.2,
                                    stall_rdata=0.3)
    assert np.array_equal(got, want), (h, w, simd * cf, params.rows, pe, tnf, tiles)
    assert_stalled(stalls)
    assert dram.cmd_stalls and dram.rdata_stalls


def test_map_mode_equals_sliding_window_then_window_fed_unit():
    """The map-mode unit's output beats are those of SlidingWindow -> the window-fed unit
    (both simulated), bit for bit."""
    params, wt, x = build_map(11, 4, 3, 4, 3, 1, 1, 1, 2, 2, 2, 2, ny=2, nx=2)
    swp = params.window
    windows = run_stream(SlidingWindow(swp), stream_in(params, x),
                         len(x) * swp.out_beats, seed=3, stall_in=0.3, stall_out=0.3)
    fed = dataclasses.replace(params, in_shape=None, kernel=None, stride=None,
                              padding=None, pad_bit=None)
    dram = DramModel(params.dram_image(wt), params.base_addr, seed=4)
    n_out = len(x) * params.pixels * params.nf
    via_window, _ = run(TiledMVTU(fed), list(windows), n_out, dram, seed=5)
    dram = DramModel(params.dram_image(wt), params.base_addr, seed=6)
    from_map, _ = run(TiledMVTU(params), stream_in(params, x), n_out, dram, seed=7)
    assert from_map == via_window
    assert np.array_equal(decode(params, from_map, len(x)), reference(params, wt, x))


def test_wrong_pad_value_is_caught():
    """Planted fault: the hardware pads with the other bit."""
    params, wt, x = build_map(12, 3, 3, 2, 3, 1, 1, 0, 2, 2, 1, 2)
    wrong = TiledMVTU(dataclasses.replace(params, pad_bit=1))
    got, want, _, _ = check(params, wt, x, 12, dut=wrong)
    assert not np.array_equal(got, want)


class OriginOffByOne(TiledMVTU):
    """Planted fault: every window starts one map column too far right."""

    def window_origin(self, p):
        y0, x0 = super().window_origin(p)
        return y0, x0 + 1


def test_window_origin_off_by_one_is_caught():
    params, wt, x = build_map(13, 4, 4, 2, 3, 1, 1, 0, 2, 2, 1, 2)
    got, want, _, _ = check(params, wt, x, 13, dut=OriginOffByOne(params))
    assert not np.array_equal(got, want)


# Compute-bound (k 3: T * S = 2 * 16 * 2 * 18 = 1152 > 32 input beats) and input-bound
# (k 1, stride 2: T * S = 2 * 4 * 1 * 4 = 32 < 64 input beats) map-mode layers.
MAP_PACED = {"compute_bound": (4, 4, 8, 3, 1, 1, 2, 4, 2),
             "input_bound": (4, 4, 16, 1, 2, 0, 2, 4, 1)}


@pytest.mark.parametrize("case", list(MAP_PACED))
def test_map_mode_cycles_per_image_match_the_model(case):
    h, w, c, k, s, pad, pe, simd, tnf = MAP_PACED[case]
    params, wt, x = build_map(14, h, w, c, k, s, pad, 1, pe, simd, tnf, 2, images=5)
    dram = DramModel(params.dram_image(wt), params.base_addr, latency=10)
    stamps, words = paced_stamps(params, wt, x, dram)
    assert np.array_equal(decode(params, words, len(x)), reference(params, wt, x))
    model = params.cycles_for_port(1.0, 10)
    if case == "input_bound":
        assert model == params.in_beats == h * w * c // simd
    mean, measured = mean_cycles(stamps, params)
    print(case, "model", model, "measured", measured)
    assert abs(mean - model) <= 0.05 * model, (model, measured)


def test_runtime_rewrite_of_thresholds():
    """New thresholds through cfg (the unit's regrouped words); the results follow them.
    Planted fault: the words of the layer's table without the per-tile regrouping (the
    MVTU's layout, as many words of the same width) give other results."""
    params, wt, x = build_map(15, 3, 4, 2, 3, 1, 1, 0, 2, 2, 1, 3, ny=2, nx=2,
                              runtime_writable=True)
    _, _, _, _, new = random_layer(np.random.default_rng(16), params.rows, params.cols,
                                   3, 4, 2, 2, False, 2, window=params.window)
    want = reference(params, wt, x, new)
    assert not np.array_equal(want, reference(params, wt, x))
    width = params.threshold_params.memory.width
    flat = ThresholdParams(name="flat", channels=params.rows, pe=params.pe,
                           acc_min=params.acc_range[0], acc_max=params.acc_range[1],
                           thresholds=new, pixels=params.pixels, row_class=params.row_class,
                           col_class=params.col_class)
    assert flat.memory.width == width
    for words, right in ((params.threshold_words(new), True),
                         (flat.threshold_words(), False)):
        assert len(words) == params.threshold_params.memory.depth
        got = decode(params, run_with_cfg(params, wt, x, cfg_beats(MemSel.THRESHOLDS, words,
                                                                   width)), len(x))
        assert np.array_equal(got, want) == right


def run_with_cfg(params, wt, x, cfg, seed=17):
    """The unit's outputs when ``cfg`` beats (random idles) precede the input stream."""
    dut, rng = TiledMVTU(params), random.Random(seed)
    dram = DramModel(params.dram_image(wt), params.base_addr, seed=seed, stall_rdata=0.2)
    outputs, n_out = [], len(x) * params.pixels * params.nf

    async def configure_then_feed(ctx):
        for beat in cfg:
            await stream_put(ctx, dut.cfg, beat, rng, 0.3)
        for item in stream_in(params, x):
            await stream_put(ctx, dut.i_stream, item, rng, 0.3)

    async def sink(ctx):
        for _ in range(n_out):
            outputs.append(await stream_get(ctx, dut.o_stream, rng, 0.3))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(configure_then_feed, background=True)
    sim.add_testbench(dram.testbench(dut.dram), background=True)
    sim.add_testbench(check_stream_rule(dut.cfg, "cfg"), background=True)
    sim.add_testbench(sink)
    sim.run()
    return outputs


def test_map_mode_cost_figures():
    p = TiledMVTUParams(name="conv", rows=8, cols=9 * 16, pe=2, simd=8, tile_rows=4,
                        pixels=4 * 5, in_shape=(4, 5, 16), kernel=3, padding=1)
    assert (p.stride, p.pad_bit, p.in_beats) == (1, 0, 4 * 5 * 2)
    assert p.buffers["input"] == 2 * 4 * 5 * 16  # two maps, not two sets of windows
    assert p.cycles_per_image == p.cycles_for_port(1.0, 20) >= p.in_beats
    dense = TiledMVTUParams(name="fc", rows=8, cols=9 * 16, pe=2, simd=8, tile_rows=4,
                            pixels=20)
    assert dense.buffers["input"] == 9 * p.buffers["input"]


@pytest.mark.parametrize("bad, message", [
    ({"pixels": 9}, "pixels must be the 4 x 4 = 16 output pixels"),
    ({"cols": 16}, "cols must be kernel"),
    ({"kernel": None}, "in_shape needs a kernel"),
    ({"in_shape": None}, "give in_shape"),
    ({"in_shape": (4, 4, 6), "cols": 54, "simd": 9}, "simd must divide the 6 channels"),
    ({"pad_bit": 2}, "pad_bit"),
    ({"row_class": np.zeros(16, int), "col_class": np.zeros(1, int)},
     "must have OH = 4 and OW = 4 entries"),
    ({"runtime_writable": 1}, "runtime_writable"),
])
def test_bad_map_parameters_are_named(bad, message):
    args = {"name": "conv", "rows": 4, "cols": 72, "pe": 2, "simd": 4, "tile_rows": 2,
            "pixels": 16, "in_shape": (4, 4, 8), "kernel": 3, "padding": 1} | bad
    with pytest.raises(ParameterError, match=message):
        TiledMVTUParams(**args)


@pytest.mark.parametrize("scores", [False, True])
def test_map_mode_converts_to_verilog(scores):
    """A writable map-mode unit has a cfg port, also a last layer (which ignores it)."""
    params, _, _ = build_map(18, 4, 4, 4, 3, 2, 1, 1, 2, 2, 1, 2, scores=scores,
                             runtime_writable=True)
    text = verilog.convert(TiledMVTU(params), name="tiled_map")
    assert "cfg__payload" in text and "dram__cmd__payload" in text
