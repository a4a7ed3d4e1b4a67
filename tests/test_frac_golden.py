"""Fractional (FracBNN) models: the golden model against the QAT model on every activation
bit, the lowering's integer forms, and the planted faults the check catches.

Random fractional specs cover binary and thermometer inputs, convolutions and dense
layers with binary or frac2 activations (so gated layers with binary and fractional
outputs), +-1 padding of gated convolutions, pools before and after BatchNorm, scale and
bias on and off; BatchNorm statistics are randomised with negative and zero scales and the
gate thresholds are random, some of them exactly on a tie of ``2 msb = 3 t``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch

from bnnhw import golden, ir
from bnnhw.check import check_model, random_images, randomize_batchnorm
from bnnhw.frontend import compile_model, gate_thresholds
from bnnhw.nn import SpecError, build_model, normalize_spec
from bnnhw.nn.layers import GatedConv2d, GatedLinear


def random_frac_spec(rng: np.random.Generator) -> dict[str, Any]:
    """A random valid fractional spec (module docstring)."""
    while True:
        enc = str(rng.choice(["binary", "thermometer"]))
        spec: dict[str, Any] = {"input": {
            "shape": [int(rng.integers(1, 3)), int(rng.integers(6, 12)),
                      int(rng.integers(6, 12))],
            "encoding": enc, "threshold": int(rng.integers(1, 255)),
            "levels": int(rng.integers(1, 4))}, "layers": []}
        layers = spec["layers"]
        frac_in = False
        for _ in range(int(rng.integers(1, 3))):
            pad = int(rng.integers(0, 2))
            layers.append({"type": "conv", "out": int(rng.choice([2, 3, 4, 6])),
                           "kernel": int(rng.integers(1, 4)), "stride": int(rng.integers(1, 3)),
                           "padding": pad,
                           "pad_value": int(rng.choice([1, -1])) if frac_in or pad == 0
                           else int(rng.choice([0, 1, -1])),
                           "scale": bool(rng.random() < 0.5), "bias": bool(rng.random() < 0.5),
                           "activation": "frac2" if rng.random() < 0.7 else "binary"})
            frac_in = layers[-1]["activation"] == "frac2"
            if rng.random() < 0.5:
                layers.append({"type": "maxpool", "kernel": int(rng.integers(1, 3)),
                               "stride": int(rng.integers(1, 3)),
                               "before_bn": bool(rng.random() < 0.5)})
        for _ in range(int(rng.integers(0, 2))):
            layers.append({"type": "dense", "out": int(rng.choice([3, 4, 6])),
                           "scale": bool(rng.random() < 0.5), "bias": bool(rng.random() < 0.5),
                           "activation": "frac2" if rng.random() < 0.6 else "binary"})
        layers.append({"type": "dense", "out": int(rng.integers(2, 6)),
                       "scale": bool(rng.random() < 0.5), "bias": bool(rng.random() < 0.5)})
        try:
            return normalize_spec(spec)
        except SpecError:
            continue


def randomize_gates(model: torch.nn.Module, rng: np.random.Generator) -> None:
    """Random gate thresholds around each gated layer's msb range; every fourth an even
    integer, where ``2 msb = 3 t`` is an exact tie for ``msb = 3 t / 2``."""
    for m in model.modules():
        if isinstance(m, (GatedConv2d, GatedLinear)):
            n = m.weight[0].numel()
            t = rng.uniform(-0.6 * n, 0.6 * n, m.gate_threshold.shape)
            ties = rng.random(t.shape) < 0.25
            t[ties] = 2 * np.round(t[ties] / 2)
            with torch.no_grad():
                m.gate_threshold.copy_(torch.from_numpy(t.astype(np.float32)))


def frac_model(seed: int) -> torch.nn.Module:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = build_model(random_frac_spec(rng))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(getattr(m, "bias", None), torch.Tensor) \
                    and not isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.bias.normal_(0, 0.5)
    randomize_gates(model, rng)
    return randomize_batchnorm(model, seed)


def gated_nodes(graph: ir.Graph) -> list[ir.Conv | ir.Dense]:
    return [n for n in graph.nodes if isinstance(n, (ir.Conv, ir.Dense)) and n.gated]


@pytest.mark.parametrize("seed", range(24))
def test_golden_matches_qat_on_every_activation_bit(seed):
    model = frac_model(seed)
    graph = compile_model(model)
    report = check_model(model, random_images(model.spec["input"]["shape"], 48, seed))
    assert report.ok, report.format()
    assert report.class_bugs == 0 and report.bugs == 0
    # the property is about fractional models: most seeds have a gated layer and codes
    kinds = {u.kind for u in report.layers}
    assert gated_nodes(graph) or "codes" in kinds or seed % 4 == 3


def test_random_specs_cover_the_fractional_features():
    """The property test's models: gated convs and dense layers, binary and frac2 outputs,
    flipped (inverted) gates, pools of codes, and ties of the gate."""
    seen: set[str] = set()
    for seed in range(24):
        graph = compile_model(frac_model(seed))
        for i, node in enumerate(graph.nodes):
            if isinstance(node, (ir.Conv, ir.Dense)):
                if node.gated:
                    seen.add(f"gated {node.op}")
                    seen.add("gated frac2 out" if node.out_levels == 3 else "gated bit out")
                    if node.gate_invert.any():
                        seen.add("inverted gate")
                    if isinstance(node, ir.Conv) and node.padding:
                        seen.add(f"gated pad {node.pad_bit}")
                elif node.out_levels == 3:
                    seen.add("binary in, frac2 out")
            if isinstance(node, ir.MaxPool) and isinstance(graph.nodes[i - 1], (ir.Conv,)) \
                    and graph.nodes[i - 1].out_levels == 3:
                seen.add("pool of codes")
    want = {"gated conv", "gated dense", "gated frac2 out", "gated bit out", "inverted gate",
            "binary in, frac2 out", "pool of codes", "gated pad 0", "gated pad 3"}
    assert want <= seen, want - seen


def test_gate_threshold_is_exact_on_ties():
    """``2 msb > 3 t`` on integers: at ``t = 2`` and ``N = 5``, ``msb = 3`` (``pc_m = 4``) is a
    tie and closed, ``msb = 5`` is open; the integer threshold is ``pc_m >= 5``."""
    assert gate_thresholds(np.array([2.0]), 5).tolist() == [5]
    for t in (-7.0, -2.5, -1.0, 0.0, 0.4, 2.0, 3.0, 7.9):
        for n in (1, 4, 5, 9):
            (g,) = gate_thresholds(np.array([t]), n).tolist()
            for pc in range(n + 1):
                msb = 2 * pc - n
                assert (pc >= g) == (2 * msb > 3 * Fraction(t)), (t, n, pc)


def test_frac2_thresholds_round_ties_up():
    """A gated dense layer whose real output lands exactly on the quantiser's boundaries:
    ``q`` counts the boundaries reached, a value on one rounding up."""
    model = build_model({"input": {"shape": [1, 2, 2], "encoding": "binary"},
                         "layers": [{"type": "dense", "out": 3, "activation": "frac2",
                                     "batchnorm": False, "bias": True},
                                    {"type": "dense", "out": 2}]})
    lin = model.layers[1]
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.copy_(torch.tensor([0.0, 2.0, -2.0]))
    graph = compile_model(model)
    node = graph.nodes[1]
    assert node.out_levels == 3
    images = torch.tensor([[[[255, 255], [255, 0]]]])  # dot = 2
    acts = golden.run(graph, images, activations=True).activations
    qat = model.layers[:3](model.encoder(images.float()))
    want = ((3 * qat.double() + 3) / 2).round().long()
    assert torch.equal(acts[node.name], want)


def test_planted_gate_fault_is_reported():
    model = frac_model(1)
    graph = compile_model(model)
    node = gated_nodes(graph)[0]
    images = random_images(model.spec["input"]["shape"], 64, 5)
    faulty = graph.replace([n.replace(gate_invert=1 - n.gate_invert) if n.name == node.name
                            else n for n in graph.nodes])  # every gate of the layer inverted
    assert check_model(model, images, graph).ok
    report = check_model(model, images, faulty)
    assert not report.ok and (report.bugs > 0 or report.class_bugs > 0), report.format()


def test_planted_frac_threshold_fault_is_reported():
    model = frac_model(2)
    graph = compile_model(model)
    node = next(n for n in graph.nodes if isinstance(n, (ir.Conv, ir.Dense))
                and n.out_levels == 3)
    t = node.thresholds.copy()
    t[..., 0, 1] = t[..., 0, 2]  # the middle threshold moved up to the top one
    images = random_images(model.spec["input"]["shape"], 64, 6)
    faulty = graph.replace([n.replace(thresholds=t) if n.name == node.name else n
                            for n in graph.nodes])
    report = check_model(model, images, faulty)
    assert not report.ok, report.format()


def test_gated_graph_round_trips_through_files(tmp_path):
    graph = compile_model(frac_model(3))
    path = ir.save_graph(graph, tmp_path / "f.ir")
    assert ir.load_graph(path) == graph


def test_ir_refuses_bad_gated_fields():
    graph = compile_model(frac_model(1))
    node = gated_nodes(graph)[0]
    with pytest.raises(ValueError, match="gate"):
        node.replace(gate=None)
    with pytest.raises(ValueError, match="gate"):
        node.replace(gate=np.full(node.rows, node.cols + 2))
    t = next(n for n in graph.nodes if isinstance(n, (ir.Conv, ir.Dense)) and n.out_levels == 3)
    bad = t.thresholds.copy()
    bad[..., 0, 0] = bad[..., 0, 2] + 1
    if bad[..., 0, 0].max() <= t.threshold_max:
        with pytest.raises(ValueError, match="ascending"):
            t.replace(thresholds=bad)
