"""``bnnhw train`` end to end, and every kind of bad input: exit 2, one line, no traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bnnhw import cli
from bnnhw.checkpoint import load_model
from bnnhw.data import load_dataset

BNNHW = [sys.executable, "-m", "bnnhw.cli"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(argv, capsys):
    """``bnnhw`` in this process: (exit status, stdout, stderr)."""
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse exits by itself
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def check_user_error(code, out, err, fragment):
    assert code == 2
    assert "Traceback" not in err and "Traceback" not in out
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("bnnhw train: error: ")
    assert fragment in err, err


def test_train_writes_checkpoint_curve_and_reports_accuracy(tmp_path, capsys):
    out_path = tmp_path / "runs" / "tfc.pt"
    code, out, err = run(["train", "--model", "tfc", "--epochs", "2", "--limit", "300",
                          "--batch-size", "50", "--lr", "0.05", "--seed", "7",
                          "--out", str(out_path)], capsys)
    assert code == 0, err
    model, ck = load_model(out_path)
    meta = ck.meta
    assert ck.arch == "tfc"
    assert {k: meta[k] for k in ("data", "data_dir", "epochs", "batch_size", "lr",
                                 "optimizer", "seed", "limit")} == {
        "data": "mnist", "data_dir": None, "epochs": 2, "batch_size": 50, "lr": 0.05,
        "optimizer": "adam", "seed": 7, "limit": 300}
    assert len(meta["history"]) == 2 and meta["train_time_s"] > 0
    # The recorded accuracy is the model's accuracy on the bundled test split.
    data = load_dataset("mnist")
    with torch.no_grad():
        correct = int((model(data.test_x.float()).argmax(1) == data.test_y).sum())
    assert meta["test_accuracy"] == correct / 1000
    assert f"test accuracy {correct / 10:.2f}% ({correct}/1000) after 2 epochs" in out
    assert f"checkpoint: {out_path}" in out
    curve = tmp_path / "runs" / "tfc.curve.png"
    assert curve.read_bytes()[:4] == b"\x89PNG"
    assert "epoch 2/2" in err and "Traceback" not in err


def test_default_out_and_spec_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = {"input": {"shape": [1, 28, 28], "threshold": 100},
            "layers": [{"type": "dense", "out": 16}, {"type": "dense", "out": 10}]}
    Path("mine.json").write_text(json.dumps(spec))
    code, _, err = run(["train", "--model", "mine.json", "--epochs", "1", "--limit", "64",
                        "--quiet"], capsys)
    assert code == 0, err
    assert err == ""
    _, ck = load_model("build/mine.pt")
    assert ck.arch == "spec" and ck.spec["input"]["threshold"] == 100
    assert Path("build/mine.curve.png").is_file()


def test_help_lists_the_options(capsys):
    code, out, _ = run(["train", "--help"], capsys)
    assert "unrecognized" not in out
    assert code == 0
    for option in ("--model", "--data", "--data-dir", "--epochs", "--batch-size", "--lr",
                   "--optimizer", "--seed", "--out"):
        assert option in out


def _spec_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


BAD = {
    "no-model": ([], "give the model to train with --model"),
    "unknown-model": (["--model", "resnet"], "unknown model 'resnet'"),
    "missing-spec": (["--model", "{tmp}/nope.json"], "does not exist"),
    "bad-json": (["--model", "@bad.json"], "is not valid JSON"),
    "bad-spec": (["--model", "@wrong.json"], "unknown layer type 'lstm'"),
    "five-classes": (["--model", "@five.json"], "emits 5 class scores"),
    "small-input": (["--model", "@small.json"], "images of shape 1x28x28 do not fit"),
    "unknown-data": (["--model", "tfc", "--data", "imagenet"], "invalid choice: 'imagenet'"),
    "cifar-no-dir": (["--model", "cnv", "--data", "cifar10"], "cifar10 is not bundled"),
    "no-data-dir": (["--model", "tfc", "--data-dir", "{tmp}/nowhere"], "does not exist"),
    "empty-data-dir": (["--model", "tfc", "--data-dir", "{tmp}"], "is missing from"),
    "zero-epochs": (["--model", "tfc", "--epochs", "0"], "expected a positive integer"),
    "text-epochs": (["--model", "tfc", "--epochs", "ten"], "expected a positive integer"),
    "negative-lr": (["--model", "tfc", "--lr", "-1"], "expected a positive number"),
    "nan-lr": (["--model", "tfc", "--lr", "nan"], "expected a positive number"),
    "batch-of-one": (["--model", "tfc", "--batch-size", "1"], "batch size must be"),
    "optimizer": (["--model", "tfc", "--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
    "unknown-option": (["--model", "tfc", "--frobnicate"], "unrecognized arguments"),
    "out-is-folder": (["--model", "tfc", "--out", "{tmp}"], "is a folder"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, case):
    files = {
        "bad.json": "{\"input\": ",
        "wrong.json": {"input": {"shape": [1, 28, 28]}, "layers": [{"type": "lstm"}]},
        "five.json": {"input": {"shape": [1, 28, 28]}, "layers": [{"type": "dense", "out": 5}]},
        "small.json": {"input": {"shape": [1, 16, 16]},
                       "layers": [{"type": "dense", "out": 10}]},
    }
    args, fragment = BAD[case]
    argv = ["train"]
    for a in args:
        if a.startswith("@"):
            a = _spec_file(tmp_path, a[1:], files[a[1:]])
        argv.append(a.replace("{tmp}", str(tmp_path)))
    argv += ["--epochs", "1"] if "--epochs" not in args and args else []
    code, out, err = run(argv, capsys)
    check_user_error(code, out, err, fragment)
    assert out == ""


def test_error_checker_catches_a_traceback():
    with pytest.raises(AssertionError):
        check_user_error(2, "", "Traceback (most recent call last):\n  x\n", "x")
    with pytest.raises(AssertionError):
        check_user_error(1, "", "bnnhw train: error: x\n", "x")


def test_console_entry_point(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    ok = subprocess.run(BNNHW + ["train", "--model", "tfc", "--epochs", "1", "--limit", "100",
                                 "--quiet", "--threads", "1", "--out", str(tmp_path / "t.pt")],
                        capture_output=True, text=True, env=env, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "test accuracy" in ok.stdout and (tmp_path / "t.pt").is_file()
    bad = subprocess.run(BNNHW + ["train", "--model", str(tmp_path / "missing.json")],
                         capture_output=True, text=True, env=env, check=False)
    check_user_error(bad.returncode, bad.stdout, bad.stderr, "does not exist")


def test_boards_lists_every_board_with_budget_and_flow(capsys):
    import json

    import boards
    from bnnhw import cli

    assert cli.main(["boards", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    names = [b["name"] for b in doc["boards"]]
    assert names == list(boards.NAMES)
    for b in doc["boards"]:
        assert b["budget"]["lut"] > 0 and b["budget"]["bram"] > 0
        assert set(b["flow"]) == set(boards.FLOW_STAGES)
    assert cli.main(["boards"]) == 0
    text = capsys.readouterr().out
    assert "arty-a7-35 (alias arty)" in text and "20,800 LUT6" in text
