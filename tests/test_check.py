"""The QAT-vs-golden check: planted faults are reported, float ties are counted (and only
ties), and the ``compile`` / ``check`` commands."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
import torch

from bnnhw import check, cli, frontend, golden, ir
from bnnhw import reference as ref
from bnnhw.checkpoint import save_checkpoint
from bnnhw.nn import build_model
from tests.bnn_cases import spec_model, zoo_model


def _swap(graph: ir.Graph, name: str, **changes) -> ir.Graph:
    return graph.replace([n.replace(**changes) if n.name == name else n for n in graph.nodes])


@pytest.fixture(scope="module")
def tfc():
    model = zoo_model("tfc", seed=3)
    images = check.random_images(model.spec["input"]["shape"], 24, 4)
    return model, frontend.compile_model(model), images


def test_units_follow_the_model_modules():
    model = spec_model([{"type": "conv", "out": 5, "kernel": 3, "padding": 1},
                        {"type": "maxpool", "kernel": 2, "before_bn": True},
                        {"type": "conv", "out": 3, "kernel": 3},
                        {"type": "maxpool", "kernel": 2},
                        {"type": "dense", "out": 4}])
    groups = check.units(frontend.compile_model(model))
    names = ["+".join(n.name for n in g.nodes) for g in groups]
    assert names == ["input", "conv0+pool1", "conv4", "pool7", "dense9"]
    assert [(g.first, g.last) for g in groups] == [(-1, -1), (0, 3), (4, 6), (7, 7), (8, 10)]
    report = check.check_model(model, check.random_images((2, 9, 9), 6, 1))
    assert report.ok and [u.kind for u in report.layers] == [
        "bits", "bits", "bits", "bits", "scores"]


def test_clean_report(tfc):
    model, graph, images = tfc
    report = check.check_model(model, images, graph)
    assert report.ok and report.images == 24 and report.class_agreement == 1.0
    assert report.bit_agreement == 1.0 and report.ties == 0 and report.bugs == 0
    doc = report.to_dict()
    assert {"images", "class_agreement", "bit_agreement", "ties", "layers"} <= set(doc)
    assert [u["name"] for u in doc["layers"]] == ["input", "dense1", "dense4", "dense7",
                                                 "dense10"]
    assert "OK" in report.format()


def test_planted_threshold_off_by_one_is_reported(tfc):
    model, graph, images = tfc
    # pick the row of dense4 whose accumulator hits its threshold most often on these
    # images, so raising that one threshold by one must flip some bits
    acts = golden.run(graph, images, activations=True).activations
    node = graph["dense4"]
    acc = ref.popcount_matvec(acts["dense1"], node.weights)
    t = torch.tensor(node.thresholds[0, 0])
    hits = (acc == t).sum(0)
    r = int(hits.argmax())
    assert hits[r] > 0
    thresholds = node.thresholds.copy()
    thresholds[0, 0, r] += 1
    report = check.check_model(model, images, _swap(graph, "dense4", thresholds=thresholds))
    layer = {u.name: u for u in report.layers}["dense4"]
    assert layer.disagreements == int(hits[r]) and layer.bugs == layer.disagreements
    assert not report.ok and report.ties == 0


def test_planted_weight_faults_are_reported(tfc):
    model, graph, images = tfc
    w = graph["dense10"].weights.copy()
    w[2, 5] ^= 1  # one classifier bit: every image's dot for class 2 moves by 2
    report = check.check_model(model, images, _swap(graph, "dense10", weights=w))
    assert {u.name: u for u in report.layers}["dense10"].bugs == len(images)
    assert not report.ok
    # one hidden row inverted (a missed or doubled flip of a negative channel): pick a row
    # where inverting changes the bit of at least one image, so the fault is observable
    node = graph["dense4"]
    acts = golden.run(graph, images, activations=True).activations
    acc = ref.popcount_matvec(acts["dense1"], node.weights)
    t = torch.tensor(node.thresholds[0, 0])
    changed = ((acc >= t) != (node.cols - acc >= t)).sum(0)
    r = int(changed.argmax())
    w = node.weights.copy()
    w[r] ^= 1
    report = check.check_model(model, images, _swap(graph, "dense4", weights=w))
    layer = {u.name: u for u in report.layers}["dense4"]
    assert layer.bugs == int(changed[r]) > 0 and not report.ok


def test_planted_and_mask_fault_is_reported():
    model = spec_model([{"type": "conv", "out": 7, "kernel": 3},
                        {"type": "maxpool", "kernel": 2, "before_bn": True},
                        {"type": "dense", "out": 3}], seed=2)
    graph = frontend.compile_model(model)
    pool = graph[2]
    assert 0 < pool.and_mask.sum() < 7  # some channels min-pool, some max-pool
    images = check.random_images((2, 9, 9), 8, 2)
    assert check.check_model(model, images, graph).ok
    bad = check.check_model(model, images, _swap(graph, pool.name, and_mask=1 - pool.and_mask))
    assert {u.name: u for u in bad.layers}["conv0+pool1"].bugs > 0 and not bad.ok


# latent weights whose XNOR scale alpha (float32 mean |W|) makes the float32 product
# 3 * alpha round up: fl32(3 * alpha) > 3 * alpha exactly
TIE_WEIGHTS = [0.6323062777519226, 0.3488934636116028, 0.40171730518341064]


def _tie_model():
    """A model whose hidden channel 0 sits exactly on a float32 rounding tie.

    Three +1 inputs, positive weights: dot = 3, z = alpha * dot. BatchNorm (mean
    fl32(3 * alpha), var 1, eps 0, gamma 1, beta 0) makes the QAT model compute exactly 0
    (bit +1), while exactly 3 * alpha - fl32(3 * alpha) < 0 (bit 0). Scores ignore the
    hidden layer (class 0 always), so classes agree whatever that bit is.
    """
    model = build_model({"input": {"shape": [1, 1, 3], "encoding": "binary"},
                         "layers": [{"type": "dense", "out": 2, "scale": True},
                                    {"type": "dense", "out": 2}]})
    with torch.no_grad():
        lin, bn, scores = model.layers[1], model.layers[2], model.layers[5]
        lin.weight.copy_(torch.tensor([TIE_WEIGHTS, [0.5, -0.5, 0.5]]))
        z = model.layers[:2](torch.ones(1, 1, 1, 3))  # fl32(alpha * 3)
        bn.eps = 0.0
        bn.running_mean.copy_(z[0])
        bn.running_var.fill_(1.0)
        bn.weight.fill_(1.0)
        bn.bias.zero_()
        scores.scale.zero_()
        scores.bias.copy_(torch.tensor([1.0, 0.0]))
    return model.eval()


def test_float_ties_are_counted_not_hidden():
    model = _tie_model()
    lin, bn = model.layers[1], model.layers[2]
    with torch.no_grad():
        alpha = float(lin.weight.abs().mean(dim=1)[0])
        # the premise: exactly negative, float32 zero
        assert Fraction(alpha) * 3 - Fraction(float(bn.running_mean[0])) < 0
        y32 = model.layers[:3](model.encoder(torch.full((1, 1, 1, 3), 200.0)))
    assert float(y32[0, 0]) == 0.0
    images = torch.full((4, 1, 1, 3), 200, dtype=torch.uint8)
    report = check.check_model(model, images)
    layer = report.layers[1]
    assert layer.disagreements == 4 and layer.ties == 4 and layer.bugs == 0
    assert report.ok and report.ties == 4 and report.bit_agreement < 1.0
    # the tie classification is what makes this pass: with eps 0 they are bugs
    strict = check.check_model(model, images, eps=0.0)
    assert strict.bugs == 4 and not strict.ok


# --- the commands ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tfc.pt"
    save_checkpoint(path, zoo_model("tfc", seed=5), "tfc", {"data": "mnist"})
    return path


def test_compile_command_writes_the_ir(checkpoint, tmp_path, capsys):
    out = tmp_path / "m.ir"
    assert cli.main(["compile", "--model", str(checkpoint), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "dense1" in text and "wrote" in text
    graph = ir.load_graph(out)
    assert graph == frontend.compile_checkpoint(checkpoint)
    assert graph.meta["arch"] == "tfc" and graph.meta["checkpoint_meta"] == {"data": "mnist"}


def test_check_command_random_json(checkpoint, capsys):
    rc = cli.main(["check", "--model", str(checkpoint), "--images", "6", "--random",
                   "--seed", "3", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["ok"] and doc["images"] == 6
    assert doc["class_agreement"] == 1.0 and doc["bit_agreement"] == 1.0 and doc["ties"] == 0
    assert len(doc["layers"]) == 5


def test_check_command_on_the_data_set(checkpoint, capsys):
    assert cli.main(["check", "--model", str(checkpoint), "--images", "30"]) == 0
    out = capsys.readouterr().out
    assert "30 mnist test images" in out and "classes: 30/30 agree" in out


def test_check_command_fails_on_a_planted_fault(checkpoint, monkeypatch, capsys):
    real = frontend.compile_model

    def faulty(model, meta=None):
        graph = real(model, meta)
        w = graph["dense10"].weights.copy()
        w[:, :8] ^= 1
        return _swap(graph, "dense10", weights=w)

    monkeypatch.setattr(frontend, "compile_model", faulty)
    assert cli.main(["check", "--model", str(checkpoint), "--images", "5", "--random"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_check_command_user_errors(tmp_path, capsys):
    path = tmp_path / "nodata.pt"
    save_checkpoint(path, zoo_model("tfc", seed=6), "tfc", {})
    assert cli.main(["check", "--model", str(path), "--images", "3"]) == 2
    assert "use --random" in capsys.readouterr().err
    assert cli.main(["check", "--model", str(tmp_path / "missing.pt"), "--random"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_trained_tfc_agrees(tmp_path, capsys):
    """One short epoch of real training: learned BatchNorm statistics, real digits."""
    from bnnhw.data import load_dataset
    from bnnhw.nn import zoo
    from bnnhw.train import TrainConfig, train

    result = train(zoo.get_spec("tfc"), load_dataset("mnist"),
                   TrainConfig(epochs=1, limit=400, batch_size=50, seed=1))
    path = tmp_path / "trained.pt"
    save_checkpoint(path, result.model, "tfc", {"data": "mnist"})
    assert cli.main(["check", "--model", str(path), "--images", "200", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["class_agreement"] == 1.0 and doc["bugs"] == 0
    assert np.isclose(doc["bit_agreement"], 1.0, atol=1e-4)  # at most a few counted ties
