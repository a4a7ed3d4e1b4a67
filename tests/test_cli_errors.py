"""Every user error of the bnnhw command line, typed the way a new user would.

Each case runs the exact command in this process (``bnnhw.cli.main``, in a scratch
folder) and asserts: exit status 2, exactly one line on stderr starting with
``bnnhw COMMAND: error:`` (``bnnhw: error:`` for the parser itself), no traceback, and
not a single file more, less or different in the scratch folder afterwards.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bnnhw import cli
from bnnhw.checkpoint import save_checkpoint
from tests.bnn_cases import zoo_model
from tests.test_data import _zero_bomb, idx_bytes, idx_header, write_mnist


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


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folder`` (hidden ones too) with its type and size."""
    result = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        result[str(p.relative_to(folder))] = (stat.S_IFMT(st.st_mode),
                                              st.st_size if stat.S_ISREG(st.st_mode) else 0)
    return result


def expect_error(argv, capsys, folder, fragment, code=2):
    """Run ``argv``; check the one-line error, its status and that ``folder`` is unchanged."""
    command = argv[0] if argv and argv[0] in cli.COMMANDS else None
    prefix = f"bnnhw {command}: error: " if command else "bnnhw: error: "
    if code == 130:
        prefix = f"bnnhw {command}: interrupted"
    before = listing(folder)
    status, out, err = run(argv, capsys)
    assert "Traceback" not in err and "Traceback" not in out, err
    assert status == code, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(prefix), err
    assert fragment in err, err
    assert listing(folder) == before, "the command left files behind"
    return err


def test_expect_error_can_fail(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def leaves_a_file(args):
        Path("half.pt").write_bytes(b"x")
        raise cli.BnnhwError("bad")

    def traceback(args):
        print("Traceback (most recent call last):\nboom", file=sys.stderr)
        return 2

    for fake in (leaves_a_file, traceback):
        monkeypatch.setattr("bnnhw.commands.compile.run", fake)
        with pytest.raises(AssertionError):
            expect_error(["compile", "--model", "m.pt"], capsys, tmp_path, "bad")
    with pytest.raises(AssertionError):  # a command that succeeds is no user error
        expect_error(["--version"], capsys, tmp_path, "")


# -- the scratch folder ----------------------------------------------------------------------

SPEC = {"input": {"shape": [1, 28, 28]},
        "layers": [{"type": "dense", "out": 16}, {"type": "dense", "out": 10}]}


def _huge(layers=None, **inp):
    return {"input": {"shape": [1, 28, 28], **inp},
            "layers": layers or [{"type": "dense", "out": 10}]}


SPEC_FILES = {
    "spec.json": json.dumps(SPEC),
    "deep.json": "[" * 100_000 + "]" * 100_000,
    "deepname.json": json.dumps(SPEC)[:-1] + ', "name": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "wide.json": json.dumps(_huge([{"type": "dense", "out": 10**9},
                                   {"type": "dense", "out": 10}])),
    "padded.json": json.dumps(_huge([{"type": "conv", "out": 4, "kernel": 3,
                                      "padding": 10**6}, {"type": "dense", "out": 10}])),
    "vast.json": json.dumps(_huge(shape=[1, 100000, 100000])),
    "levels.json": json.dumps(_huge(encoding="thermometer", levels=10**6)),
}


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    save_checkpoint(path, zoo_model("tfc", seed=0, calibration=2), "tfc", {"data": "mnist"})
    return path.read_bytes()


@pytest.fixture(scope="module")
def layer_names():
    from bnnhw.folding import matrix_layers
    from bnnhw.frontend import compile_model

    return [m.name for m in matrix_layers(compile_model(zoo_model("tfc", seed=0,
                                                                  calibration=2)))]


@pytest.fixture
def work(tmp_path, monkeypatch, checkpoint_bytes):
    """A scratch folder, the working directory, holding a checkpoint m.pt, spec files, a
    folder sub/ and a small MNIST in IDX files under mnist/."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.pt").write_bytes(checkpoint_bytes)
    for name, text in SPEC_FILES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "sub").mkdir()
    write_mnist(tmp_path / "mnist", n_train=20, n_test=10)
    return tmp_path


def _edit_checkpoint(work, name, edit):
    payload = torch.load(work / "m.pt", weights_only=True)
    edit(payload)
    torch.save(payload, work / name)


def _mnist_variant(work, name, file, raw):
    folder = work / name
    write_mnist(folder, n_train=20, n_test=10)
    for stale in (folder / file.removesuffix(".gz"), folder / file):
        stale.unlink(missing_ok=True)
    (folder / file).write_bytes(raw)


def _corrupt_deflate(work):
    import gzip

    raw = bytearray(gzip.compress(idx_bytes(np.zeros((20, 28, 28)))))
    raw[10:30] = b"\xff" * 20
    return bytes(raw)


SETUPS = {
    "empty-test": lambda w: (
        (w / "mnist" / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((0, 28, 28)))),
        (w / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(0)))),
    "corrupt-gz": lambda w: _mnist_variant(w, "mnist", "train-images-idx3-ubyte.gz",
                                           b"\x1f\x8b\x08\x00" + bytes(range(60))),
    "corrupt-deflate": lambda w: _mnist_variant(w, "mnist", "train-images-idx3-ubyte.gz",
                                                _corrupt_deflate(w)),
    "idx-overflow": lambda w: _mnist_variant(w, "mnist", "train-images-idx3-ubyte",
                                             idx_header(2**31, 2**31, 4)),
    "gzip-bomb": lambda w: _mnist_variant(
        w, "mnist", "train-images-idx3-ubyte.gz",
        _zero_bomb(idx_bytes(np.zeros((20, 28, 28))), 16)),
    "gzip-bomb-header": lambda w: _mnist_variant(
        w, "mnist", "train-images-idx3-ubyte.gz", _zero_bomb(idx_header(6_000_000, 28, 28), 4)),
    "curve-folder": lambda w: (w / "x.curve.png").mkdir(),
    "npz-folder": lambda w: (w / "x.ir.npz").mkdir(),
    "version-true": lambda w: _edit_checkpoint(w, "bad.pt", lambda p: p.update(version=True)),
    "data-dir-int": lambda w: _edit_checkpoint(
        w, "bad.pt", lambda p: p["meta"].update(data_dir=5)),
    "data-dir-list": lambda w: _edit_checkpoint(
        w, "bad.pt", lambda p: p["meta"].update(data_dir=["a"])),
    "data-int": lambda w: _edit_checkpoint(w, "bad.pt", lambda p: p["meta"].update(data=3)),
    "data-dir-gone": lambda w: _edit_checkpoint(
        w, "bad.pt", lambda p: p["meta"].update(data_dir=str(w / "gone"))),
    "data-unknown": lambda w: _edit_checkpoint(
        w, "bad.pt", lambda p: p["meta"].update(data="imagenet")),
    "nan-weights": lambda w: _edit_checkpoint(w, "bad.pt", _nan_weights),
    "deep-meta": lambda w: _nested(w, "meta"),
    "deep-config": lambda w: _nested(w, "config"),
    "npz": lambda w: np.savez(w / "a.npz", x=np.zeros(3)),
    "plain-zip": lambda w: _plain_zip(w),
    "garbage-pickle": lambda w: _garbage_pickle(w),
}


def _nan_weights(p):
    key = next(k for k in p["state_dict"] if k.endswith(".weight"))
    p["state_dict"][key] = p["state_dict"][key].clone()
    p["state_dict"][key].view(-1)[0] = float("nan")


def _nested(work, key):
    from tests.test_checkpoint import MARK

    payload = torch.load(work / "m.pt", weights_only=True)
    if key == "meta":
        payload["meta"]["x"] = MARK
    else:
        payload["config"]["name"] = MARK
    torch.save(payload, work / "bad.pt")
    with zipfile.ZipFile(work / "bad.pt") as z:
        items = [(info, z.read(info.filename)) for info in z.infolist()]
    op = b"X" + len(MARK).to_bytes(4, "little") + MARK.encode()
    with zipfile.ZipFile(work / "bad.pt", "w") as z:
        for info, data in items:
            if info.filename.endswith("data.pkl"):
                data = data.replace(op, b"]" * 100_001 + b"a" * 100_000)
            z.writestr(info, data)


def _plain_zip(work):
    with zipfile.ZipFile(work / "bad.pt", "w") as z:
        z.writestr("notes.txt", "hello")


def _garbage_pickle(work):
    with zipfile.ZipFile(work / "m.pt") as zin, zipfile.ZipFile(work / "bad.pt", "w") as z:
        for info in zin.infolist():
            data = zin.read(info.filename)
            z.writestr(info, b"\x80\x02garbage!!" if info.filename.endswith("data.pkl")
                       else data)


TRAIN = ["train", "--epochs", "1", "--limit", "100", "--quiet"]

CASES = {
    # the parser itself
    "no-command": (None, [], "the following arguments are required: COMMAND"),
    "unknown-command": (None, ["trian"], "invalid choice: 'trian'"),
    # bnnhw train: arguments
    "threads-100000": (None, TRAIN + ["--model", "tfc", "--threads", "100000"],
                       "argument --threads: expected a number of threads in 1.."),
    "threads-10000": (None, TRAIN + ["--model", "tfc", "--threads", "10000"],
                      "(the CPUs of this machine)"),
    "threads-0": (None, TRAIN + ["--model", "tfc", "--threads", "0"],
                  "argument --threads: expected a number of threads"),
    "train-seed-huge": (None, TRAIN + ["--model", "tfc", "--seed", "9" * 23],
                        "argument --seed: expected an integer seed in 0..2**63-1"),
    "train-seed-2**63": (None, TRAIN + ["--model", "tfc", "--seed", str(2**63)],
                         "expected an integer seed in 0..2**63-1"),
    "lr-inf": (None, TRAIN + ["--model", "tfc", "--lr", "inf"], "expected a positive number"),
    "shift-huge": (None, TRAIN + ["--model", "tfc", "--shift", "100000"],
                   "a shift of 100000 pixels moves every image out"),
    # bnnhw train: the model
    "spec-deep": (None, TRAIN + ["--model", "deep.json"],
                  "model spec file deep.json nests brackets more than 32 levels deep"),
    "spec-deep-name": (None, TRAIN + ["--model", "deepname.json"], "nests brackets more than"),
    "spec-folder": (None, TRAIN + ["--model", "sub"], "model spec file sub is a folder"),
    "spec-checkpoint": (None, TRAIN + ["--model", "m.pt"], "m.pt looks like a checkpoint"),
    "spec-dense-huge": (None, TRAIN + ["--model", "wide.json"],
                        "model spec file wide.json needs about"),
    "spec-padding-huge": (None, TRAIN + ["--model", "padded.json"],
                          "of memory for training (160,004,160,027,160 parameters"),
    "spec-input-huge": (None, TRAIN + ["--model", "vast.json"], "needs about"),
    "spec-levels-huge": (None, TRAIN + ["--model", "levels.json"],
                         "levels must be an integer in 1..255, not 1000000"),
    # bnnhw train: training that diverges
    "lr-overflow": (None, TRAIN + ["--model", "tfc", "--lr", "1e38"],
                    "training diverged at epoch 1, batch 1: the optimizer step overflowed"),
    "lr-nan-weights": (None, TRAIN + ["--model", "tfc", "--lr", "1e30"],
                       "holds NaN or infinite values; nothing was written"),
    # bnnhw train: the data
    "empty-test-set": ("empty-test", TRAIN + ["--model", "tfc", "--data-dir", "mnist"],
                       "data set mnist has no test images"),
    "corrupt-gz": ("corrupt-gz", TRAIN + ["--model", "tfc", "--data-dir", "mnist"],
                   "train-images-idx3-ubyte.gz cannot be decompressed (corrupt gzip data"),
    "corrupt-deflate": ("corrupt-deflate", TRAIN + ["--model", "tfc", "--data-dir", "mnist"],
                        "cannot be decompressed (corrupt gzip data"),
    "idx-overflow": ("idx-overflow", TRAIN + ["--model", "tfc", "--data-dir", "mnist"],
                     "announces 18,446,744,073,709,551,616 data bytes"),
    "gzip-bomb": ("gzip-bomb", TRAIN + ["--model", "tfc", "--data-dir", "mnist"],
                  "decompresses to more than the 15680 data bytes its header announces"),
    "gzip-bomb-header": ("gzip-bomb-header", TRAIN + ["--model", "tfc", "--data-dir", "mnist"],
                         "announces 4,704,000,000 data bytes"),
    # bnnhw train: the outputs, all checked before training
    "out-under-a-file": (None, TRAIN + ["--model", "tfc", "--out", "spec.json/x.pt"],
                         "--out spec.json/x.pt cannot be created: spec.json is a file"),
    "out-deep-under-a-file": (None, TRAIN + ["--model", "tfc", "--out", "spec.json/a/x.pt"],
                              "cannot be created: spec.json is a file, not a folder"),
    "out-folder": (None, TRAIN + ["--model", "tfc", "--out", "sub"], "--out sub is a folder"),
    "out-trailing-slash": (None, TRAIN + ["--model", "tfc", "--out", "newdir/"],
                           "--out newdir/ must be a file name, not a folder"),
    "out-dot": (None, TRAIN + ["--model", "tfc", "--out", "."], "must be a file name"),
    "out-is-the-spec": (None, TRAIN + ["--model", "spec.json", "--out", "spec.json"],
                        "--out spec.json is also the --model spec file"),
    "out-is-the-spec-too": (None, TRAIN + ["--model", "spec.json", "--out", "./sub/../spec.json"],
                            "is also the --model spec file"),
    "out-is-a-data-file": (None, TRAIN + ["--model", "tfc", "--data-dir", "mnist", "--out",
                                          "mnist/t10k-images-idx3-ubyte"],
                           "is also an input data file"),
    "out-missing-location": (None, TRAIN + ["--model", "tfc", "--out", "/proc/bnnhw/x.pt"],
                             "--out /proc/bnnhw/x.pt cannot be written"),
    "out-read-only-location": (None, TRAIN + ["--model", "tfc", "--out", "/sys/x.pt"],
                               "--out /sys/x.pt cannot be written"),
    "out-beside-a-curve-folder": ("curve-folder", TRAIN + ["--model", "tfc", "--out", "x.pt"],
                                  "the training curve x.curve.png is a folder"),
    # bnnhw compile
    "compile-onto-a-folder": (None, ["compile", "--model", "m.pt", "-o", "sub"],
                              "-o/--out sub is a folder"),
    "compile-trailing-slash": (None, ["compile", "--model", "m.pt", "-o", "newdir/"],
                               "must be a file name, not a folder"),
    "compile-onto-the-model": (None, ["compile", "--model", "m.pt", "-o", "m.pt"],
                               "-o/--out m.pt is also the --model checkpoint"),
    "compile-npz-is-a-folder": ("npz-folder", ["compile", "--model", "m.pt", "-o", "x.ir"],
                                "the IR's arrays file x.ir.npz is a folder"),
    "compile-under-a-file": (None, ["compile", "--model", "m.pt", "-o", "spec.json/x.ir"],
                             "cannot be created"),
    "compile-an-npz": ("npz", ["compile", "--model", "a.npz"],
                       "a.npz is a numpy .npz archive, not a torch checkpoint"),
    "compile-nan-weights": ("nan-weights", ["compile", "--model", "bad.pt"],
                            "checkpoint bad.pt: state_dict entry"),
    "compile-deep-meta": ("deep-meta", ["compile", "--model", "bad.pt"],
                          "its 'meta' entry nests lists or dicts more than 32 levels deep"),
    # bnnhw check
    "eps-negative": (None, ["check", "--model", "m.pt", "--random", "--eps", "-1"],
                     "argument --eps: expected a finite number >= 0, not '-1'"),
    "eps-nan": (None, ["check", "--model", "m.pt", "--random", "--eps", "nan"],
                "expected a finite number >= 0, not 'nan'"),
    "eps-inf": (None, ["check", "--model", "m.pt", "--random", "--eps", "inf"],
                "expected a finite number >= 0"),
    "check-seed-huge": (None, ["check", "--model", "m.pt", "--random", "--seed", "9" * 23],
                        "argument --seed: expected an integer seed"),
    "check-images-huge": (None, ["check", "--model", "m.pt", "--random", "--images",
                                 "100000000"], "--images 100000000 needs about"),
    "check-images-zero": (None, ["check", "--model", "m.pt", "--images", "0"],
                          "argument --images: expected a positive integer"),
    "check-version-true": ("version-true", ["check", "--model", "bad.pt"],
                           "checkpoint bad.pt has format version True"),
    "check-data-dir-int": ("data-dir-int", ["check", "--model", "bad.pt"],
                           "its meta 'data_dir' must be a folder name, not int 5"),
    "check-data-dir-list": ("data-dir-list", ["check", "--model", "bad.pt"],
                            "its meta 'data_dir' must be a folder name, not list"),
    "check-data-dir-gone": ("data-dir-gone", ["check", "--model", "bad.pt"],
                            "gone does not exist (the data folder checkpoint bad.pt was"),
    "check-data-int": ("data-int", ["check", "--model", "bad.pt"],
                       "its meta 'data' 3 is not a data set bnnhw knows"),
    "check-data-unknown": ("data-unknown", ["check", "--model", "bad.pt"],
                           "its meta 'data' 'imagenet' is not a data set bnnhw knows"),
    "check-deep-config": ("deep-config", ["check", "--model", "bad.pt"],
                          "its 'config' entry nests lists or dicts more than 32 levels deep"),
    "check-deep-meta": ("deep-meta", ["check", "--model", "bad.pt"], "its 'meta' entry nests"),
    "check-plain-zip": ("plain-zip", ["check", "--model", "bad.pt"],
                        "bad.pt is a zip archive but not a torch checkpoint"),
    "check-garbage-pickle": ("garbage-pickle", ["check", "--model", "bad.pt"],
                             "checkpoint bad.pt is corrupt: its pickled data is not valid"),
    "check-a-folder": (None, ["check", "--model", "sub"], "checkpoint sub is a folder"),
    "check-nan-weights": ("nan-weights", ["check", "--model", "bad.pt", "--random"],
                          "checkpoint bad.pt: state_dict entry"),
    # bnnhw verify (all refused before anything is simulated)
    "verify-waves-is-a-file": (None, ["verify", "--model", "m.pt", "--waves", "spec.json"],
                               "--waves spec.json is a file, not a folder"),
    "verify-waves-under-a-file": (None, ["verify", "--model", "m.pt", "--waves",
                                         "spec.json/w"], "cannot be created"),
    "verify-target-ii-and-folding": (None, ["verify", "--model", "m.pt", "--folding", "f.json",
                                            "--target-ii", "100"],
                                     "--folding and --target-ii exclude each other"),
    "verify-images-huge": (None, ["verify", "--model", "m.pt", "--random", "--images",
                                  "100000000"], "--images 100000000 needs about"),
    "verify-stall-nan": (None, ["verify", "--model", "m.pt", "--stall", "nan"],
                         "argument --stall: expected a probability in [0, 1)"),
    "verify-data-dir-int": ("data-dir-int", ["verify", "--model", "bad.pt"],
                            "its meta 'data_dir' must be a folder name"),
    "verify-version-true": ("version-true", ["verify", "--model", "bad.pt"],
                            "has format version True"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_error(work, capsys, case):
    setup, argv, fragment = CASES[case]
    if setup:
        SETUPS[setup](work)
    expect_error(argv, capsys, work, fragment)


def test_out_dev_null_is_never_replaced(work, capsys):
    """As root, the old code replaced /dev/null by a regular file and wrote
    /dev/null.curve.png; if that ever happens again, the device is made anew."""
    devnull = Path("/dev/null")
    assert stat.S_ISCHR(devnull.stat().st_mode)
    strays = [p for p in (Path("/dev/null.curve.png"), Path("/dev/null.npz")) if not p.exists()]
    try:
        for argv in (TRAIN + ["--model", "tfc", "--out", "/dev/null"],
                     ["compile", "--model", "m.pt", "-o", "/dev/null"]):
            expect_error(argv, capsys, work, "/dev/null is a character device, not a "
                                             "regular file")
            assert stat.S_ISCHR(devnull.stat().st_mode)
            assert not Path("/dev/null.curve.png").exists()
            assert not Path("/dev/null.npz").exists()
    finally:
        for stray in strays:
            stray.unlink(missing_ok=True)
        if not stat.S_ISCHR(os.stat(devnull).st_mode) and os.geteuid() == 0:
            devnull.unlink()
            os.mknod(devnull, stat.S_IFCHR | 0o666, os.makedev(1, 3))
            os.chmod(devnull, 0o666)


def test_a_named_pipe_is_never_replaced(work, capsys):
    os.mkfifo(work / "pipe.pt")
    expect_error(TRAIN + ["--model", "tfc", "--out", "pipe.pt"], capsys, work,
                 "--out pipe.pt is a named pipe, not a regular file")
    assert (work / "pipe.pt").is_fifo()


def _folding(work, layer_names, edit):
    doc = {"layers": {name: {"pe": 1, "simd": 1} for name in layer_names}}
    edit(doc, layer_names)
    (work / "f.json").write_text(json.dumps(doc))


FOLDINGS = {
    "entry-is-a-number": (lambda d, n: d["layers"].__setitem__(n[-1], 4),
                          ('the entry of layer {last} must be an object {{"pe": N, "simd": N}}, '
                           'not 4')),
    "unknown-entry-key": (lambda d, n: d["layers"][n[0]].__setitem__("pes", 2),
                          "layer {first} has an unknown key 'pes'"),
    "unknown-top-key": (lambda d, n: d.__setitem__("target", 3), "has an unknown key 'target'"),
    "zero-pe": (lambda d, n: d["layers"][n[0]].__setitem__("pe", 0),
                "layer {first} needs a positive integer 'pe', not 0"),
    "bool-simd": (lambda d, n: d["layers"][n[0]].__setitem__("simd", True),
                  "needs a positive integer 'simd', not true"),
    "pe-not-dividing": (lambda d, n: d["layers"][n[0]].__setitem__("pe", 7),
                        "folding file f.json: layer {first}: pe must divide"),
    "deep": (lambda d, n: d.__setitem__("x", json.loads("[" * 40 + "]" * 40)),
             "nests brackets more than 32 levels deep"),
}


@pytest.mark.parametrize("case", list(FOLDINGS))
def test_bad_folding_file(work, capsys, layer_names, case):
    edit, fragment = FOLDINGS[case]
    _folding(work, layer_names, edit)
    expect_error(["verify", "--model", "m.pt", "--folding", "f.json"], capsys, work,
                 fragment.format(first=layer_names[0], last=layer_names[-1]))


def test_folding_file_that_is_a_folder(work, capsys):
    expect_error(["verify", "--model", "m.pt", "--folding", "sub"], capsys, work,
                 "folding file sub is a folder")


# -- Ctrl-C: exit 130 and nothing half-written ------------------------------------------------

def test_interrupted_training_writes_nothing(work, capsys, monkeypatch):
    import bnnhw.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bnnhw.train, "train", interrupted)
    expect_error(TRAIN + ["--model", "tfc", "--out", "new/x.pt"], capsys, work, "", code=130)


@pytest.mark.parametrize("when", ["curve", "second-rename"])
def test_interrupt_while_writing_leaves_both_or_neither(work, capsys, monkeypatch, when):
    """Interrupted while the curve is drawn, or between the two renames: neither file."""
    import bnnhw.errors
    import bnnhw.train

    if when == "curve":
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(bnnhw.train, "render_curve", interrupted)
    else:
        real, calls = os.replace, []

        def replace(src, dst):
            calls.append(dst)
            if len(calls) == 2:
                raise KeyboardInterrupt
            real(src, dst)

        monkeypatch.setattr(bnnhw.errors.os, "replace", replace)
    expect_error(TRAIN + ["--model", "tfc", "--out", "new/x.pt"], capsys, work, "", code=130)


def test_a_successful_run_writes_both(work, capsys):
    code, _, err = run(TRAIN + ["--model", "tfc", "--out", "new/x.pt"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (work / "new").iterdir()) == ["x.curve.png", "x.pt"]


def test_interrupted_cosim_removes_its_run_folder(tmp_path, monkeypatch):
    """Ctrl-C during the simulation, with and without a progress callback."""
    import threading

    from sim import cosim
    from sim.verilator import VerilatorBuild

    monkeypatch.setenv("BNNHW_SIM_CACHE", str(tmp_path / "cache"))
    build = VerilatorBuild(directory=tmp_path, toplevel="top", key="key", cached=True,
                           seconds=0.0, waves=None)
    monkeypatch.setattr(cosim, "verilator_build", lambda *args, **kwargs: build)
    release = threading.Event()

    def run_cocotb(build, module, *, run_dir, env, waves_file, seed):
        conf = json.loads(env[cosim.CONF_ENV])
        if "progress_file" not in conf:
            raise KeyboardInterrupt
        Path(conf["progress_file"]).write_text("1 10")
        (run_dir / "sim.log").write_text("running")
        release.wait(5)

    def progress(beats, cycle):
        release.set()  # let the simulator finish, as the terminal's Ctrl-C would
        raise KeyboardInterrupt

    monkeypatch.setattr(cosim, "run_cocotb", run_cocotb)
    runs = tmp_path / "cache" / "runs"
    for callback in (None, progress):
        with pytest.raises(KeyboardInterrupt):
            cosim.run_stream_cosim("module top; endmodule", [1, 2], 1, progress=callback)
        assert runs.is_dir() and list(runs.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name == "cosim"]



# -- help, version and the static tables -----------------------------------------------------

def test_help_and_version_do_not_import_torch():
    code = (
        "import sys\n"
        "from bnnhw import cli\n"
        "for argv in (['--help'], ['--version'], ['train', '--help'], ['compile', '--help'],\n"
        "             ['check', '--help'], ['verify', '--help']):\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (argv, e.code)\n"
        "    heavy = sorted(m for m in ('torch', 'numpy', 'amaranth', 'bnnhw.nn')\n"
        "                   if m in sys.modules)\n"
        "    print(' '.join(argv), 'imports', heavy or 'nothing heavy', file=sys.stderr)\n"
        "    assert 'torch' not in sys.modules, argv\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "usage: bnnhw [-h] [--version] COMMAND" in done.stdout
    assert "usage: bnnhw verify" in done.stdout and "--waves DIR" in done.stdout


def test_the_torch_probe_can_fail():
    probe = "import sys, bnnhw.checkpoint; assert 'torch' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, check=False)
    assert done.returncode != 0


def test_version(capsys):
    code, out, err = run(["--version"], capsys)
    assert code == 0 and err == ""
    assert out == f"bnnhw {importlib.metadata.version('bnnhw')}\n"


def test_static_tables_match_the_modules():
    from bnnhw import check, data
    from bnnhw import train as train_mod
    from bnnhw.commands import check as check_cmd
    from bnnhw.commands import train as train_cmd
    from bnnhw.nn import zoo

    assert train_cmd.ZOO_NAMES == zoo.NAMES
    assert train_cmd.DATA_NAMES == data.NAMES
    assert train_cmd.OPTIMIZERS == train_mod.OPTIMIZERS
    assert train_cmd.SCHEDULES == train_mod.SCHEDULES
    assert check_cmd.TIE_EPS == check.TIE_EPS
    modules = {p.stem.replace("_", "-") for p in Path(cli.__file__).parent.joinpath(
        "commands").glob("*.py") if p.stem not in ("__init__", "common")}
    assert set(cli.COMMANDS) == modules


def test_every_command_module_is_light():
    """Command modules import only argparse, pathlib and bnnhw's light helpers at their top."""
    code = ("import sys\n"
            "for name in ('train', 'compile', 'check', 'verify', 'infer', 'sim_board'):\n"
            "    __import__('bnnhw.commands.' + name)\n"
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr

