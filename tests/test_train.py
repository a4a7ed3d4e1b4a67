"""Training: settings, schedule, augmentation, reproducibility, data checks, the curve."""

import json
import math

import pytest
import torch

from bnnhw.data import Dataset, load_dataset
from bnnhw.errors import BnnhwError
from bnnhw.nn import zoo
from bnnhw.train import (
    TrainConfig,
    _lr_factor,
    curve_path,
    evaluate,
    plot_curve,
    random_shift,
    resolve_model,
    train,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Small matrices train fastest on one thread, and pytest-xdist already uses both cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


def subset(ds, n_train, n_test):
    # The bundled test split takes the classes in turn, so a prefix is balanced; the
    # training split is sorted by class, so take every k-th image.
    step = len(ds.train_y) // n_train
    return Dataset(ds.name, ds.train_x[::step][:n_train], ds.train_y[::step][:n_train],
                   ds.test_x[:n_test], ds.test_y[:n_test], ds.classes, ds.shape)


# -- settings and schedule -------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    ({"epochs": 0}, "epochs must be a positive integer, not 0"),
    ({"epochs": 1.5}, "epochs must be a positive integer"),
    ({"batch_size": 1}, "batch size must be an integer >= 2"),
    ({"lr": 0.0}, "learning rate must be a positive number, not 0.0"),
    ({"lr": float("nan")}, "learning rate must be a positive number"),
    ({"lr": True}, "learning rate must be a positive number"),
    ({"optimizer": "rmsprop"}, "optimizer must be one of adam, sgd, not 'rmsprop'"),
    ({"schedule": "linear"}, "schedule must be one of cosine, step, not 'linear'"),
    ({"seed": -1}, r"seed must be an integer in 0\.\.2\*\*63-1, not -1"),
    ({"seed": 2**63}, r"seed must be an integer in 0\.\.2\*\*63-1, not 9223372036854775808"),
    ({"limit": 1}, "limit must be an integer >= 2"),
    ({"shift": -2}, "shift must be a non-negative integer"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_default_learning_rates():
    assert TrainConfig().learning_rate == 0.1
    assert TrainConfig(optimizer="sgd").learning_rate == 0.03
    assert TrainConfig(lr=5e-3).learning_rate == 5e-3


def test_schedules():
    assert _lr_factor("cosine", 0, 100) == 1.0
    assert _lr_factor("cosine", 50, 100) == 0.5
    assert _lr_factor("cosine", 100, 100) == 0.0
    assert _lr_factor("cosine", 25, 100) == pytest.approx((1 + math.sqrt(0.5)) / 2, rel=1e-12)
    assert [_lr_factor("step", s, 100) for s in (0, 49, 50, 74)] == [1.0, 1.0, 0.1, 0.1]
    assert _lr_factor("step", 75, 100) == pytest.approx(0.01, rel=1e-12)


# -- augmentation ----------------------------------------------------------------------------

def ref_shift(img, dy, dx):
    """img moved by (dy, dx): out[y, x] = img[y - dy, x - dx], 0 outside."""
    _, h, w = img.shape
    out = torch.zeros_like(img)
    for y in range(h):
        for x in range(w):
            if 0 <= y - dy < h and 0 <= x - dx < w:
                out[:, y, x] = img[:, y - dy, x - dx]
    return out


def matching_offsets(img, moved, shift):
    return [(dy, dx) for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)
            if torch.equal(ref_shift(img, dy, dx), moved)]


def test_random_shift_moves_each_image_within_range():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (40, 2, 7, 6), dtype=torch.uint8, generator=g)
    y = random_shift(x, 2, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    offsets = [matching_offsets(x[i], y[i], 2) for i in range(len(x))]
    assert all(len(o) == 1 for o in offsets)  # nonzero pixels: the offset is unique
    assert len({o[0] for o in offsets}) > 5  # offsets differ from image to image
    assert random_shift(x, 0, g) is x


def test_shift_checker_catches_a_wrapping_shift():
    x = torch.randint(1, 256, (1, 1, 5, 5), dtype=torch.uint8)
    wrapped = torch.roll(x[0], shifts=1, dims=2)
    assert matching_offsets(x[0], wrapped, 2) == []


# -- training ---------------------------------------------------------------------------------

def states_equal(a, b):
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights(mnist):
    data = subset(mnist, 300, 50)
    cfg = TrainConfig(epochs=1, batch_size=50, seed=3)
    rng = torch.get_rng_state()
    a = train(zoo.get_spec("tfc"), data, cfg)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is left alone
    b = train(zoo.get_spec("tfc"), data, cfg)
    assert states_equal(a.model.state_dict(), b.model.state_dict())
    drop = ("time_s",)
    assert [{k: v for k, v in h.items() if k not in drop} for h in a.history] == \
        [{k: v for k, v in h.items() if k not in drop} for h in b.history]
    # The check is sharp: another seed gives other weights.
    c = train(zoo.get_spec("tfc"), data, TrainConfig(epochs=1, batch_size=50, seed=4))
    assert not states_equal(a.model.state_dict(), c.model.state_dict())


def test_training_learns_and_reports_the_last_epoch(mnist):
    result = train(zoo.get_spec("tfc"), mnist, TrainConfig(epochs=2, seed=0))
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.test_accuracy == result.history[-1]["test_accuracy"]
    assert result.history[-1]["lr"] == 0.0  # cosine schedule ends at zero
    assert result.test_accuracy > 0.5  # chance is 0.1
    assert not result.model.training
    # The reported accuracy, recomputed here image by image.
    with torch.no_grad():
        pred = result.model(mnist.test_x.float()).argmax(dim=1)
    assert result.test_accuracy == (pred == mnist.test_y).sum().item() / len(mnist.test_y)
    assert evaluate(result.model, mnist.test_x, mnist.test_y) == result.test_accuracy
    # Latent weights stay clipped.
    for name, p in result.model.named_parameters():
        if name.endswith("weight") and p.dim() > 1:
            assert p.abs().max() <= 1.0


def test_sgd_and_step_schedule_run(mnist):
    result = train(zoo.get_spec("tfc"), subset(mnist, 200, 20),
                   TrainConfig(epochs=2, batch_size=50, optimizer="sgd", schedule="step"))
    assert [h["lr"] for h in result.history] == [0.03 * 0.1, 0.03 * 0.1 ** 2]


def test_a_last_batch_of_one_is_dropped(mnist):
    # 5 images in batches of 4 would leave one image alone, which BatchNorm cannot train on.
    result = train(zoo.get_spec("tfc"), subset(mnist, 5, 10), TrainConfig(epochs=1,
                                                                           batch_size=4))
    assert len(result.history) == 1


def test_mnist_feeds_cnv_through_adapt(mnist):
    data = subset(mnist, 8, 4)
    result = train(zoo.get_spec("cnv"), data, TrainConfig(epochs=1, batch_size=4))
    assert 0.0 <= result.test_accuracy <= 1.0
    assert result.model.layers[0].in_channels == 3


def test_data_that_cannot_feed_the_model(mnist):
    data = subset(mnist, 10, 10)
    five = {"input": {"shape": [1, 28, 28]}, "layers": [{"type": "dense", "out": 5}]}
    with pytest.raises(BnnhwError, match="the model emits 5 class scores but data set mnist "
                                         "has 10 classes"):
        train(five, data, TrainConfig(epochs=1))
    small = {"input": {"shape": [1, 16, 16]}, "layers": [{"type": "dense", "out": 10}]}
    with pytest.raises(BnnhwError, match="images of shape 1x28x28 do not fit a model input "
                                         "of shape 1x16x16"):
        train(small, data, TrainConfig(epochs=1))


def test_progress_goes_to_stderr(mnist, capsys):
    train(zoo.get_spec("tfc"), subset(mnist, 100, 10), TrainConfig(epochs=1, batch_size=50),
          progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert "epoch 1/1: loss" in err


# -- model resolution and the curve -----------------------------------------------------------

def test_resolve_model(tmp_path):
    assert resolve_model("sfc") == ("sfc", zoo.get_spec("sfc"))
    spec = {"input": {"shape": [1, 8, 8]}, "layers": [{"type": "dense", "out": 10}]}
    (tmp_path / "m.json").write_text(json.dumps(spec))
    arch, got = resolve_model(str(tmp_path / "m.json"))
    assert arch == "spec" and got["layers"][0]["out"] == 10 and got["input"]["levels"] == 8


@pytest.mark.parametrize("content,message", [
    (None, "model spec file .*m.json does not exist"),
    ("{not json", ("is not valid JSON: Expecting property name enclosed in double quotes "
                   "at line 1 column 2")),
    ('{"input": {"shape": [1, 8, 8]}, "layers": [{"type": "rnn"}]}',
     "m.json: layer 0: unknown layer type 'rnn'"),
    (b"\xff\xfe\x00", "is not a text file"),
])
def test_resolve_model_errors(tmp_path, content, message):
    path = tmp_path / "m.json"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(BnnhwError, match=message):
        resolve_model(str(path))


def test_unknown_model_name():
    with pytest.raises(BnnhwError, match="unknown model 'resnet': choose one of tfc, sfc"):
        resolve_model("resnet")


def test_curve_path():
    assert str(curve_path("build/sfc.pt")) == "build/sfc.curve.png"
    assert str(curve_path("a.b.pt")) == "a.b.curve.png"
    assert str(curve_path("out/model")) == "out/model.curve.png"


def test_plot_curve(tmp_path):
    history = [{"epoch": e, "loss": 2.0 / e, "train_accuracy": 0.3 * e, "test_accuracy": 0.25 * e}
               for e in (1, 2, 3)]
    path = plot_curve(history, tmp_path / "deep" / "m.curve.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000


# -- divergence, sizes and data that cannot train -----------------------------------------

@pytest.mark.parametrize("lr,message", [
    (1e38, "the optimizer step overflowed"),
    (1e30, "holds NaN or infinite values"),
])
def test_divergence_stops_at_once(mnist, lr, message):
    from bnnhw.train import Diverged

    with pytest.raises(Diverged, match=r"training diverged at epoch 1, batch \d+: .*" + message):
        train(zoo.get_spec("tfc"), subset(mnist, 100, 10),
              TrainConfig(epochs=3, batch_size=50, lr=lr))


def test_a_nan_loss_stops_training(mnist, monkeypatch):
    from bnnhw import train as train_mod

    def nan_loss(out, y):
        return (out * float("nan")).sum()

    monkeypatch.setattr(train_mod.F, "cross_entropy", nan_loss)
    with pytest.raises(train_mod.Diverged, match="at epoch 1, batch 1: the loss is nan"):
        train(zoo.get_spec("tfc"), subset(mnist, 100, 10), TrainConfig(epochs=1,
                                                                       batch_size=50))


def test_an_empty_test_set_is_refused(mnist):
    data = subset(mnist, 20, 10)
    empty = Dataset(data.name, data.train_x, data.train_y, data.test_x[:0], data.test_y[:0],
                    data.classes, data.shape)
    with pytest.raises(BnnhwError, match="data set mnist has no test images"):
        train(zoo.get_spec("tfc"), empty, TrainConfig(epochs=1))


@pytest.mark.parametrize("spec", [
    {"input": {"shape": [1, 28, 28]},
     "layers": [{"type": "dense", "out": 10**9}, {"type": "dense", "out": 10}]},
    {"input": {"shape": [1, 28, 28]},
     "layers": [{"type": "conv", "out": 4, "kernel": 3, "padding": 10**6},
                {"type": "dense", "out": 10}]},
    {"input": {"shape": [1, 100000, 100000]}, "layers": [{"type": "dense", "out": 10}]},
    {"input": {"shape": [3, 4000, 4000], "encoding": "thermometer", "levels": 255},
     "layers": [{"type": "dense", "out": 10}]},
], ids=["dense-out", "padding", "input", "thermometer"])
def test_models_too_large_for_memory_are_refused_before_building(mnist, spec, monkeypatch):
    from bnnhw import train as train_mod

    def no_build(spec):
        raise AssertionError("build_model was called")

    monkeypatch.setattr(train_mod, "build_model", no_build)
    with pytest.raises(BnnhwError, match="needs about .* of memory for training .* more "
                                         "than the .* this machine has"):
        train(spec, subset(mnist, 20, 10), TrainConfig(epochs=1), what="the spec")


def test_model_size_counts():
    from bnnhw.checkpoint import model_size

    spec = {"input": {"shape": [1, 4, 4]},
            "layers": [{"type": "conv", "out": 2, "kernel": 3, "padding": 1},
                       {"type": "dense", "out": 3}]}
    size = model_size(spec)
    # conv: 2*1*3*3 weights + 6*2; dense: 3 * (2*4*4) + 6*3
    assert size.parameters == 18 + 12 + 96 + 18
    # pixels 16, encoded 16, padded input 36, conv outputs 3*32, dense outputs 3*3
    assert size.activations == 16 + 16 + 36 + 96 + 9


def test_a_shift_as_large_as_the_input_is_refused(mnist):
    with pytest.raises(BnnhwError, match="a shift of 28 pixels moves every image out of the "
                                         "model's 28x28 input"):
        train(zoo.get_spec("tfc"), subset(mnist, 20, 10), TrainConfig(epochs=1, shift=28))


@pytest.mark.parametrize("make,message", [
    (lambda p: p.mkdir(), "is a folder; give a spec JSON file"),
    (lambda p: p.write_text("[" * 100_000 + "]" * 100_000), "nests brackets more than 32"),
    (lambda p: p.write_text('{"input": {"shape": [1, 8, 8]}, "layers": [{"type": "dense", '
                            '"out": 10}], "name": ' + "[" * 40 + "]" * 40 + "}"),
     "nests brackets more than 32"),
])
def test_resolve_model_refuses_folders_and_deep_json(tmp_path, make, message):
    path = tmp_path / "m.json"
    make(path)
    with pytest.raises(BnnhwError, match=message):
        resolve_model(str(path))


def test_json_depth_ignores_brackets_in_strings():
    from bnnhw.errors import json_depth

    assert json_depth('{"a": "[[[[[[", "b": [1, {"c": "]]]"}]}') == 3
    assert json_depth('"\\"[[["') == 0
    assert json_depth("[" * 50, limit=32) == 33


def test_resolve_model_refuses_a_checkpoint(tmp_path):
    path = tmp_path / "m.pt"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(BnnhwError, match="looks like a checkpoint; --model takes a zoo model"):
        resolve_model(str(path))


def test_plot_curve_replaces_only_regular_files(tmp_path):
    import os

    history = [{"epoch": 1, "loss": 1.0, "train_accuracy": 0.5, "test_accuracy": 0.5}]
    fifo = tmp_path / "c.png"
    os.mkfifo(fifo)
    with pytest.raises(BnnhwError, match="is a named pipe"):
        plot_curve(history, fifo)
    assert fifo.is_fifo()


def test_resolve_model_reads_a_spec_with_a_byte_order_mark(tmp_path):
    spec = {"input": {"shape": [1, 8, 8]}, "layers": [{"type": "dense", "out": 10}]}
    (tmp_path / "m.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(spec).encode())
    assert resolve_model(str(tmp_path / "m.json"))[1]["layers"][0]["out"] == 10


def test_format_bytes():
    from bnnhw.errors import format_bytes

    assert format_bytes(512) == "512 bytes"
    assert format_bytes(3_100_000_000) == "3.1 GB"
    assert format_bytes(12_500_000_000_000) == "12.5 TB"
    assert format_bytes(999 * 10**18) == "999.0 EB"
    assert format_bytes(1_254_400 * 10**18) == "1,254,400 EB"
    assert format_bytes(10**400).endswith(" EB")  # no float overflow
