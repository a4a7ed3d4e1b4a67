"""Training methods (bnnhw.methods): each trains, lowers and passes the golden check; the
network without BatchNorm lowers to sign(dot + bias); the feedback methods really use
their random projections."""

import json

import pytest
import torch

from bnnhw import cli, golden
from bnnhw import methods as mt
from bnnhw.check import check_model
from bnnhw.checkpoint import load_model, save_checkpoint
from bnnhw.data import load_dataset
from bnnhw.frontend import compile_model
from bnnhw.nn import BinaryActivation, build_model, normalize_spec, without_batchnorm
from bnnhw.train import TrainConfig, default_lr, train

SPEC = {"input": {"shape": [1, 28, 28], "encoding": "binary"},
        "layers": [{"type": "dense", "out": 32}, {"type": "dense", "out": 32},
                   {"type": "dense", "out": 10}]}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


@pytest.fixture(scope="module")
def trained(mnist):
    """Every method with and without BatchNorm, 4 epochs on the 4,000 training images
    (about 1 s each)."""
    torch.set_num_threads(1)
    out = {}
    for bn in (True, False):
        spec = SPEC if bn else without_batchnorm(SPEC)
        for method in mt.METHODS:
            cfg = TrainConfig(epochs=4, method=method,
                              lr=default_lr(spec, "adam"))
            out[method, bn] = train(spec, mnist, cfg)
    return out


@pytest.mark.parametrize("bn", [True, False], ids=["bn", "no-bn"])
@pytest.mark.parametrize("method", mt.METHODS)
def test_each_method_learns_and_matches_the_golden_model(trained, mnist, method, bn):
    result = trained[method, bn]
    # 10 classes: chance is 10% (measured at this size: 50-85%, drtp without BN 27%)
    assert result.test_accuracy > 0.2, (method, bn, result.test_accuracy)
    report = check_model(result.model, mnist.test_x[:200])
    assert report.ok and report.class_matches == 200, report.format()
    graph = compile_model(result.model)
    assert all(n.thresholded for n in graph.nodes[1:-1])


def test_self_binarizing_ends_binary_and_reports_both_accuracies(trained, mnist):
    result = trained["self-binarizing", True]
    assert result.float_test_accuracy is not None
    slopes = [h["slope"] for h in result.history]
    assert slopes[0] == 1.0 and slopes[-1] == pytest.approx(200.0)
    assert slopes == sorted(slopes)
    model = result.model
    assert all(getattr(m, "slope", None) is None for m in model.modules())
    # the binary network is what is evaluated and saved: weights used are +-1 exactly
    for m in model.modules():
        if hasattr(m, "binary_weight"):
            assert set(m.binary_weight().unique().tolist()) <= {-1.0, 1.0}


def test_slope_schedule():
    assert mt.slope_at(1, 5, 2.0, 32.0, None) == 2.0
    assert mt.slope_at(5, 5, 2.0, 32.0, None) == pytest.approx(32.0)
    assert mt.slope_at(3, 5, 2.0, None, 3.0) == 18.0
    assert mt.slope_at(1, 1, 2.0, None, None) == mt.DEFAULT_SLOPE_FINAL


def test_smooth_activation_and_weights_follow_the_slope():
    act = BinaryActivation(gain=0.5)
    x = torch.tensor([-3.0, -0.1, 0.0, 0.2])
    assert torch.equal(act(x), torch.tensor([-1.0, -1.0, 1.0, 1.0]))
    act.slope = 4.0
    assert torch.equal(act(x), torch.tanh(2.0 * x))


def _hidden_grads(method, scale_classifier):
    torch.manual_seed(0)
    model = build_model(SPEC)
    with torch.no_grad():
        model.layers[-2].weight.mul_(scale_classifier)
    model.train()
    x = torch.randint(0, 256, (16, 1, 28, 28)).float()
    y = torch.randint(0, 10, (16,))
    if method == "ste":
        out = model(x)
        torch.nn.functional.cross_entropy(out, y).backward()
    else:
        fb = mt.FeedbackAlignment(method, 10, seed=3)
        out, taps = fb.forward(model, x)
        fb.backward(torch.nn.functional.cross_entropy(out, y), out, taps, y)
    return model.layers[1].weight.grad.clone()


def test_drtp_hidden_updates_ignore_the_classifier_but_backprop_does_not():
    # DRTP's signal is the projected target: the first layer's gradient cannot depend on
    # the classifier's weights; backpropagation's does (the checker fails on ste).
    assert torch.equal(_hidden_grads("drtp", 1.0), _hidden_grads("drtp", -0.5))
    assert not torch.equal(_hidden_grads("ste", 1.0), _hidden_grads("ste", -0.5))
    # DFA's signal is the output error, which the classifier does change
    assert not torch.equal(_hidden_grads("dfa", 1.0), _hidden_grads("dfa", -0.5))


def test_no_bn_spec_lowers_to_the_sign_of_dot_plus_bias():
    spec = without_batchnorm(SPEC)
    assert [lay["batchnorm"] for lay in spec["layers"]] == [False, False, True]
    torch.manual_seed(1)
    model = build_model(spec)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    with torch.no_grad():
        for m in model.layers:
            if getattr(m, "bias", None) is not None and m.bias.dim() == 1 \
                    and hasattr(m, "binary_weight"):
                m.bias.uniform_(-9.0, 9.0)
    model.eval()
    graph = compile_model(model)
    x = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    gold = golden.run(graph, x, activations=True)
    dense = graph.nodes[1]
    # by hand: bit = dot + b >= 0 with dot = 2 popcount - N
    bits = model.encoder(x.float())
    dot = bits.flatten(1) @ torch.where(model.layers[1].weight >= 0, 1.0, -1.0).T
    want = (dot + model.layers[1].bias >= 0).to(torch.int64)
    assert torch.equal(gold.activations[dense.name], want)
    report = check_model(model, x, graph)
    assert report.ok
    # planted fault: one threshold one off is caught
    t = dense.thresholds.copy()
    t[0, 0, 0] += 1
    bad = graph.replace([graph.nodes[0], dense.replace(thresholds=t), *graph.nodes[2:]])
    hit = torch.randint(0, 256, (400, 1, 28, 28), dtype=torch.uint8)
    assert not check_model(model, hit, bad).ok


def test_batchnorm_false_is_refused_on_the_classifier():
    spec = json.loads(json.dumps(SPEC))
    spec["layers"][-1]["batchnorm"] = False
    with pytest.raises(ValueError, match="classifier has no BatchNorm"):
        normalize_spec(spec)


def test_train_cli_methods_write_ordinary_checkpoints(tmp_path, capsys):
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(SPEC))
    out = tmp_path / "sb.pt"
    assert cli.main(["train", "--model", str(spec), "--method", "self-binarizing",
                     "--no-bn", "--epochs", "2", "--limit", "300", "--quiet",
                     "--slope-start", "2", "--slope-final", "50", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "last smooth network (slope 50)" in text
    _, ckpt = load_model(out)
    assert ckpt.meta["method"] == "self-binarizing" and ckpt.meta["lr"] == 0.01
    assert 0 <= ckpt.meta["float_test_accuracy"] <= 1
    assert all(not lay["batchnorm"] for lay in ckpt.spec["layers"][:-1])
    assert cli.main(["check", "--model", str(out), "--images", "100"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["--method", "dfa", "--slope-final", "9"], "self-binarizing method only"),
    (["--method", "self-binarizing", "--slope-final", "9", "--slope-growth", "2"],
     "not both"),
    (["--classes", "1,2"], "give it with --from"),
])
def test_train_cli_refuses_bad_combinations(tmp_path, capsys, argv, message):
    assert cli.main(["train", "--model", "tfc", "--out", str(tmp_path / "x.pt"),
                     *argv]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_saved_method_checkpoint_round_trips(trained, tmp_path):
    result = trained["drtp", False]
    path = save_checkpoint(tmp_path / "d.pt", result.model, "spec", {"method": "drtp"})
    model, _ = load_model(path)
    x = torch.randint(0, 256, (32, 1, 28, 28)).float()
    assert torch.equal(model(x), result.model(x))


@pytest.mark.parametrize("method, bn", [("self-binarizing", True), ("dfa", False)])
def test_method_checkpoints_verify_in_rtl(trained, mnist, tmp_path, capsys, method, bn):
    path = save_checkpoint(tmp_path / "m.pt", trained[method, bn].model, "spec",
                           {"data": "mnist", "method": method})
    assert cli.main(["verify", "--model", str(path), "--images", "12", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 12 and out["mismatches"] == 0


def test_cli_constants_agree_with_the_library():
    # bnnhw train --help imports no torch, so the command keeps its own copies
    from bnnhw.commands import train as command

    assert command.METHODS == mt.METHODS
    parser = __import__("argparse").ArgumentParser()
    command.add_arguments(parser)
    defaults = parser.parse_args(["--model", "tfc"])
    assert defaults.prune_multiple == mt.DEFAULT_PRUNE_MULTIPLE
    assert defaults.prune_t == mt.DEFAULT_PRUNE_T
