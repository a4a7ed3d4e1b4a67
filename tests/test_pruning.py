"""Kernel-sparsity pruning and class specialisation: pruned channels leave the hardware
with their constants folded exactly; the training prunes by the cumulative rule; the CLI
keeps every epoch's checkpoint, reports them, and the results verify in RTL."""

import json

import numpy as np
import pytest
import torch

from bnnhw import cli, frontend, golden
from bnnhw import methods as mt
from bnnhw.check import check_model, random_images, randomize_batchnorm
from bnnhw.checkpoint import load_model
from bnnhw.data import load_dataset
from bnnhw.frontend import PASSES, compile_model, import_model, lower
from bnnhw.nn import build_model
from bnnhw.specialise import specialise, subset_classes

CASES = {
    # zero padding (border classes), a pad of -1 meeting constants of both values, pools
    # before and after BatchNorm, a conv into a dense, dense into dense, XNOR scales
    "conv": {"input": {"shape": [1, 12, 12], "encoding": "binary"},
             "layers": [{"type": "conv", "out": 6, "kernel": 3, "padding": 1,
                         "pruned": [1, 4]},
                        {"type": "conv", "out": 5, "kernel": 3, "pruned": [0], "padding": 1,
                         "pad_value": -1},
                        {"type": "maxpool", "kernel": 2},
                        {"type": "conv", "out": 7, "kernel": 3, "pruned": [2, 3]},
                        {"type": "dense", "out": 9, "pruned": [0, 5, 8]},
                        {"type": "dense", "out": 4}]},
    "no-bn": {"input": {"shape": [1, 12, 12], "encoding": "binary"},
              "layers": [{"type": "conv", "out": 6, "kernel": 3, "pruned": [1, 4],
                          "batchnorm": False, "bias": True},
                         {"type": "maxpool", "kernel": 2, "before_bn": True},
                         {"type": "dense", "out": 9, "pruned": [0, 5, 8], "scale": True},
                         {"type": "dense", "out": 4, "scale": True}]},
    "uint8": {"input": {"shape": [3, 10, 10], "encoding": "uint8"},
              "layers": [{"type": "conv", "out": 8, "kernel": 3, "pruned": [0, 2, 7]},
                         {"type": "conv", "out": 6, "kernel": 3, "padding": 1,
                          "pruned": [5]},
                         {"type": "dense", "out": 3}]},
}


def pruned_model(spec, seed):
    torch.manual_seed(seed)
    model = build_model(spec)
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "pruned", ()):
                m.weight[list(m.pruned)] = 0.0
            if getattr(m, "bias", None) is not None and hasattr(m, "binary_weight"):
                m.bias.uniform_(-4, 4)
    return randomize_batchnorm(model, seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_removed_channels_change_no_class_and_no_kept_bit(case, seed):
    model = pruned_model(CASES[case], seed)
    narrow = compile_model(model)
    full = lower(import_model(model), PASSES[:-1])
    removed = sum(a.rows - b.rows for a, b in zip(full.nodes, narrow.nodes)
                  if hasattr(a, "rows"))
    assert removed > 0
    images = random_images(CASES[case]["input"]["shape"], 300, seed)
    a = golden.run(narrow, images, activations=True)
    b = golden.run(full, images, activations=True)
    assert torch.equal(a.classes, b.classes)
    assert np.array_equal(narrow.nodes[-1].class_logits(a.scores.numpy()),
                          full.nodes[-1].class_logits(b.scores.numpy()))
    keep = None  # the model channels of the current map (pools keep their input's)
    for node in narrow.nodes[1:-1]:
        if hasattr(node, "rows"):
            keep = node.channels
        want = b.activations[node.name]
        if keep is not None:
            want = want[..., torch.from_numpy(keep.copy())]
        assert torch.equal(a.activations[node.name], want), node.name
    report = check_model(model, images, narrow)
    assert report.ok, report.format()


def test_an_unfolded_removal_is_caught(monkeypatch):
    # planted fault: drop the columns without folding their constants into thresholds
    def unfolded(node, chans, values):
        c = node.in_shape[-1]
        keep = np.setdiff1d(np.arange(c), chans)
        r = node.rows
        w = node.weights.reshape(r, -1, c)[:, :, keep].reshape(r, -1)
        t = np.clip(node.thresholds, 0, w.shape[1] + 1) if node.thresholded else None
        changes = {"thresholds": t} if t is not None else {}
        return node.replace(weights=w, in_shape=(*node.in_shape[:-1], len(keep)), **changes)

    spec = {"input": {"shape": [1, 8, 8], "encoding": "binary"},
            "layers": [{"type": "dense", "out": 12, "pruned": [0, 3, 4, 9]},
                       {"type": "dense", "out": 10, "pruned": [1, 2]},
                       {"type": "dense", "out": 3}]}
    model = pruned_model(spec, 5)
    images = random_images([1, 8, 8], 300, 5)
    assert check_model(model, images, compile_model(model)).ok
    monkeypatch.setattr(frontend, "_fold_columns", unfolded)
    assert not check_model(model, images, compile_model(model)).ok


def test_prune_filters_follows_the_cumulative_rule_in_multiples():
    spec = {"input": {"shape": [1, 8, 8], "encoding": "binary"},
            "layers": [{"type": "dense", "out": 16}, {"type": "dense", "out": 16},
                       {"type": "dense", "out": 3}]}
    model = build_model(spec)
    a, b = mt.hidden_layers(model)
    with torch.no_grad():
        a.weight.fill_(1.0)
        b.weight.fill_(1.0)
        a.weight[:5] = 0.001   # 5 tiny filters in the first layer: 4 go (a multiple of 4)
        b.weight[:3] = 0.001   # 3 in the second: none go at multiple 4
    assert mt.prune_filters(model, t=0.01, multiple=4) == 4
    assert list(a.pruned) == [0, 1, 2, 3] and list(b.pruned) == []
    assert model.spec["layers"][0]["pruned"] == [0, 1, 2, 3]
    assert torch.equal(a.weight[:4], torch.zeros(4, 64))
    assert a.weight[4].abs().sum() > 0          # spared: the candidate of largest norm
    model.eval()
    out = model.layers[1](model.encoder(torch.randint(0, 256, (7, 1, 8, 8)).float())
                          .flatten(1))
    assert torch.equal(out[:, :4], torch.zeros(7, 4))  # pruned: dot product 0
    with torch.no_grad():
        b.weight[:] = 0.0
    mt.prune_filters(model, t=0.5, multiple=1)
    assert len(b.pruned) == 15   # never the whole layer


def test_sparsity_loss_is_l1_over_l2_of_the_pseudo_norms():
    spec = {"input": {"shape": [1, 4, 4], "encoding": "binary"},
            "layers": [{"type": "dense", "out": 2}, {"type": "dense", "out": 2}]}
    model = build_model(spec)
    with torch.no_grad():
        model.layers[1].weight.copy_(torch.tensor([[0.5] * 16, [-0.25] * 16]))
    assert mt.sparsity_loss(model).item() == pytest.approx(0.75 / (0.3125 ** 0.5))


SMALL = {"input": {"shape": [1, 28, 28], "encoding": "binary"},
         "layers": [{"type": "dense", "out": 32}, {"type": "dense", "out": 32},
                    {"type": "dense", "out": 10}]}


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("prune")
    spec = d / "small.json"
    spec.write_text(json.dumps(SMALL))
    assert cli.main(["train", "--model", str(spec), "--epochs", "4", "--quiet",
                     "--out", str(d / "parent.pt")]) == 0
    assert cli.main(["train", "--model", str(spec), "--epochs", "4", "--quiet",
                     "--prune-lambda", "2", "--prune-multiple", "4",
                     "--out", str(d / "pruned.pt")]) == 0
    return d


def test_pruned_training_keeps_every_epoch_and_narrows_the_hardware(pruned_run, capsys):
    d = pruned_run
    epochs = sorted(p.name for p in d.glob("pruned.epoch*.pt"))
    assert epochs == [f"pruned.epoch0{e}.pt" for e in range(1, 5)]
    model, ckpt = load_model(d / "pruned.pt")
    graph = compile_model(model)
    parent = compile_model(load_model(d / "parent.pt")[0])
    pruned = [len(lay["pruned"]) for lay in ckpt.spec["layers"][:-1]]
    assert sum(pruned) > 0 and all(p % 4 == 0 for p in pruned)
    assert [n.rows for n in graph.nodes[1:-1]] == [32 - p for p in pruned]
    assert sum(n.weight_bits for n in graph.nodes[1:]) < \
        sum(n.weight_bits for n in parent.nodes[1:])
    assert cli.main(["check", "--model", str(d / "pruned.pt"), "--images", "200"]) == 0
    capsys.readouterr()
    assert cli.main(["prune-report", str(d / "pruned.pt"), "--parent", str(d / "parent.pt"),
                     "--json", "--plot", str(d / "front.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    points = out["points"]
    assert len(points) == 5 and points[0]["filters_kept"] == 64
    assert points[-1]["filters_kept"] == 64 - sum(pruned)
    assert points[-1]["memory_bits"] < points[0]["memory_bits"]
    assert any(p["pareto"] for p in points)
    assert (d / "front.png").read_bytes()[:4] == b"\x89PNG"


def test_pruned_checkpoint_verifies_in_rtl(pruned_run, capsys):
    assert cli.main(["verify", "--model", str(pruned_run / "pruned.pt"), "--images", "12",
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mismatches"] == 0


def test_specialise_keeps_the_chosen_classes():
    torch.manual_seed(0)
    parent = build_model(SMALL)
    spec, state = specialise(parent.spec, parent.state_dict(), [3, 5, 8])
    child = build_model(spec)
    child.load_state_dict(state)
    parent.eval()
    child.eval()
    x = torch.randint(0, 256, (20, 1, 28, 28)).float()
    assert torch.equal(child(x), parent(x)[:, [3, 5, 8]])
    data = subset_classes(load_dataset("mnist"), [3, 5, 8])
    assert data.classes == ("3", "5", "8") and set(data.test_y.tolist()) == {0, 1, 2}
    assert len(data.test_y) == 300


def test_specialised_model_trains_checks_and_verifies(pruned_run, capsys):
    d = pruned_run
    out = d / "s358.pt"
    assert cli.main(["train", "--from", str(d / "parent.pt"), "--classes", "3,5,8",
                     "--epochs", "2", "--quiet", "--prune-multiple", "4",
                     "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "parent" in text
    _, ckpt = load_model(out)
    assert ckpt.spec["layers"][-1]["out"] == 3 and ckpt.meta["classes"] == [3, 5, 8]
    assert ckpt.meta["test_images"] == 300 and ckpt.meta["test_accuracy"] > 0.5
    assert cli.main(["verify", "--model", str(out), "--images", "12", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mismatches"] == 0


@pytest.mark.parametrize("argv, message", [
    (["--classes", "3,3"], "distinct label indices"),
    (["--classes", "3,x"], "distinct label indices"),
    (["--classes", "4"], "at least two classes"),
    (["--classes", "1,10"], "distinct label indices"),
])
def test_bad_classes_are_refused(pruned_run, tmp_path, capsys, argv, message):
    assert cli.main(["train", "--from", str(pruned_run / "parent.pt"), "--quiet",
                     "--epochs", "1", "--out", str(tmp_path / "x.pt"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
