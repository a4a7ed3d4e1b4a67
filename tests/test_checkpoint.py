"""Checkpoints: exact round trip, atomic writes, and one clear error per bad file."""

import os
import pickle
from pathlib import Path

import pytest
import torch

from bnnhw import checkpoint as ckpt_mod
from bnnhw.checkpoint import Checkpoint, load_checkpoint, load_model, save_checkpoint
from bnnhw.errors import BnnhwError
from bnnhw.nn import build_model, zoo

META = {"data": "mnist", "epochs": 3, "test_accuracy": 0.5, "history": [{"loss": 1.0}],
        "data_dir": None}


def trained_tiny():
    """A tiny model whose every parameter and buffer differs from a fresh one."""
    torch.manual_seed(1)
    model = build_model(zoo.get_spec("tiny"))
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) * 2 - 1 if "running_var" not in name
                        else torch.rand_like(t) + 0.5)
            else:
                t.fill_(7)
    return model


def assert_same_state(a, b):
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


@pytest.fixture
def saved(tmp_path):
    model = trained_tiny()
    path = save_checkpoint(tmp_path / "sub" / "tiny.pt", model, "tiny", META)
    return model, path


def test_file_layout(saved):
    model, path = saved
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"format", "version", "arch", "config", "state_dict", "meta"}
    assert raw["format"] == "bnnhw-checkpoint" and raw["version"] == 1
    assert raw["arch"] == "tiny"
    assert raw["config"] == zoo.get_spec("tiny") == model.spec
    assert raw["meta"] == META
    assert_same_state(raw["state_dict"], model.state_dict())


def test_file_mode_follows_the_umask(saved):
    _, path = saved
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_round_trip_is_exact(saved):
    model, path = saved
    loaded, ck = load_model(path)
    assert isinstance(ck, Checkpoint)
    assert (ck.arch, ck.spec, ck.meta, ck.path) == ("tiny", model.spec, META, path)
    assert_same_state(loaded.state_dict(), model.state_dict())
    assert not loaded.training and not any(m.training for m in loaded.modules())
    x = torch.randint(0, 256, (5, 1, 28, 28)).float()
    assert torch.equal(loaded(x), model.eval()(x))
    ck2 = load_checkpoint(str(path))
    assert_same_state(ck2.state_dict, model.state_dict())


def test_state_checker_catches_a_changed_weight(saved):
    model, path = saved
    state = load_checkpoint(path).state_dict
    state["layers.0.weight"] = state["layers.0.weight"].clone()
    state["layers.0.weight"][0, 0, 0, 0] += 1e-6
    with pytest.raises(AssertionError):
        assert_same_state(state, model.state_dict())


def test_user_spec_round_trip(tmp_path):
    spec = {"input": {"shape": [2, 6, 6], "encoding": "thermometer", "levels": 3},
            "layers": [{"type": "conv", "out": 4, "kernel": 3, "padding": 1, "pad_value": 1},
                       {"type": "dense", "out": 5, "scale": True, "bias": True}]}
    model = build_model(spec)
    save_checkpoint(tmp_path / "m.pt", model, "spec")
    loaded, ck = load_model(tmp_path / "m.pt")
    assert ck.arch == "spec" and ck.meta == {} and ck.spec == model.spec
    assert_same_state(loaded.state_dict(), model.state_dict())


def test_save_is_atomic(tmp_path, monkeypatch):
    model = trained_tiny()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, "tiny", {"run": 1})
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, "tiny", {"run": 2})
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "new.pt", model, "tiny")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


@pytest.mark.parametrize("meta,message", [
    ({"path": Path("x")}, "checkpoint meta.path must be a plain value"),
    ({"h": [{"x": torch.zeros(1)}]}, r"meta\.h\[0\]\.x must be a plain value"),
    ({1: "a"}, "checkpoint meta keys must be strings"),
    ({"acc": float("nan")}, "must be a finite number"),
])
def test_meta_must_be_plain(tmp_path, meta, message):
    with pytest.raises((TypeError, ValueError), match=message):
        save_checkpoint(tmp_path / "m.pt", trained_tiny(), "tiny", meta)
    assert not (tmp_path / "m.pt").exists()


def test_bad_arguments_to_save(tmp_path):
    model = trained_tiny()
    with pytest.raises(ValueError, match="arch must be one of"):
        save_checkpoint(tmp_path / "m.pt", model, "resnet")
    with pytest.raises(TypeError, match="needs a bnnhw BNN model"):
        save_checkpoint(tmp_path / "m.pt", torch.nn.Linear(2, 2), "spec")
    with pytest.raises(BnnhwError, match="it is a folder"):
        save_checkpoint(tmp_path, model, "tiny")


# -- bad files ------------------------------------------------------------------------------

class Payload:
    """Unpickling this would run a shell command creating a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def good_payload():
    model = trained_tiny()
    return {"format": "bnnhw-checkpoint", "version": 1, "arch": "tiny",
            "config": model.spec, "state_dict": model.state_dict(), "meta": {}}


def _write(path, edit=None, raw=None):
    if raw is not None:
        path.write_bytes(raw)
        return path
    payload = good_payload()
    if edit:
        edit(payload)
    torch.save(payload, path)
    return path


def expect_error(path, *fragments):
    with pytest.raises(BnnhwError) as info:
        load_model(path)
    text = str(info.value)
    assert "\n" not in text
    for fragment in fragments:
        assert fragment in text, text
    return text


def test_code_in_a_pickle_never_runs(tmp_path):
    marker = tmp_path / "MARKER"
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    inside = tmp_path / "inside.pt"
    payload = good_payload()
    payload["meta"] = {"note": Payload(marker)}
    torch.save(payload, inside)
    for path in (raw, inside):
        expect_error(path, str(path), "refuses to unpickle", "could run code", "system")
    assert not marker.exists()
    # The payload is real: unpickling it without restrictions does create the marker.
    pickle.loads(raw.read_bytes())
    assert marker.exists()


def test_bare_state_dict_is_named(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(trained_tiny().state_dict(), path)
    expect_error(path, "is not a bnnhw checkpoint", "bare state_dict")


def test_error_check_catches_a_silent_load(tmp_path):
    # expect_error itself fails when a file loads fine.
    path = _write(tmp_path / "good.pt")
    with pytest.raises(pytest.fail.Exception):
        expect_error(path, "anything")


def _del(key):
    return lambda p: p.pop(key)


def _set(key, value):
    return lambda p: p.__setitem__(key, value)


def _state(fn):
    def edit(p):
        fn(p["state_dict"])
    return edit


def _config(fn):
    def edit(p):
        fn(p["config"])
    return edit


CASES = {
    "missing": (None, None, ["does not exist"]),
    "folder": (None, None, ["is a folder, not a file"]),
    "empty": (None, b"", ["is empty"]),
    "text": (None, b"hello, this is not a checkpoint\n", ["is not a torch checkpoint file"]),
    "random": (None, bytes(range(7, 250)), ["is not a torch checkpoint file"]),
    "truncated": ("truncate", None, ["truncated or corrupted"]),
    "legacy-truncated": ("legacy-truncate", None, ["truncated or corrupted"]),
    "not-a-dict": (lambda p: None, None, ["is not a bnnhw checkpoint"]),
    "wrong-format": (_set("format", "finn"), None, ["is not a bnnhw checkpoint"]),
    "wrong-version": (_set("version", 2), None, ["format version 2", "version 1 only"]),
    "no-meta": (_del("meta"), None, ["lacks its 'meta' entry"]),
    "no-state": (_del("state_dict"), None, ["lacks its 'state_dict' entry"]),
    "bad-arch": (_set("arch", "resnet50"), None, ["arch 'resnet50' is neither a zoo model"]),
    "meta-not-dict": (_set("meta", [1]), None, ["'meta' must be a dict"]),
    "unknown-layer": (_config(lambda c: c["layers"][0].__setitem__("type", "lstm")), None,
                      ["invalid model config", "unknown layer type 'lstm'"]),
    "impossible-shape": (_config(lambda c: c["layers"][0].__setitem__("kernel", 40)), None,
                         ["invalid model config", "kernel 40 is larger than"]),
    "config-not-dict": (_set("config", "tiny"), None, ["invalid model config"]),
    "missing-tensor": (_state(lambda s: s.pop("layers.1.running_mean")), None,
                       ["lacks 'layers.1.running_mean'"]),
    "extra-tensor": (_state(lambda s: s.__setitem__("layers.99.weight", torch.zeros(1))),
                     None, ["'layers.99.weight' does not belong"]),
    "wrong-shape": (_state(lambda s: s.__setitem__("layers.0.weight", torch.zeros(8, 1, 5, 5))),
                    None, ["'layers.0.weight' has shape [8, 1, 5, 5]", "[8, 1, 3, 3]"]),
    "wrong-dtype": (_state(lambda s: s.__setitem__("layers.0.weight",
                                                   torch.zeros(8, 1, 3, 3, dtype=torch.int32))),
                    None, ["dtype torch.int32"]),
    "not-a-tensor": (_state(lambda s: s.__setitem__("layers.0.weight", [1.0])), None,
                     ["is a list, not a tensor"]),
    "state-not-dict": (_set("state_dict", [1]), None, ["must be a dict of tensors"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_file_gives_one_clear_sentence(tmp_path, case):
    edit, raw, fragments = CASES[case]
    path = tmp_path / f"{case}.pt"
    if case == "folder":
        path.mkdir()
    elif case == "not-a-dict":
        torch.save([1, 2, 3], path)
    elif edit == "truncate":
        whole = _write(tmp_path / "whole.pt").read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif edit == "legacy-truncate":
        torch.save(good_payload(), tmp_path / "whole.pt", _use_new_zipfile_serialization=False)
        whole = (tmp_path / "whole.pt").read_bytes()
        path.write_bytes(whole[:-100])
    elif case != "missing":
        _write(path, edit, raw)
    expect_error(path, str(path), *fragments)
    with pytest.raises(BnnhwError):
        load_checkpoint(path)


# -- files that are not what they claim, nesting, sizes, NaN ---------------------------------

MARK = "NESTED_PLACEHOLDER"


def nested_checkpoint(path, key, depth=100_000):
    """A checkpoint whose ``key`` ('config' or 'meta') holds a list nested ``depth`` deep.

    torch.save cannot write one (its pickler recurses), so a marker string is saved and
    its pickle opcode swapped for ``depth + 1`` EMPTY_LISTs and ``depth`` APPENDs."""
    import zipfile

    payload = good_payload()
    if key == "meta":
        payload["meta"] = {"x": MARK}
    else:
        payload["config"] = {**payload["config"], "name": MARK}
    torch.save(payload, path)
    with zipfile.ZipFile(path) as z:
        items = [(info, z.read(info.filename)) for info in z.infolist()]
    op = b"X" + len(MARK).to_bytes(4, "little") + MARK.encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for info, data in items:
            if info.filename.endswith("data.pkl"):
                assert data.count(op) == 1
                data = data.replace(op, b"]" * (depth + 1) + b"a" * depth)
            z.writestr(info, data)
    return path


def test_nested_checkpoint_helper_nests(tmp_path):
    path = nested_checkpoint(tmp_path / "m.pt", "meta", depth=40)
    x = torch.load(path, weights_only=True)["meta"]["x"]
    depth = 0
    while isinstance(x, list) and x:
        x, depth = x[0], depth + 1
    assert depth == 40


def _zip(path, entries):
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


def _garbage_pickle(path, tmp_path):
    import zipfile

    good = _write(tmp_path / "good.pt")
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(path, "w") as z:
        for info in zin.infolist():
            data = zin.read(info.filename)
            z.writestr(info, b"\x80\x02garbage!!" if info.filename.endswith("data.pkl")
                       else data)
    return path


def _nan_weight(p):
    p["state_dict"]["layers.0.weight"] = p["state_dict"]["layers.0.weight"].clone()
    p["state_dict"]["layers.0.weight"][0, 0, 0, 0] = float("nan")


MORE_CASES = {
    "version-true": (lambda path, tmp: _write(path, _set("version", True)),
                     ["format version True", "version 1 only"]),
    "version-float": (lambda path, tmp: _write(path, _set("version", 1.0)),
                      ["format version 1.0"]),
    "deep-meta": (lambda path, tmp: nested_checkpoint(path, "meta"),
                  ["its 'meta' entry nests lists or dicts more than 32 levels deep"]),
    "deep-config": (lambda path, tmp: nested_checkpoint(path, "config"),
                    ["its 'config' entry nests lists or dicts more than 32 levels deep"]),
    "npz": (lambda path, tmp: _npz(path), ["is a numpy .npz archive, not a torch checkpoint"]),
    "plain-zip": (lambda path, tmp: _zip(path, {"hello.txt": "hi"}),
                  ["is a zip archive but not a torch checkpoint (it holds no data.pkl)"]),
    "garbage-pickle": (_garbage_pickle, ["is corrupt: its pickled data is not valid"]),
    "nan-weight": (lambda path, tmp: _write(path, _nan_weight),
                   ["'layers.0.weight' holds NaN or infinite values"]),
    "nan-meta": (lambda path, tmp: _write(path, _set("meta", {"acc": float("nan")})),
                 ["meta.acc must be a finite number"]),
    "tensor-meta": (lambda path, tmp: _write(path, _set("meta", {"t": torch.zeros(1)})),
                    ["meta.t must be a plain value"]),
    "huge-config": (lambda path, tmp: _write(path, _config(
        lambda c: c["layers"][2].__setitem__("out", 10**12))),
        ["needs about", "of memory to run", "more than the", "this machine has"]),
    "huge-padding": (lambda path, tmp: _write(path, _config(
        lambda c: c["layers"][0].__setitem__("padding", 10**6))),
        ["needs about", "of memory to run"]),
}


def _npz(path):
    import numpy as np

    with open(path, "wb") as f:
        np.savez(f, x=np.zeros(3))
    return path


@pytest.mark.parametrize("case", list(MORE_CASES))
def test_more_bad_files(tmp_path, case):
    make, fragments = MORE_CASES[case]
    path = make(tmp_path / f"{case}.pt", tmp_path)
    text = expect_error(path, str(path), *fragments)
    if case == "garbage-pickle":
        assert "could run code" not in text


def test_deep_but_reasonable_meta_loads(tmp_path):
    path = nested_checkpoint(tmp_path / "m.pt", "meta", depth=20)
    assert load_checkpoint(path).meta["x"]


def test_save_refuses_special_files(tmp_path):
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    with pytest.raises(BnnhwError, match="is a named pipe, not a regular file"):
        save_checkpoint(fifo, trained_tiny(), "tiny")
    assert fifo.is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.pt"]


def test_companions_are_written_with_the_checkpoint(tmp_path):
    path = tmp_path / "sub" / "m.pt"
    save_checkpoint(path, trained_tiny(), "tiny", companions=[
        (tmp_path / "sub" / "m.txt", lambda f: f.write(b"hello"))])
    assert (tmp_path / "sub" / "m.txt").read_bytes() == b"hello"
    load_checkpoint(path)


@pytest.mark.parametrize("fail", ["companion", "interrupt", "second-rename"])
def test_checkpoint_and_companion_both_or_neither(tmp_path, monkeypatch, fail):
    from bnnhw import errors

    def companion(f):
        if fail == "companion":
            raise OSError("disk full")
        if fail == "interrupt":
            raise KeyboardInterrupt
        f.write(b"curve")

    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if fail == "second-rename" and len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(errors.os, "replace", replace)
    with pytest.raises((OSError, KeyboardInterrupt)):
        save_checkpoint(tmp_path / "new" / "m.pt", trained_tiny(), "tiny",
                        companions=[(tmp_path / "new" / "m.png", companion)])
    assert list(tmp_path.iterdir()) == []
    if fail == "second-rename":
        assert len(calls) == 2  # the first file had been renamed into place, then removed
