"""Fractional (FracBNN) networks in hardware: the small fractional network verified under
Verilator on 200 images at two foldings with stalls on both ends, the gated units' step
counters against the golden model's gates, the cycle model at the measured density, the
planned blocks against the real stages, and a run-time rewrite of weights, thresholds and
gates through ``cfg``."""

from __future__ import annotations

import numpy as np
import pytest

from bnnhw import golden, ir
from bnnhw import resources as rs
from bnnhw.check import random_images
from bnnhw.data import adapt, load_dataset
from bnnhw.flows.verify import verify_graph
from bnnhw.folding import default_folding, matrix_layers, two_foldings
from bnnhw.frontend import compile_model
from bnnhw.gate_density import attach, item_density
from bnnhw.manifest import Manifest
from bnnhw.nn import zoo
from bnnhw.train import TrainConfig, train
from rtl_gen.network import NetworkParams
from tests.rtl_gen.test_network_cfg import expected, run
from tests.test_frac_golden import frac_model

IMAGES = 200


@pytest.fixture(scope="module")
def tiny_frac():
    """tiny-frac trained two epochs on 2,000 bundled MNIST images, and its test images."""
    data = load_dataset("mnist")
    result = train(zoo.get_spec("tiny-frac"), data,
                   TrainConfig(epochs=2, limit=2000, seed=0))
    model = result.model
    images = adapt(data.test_x[:IMAGES], model.spec["input"]["shape"]).numpy()
    return model, compile_model(model), images


@pytest.mark.parametrize("fold_name", ["default", "fast"])
def test_tiny_frac_matches_golden_under_verilator(tiny_frac, fold_name):
    _, graph, images = tiny_frac
    assert any(isinstance(n, ir.Dense) and n.gated for n in graph.nodes)
    folds = two_foldings(attach(graph, images, "test"))[fold_name]
    report = verify_graph(graph, folds, images, stall=0.2, seed=3)
    assert report.stalled_run
    assert report.mismatches == 0 and report.extra_beats == 0, report.format()
    assert abs(report.cycle_error) <= 0.05, report.format()
    gates = golden.gate_maps(graph, images)
    assert report.gated, report.format()
    for g in report.gated:
        p = next(s.params for s in NetworkParams(graph, folds).gated_stages
                 if s.node == g.node)
        want = item_density(gates[g.node], p.pe) * p.pixels * p.nf * p.sf
        # the LSB pass ran exactly the open items of the golden model's gates
        assert g.lsb_steps == pytest.approx(want, abs=1e-9), report.format()
        assert g.msb_steps == p.pixels * p.nf * p.sf
        assert g.ungated_cycles == 2 * p.pixels * p.nf * p.sf


def test_a_planted_gate_fault_is_caught_under_verilator(tiny_frac):
    _, graph, images = tiny_frac
    node = next(n for n in graph.nodes if isinstance(n, ir.Dense) and n.gated)
    bad = graph.replace([n.replace(gate_invert=1 - n.gate_invert) if n is node else n
                         for n in graph.nodes])
    report = verify_graph(graph, default_folding(graph), images[:20], hardware_graph=bad)
    assert report.mismatches > 0
    assert report.first_mismatch is not None and report.first_mismatch.layer == node.name


@pytest.mark.parametrize("seed", [1, 5, 9])
@pytest.mark.parametrize("writable", [False, True])
def test_planned_blocks_are_the_stages_blocks(seed, writable):
    graph = attach(compile_model(frac_model(seed)), _images(graph_of(seed)), "random")
    for folds in two_foldings(graph).values():
        params = NetworkParams(graph, folds, runtime_writable=writable)
        planned = rs.plan_blocks(graph, folds, runtime_writable=writable)
        assert planned == rs.blocks_of_stages(params.stages)
        assert max(b.cycles for b in planned) == params.cycles_per_image
        layers = {m.name: m for m in matrix_layers(graph)}
        for s in params.stages:
            if s.node in layers and s.name.endswith("_mvtu"):
                assert s.cycles_per_image == layers[s.node].cycles(folds[s.node])


def graph_of(seed: int) -> ir.Graph:
    return compile_model(frac_model(seed))


def _images(graph: ir.Graph) -> np.ndarray:
    h, w, c = graph.input.in_shape
    return random_images((c, h, w), 16, 4).numpy()


FRAC_LAYERS = [{"type": "conv", "out": 4, "kernel": 3, "padding": 1, "pad_value": -1,
                "activation": "frac2"},
               {"type": "maxpool", "kernel": 2},
               {"type": "conv", "out": 4, "kernel": 3, "padding": 1, "pad_value": 1,
                "activation": "frac2"},
               {"type": "dense", "out": 6, "scale": True, "activation": "frac2"},
               {"type": "dense", "out": 5, "scale": True, "bias": True}]


def test_written_weights_thresholds_and_gates_replace_the_built_ones():
    from tests.bnn_cases import spec_model
    from tests.test_frac_golden import randomize_gates

    graphs = []
    for seed in (1, 2):
        model = spec_model(FRAC_LAYERS, "binary", (1, 8, 8), seed=seed)
        randomize_gates(model, np.random.default_rng(seed))
        graphs.append(compile_model(model))
    a, b = graphs
    folds = default_folding(a)
    params = NetworkParams(a, folds, runtime_writable=True)
    manifest = Manifest.of(a, folds)
    assert manifest.digest == Manifest.of(b, folds).digest  # same topology
    assert any(n.gated for n in a.nodes if isinstance(n, (ir.Conv, ir.Dense)))
    images = random_images((1, 8, 8), 4, 3)
    beats = [(i, beat) for i in range(len(manifest.targets))
             for beat in manifest.target_beats(b, i)]
    assert expected(params, a, images) != expected(params, b, images)
    assert run(params, beats, images) == expected(params, b, images)
