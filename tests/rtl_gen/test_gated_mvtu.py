# amaranth: UnusedElaboratable=no
"""Precision-gated matrix unit against a naive numpy reference (pc_m, pc_l, gates, acc,
thresholds): random shapes with NF and SF of 1 and more, gate thresholds from all-gated to
none-gated with inverted lanes, several images back to back under seeded random stalls on
both sides; the exact cycle count at steady state, beat_times edge for edge, the step
counters, run-time rewrite of weights, thresholds and gates, and parameter errors."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Value
from amaranth.sim import Simulator

from bnnhw.packing import beats, unpack
from rtl_gen.gated_mvtu import GatedMVTU, GatedMVTUParams
from rtl_gen.weight_memory import MemSel, cfg_beats
from sim.stream_sim import Stalls, check_stream_rule, stream_get, stream_put
from tests.stream_helpers import assert_stalled

# -- the reference --------------------------------------------------------------------


def reference(x, w, gate_t, gate_inv, thresholds=None, row_class=None, col_class=None):
    """``(outputs [images, P, R], gates [images, P, R])`` of codes ``x [images, P, N]``:
    the acc itself (scores) or ``acc >= T[row_class[oy], col_class[ox], r]``."""
    x, w = np.asarray(x, np.int64), np.asarray(w, np.int64)
    n = w.shape[1]
    m, lsb = x >> 1, x & 1
    pc_m = (m[..., None, :] == w).sum(-1)
    pc_l = (lsb[..., None, :] == w).sum(-1)
    g = (pc_m >= np.asarray(gate_t)) ^ np.asarray(gate_inv, np.int64)
    acc = 2 * (2 * pc_m - n) + g * (2 * pc_l - n)
    if thresholds is None:
        return acc, g
    t = np.asarray(thresholds)
    per_pixel = t[np.asarray(row_class)][:, np.asarray(col_class)].reshape(-1, w.shape[0])
    return (acc >= per_pixel[None]).astype(np.int64), g


def expected(p, x, **new):
    """The reference of unit ``p`` on ``x``, with ``new`` weights/gates/thresholds."""
    return reference(x, new.get("weights", p.weights),
                     new.get("gate_thresholds", p.gate_thresholds),
                     new.get("gate_invert", p.gate_invert),
                     new.get("thresholds", p.thresholds), p.row_class, p.col_class)


def gated_groups(p, g):
    """``bool[images, P, NF]``: groups with at least one gated lane."""
    return g.reshape(*g.shape[:2], p.nf, p.pe).any(-1)


# -- stimuli --------------------------------------------------------------------------

GATE_MODES = ("mixed", "all", "none", "inverted", "extremes")


def draw_gates(rng, mode, pc_m, n):
    """Gate thresholds and invert bits for rows ``pc_m [..., R]`` of actual MSB counts:
    ``mixed`` near the counts (so ``pc_m == G`` happens), ``all``/``none`` every or no
    lane gated (G = 0 / N + 1, or inverted), ``inverted`` mixed with random invert bits,
    ``extremes`` a mix of G = 0, G = N + 1 and near-count values with inverted lanes."""
    rows = pc_m.shape[-1]
    flat = pc_m.reshape(-1, rows)
    near = flat[rng.integers(0, len(flat), rows), np.arange(rows)] + rng.integers(-1, 2, rows)
    near = np.clip(near, 0, n + 1)
    zeros = np.zeros(rows, np.int64)
    if mode == "mixed":
        return near, zeros
    if mode == "all":
        return (np.zeros(rows, np.int64), zeros) if rng.random() < 0.5 else \
            (np.full(rows, n + 1), np.ones(rows, np.int64))
    if mode == "none":
        return (np.full(rows, n + 1), zeros) if rng.random() < 0.5 else \
            (np.zeros(rows, np.int64), np.ones(rows, np.int64))
    inv = rng.integers(0, 2, rows)
    if mode == "inverted":
        return near, inv
    pick = rng.integers(0, 3, rows)
    return np.choose(pick, [np.zeros(rows, np.int64), np.full(rows, n + 1), near]), inv


def random_unit(seed, rows, cols, pe, simd, oh, ow, images, scores, gates="mixed",
                ny=1, nx=1, **extra):
    """A unit with random weights, gates drawn by ``gates`` and (unless ``scores``)
    thresholds near the actual accumulators, and its input codes ``x``."""
    rng = np.random.default_rng(seed)
    w = rng.integers(0, 2, (rows, cols))
    x = rng.integers(0, 4, (images, oh * ow, cols))
    # Some pixels all -1 or all +1 codes: the ends of both popcounts.
    x[0, 0] = rng.choice([0, 3])
    pc_m = ((x >> 1)[..., None, :] == w).sum(-1)
    gate_t, gate_inv = draw_gates(rng, gates, pc_m, cols)
    rc, cc = rng.integers(0, ny, oh), rng.integers(0, nx, ow)
    rc[:ny], cc[:nx] = np.arange(ny), np.arange(nx)
    t = None
    if not scores:
        acc, _ = reference(x, w, gate_t, gate_inv)
        acc = acc.reshape(images, oh, ow, rows)
        t = np.empty((ny, nx, rows), np.int64)
        for cy in range(ny):
            for cx in range(nx):
                pix = acc[:, rc == cy][:, :, cc == cx].reshape(-1, rows)
                t[cy, cx] = pix[rng.integers(0, len(pix), rows), np.arange(rows)] + \
                    rng.integers(-1, 2, rows)
        t.reshape(-1)[0] = -3 * cols - 5   # a constant channel below the range
    params = GatedMVTUParams(name=f"gated{seed}", rows=rows, cols=cols, pe=pe, simd=simd,
                             weights=w, gate_thresholds=gate_t, gate_invert=gate_inv,
                             pixels=oh * ow, thresholds=t, row_class=None if scores else rc,
                             col_class=None if scores else cc, **extra)
    return params, x


def stream_in(p, x):
    return [b for image in x for pixel in image for b in beats(pixel, p.simd, 2)]


def decode(p, words, images):
    width = p.score_shape.width if p.is_scores else 1
    lanes = [unpack(word, p.pe, width, signed=p.is_scores) for word in words]
    return np.concatenate(lanes).reshape(images, p.pixels, p.rows)


def simulate(dut, inputs, n_out, *, seed=0, stall_in=0.3, stall_out=0.3, cfg=(),
             max_cycles=50_000):
    """Run ``dut`` with seeded random stalls (``cfg`` beats first, then ``inputs``);
    return ``(outputs, stalls, counters)``, the last the ``stats`` output at the end (or
    ``None``). The stream rule is checked on every stream; ``TimeoutError`` when the
    outputs have not all come within ``max_cycles``."""
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    outputs, stalls, counters = [], Stalls(stall_in, stall_out), []
    has_stats = hasattr(dut, "stats")
    budget = [max_cycles]

    async def source(ctx):
        for beat in cfg:
            await stream_put(ctx, dut.cfg, beat, rng_in, stall_in, stalls)
        for item in inputs:
            await stream_put(ctx, dut.i_stream, item, rng_in, stall_in, stalls)

    async def sink(ctx):
        for _ in range(n_out):
            beat = await stream_get(ctx, dut.o_stream, rng_out, stall_out, budget, stalls)
            if beat is None:
                raise TimeoutError(f"{len(outputs)} of {n_out} outputs in {max_cycles} "
                                   f"cycles")
            outputs.append(beat)
        if has_stats:
            for _ in range(40):   # the pipeline drains (LSB items in flight)
                await ctx.tick()
            counters.append((ctx.get(dut.stats.msb_steps), ctx.get(dut.stats.lsb_steps)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source, background=True)
    ports = ["i_stream", "o_stream"] + (["cfg"] if cfg else [])
    for name in ports:
        sim.add_testbench(check_stream_rule(getattr(dut, name), f"gated.{name}"),
                          background=True)
    sim.add_testbench(sink)
    sim.run()
    return outputs, stalls, counters[0] if counters else None


def run_and_check(p, x, seed, **kw):
    want, g = expected(p, x)
    words, stalls, counters = simulate(GatedMVTU(p), stream_in(p, x), want.size // p.pe,
                                       seed=seed, **kw)
    got = decode(p, words, len(x))
    assert np.array_equal(got, want)
    return stalls, counters, g


# -- functional tests -----------------------------------------------------------------

CASES = {
    # name: (rows, cols, pe, simd, oh, ow, images, scores, gates, ny, nx)
    "nf1_sf1_scores": (4, 8, 4, 8, 1, 1, 10, True, "mixed", 1, 1),
    "nf1_sf3_threshold": (3, 12, 3, 4, 2, 2, 3, False, "inverted", 1, 1),
    "nf4_sf1_threshold": (8, 6, 2, 6, 2, 1, 3, False, "extremes", 1, 1),
    "classes_all_gated": (6, 18, 2, 6, 3, 3, 2, False, "all", 3, 3),
    "classes_none_gated": (6, 18, 2, 6, 3, 3, 2, False, "none", 3, 3),
    "wide_scores": (10, 32, 5, 8, 1, 2, 4, True, "extremes", 1, 1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_reference(name):
    seed = list(CASES).index(name)
    rows, cols, pe, simd, oh, ow, images, scores, gates, ny, nx = CASES[name]
    p, x = random_unit(seed, rows, cols, pe, simd, oh, ow, images, scores, gates, ny, nx,
                       levels_per_stage=1 + seed % 2)
    stalls, _, g = run_and_check(p, x, seed)
    assert_stalled(stalls)
    density = gated_groups(p, g).mean()
    if gates == "all":
        assert density == 1
    elif gates == "none":
        assert density == 0
    else:
        assert 0 < density


@pytest.mark.parametrize("seed", range(8))
def test_random_shapes_under_stalls(seed):
    rng = random.Random(200 + seed)
    pe, simd = rng.randint(1, 4), rng.randint(1, 6)
    rows, cols = pe * rng.randint(1, 3), simd * rng.randint(1, 4)
    oh, ow = rng.randint(1, 2), rng.randint(1, 3)
    scores = rng.random() < 0.4
    per_image = oh * ow * min(cols // simd, rows // pe)
    images = max(2, -(-10 // per_image))
    p, x = random_unit(seed, rows, cols, pe, simd, oh, ow, images, scores,
                       rng.choice(GATE_MODES), levels_per_stage=rng.randint(1, 3))
    stalls, _, _ = run_and_check(p, x, seed, stall_in=rng.choice([0.1, 0.5]),
                                 stall_out=rng.choice([0.1, 0.6]))
    assert_stalled(stalls)


@pytest.mark.parametrize("stall_in,stall_out", [(0.0, 0.85), (0.85, 0.0)])
def test_one_sided_stalls(stall_in, stall_out):
    """A stalled output with the input far ahead (the buffer's banks full, the credits
    held), and a slow input with the steps waiting on single beats."""
    p, x = random_unit(30, 4, 8, 2, 4, 2, 2, 4, False, "inverted")
    stalls, _, _ = run_and_check(p, x, 4, stall_in=stall_in, stall_out=stall_out)
    assert_stalled(stalls, inputs=stall_in > 0, outputs=stall_out > 0)


def test_step_counters_count_the_gated_groups():
    p, x = random_unit(40, 6, 12, 2, 4, 2, 2, 2, True, "extremes", stats=True)
    _, counters, g = run_and_check(p, x, 5)
    groups = int(gated_groups(p, g).sum())
    assert 0 < groups < g.size // p.pe
    assert counters == (len(x) * p.pixels * p.nf * p.sf, groups * p.sf)


def test_gate_compare_off_by_one_is_caught():
    """The checker sees a gate threshold one off: the unit built with ``G + 1`` on a lane
    where some ``pc_m == G`` disagrees with the reference of ``G``."""
    p, x = random_unit(50, 4, 12, 2, 4, 2, 2, 2, True, "mixed")
    pc_m = ((x >> 1)[..., None, :] == p.weights).sum(-1)
    lane = int(np.argwhere((pc_m == p.gate_thresholds).any((0, 1)))[0, 0])
    bad_g = p.gate_thresholds.copy()
    bad_g[lane] += 1
    bad = GatedMVTUParams(name="bad", rows=p.rows, cols=p.cols, pe=p.pe, simd=p.simd,
                          weights=p.weights, gate_thresholds=bad_g, pixels=p.pixels)
    want, _ = expected(p, x)
    words, _, _ = simulate(GatedMVTU(bad), stream_in(p, x), want.size // p.pe)
    assert not np.array_equal(decode(p, words, len(x)), want)


# -- timing ---------------------------------------------------------------------------

CYCLE_CASES = {
    # name: (rows, cols, pe, simd, oh, ow, gates)
    "nf1_sf1": (4, 8, 4, 8, 2, 2, "mixed"),
    "nf4_sf1": (8, 6, 2, 6, 2, 1, "extremes"),
    "nf1_sf4": (2, 16, 2, 4, 2, 2, "inverted"),
    "nf3_sf3_all": (6, 18, 2, 6, 2, 1, "all"),
    "nf3_sf3_none": (6, 18, 2, 6, 2, 1, "none"),
    "nf2_sf2_mixed": (4, 8, 2, 4, 3, 1, "mixed"),
}


def step_trace(dut, inputs, n_out, max_cycles=20_000):
    """Input always valid, output always ready; the step counters after every edge as
    ``[(msb_steps, lsb_steps), ...]`` until ``n_out`` outputs are taken, and the output
    payloads."""
    trace, out_edges, payloads = [], [], []
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def bench(ctx):
        ctx.set(dut.o_stream.ready, 1)
        sent = 0
        for edge in range(max_cycles):
            if sent < len(inputs):
                ctx.set(Value.cast(dut.i_stream.payload), inputs[sent])
            ctx.set(dut.i_stream.valid, int(sent < len(inputs)))
            *_, iv, ir, ov, data, m, lsb = await ctx.tick().sample(
                dut.i_stream.valid, dut.i_stream.ready, dut.o_stream.valid,
                dut.o_stream.payload, dut.stats.msb_steps, dut.stats.lsb_steps)
            sent += iv and ir
            trace.append((m, lsb))
            if ov:
                out_edges.append(edge)
                payloads.append(data)
                if len(out_edges) == n_out:
                    return
        raise TimeoutError(f"{len(out_edges)} of {n_out} outputs in {max_cycles} cycles")

    sim.add_testbench(bench)
    sim.run()
    return np.array(trace), payloads


@pytest.mark.parametrize("name", list(CYCLE_CASES))
def test_steady_state_loses_no_cycle(name):
    """Input always valid, output always ready, images back to back: from the first step
    to the last MSB step of the run a step issues on every cycle, and the counters end at
    ``images * P * SF * NF`` MSB and ``SF *`` (gated groups from the reference) LSB steps,
    so ``images`` images take ``images * P * SF * (NF + G)`` cycles plus the drain."""
    rows, cols, pe, simd, oh, ow, gates = CYCLE_CASES[name]
    seed = 60 + list(CYCLE_CASES).index(name)
    images = 4
    p, x = random_unit(seed, rows, cols, pe, simd, oh, ow, images, True, gates,
                       levels_per_stage=1 + seed % 3, stats=True)
    want, g = expected(p, x)
    per_image = p.pixels * p.nf
    trace, words = step_trace(GatedMVTU(p), stream_in(p, x), images * per_image)
    assert np.array_equal(decode(p, words, images), want)
    groups = int(gated_groups(p, g).sum())
    msb, lsb = images * p.pixels * p.sf * p.nf, p.sf * groups
    assert tuple(trace[-1]) == (msb, lsb)
    total = trace.sum(1)
    first = int(np.argmax(total > 0))
    last_msb = int(np.argmax(trace[:, 0] == msb))
    busy = total[first:last_msb + 1]
    assert np.array_equal(busy, np.arange(1, len(busy) + 1)), "a cycle without a step"
    assert total[-1] - busy[-1] == lsb - trace[last_msb, 1]
    assert p.cycles_for_density(groups / (images * per_image)) == round((msb + lsb) / images)
    assert p.cycles_for_density(1) == p.cycles_per_image


def test_lost_cycle_check_catches_a_slow_unit():
    """The trace check fails on a unit with too few result slots (credits 1)."""
    rows, cols, pe, simd, oh, ow, gates = CYCLE_CASES["nf3_sf3_all"]
    p, x = random_unit(63, rows, cols, pe, simd, oh, ow, 2, True, gates, stats=True)
    dut = GatedMVTU(p)
    dut.params = _FewCredits(p)
    trace, _ = step_trace(dut, stream_in(p, x), 2 * p.pixels * p.nf)
    total = trace.sum(1)
    first = int(np.argmax(total > 0))
    last_msb = int(np.argmax(trace[:, 0] == trace[-1, 0]))
    busy = total[first:last_msb + 1]
    assert not np.array_equal(busy, np.arange(1, len(busy) + 1))


class _FewCredits:
    """A planted fault: the parameters of ``p`` with a single result slot."""

    def __init__(self, p):
        self._p = p

    credits = 1

    def __getattr__(self, name):
        return getattr(self._p, name)


def timed_run(dut, inputs, n_out, rng, gap, max_cycles=20_000):
    """``(input edges, output edges)``: the input offered with seeded random gaps (none
    when ``gap`` is 0) from edge 0, the output always ready."""
    in_edges, out_edges = [], []
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def bench(ctx):
        ctx.set(dut.o_stream.ready, 1)
        idle = 0
        for edge in range(max_cycles):
            i = len(in_edges)
            offer = i < len(inputs) and idle == 0
            if offer:
                ctx.set(Value.cast(dut.i_stream.payload), inputs[i])
            ctx.set(dut.i_stream.valid, int(offer))
            *_, iv, ir, ov = await ctx.tick().sample(dut.i_stream.valid, dut.i_stream.ready,
                                                     dut.o_stream.valid)
            idle = max(0, idle - 1)
            if iv and ir:
                in_edges.append(edge)
                if gap and rng.random() < 0.5:
                    idle = int(rng.integers(1, gap + 1))
            if ov:
                out_edges.append(edge)
                if len(out_edges) == n_out:
                    return
        raise TimeoutError(f"{len(out_edges)} of {n_out} outputs in {max_cycles} cycles")

    sim.add_testbench(bench)
    sim.run()
    return np.array(in_edges), np.array(out_edges)


@pytest.mark.parametrize("name,gap", [(n, gap) for n in CYCLE_CASES for gap in (0, 6)])
def test_beat_times_match_the_simulation(name, gap):
    """``beat_times(t_in, gated)`` predicts every output edge of one image, with the input
    at full rate and with random gaps; a wrong gate pattern mispredicts."""
    rows, cols, pe, simd, oh, ow, gates = CYCLE_CASES[name]
    seed = 80 + list(CYCLE_CASES).index(name)
    p, x = random_unit(seed, rows, cols, pe, simd, oh, ow, 1, seed % 2 == 0, gates)
    _, g = expected(p, x)
    gated = gated_groups(p, g)[0]
    rng = np.random.default_rng(seed + gap)
    t_in, t_out = timed_run(GatedMVTU(p), stream_in(p, x), p.pixels * p.nf, rng, gap)
    assert np.array_equal(p.beat_times(t_in, gated), t_out), (p.beat_times(t_in, gated),
                                                              t_out)
    if gated.all():
        assert np.array_equal(p.beat_times(t_in), t_out)   # the default: all gated
        if gap == 0:
            assert t_out[0] == t_in[p.sf - 1] + p.latency
    elif not gated.any():
        assert not np.array_equal(p.beat_times(t_in), t_out)
        if gap == 0:
            assert t_out[0] == t_in[p.sf - 1] + p.latency_ungated


# -- run-time rewrite -----------------------------------------------------------------


@pytest.mark.parametrize("scores", [False, True])
def test_runtime_rewrite_of_weights_thresholds_and_gates(scores):
    p, x = random_unit(90, 6, 12, 2, 4, 2, 2, 2, scores, "inverted", 2, 1,
                       runtime_writable=True)
    new, _ = random_unit(91, 6, 12, 2, 4, 2, 2, 2, scores, "extremes", 2, 1)
    cfg = (cfg_beats(MemSel.WEIGHTS, p.weight_words(new.weights), p.weight_memory.width)
           + cfg_beats(MemSel.GATES, p.gate_words(new.gate_thresholds, new.gate_invert),
                       p.gate_memory.width))
    changes = {"weights": new.weights, "gate_thresholds": new.gate_thresholds,
               "gate_invert": new.gate_invert}
    if not scores:
        cfg += cfg_beats(MemSel.THRESHOLDS, p.threshold_words(new.thresholds),
                         p.threshold_params.memory.width)
        changes["thresholds"] = new.thresholds
    want, _ = expected(p, x, **changes)
    assert not np.array_equal(want, expected(p, x)[0])
    words, stalls, _ = simulate(GatedMVTU(p), stream_in(p, x), want.size // p.pe, seed=3,
                                cfg=cfg)
    assert np.array_equal(decode(p, words, len(x)), want)
    assert_stalled(stalls)


def test_converts_to_verilog():
    rng = np.random.default_rng(0)
    rows, cols = 16, 3 * 3 * 16
    p = GatedMVTUParams(name="gconv", rows=rows, cols=cols, pe=4, simd=16,
                        weights=rng.integers(0, 2, (rows, cols)),
                        gate_thresholds=rng.integers(0, cols + 2, rows),
                        gate_invert=rng.integers(0, 2, rows), pixels=8 * 8,
                        thresholds=rng.integers(-50, 50, (1, 1, rows)),
                        runtime_writable=True, stats=True)
    assert "module gconv" in verilog.convert(GatedMVTU(p), name="gconv")
    assert p.cycles_per_image == 2 * 64 * 4 * 9
    assert p.cycles_for_density(0.25) == 64 * 4 * 9 + 64 * 9


# -- parameters -----------------------------------------------------------------------

BASE = {"name": "g1", "rows": 6, "cols": 8, "pe": 2, "simd": 4,
        "weights": np.zeros((6, 8), np.int64), "gate_thresholds": np.zeros(6, np.int64)}


@pytest.mark.parametrize("change,message", [
    ({"pe": 4}, "g1: pe must divide the 6 output channels, not 4"),
    ({"simd": 3}, "g1: simd must divide the 8 inputs, not 3"),
    ({"weights": np.zeros((8, 6), np.int64)},
     r"g1: weights must have shape \[6, 8\], not \[8, 6\]"),
    ({"gate_thresholds": np.full(6, 10)}, r"g1: gate_thresholds must lie in 0..9"),
    ({"gate_thresholds": np.zeros(5, np.int64)}, r"g1: gate_thresholds must have shape"),
    ({"gate_invert": np.full(6, 2)}, "g1: gate_invert must hold bits 0/1, found 2..2"),
    ({"thresholds": np.zeros((1, 1, 5), np.int64)},
     r"g1: thresholds must have shape \[NY, NX, 6\], not \[1, 1, 5\]"),
    ({"stats": 1}, "g1: stats must be true or false, not 1"),
])
def test_bad_parameters(change, message):
    with pytest.raises(ValueError, match=message):
        GatedMVTUParams(**{**BASE, **change})
