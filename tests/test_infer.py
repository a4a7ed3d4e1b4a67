"""``bnnhw infer`` end to end: a checkpoint on the simulated board, and its user errors."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from bnnhw import cli, golden
from bnnhw.checkpoint import save_checkpoint
from bnnhw.frontend import compile_model
from bnnhw.images import load_images
from tests.bnn_cases import spec_model

LAYERS = [{"type": "dense", "out": 16}, {"type": "dense", "out": 10}]


def run(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("infer") / "small.pt"
    save_checkpoint(path, spec_model(LAYERS, "binary", (1, 28, 28), seed=3), "spec",
                    {"data": "mnist", "data_dir": None})
    return path


def test_infer_on_the_simulated_board(ckpt, capsys):
    code, out, err = run(["infer", "--sim", "--model", str(ckpt), "--count", "60",
                          "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["images"] == 60 and doc["mismatches"] == 0 and doc["loaded"]
    images, labels, _ = load_images("mnist", (1, 28, 28), 60)
    from bnnhw.checkpoint import load_model

    model, _ = load_model(ckpt)
    classes = golden.run(compile_model(model), images).classes.numpy()
    assert doc["correct"] == int((classes == labels).sum())
    assert doc["accuracy"] == pytest.approx(doc["correct"] / 60)
    assert doc["link_efficiency"] > 0.9 and doc["images_per_second"] > 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_user_errors_are_one_line(ckpt, tmp_path, capsys):
    bad = tmp_path / "wrong.npz"
    np.savez(bad, images=np.zeros((2, 3, 40, 40), np.uint8))
    cases = [
        (["--port", f"socket://127.0.0.1:{free_port()}"], "127.0.0.1"),
        (["--sim", "--images", str(bad)], "3x40x40 do not fit a model input of shape 1x28x28"),
        (["--sim", "--images", str(tmp_path / "none")], "does not exist"),
        (["--sim", "--count", "5000"], "only 1000"),
    ]
    for extra, fragment in cases:
        code, _out, err = run(["infer", "--model", str(ckpt), *extra], capsys)
        assert code == 2, (extra, err)
        assert err.count("\n") == 1 and "Traceback" not in err and fragment in err, err


def test_png_folders_and_npz_files_are_images(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (4, 20, 20), dtype=np.uint8)
    for i, a in enumerate(arrays):
        (tmp_path / str(i % 2)).mkdir(exist_ok=True)
        Image.fromarray(a).save(tmp_path / str(i % 2) / f"{i}.png")
    images, labels, _what = load_images(tmp_path, (1, 28, 28))
    assert images.shape == (4, 1, 28, 28) and sorted(labels.tolist()) == [0, 0, 1, 1]
    assert np.array_equal(images[0, 0, 4:24, 4:24], arrays[0])  # centred, zero-padded
    np.savez(tmp_path / "x.npz", images=arrays, labels=np.arange(4))
    images, labels, _ = load_images(tmp_path / "x.npz", (1, 28, 28))
    assert images.shape == (4, 1, 28, 28) and labels.tolist() == [0, 1, 2, 3]


def test_sim_board_serves_until_sigterm(ckpt, tmp_path):
    """``bnnhw sim-board`` prints its URL, answers identify there, another checkpoint's
    weights go in over the link, and SIGTERM stops it with status 0."""
    import signal
    import subprocess
    import sys

    from bnnhw.checkpoint import load_model
    from host import Accelerator

    proc = subprocess.Popen([sys.executable, "-m", "bnnhw.cli", "sim-board", "--model",
                             str(ckpt)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()
        assert "on socket://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split(" on ")[1].split()[0]
        other = tmp_path / "other.pt"
        save_checkpoint(other, spec_model(LAYERS, "binary", (1, 28, 28), seed=9), "spec", {})
        graph = compile_model(load_model(other)[0])
        images, _, _ = load_images("mnist", (1, 28, 28), 20)
        with Accelerator.open(url) as acc:
            assert acc.identify().board == "sim"
            acc.load(graph)
            scores, _ = acc.infer(images)
        assert np.array_equal(scores, golden.run(graph, images).scores.numpy())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
