"""The commands on ONNX models: compile, check (random images and a test set), predict (and
predict on a checkpoint), verify under Verilator (TFC-shaped with a binary input, CNV-shaped
with an 8-bit input, 64 images each), build --plan-only, and refusals with exit status 2."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from bnnhw import cli, golden, ir
from bnnhw.checkpoint import save_checkpoint
from bnnhw.frontend import compile_model
from bnnhw.onnx_check import Executor
from bnnhw.onnx_frontend import import_onnx
from tests.bnn_cases import zoo_model
from tests.onnx_cases import exports, random_pixels, tiny

KNOWN = ("Add, BatchNormalization, BipolarQuant, Conv, Div, Dropout, Flatten, Gemm, Identity, "
         "MatMul, MaxPool, Mul, MultiThreshold, Quant, Reshape, Sub, XnorPopcountMatMul")


def run(capsys, *argv):
    capsys.readouterr()  # what came before (an export's messages) is not the command's
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_compile_writes_the_imported_ir(tmp_path, capsys):
    path = exports("cnv8")["dynamo-clean"]
    code, out, _ = run(capsys, "compile", "--model", path, "-o", tmp_path / "m.ir")
    assert code == 0 and "conv" in out and "wrote" in out
    assert ir.load_graph(tmp_path / "m.ir") == import_onnx(path).graph


def test_check_on_random_images_and_a_test_set(capsys):
    path = exports("tfc")["torchscript"]
    code, out, _ = run(capsys, "check", "--model", path, "--random", "--images", 8, "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["images"] == 8 and report["bugs"] == 0
    assert report["logits_equal"] == report["logits_compared"] == 80
    code, out, _ = run(capsys, "check", "--model", path, "--data", "mnist", "--images", 16)
    assert code == 0 and "16 mnist test images" in out
    assert "OK: the golden model matches QONNX's execute_onnx" in out
    code, _, err = run(capsys, "check", "--model", path, "--images", 3)
    assert code == 2 and "ONNX model" in err and "does not say which data set" in err
    assert "use --random or --data NAME" in err


def test_predict_writes_scores_logits_and_classes(tmp_path, capsys):
    path = exports("cnv8")["torchscript-clean"]
    imp = import_onnx(path)
    images = random_pixels(imp.input_shape, 6, seed=3)
    np.savez(tmp_path / "x.npz", images=images)
    code, out, _ = run(capsys, "predict", "--model", path, "--images", tmp_path / "x.npz",
                       "-o", tmp_path / "y.npz")
    assert code == 0 and "wrote" in out
    with np.load(tmp_path / "y.npz") as z:
        assert sorted(z.files) == ["classes", "logits", "scores"]
        gold = golden.run(imp.graph, images)
        assert z["scores"].dtype == np.int64 and np.array_equal(z["scores"], gold.scores)
        assert np.array_equal(z["classes"], gold.classes)
        assert np.array_equal(z["logits"], Executor(imp).logits(images))


def test_predict_on_a_checkpoint(tmp_path, capsys):
    model = zoo_model("tiny", seed=2)
    save_checkpoint(tmp_path / "m.pt", model, "tiny", {})
    images = random_pixels((1, 28, 28), 5, seed=1)
    np.savez(tmp_path / "x.npz", images=images)
    code, _, _ = run(capsys, "predict", "--model", tmp_path / "m.pt", "--images",
                     tmp_path / "x.npz", "-o", tmp_path / "y.npz")
    assert code == 0
    with np.load(tmp_path / "y.npz") as z, torch.no_grad():
        want = model(torch.from_numpy(images).float()).numpy()
        assert np.array_equal(z["logits"], want)
        gold = golden.run(compile_model(model), images)
        assert np.array_equal(z["scores"], gold.scores)
        assert np.array_equal(z["classes"], gold.classes)
    code, _, err = run(capsys, "predict", "--model", tmp_path / "m.pt", "--images",
                       tmp_path / "x.npz", "-o", tmp_path / "x.npz")
    assert code == 2 and "is also the --images file" in err


@pytest.mark.parametrize("name", ["tfc", "cnv8"])
def test_verify_64_images_under_verilator(name, capsys):
    path = exports(name)["dynamo"]
    code, out, _ = run(capsys, "verify", "--model", path, "--random", "--images", 64,
                       "--stall", 0.2, "--json")
    report = json.loads(out)
    assert code == 0 and report["images"] == 64 and report["mismatches"] == 0
    assert report["extra_beats"] == 0 and report["stalled_run"]
    assert report["class_agreement"] == 1.0  # the hardware's class is execute_onnx's argmax
    assert report["cycles_per_image"] == report["model_cycles_per_image"]


def test_build_plan_only(tmp_path, capsys):
    path = exports("tfc")["dynamo-clean"]
    code, out, _ = run(capsys, "build", "--board", "arty", "--model", path, "--plan-only",
                       "--out", tmp_path / "b", "--json")
    report = json.loads(out)
    assert code == 0 and report["fits"] and report["board"] == "arty-a7-35"
    assert report["model"] == "tfc-dynamo-clean"
    assert (tmp_path / "b" / "report.json").exists()


@pytest.mark.parametrize("command", ["compile", "check", "verify", "build", "predict"])
def test_a_refused_graph_is_one_line_and_status_2(command, tmp_path, capsys):
    path = tiny(tmp_path, "relu", extra=lambda b: b.op("Relu", name="relu"))
    extra = {"check": ["--random"], "verify": ["--random"], "build": ["--board", "arty"],
             "predict": ["--images", "mnist", "-o", tmp_path / "y.npz"]}.get(command, [])
    code, out, err = run(capsys, command, "--model", path, *extra)
    assert code == 2 and out == ""
    lines = [ln for ln in err.splitlines() if not ln.startswith("  ")]  # progress lines
    assert lines == [(f"bnnhw {command}: error: {path}: node 'relu' (Relu): bnnhw does not "
                     f"lower this operation (it lowers {KNOWN})")]
    assert not (tmp_path / "y.npz").exists() and not (tmp_path / "relu.ir").exists()


def test_missing_extra_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    code, _, err = run(capsys, "compile", "--model", exports("tfc")["dynamo"], "-o",
                       tmp_path / "m.ir")
    assert code == 2 and "pip install 'bnnhw[onnx]'" in err
    assert not (tmp_path / "m.ir").exists()
