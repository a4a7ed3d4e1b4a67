"""The network top in the Amaranth simulator: random models and foldings against the
golden model, under random stalls; truncated networks against golden activations; measured
cycles per image against the cycle model."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from bnnhw import golden
from bnnhw.beats import element_beats
from bnnhw.check import random_images
from bnnhw.errors import BnnhwError
from bnnhw.folding import Fold, default_folding, matrix_layers
from bnnhw.frontend import compile_model
from rtl_gen.network import Network, NetworkParams
from sim.stream_sim import run_stream
from tests.bnn_cases import random_model, spec_model, zoo_model
from tests.stream_helpers import SerialInput, assert_stalled, output_cycles, steady_cycles


def random_folding(graph, rng):
    folds = {}
    for layer in matrix_layers(graph):
        pes = [d for d in range(1, layer.rows + 1) if layer.rows % d == 0]
        simds = [d for d in range(1, layer.simd_base + 1) if layer.simd_base % d == 0]
        folds[layer.name] = Fold(int(rng.choice(pes)), int(rng.choice(simds)))
    return folds


def simulate(params, images, seed=0, stall=0.3):
    out = run_stream(Network(params), params.format.image_beats(images), len(images), seed=seed,
                     stall_in=stall, stall_out=stall, max_cycles=400_000)
    if stall:
        assert_stalled(out)
    return [int(o) for o in out]


def expected_beats(params, graph, images):
    gold = golden.run(graph, images)
    return [params.format.result_beat(s, c)
            for s, c in zip(gold.scores.numpy(), gold.classes.numpy())]


@pytest.mark.parametrize("seed", range(4))
def test_random_model_and_folding_match_golden(seed):
    model = random_model(seed)
    graph = compile_model(model)
    params = NetworkParams(graph, random_folding(graph, np.random.default_rng(seed)))
    images = random_images(model.spec["input"]["shape"], 3, seed)   # 3 results to hold
    assert simulate(params, images, seed) == expected_beats(params, graph, images)


def test_truncated_network_streams_golden_activations():
    model = zoo_model("tiny", seed=3)
    graph = compile_model(model)
    images = random_images(model.spec["input"]["shape"], 2, 5)
    acts = golden.run(graph, images, activations=True).activations
    for node in (graph.nodes[0].name, graph.nodes[1].name, graph.nodes[2].name):
        params = NetworkParams(graph, default_folding(graph), until=node)
        want = element_beats(acts[node].numpy(), *params.out_elements)
        out = run_stream(Network(params), params.format.image_beats(images), len(want), seed=1,
                         max_cycles=200_000)
        assert [int(o) for o in out] == want
        assert_stalled(out)


def test_flipped_weight_bit_is_caught():
    """The comparison can fail: hardware with one weight bit flipped disagrees."""
    model = zoo_model("tiny", seed=1)
    graph = compile_model(model)
    folds = default_folding(graph)
    images = random_images(model.spec["input"]["shape"], 3, 2)
    last = graph.nodes[-1]
    w = last.weights.copy()
    w[0, 0] ^= 1  # class 0's dot product moves by +-2 on every image
    bad = graph.replace([*graph.nodes[:-1], last.replace(weights=w)])
    params = NetworkParams(bad, folds)
    assert simulate(params, images, stall=0.0) != expected_beats(params, graph, images)


def test_frame_flags_checked():
    model = zoo_model("tiny", seed=0)
    graph = compile_model(model)
    params = NetworkParams(graph, default_folding(graph))
    images = random_images(model.spec["input"]["shape"], 1, 0)
    beats = params.format.image_beats(images)
    data_bits = 8 * graph.input.in_shape[2]

    for corrupt, flagged in ((None, 0), (5, 1)):
        sent = list(beats)
        if corrupt is not None:
            sent[corrupt] |= 1 << (data_bits + 1)  # a stray "last" mid-image
        net = Network(params)
        sim = Simulator(net)
        sim.add_clock(1e-8)
        seen = []

        async def bench(ctx, sent=sent, net=net, seen=seen):
            ctx.set(net.o_stream.ready, 1)
            for b in sent:
                ctx.set(net.i_stream.payload.as_value(), b)
                ctx.set(net.i_stream.valid, 1)
                await ctx.tick().until(net.i_stream.ready)
            ctx.set(net.i_stream.valid, 0)
            await ctx.tick()
            seen.append(ctx.get(net.frame_error))

        sim.add_testbench(bench)
        sim.run()
        assert seen == [flagged]


def test_folding_must_divide():
    model = zoo_model("tiny", seed=0)
    graph = compile_model(model)
    folds = default_folding(graph)
    name = next(iter(folds))
    with pytest.raises(BnnhwError, match="pe must divide"):
        NetworkParams(graph, {**folds, name: Fold(pe=7, simd=1)})


def test_default_sfc_cycle_model():
    """The cycle model is the slowest engine; for sfc it is the first dense layer."""
    graph = compile_model(zoo_model("sfc", seed=0, calibration=2))
    params = NetworkParams(graph, default_folding(graph))
    assert params.cycles_per_image == max(s.cycles_per_image for s in params.stages)
    first = params.stages[[s.name for s in params.stages].index("dense1_mvtu")].params
    assert first.cycles_per_image == (256 // first.pe) * (784 // first.simd)


RATE_NETS = {
    # A tfc-shaped net: the encoder (one pixel per cycle) and dense1 (NF * SF = 4 * 49)
    # both take 196 cycles per image, so dense1 must compute while its input arrives.
    "fc": ([{"type": "dense", "out": 32}, {"type": "dense", "out": 10}], "binary", (1, 14, 14),
           [Fold(8, 4), Fold(1, 2)]),
    # A CNV-shaped net: conv1 (NF = 4) is fed windows at the pace of conv0's rows.
    "cnv": ([{"type": "conv", "out": 8, "kernel": 3}, {"type": "conv", "out": 8, "kernel": 3},
             {"type": "maxpool", "kernel": 2}, {"type": "dense", "out": 10}], "uint8",
            (3, 8, 8), [Fold(8, 3), Fold(2, 8), Fold(1, 1)]),
}


def measured_cycles(name, serial_mvtu=None):
    """``(steady cycles per image, model, outputs, golden beats)`` of a ``RATE_NETS``
    network on 3 images, input at full rate, output always ready. ``serial_mvtu`` names
    an MVTU to wrap in a planted single-buffer input (``SerialInput``)."""
    layers, encoding, shape, folds = RATE_NETS[name]
    model = spec_model(layers, encoding, shape, seed=3)
    graph = compile_model(model)
    params = NetworkParams(graph, dict(zip([m.name for m in matrix_layers(graph)], folds,
                                           strict=True)))
    net = Network(params)
    if serial_mvtu is not None:
        i = [s.name for s in params.stages].index(serial_mvtu)
        p = params.stages[i].params
        net.blocks[i] = SerialInput(net.blocks[i], p.sf, (p.nf - 1) * p.sf)
    images = random_images(shape, 3, 4)
    stamps, out = output_cycles(net, params.format.image_beats(images), len(images))
    return (steady_cycles(stamps, 1), params.cycles_per_image, [int(o) for o in out],
            expected_beats(params, graph, images))


@pytest.mark.parametrize("name", list(RATE_NETS))
def test_measured_cycles_meet_the_model(name):
    """Steady-state cycles per image (no stalls) within 5% of the slowest engine's."""
    steady, model, out, want = measured_cycles(name)
    assert out == want
    assert all(abs(c - model) <= 0.05 * model for c in steady), (steady, model)


def test_cycle_check_catches_a_serial_mvtu():
    """The same check fails when dense1 refuses input while it replays a vector."""
    steady, model, out, want = measured_cycles("fc", serial_mvtu="dense1_mvtu")
    assert out == want
    assert not all(abs(c - model) <= 0.05 * model for c in steady)
