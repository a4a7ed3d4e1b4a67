# amaranth: UnusedElaboratable=no
"""Weight-tiled MVTU against bnnhw.reference (popcount_matvec + threshold, or scores) with
its weights in a behavioural DRAM (tests/rtl_gen/dram_model.py): random shapes, several
images back to back, seeded random stalls on the input, the output and both sides of the
DRAM port, one and several tiles, lines of several folded words and words of several
lines; the DRAM image round trip; cycles per image against the model at two port speeds;
planted faults (a tile read from the wrong place, a reorder off by one)."""

import random

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from bnnhw.packing import beats, unpack
from bnnhw.reference import popcount_matvec, threshold
from bnnhw.validate import ParameterError
from rtl_gen.tiled_mvtu import TiledMVTU, TiledMVTUParams
from sim.stream_sim import Stalls, check_stream_rule, stream_get, stream_put
from tests.rtl_gen.dram_model import DramModel
from tests.stream_helpers import assert_stalled, steady_cycles


def random_layer(rng, rows, cols, oh, ow, ny, nx, scores, images):
    """Weights, inputs, class tables and (unless scores) thresholds drawn near the actual
    accumulators (``acc == T`` happens), one constant channel at each end."""
    w = rng.integers(0, 2, size=(rows, cols))
    x = rng.integers(0, 2, size=(images, oh * ow, cols))
    rc, cc = rng.integers(0, ny, size=oh), rng.integers(0, nx, size=ow)
    rc[:ny], cc[:nx] = np.arange(ny), np.arange(nx)
    if scores:
        return w, x, None, None, None
    acc = popcount_matvec(x, w).numpy().reshape(images, oh, ow, rows)
    t = np.empty((ny, nx, rows), np.int64)
    for cy in range(ny):
        for cx in range(nx):
            pix = acc[:, rc == cy][:, :, cc == cx].reshape(-1, rows)
            t[cy, cx] = pix[rng.integers(0, len(pix), size=rows), np.arange(rows)]
            t[cy, cx] += rng.integers(-1, 2, size=rows)
    t.reshape(-1)[0], t.reshape(-1)[-1] = -5, cols + 6
    return w, x, rc, cc, t


def reference(params, w, x):
    """Expected output lanes ``[images, P, R]``."""
    acc = popcount_matvec(x, w).numpy()
    if params.is_scores:
        return 2 * acc - params.cols
    oh, ow = len(params.row_class), len(params.col_class)
    bits = threshold(acc.reshape(len(x), oh, ow, params.rows), params.thresholds,
                     params.row_class, params.col_class)
    return bits.numpy().reshape(acc.shape)


def decode(params, words, images):
    lane = params.score_shape.width if params.is_scores else 1
    lanes = [unpack(wd, params.pe, lane, signed=params.is_scores) for wd in words]
    return np.concatenate(lanes).reshape(images, params.pixels, params.rows)


def stream_in(params, x):
    return [b for image in x for pixel in image for b in beats(pixel, params.simd)]


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
