"""A run-time writable network: one design, built for model A, serves model B once B's
weights, thresholds and class map are written through the top's ``cfg`` stream (the
beats of ``bnnhw.manifest.Manifest.target_beats``)."""

from __future__ import annotations

import pytest
from amaranth.hdl import Value
from amaranth.sim import Simulator

from bnnhw import golden
from bnnhw.check import random_images
from bnnhw.folding import default_folding
from bnnhw.frontend import compile_model
from bnnhw.manifest import Manifest
from rtl_gen.network import Network, NetworkParams
from tests.bnn_cases import spec_model

LAYERS = [{"type": "conv", "out": 4, "kernel": 3, "padding": 1},
          {"type": "maxpool", "kernel": 2},
          {"type": "dense", "out": 8, "scale": True},
          {"type": "dense", "out": 5, "scale": True, "bias": True}]


def run(params, beats, images):
    """Write ``beats`` (``(target, beat)``) through ``cfg``, then stream ``images``; the
    output beats."""
    net = Network(params)
    fmt = params.format
    pixels = fmt.image_beats(images)
    out = []
    sim = Simulator(net)
    sim.add_clock(1e-8)

    async def bench(ctx):
        for target, beat in beats:
            ctx.set(net.cfg.payload.target, target)
            ctx.set(net.cfg.payload.beat, beat)
            ctx.set(net.cfg.valid, 1)
            await ctx.tick()
        ctx.set(net.cfg.valid, 0)
        ctx.set(net.o_stream.ready, 1)
        i = 0
        for _ in range(200_000):
            if i < len(pixels):
                ctx.set(Value.cast(net.i_stream.payload), pixels[i])
            ctx.set(net.i_stream.valid, int(i < len(pixels)))
            *_, iv, ir, ov, op = await ctx.tick().sample(
                net.i_stream.valid, net.i_stream.ready, net.o_stream.valid,
                Value.cast(net.o_stream.payload))
            i += int(iv and ir)
            if ov:
                out.append(op)
                if len(out) == len(images):
                    return
        raise TimeoutError("the network did not answer")

    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.fixture(scope="module")
def models():
    a = compile_model(spec_model(LAYERS, "binary", (1, 8, 8), seed=1))
    b = compile_model(spec_model(LAYERS, "binary", (1, 8, 8), seed=2))
    return a, b


def expected(params, graph, images):
    gold = golden.run(graph, images)
    return [params.format.result_beat(s, c)
            for s, c in zip(gold.scores.numpy(), gold.classes.numpy())]


def test_written_weights_replace_the_built_ones(models):
    a, b = models
    folds = default_folding(a)
    params = NetworkParams(a, folds, runtime_writable=True)
    manifest = Manifest.of(a, folds)
    assert manifest.digest == Manifest.of(b, folds).digest  # same topology
    assert [s.name for s in params.targets] == [f"{t.name}_mvtu" if t.kind == "matrix"
                                                else "classify" for t in manifest.targets]
    images = random_images((1, 8, 8), 4, 3)
    beats = [(i, beat) for i in range(len(manifest.targets))
             for beat in manifest.target_beats(b, i)]
    assert expected(params, a, images) != expected(params, b, images)
    assert run(params, [], images) == expected(params, a, images)
    assert run(params, beats, images) == expected(params, b, images)


def test_a_missing_target_leaves_the_old_values(models):
    """The check can fail: writing all but the class map gives A's classes on B's scores."""
    a, b = models
    folds = default_folding(a)
    params = NetworkParams(a, folds, runtime_writable=True)
    manifest = Manifest.of(a, folds)
    images = random_images((1, 8, 8), 6, 4)
    beats = [(i, beat) for i in range(len(manifest.targets) - 1)
             for beat in manifest.target_beats(b, i)]
    assert run(params, beats, images) != expected(params, b, images)
