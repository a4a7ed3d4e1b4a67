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
from tests.bnn_cases import cnv_small, random_model, spec_model, zoo_model
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


# -- pixels per beat and memory styles -----------------------------------------------------

K_NETS = {
    # a dense first layer: k pixels per beat lift the one-pixel-per-cycle cap
    "fc": ([{"type": "dense", "out": 16}, {"type": "dense", "out": 10}], "thermometer",
           (2, 6, 6), [Fold(4, 24), Fold(2, 4)], 4),
    "fc-whole": ([{"type": "dense", "out": 16}, {"type": "dense", "out": 10}], "binary",
                 (1, 6, 6), [Fold(16, 36), Fold(10, 16)], 36),
    # a conv first layer takes one pixel per cycle at most: the converter paces the input
    "conv": ([{"type": "conv", "out": 4, "kernel": 3}, {"type": "dense", "out": 5}], "uint8",
             (3, 6, 6), [Fold(4, 3), Fold(1, 16)], 2),
}


def k_network(name):
    layers, encoding, shape, folds, k = K_NETS[name]
    model = spec_model(layers, encoding, shape, seed=1)
    graph = compile_model(model)
    names = [m.name for m in matrix_layers(graph)]
    return graph, shape, NetworkParams(graph, dict(zip(names, folds, strict=True)),
                                       pixels_per_beat=k)


@pytest.mark.parametrize("name", list(K_NETS))
def test_pixels_per_beat_match_golden_and_the_cycle_models(name):
    from tests.rtl_gen.test_latency import timed_run

    graph, shape, params = k_network(name)
    images = random_images(shape, 4, 2)
    assert simulate(params, images, seed=2) == expected_beats(params, graph, images)
    beats = params.format.image_beats(images[:1])
    assert len(beats) == params.beats_per_image == 36 // params.pixels_per_beat
    t_in, t_out = timed_run(Network(params), beats, 1)
    assert int(t_out[0] - t_in[0]) == params.latency  # exact, as for one pixel per beat
    stamps, _ = output_cycles(Network(params), params.format.image_beats(images), 4)
    assert all(c == params.cycles_per_image for c in steady_cycles(stamps, 1))


def test_pixels_per_beat_lift_the_input_cap():
    """tfc: 784 cycles per image at one pixel per beat whatever the folding; 16 pixels per
    beat take 49 cycles, 49 let the folding set the II."""
    graph = compile_model(zoo_model("tfc", seed=0, calibration=2))
    folds = {"dense1": Fold(64, 49), "dense4": Fold(16, 16), "dense7": Fold(16, 16),
             "dense10": Fold(10, 16)}
    one = NetworkParams(graph, folds)
    sixteen = NetworkParams(graph, folds, pixels_per_beat=16)
    many = NetworkParams(graph, folds, pixels_per_beat=49)
    assert one.cycles_per_image == 784 and one.bottleneck.name == "input_encoder"
    assert sixteen.cycles_per_image == 49 and sixteen.format.in_layout.size == 16 * 8 + 2
    assert many.cycles_per_image == 16  # the layers, as fast as the input now
    with pytest.raises(ValueError, match="pixels_per_beat must divide the 784 pixels"):
        NetworkParams(graph, folds, pixels_per_beat=5)


def test_verilator_pixels_per_beat_match_golden():
    """Verilator regression (the C++ stream harness): tfc at 16 pixels per beat, its
    memories in LUT ROMs and block RAM, against the golden model, and the cycle model."""
    from sim.fast import run_stream_fast

    graph = compile_model(zoo_model("tfc", seed=0, calibration=2))
    folds = {"dense1": Fold(16, 49), "dense4": Fold(4, 16), "dense7": Fold(4, 16),
             "dense10": Fold(2, 16)}
    styles = {"dense1.weights": "block", "dense4.weights": "logic",
              "dense1.thresholds": "logic", "dense7.weights": "block"}
    params = NetworkParams(graph, folds, pixels_per_beat=16, memory_styles=styles)
    images = random_images((1, 28, 28), 6, 3)
    res = run_stream_fast(Network(params), params.format.image_beats(images), len(images),
                          stall_in=0, stall_out=0, timeout_cycles=200_000)
    assert res.out_beats == expected_beats(params, graph, images)
    gaps = np.diff(res.out_cycles[1:])
    assert set(gaps.tolist()) == {params.cycles_per_image} == {64}
    stalled = run_stream_fast(Network(params), params.format.image_beats(images), len(images),
                              seed=4, stall_in=0.3, stall_out=0.3, timeout_cycles=400_000)
    assert stalled.out_beats == res.out_beats


def test_frame_flags_are_per_beat_with_several_pixels():
    _, shape, params = k_network("fc")
    beats = params.format.image_beats(random_images(shape, 1, 0))
    assert [params.format.in_layout.from_bits(b)["first"] for b in beats] == [1] + [0] * 8
    assert [params.format.in_layout.from_bits(b)["last"] for b in beats] == [0] * 8 + [1]


def test_memory_styles_keep_the_outputs():
    """Every style of every weight and threshold memory computes the same thing."""
    model = cnv_small()
    graph = compile_model(model)
    folds = default_folding(graph)
    images = random_images(model.spec["input"]["shape"], 3, 6)
    plain = NetworkParams(graph, folds)
    want = expected_beats(plain, graph, images)
    names = [n for n, kind in plain.memories.items() if kind != "class_map"]
    for styles in ({n: "logic" for n in names},
                   {n: ("block" if i % 2 else "logic") for i, n in enumerate(names)}):
        params = NetworkParams(graph, folds, memory_styles=styles)
        assert simulate(params, images, seed=1) == want
        kinds = {type(s.params).__name__ for s in params.stages}
        assert "StyledMVTUParams" in kinds


def test_memory_styles_are_validated():
    graph = compile_model(zoo_model("tiny", seed=0))
    folds = default_folding(graph)
    assert list(NetworkParams(graph, folds).memories) == [
        "conv0.weights", "conv0.thresholds", "dense5.weights", "dense5.thresholds",
        "dense8.weights", "classify.class_map"]
    with pytest.raises(ValueError, match="network: no memory named 'conv9.weights' to give "
                                         "a style \\(memories: conv0.weights, "):
        NetworkParams(graph, folds, memory_styles={"conv9.weights": "block"})
    with pytest.raises(ValueError, match="conv0.weights: memory style must be one of auto, "
                                         "block, lutram, logic, not 'ultra'"):
        NetworkParams(graph, folds, memory_styles={"conv0.weights": "ultra"})
    with pytest.raises(ValueError, match="dense5.thresholds: a run-time writable memory "
                                         "cannot be a ROM of LUTs"):
        NetworkParams(graph, folds, runtime_writable=True,
                      memory_styles={"dense5.thresholds": "logic"})
    with pytest.raises(ValueError, match="conv0.weights: a read-only memory cannot be LUT "
                                         "RAM"):
        NetworkParams(graph, folds, memory_styles={"conv0.weights": "lutram"})
    with pytest.raises(ValueError, match="classify.class_map: the classifier's map memory "
                                         "takes only style 'auto', not 'block'"):
        NetworkParams(graph, folds, memory_styles={"classify.class_map": "block"})
    ok = NetworkParams(graph, folds, runtime_writable=True,
                       memory_styles={"conv0.weights": "lutram", "dense5.weights": "block"})
    assert ok.memory_style("conv0.weights") == "lutram"
    assert ok.memory_style("dense8.weights") == "auto"
