"""Golden model against the QAT models it was compiled from: zoo models with far-from-trivial
BatchNorm statistics, and random specs covering every feature the frontend lowers."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from bnnhw import frontend, golden, ir
from bnnhw.check import check_model, random_images
from bnnhw.errors import BnnhwError
from tests.bnn_cases import random_model, random_spec, zoo_model

ZOO = [  # (name, kwargs, images)
    ("tfc", {}, 16),
    ("sfc", {}, 16),
    ("lfc", {}, 8),
    ("tiny", {}, 16),
    ("cnv", {}, 2),
    ("vgg", {"width": 0.125}, 4),
    ("vgg", {}, 1),  # the full-size structure
]


def _assert_agrees(report) -> None:
    assert report.class_agreement == 1.0, report.format()
    assert report.bugs == 0, report.format()
    assert report.ok


@pytest.mark.parametrize(("name", "kwargs", "count"), ZOO,
                         ids=[f"{n}{'-' + str(k['width']) if k else ''}" for n, k, _ in ZOO])
def test_zoo_golden_matches_qat(name, kwargs, count):
    model = zoo_model(name, seed=1, calibration=2 if count == 1 else 8, **kwargs)
    report = check_model(model, random_images(model.spec["input"]["shape"], count, seed=2))
    _assert_agrees(report)
    assert report.ties == 0  # random data: no exact float ties expected


@pytest.mark.parametrize("name", ["tfc", "cnv", "vgg"])
def test_zoo_cases_are_far_from_trivial(name):
    """Every hidden layer's bits take both values often, so the checks above bite."""
    model = zoo_model(name, seed=1, **({"width": 0.125} if name == "vgg" else {}))
    graph = frontend.compile_model(model)
    acts = golden.run(graph, random_images(model.spec["input"]["shape"], 2, 3),
                      activations=True).activations
    for node in graph.nodes[1:-1]:
        mean = acts[node.name].float().mean().item()
        assert 0.1 < mean < 0.9, (node.name, mean)
    flipped = sum(int((n.scale < 0).sum()) for n in frontend.import_model(model).nodes
                  if getattr(n, "op", "") == "affine")
    assert flipped > 0  # negative BatchNorm scales are exercised


RANDOM_SEEDS = range(32)


@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_random_specs_golden_matches_qat(seed):
    model = random_model(seed)
    report = check_model(model, random_images(model.spec["input"]["shape"], 4, seed))
    _assert_agrees(report)
    assert report.ties == 0


def test_random_specs_cover_every_feature():
    """The seeds above exercise each feature the brief lists at least once."""
    seen = collections.Counter()
    for seed in RANDOM_SEEDS:
        spec = random_spec(np.random.default_rng(seed))  # as random_model(seed) draws it
        seen[spec["input"]["encoding"]] += 1
        for lay in spec["layers"]:
            if lay["type"] == "conv":
                seen[f"kernel{lay['kernel']}"] += 1
                seen[f"stride{lay['stride']}"] += 1
                seen[f"padding{lay['padding']}"] += 1
                if lay["padding"]:
                    seen[f"pad_value{lay['pad_value']}"] += 1
                seen["conv scale" if lay["scale"] else "conv no scale"] += 1
                seen["conv bias" if lay["bias"] else "conv no bias"] += 1
                seen["odd channels" if lay["out"] % 2 else "even channels"] += 1
            elif lay["type"] == "maxpool":
                seen["pool before bn" if lay["before_bn"] else "pool after sign"] += 1
            else:
                seen["dense scale" if lay["scale"] else "dense no scale"] += 1
    want = ({"binary", "uint8", "thermometer", "pool before bn", "pool after sign",
             "odd channels", "conv scale", "conv no scale", "conv bias", "conv no bias",
             "dense scale", "dense no scale"}
            | {f"kernel{k}" for k in range(1, 6)} | {"stride1", "stride2"}
            | {f"padding{p}" for p in range(3)} | {f"pad_value{v}" for v in (0, 1, -1)})
    assert want <= set(seen), sorted(want - set(seen))


def test_activations_are_the_node_chain():
    model = zoo_model("tiny", seed=4)
    graph = frontend.compile_model(model)
    images = random_images(model.spec["input"]["shape"], 5, 5)
    res = golden.run(graph, images, activations=True)
    x = torch.as_tensor(images).permute(0, 2, 3, 1)
    for node in graph.nodes:
        x = golden.run_node(node, x)
        got = res.activations[node.name]
        assert got.dtype == torch.int64 and tuple(got.shape[1:]) == node.out_shape
        assert torch.equal(got, x)
    assert torch.equal(res.scores, x)
    logits = res.scores.double() * torch.tensor(graph[-1].scale) + torch.tensor(graph[-1].bias)
    assert torch.equal(res.classes, logits.argmax(1))


def test_batching_and_chunking_do_not_change_results(monkeypatch):
    model = zoo_model("vgg", seed=6, width=0.125)
    graph = frontend.compile_model(model)
    images = random_images(model.spec["input"]["shape"], 3, 7)
    whole = golden.run(graph, images)
    monkeypatch.setattr(golden, "_CHUNK_ELEMENTS", 1)  # one image per conv chunk
    one = golden.run(graph, images, batch_size=2)
    assert torch.equal(whole.scores, one.scores) and torch.equal(whole.classes, one.classes)


def test_golden_is_built_from_integers_only():
    """Changing the float provenance of hidden layers never changes the golden output."""
    model = zoo_model("tiny", seed=8)
    graph = frontend.compile_model(model)
    images = random_images(model.spec["input"]["shape"], 6, 9)
    nodes = [n.replace(scale=np.full(n.rows, 7.0), bias=np.full(n.rows, -3.0))
             if isinstance(n, (ir.Conv, ir.Dense)) and n.thresholded else n
             for n in graph.nodes]
    a, b = golden.run(graph, images), golden.run(graph.replace(nodes), images)
    assert torch.equal(a.scores, b.scores)


def test_golden_rejects_bad_images_and_graphs():
    model = zoo_model("tfc", seed=10)
    graph = frontend.compile_model(model)
    with pytest.raises(BnnhwError, match=r"shape \[N, 1, 28, 28\]"):
        golden.run(graph, np.zeros((2, 3, 28, 28), np.uint8))
    with pytest.raises(BnnhwError, match="0..255"):
        golden.run(graph, np.full((1, 1, 28, 28), 300))
    unlowered = frontend.import_model(model)
    with pytest.raises(ValueError, match="not lowered"):
        golden.run(unlowered, np.zeros((1, 1, 28, 28), np.uint8))
