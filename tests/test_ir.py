"""IR nodes: validation, derived widths, graph checks and the exact JSON + .npz round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bnnhw import frontend, ir
from bnnhw.errors import BnnhwError
from tests.bnn_cases import random_model, spec_model, zoo_model


def _w(r, c, seed=0):
    return np.random.default_rng(seed).integers(0, 2, size=(r, c)).astype(np.uint8)


def _conv(**kw):
    args = {"name": "c", "in_shape": (8, 8, 5), "kernel": 3, "weights": _w(4, 45),
            "scale": np.ones(4), "bias": np.zeros(4)}
    args.update(kw)
    return ir.Conv(**args)


# --- derived figures ---------------------------------------------------------------------------

def test_binary_conv_widths():
    c = _conv(stride=2, padding=1, zero_padding=True,
              thresholds=np.zeros((3, 2, 4), np.int64), row_class=[0, 1, 1, 2],
              col_class=[0, 1, 1, 1])
    assert c.out_shape == (4, 4, 4) and c.out_pixels == 16
    assert (c.rows, c.cols) == (4, 45)
    assert (c.acc_min, c.acc_max, c.acc_signed) == (0, 45, False)
    assert c.acc_bits == 6  # 45 < 64
    assert (c.threshold_min, c.threshold_max, c.threshold_bits) == (0, 46, 6)
    assert c.weight_bits == 4 * 45
    assert c.threshold_memory_bits == 3 * 2 * 4 * 6
    assert c.border_classes == (3, 2)


def test_uint8_conv_and_classifier_widths():
    c = ir.Conv("c", (32, 32, 3), 3, _w(2, 27), np.ones(2), np.zeros(2), input_kind="uint8",
                thresholds=np.zeros((1, 1, 2), np.int64), row_class=np.zeros(30, np.int64),
                col_class=np.zeros(30, np.int64))
    assert (c.acc_min, c.acc_max) == (-6885, 6885)  # 255 * 27
    assert c.acc_signed and c.acc_bits == 14  # 6885 < 8192 = 2**13, plus a sign bit
    assert c.threshold_bits == 14
    d = ir.Dense("d", (2, 2, 16), _w(10, 64), np.ones(10), np.zeros(10))
    assert d.in_features == 64 and d.out_shape == (10,)
    assert (d.dot_min, d.dot_max, d.dot_bits) == (-64, 64, 8)
    assert d.threshold_bits == 0 and d.threshold_memory_bits == 0


def test_bit_helpers():
    assert [ir.unsigned_bits(v) for v in (0, 1, 2, 255, 256)] == [1, 1, 2, 8, 9]
    assert ir.signed_bits(-128, 127) == 8 and ir.signed_bits(-129, 0) == 9
    assert ir.signed_bits(0, 128) == 9 and ir.signed_bits(-1, 0) == 1


def test_node_shapes():
    e = ir.InputEncoder("in", (28, 28, 2), "thermometer", levels=4)
    assert e.out_shape == (28, 28, 8) and e.out_kind == "binary"
    assert ir.InputEncoder("in", (4, 4, 3), "uint8").out_kind == "uint8"
    p = ir.MaxPool("p", (7, 9, 3), 3, 2, np.array([1, 0, 1]))
    assert p.out_shape == (3, 4, 3)


# --- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("kw", "pattern"), [
    ({"kernel": 11}, r"conv 'c': kernel 11 is larger than the padded input 8x8"),
    ({"weights": _w(4, 44)}, r"conv 'c': weights must have shape \[R, 45\]"),
    ({"weights": _w(4, 45) * 2}, r"conv 'c': weights must hold bits 0/1"),
    ({"scale": [1.0, 2.0, float("nan"), 1.0]}, r"conv 'c': scale must be finite"),
    ({"stride": 0}, r"conv 'c': stride must be a positive integer, not 0"),
    ({"pad_bit": 2}, r"conv 'c': pad_bit must be an integer in 0..1, not 2"),
    ({"input_kind": "uint8", "pad_bit": 256}, r"pad_bit must be an integer in 0..255, not 256"),
    ({"zero_padding": True}, r"zero_padding needs binary inputs, padding > 0 and pad_bit 0"),
    ({"input_kind": "real"}, r"input_kind must be one of binary, uint8"),
    ({"thresholds": np.zeros((1, 1, 4), np.int64)}, "thresholds, row_class and col_class go"),
    ({"thresholds": np.full((1, 1, 4), 47), "row_class": np.zeros(6, np.int64),
      "col_class": np.zeros(6, np.int64)}, r"thresholds must lie in 0..46, found 47..47"),
    ({"thresholds": np.zeros((2, 1, 4), np.int64), "row_class": np.zeros(6, np.int64),
      "col_class": np.zeros(6, np.int64)}, r"border classes \(NY, NX\) = \(1, 1\) without"),
    ({"thresholds": np.zeros((1, 1, 4), np.int64), "row_class": np.ones(6, np.int64),
      "col_class": np.zeros(6, np.int64)}, r"row_class must lie in 0..0"),
    ({"name": "two words"}, "node name must be a non-empty word"),
])
def test_conv_validation(kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        _conv(**kw)


def test_other_node_validation():
    with pytest.raises(ValueError, match=r"input 'in': encoding must be one of"):
        ir.InputEncoder("in", (4, 4, 1), "ternary")
    with pytest.raises(ValueError, match=r"input 'in': threshold must be an integer in 0..255"):
        ir.InputEncoder("in", (4, 4, 1), threshold=256)
    with pytest.raises(ValueError, match=r"input 'in': a pixel table needs the uint8 encoding"):
        ir.InputEncoder("in", (4, 4, 1), "binary", table=np.arange(256))
    with pytest.raises(ValueError, match=r"input 'in': table must have shape \[256\]"):
        ir.InputEncoder("in", (4, 4, 1), "uint8", table=np.arange(255))
    with pytest.raises(ValueError, match=r"input 'in': table must lie in 0..255, found 1..256"):
        ir.InputEncoder("in", (4, 4, 1), "uint8", table=np.arange(1, 257))
    with pytest.raises(ValueError, match=r"maxpool 'p': and_mask must have shape \[3\]"):
        ir.MaxPool("p", (4, 4, 3), 2, 2, [1, 0])
    with pytest.raises(ValueError, match=r"maxpool 'p': kernel 5 is larger than its input"):
        ir.MaxPool("p", (4, 4, 3), 5, 1, [1, 0, 0])
    with pytest.raises(ValueError, match=r"dense 'd': thresholds must have shape \[1, 1, 2\]"):
        ir.Dense("d", (4,), _w(2, 4), np.ones(2), np.zeros(2), thresholds=np.zeros((2, 1, 2)))
    with pytest.raises(ValueError, match=r"dense 'd': in_shape must be 1 positive integers"):
        ir.Dense("d", (2, 2), _w(2, 4), np.ones(2), np.zeros(2))


def test_nodes_are_frozen_copies():
    w = _w(4, 45)
    c = _conv(weights=w)
    w[0, 0] ^= 1
    assert c.weights[0, 0] != w[0, 0]  # a private copy
    with pytest.raises(ValueError):
        c.weights[0, 0] = 1  # read-only
    with pytest.raises(AttributeError):
        c.kernel = 5


def test_graph_validation():
    inp = ir.InputEncoder("input", (8, 8, 5))
    with pytest.raises(ValueError, match="must start with an input node"):
        ir.Graph((_conv(),))
    with pytest.raises(ValueError, match="node name used twice"):
        ir.Graph((inp, _conv(name="input")))
    with pytest.raises(ValueError, match=r"conv 'c': takes shape \[9, 8, 5\] but the node "
                                         r"before it gives \[8, 8, 5\]"):
        ir.Graph((inp, _conv(in_shape=(9, 8, 5))))
    with pytest.raises(ValueError, match="takes uint8 inputs but the node before it gives "
                                         "binary values"):
        ir.Graph((inp, _conv(input_kind="uint8")))


def test_check_lowered():
    model = zoo_model("tiny", seed=0)
    raw = frontend.import_model(model)
    assert not raw.lowered
    with pytest.raises(ValueError, match=r"affine 'bn1' \(from layers.1\) was not lowered"):
        raw.check_lowered()
    graph = frontend.compile_model(model)
    assert graph.lowered and graph.classes == 10
    with pytest.raises(ValueError, match=r"dense 'dense5': the last node must be a dense layer "
                                         r"without thresholds"):
        graph.replace(graph.nodes[:-1]).check_lowered()


# --- files ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def graphs():
    """Lowered graphs with every node kind and attribute: zero padding, AND masks, uint8."""
    out = [frontend.compile_model(zoo_model("vgg", seed=0, width=0.0625)),
           frontend.compile_model(zoo_model("tfc", seed=0))]
    for seed in (3, 5, 11):
        out.append(frontend.compile_model(random_model(seed)))
    out.append(frontend.compile_model(spec_model(
        [{"type": "conv", "out": 9, "kernel": 3, "padding": 1},
         {"type": "maxpool", "kernel": 2, "before_bn": True}, {"type": "dense", "out": 3}])))
    out.append(frontend.import_model(random_model(3)))  # frontend nodes round-trip too
    vgg = out[0]  # a pixel table and a uint8 pad pixel (what an imported QONNX model uses)
    table = ir.InputEncoder("input", vgg.input.shape, "uint8", source=("q",),
                            table=(np.arange(256) * 7) % 256)
    out.append(vgg.replace([table, vgg.nodes[1].replace(pad_bit=128), *vgg.nodes[2:]]))
    return out


def test_round_trip_is_exact(graphs, tmp_path):
    for i, g in enumerate(graphs):
        path = ir.save_graph(g, tmp_path / f"g{i}.ir")
        back = ir.load_graph(path)
        assert back == g
        for a, b in zip(g.nodes, back.nodes):
            for f in ("weights", "thresholds", "scale", "bias", "and_mask", "table"):
                va, vb = getattr(a, f, None), getattr(b, f, None)
                if va is not None:
                    assert va.dtype == vb.dtype and np.array_equal(va, vb)
    kinds = {n.op for g in graphs for n in g.nodes}
    assert kinds == {"input", "conv", "maxpool", "dense", "affine", "sign"}
    assert any(n.op == "maxpool" and n.and_mask.any() for g in graphs for n in g.nodes)
    assert any(n.op == "conv" and n.zero_padding for g in graphs for n in g.nodes)
    assert any(n.op == "input" and n.table is not None for g in graphs for n in g.nodes)


def test_graph_equality_catches_planted_faults(graphs):
    """The round-trip comparison notices one weight bit or one ulp of a float."""
    g = graphs[0]
    conv = g[1]
    w = conv.weights.copy()
    w[0, 0] ^= 1
    assert g.replace([g[0], conv.replace(weights=w), *g.nodes[2:]]) != g
    scale = conv.scale.copy()
    scale[0] = np.nextafter(scale[0], np.inf)
    assert g.replace([g[0], conv.replace(scale=scale), *g.nodes[2:]]) != g
    assert ir.Graph(g.nodes, {**g.meta, "x": 1}) != g


def test_file_layout(graphs, tmp_path):
    path = ir.save_graph(graphs[1], tmp_path / "m.ir")
    doc = json.loads(path.read_text())
    assert doc["format"] == "bnnhw-ir" and doc["version"] == 4
    assert doc["arrays"]["file"] == "m.ir.npz" and (tmp_path / "m.ir.npz").exists()
    dense = doc["nodes"][1]
    assert dense["op"] == "dense" and dense["weights"] == {
        "array": "dense1.weights", "dtype": "uint8", "shape": [64, 784]}
    with np.load(tmp_path / "m.ir.npz") as z:
        assert z["dense1.thresholds"].dtype == np.int64


def test_load_errors(graphs, tmp_path):
    with pytest.raises(BnnhwError, match="does not exist"):
        ir.load_graph(tmp_path / "none.ir")
    (tmp_path / "junk.ir").write_bytes(b"\x80\x00junk")
    with pytest.raises(BnnhwError, match="junk.ir is not a text file"):
        ir.load_graph(tmp_path / "junk.ir")
    path = ir.save_graph(graphs[1], tmp_path / "a.ir")
    other = ir.save_graph(graphs[2], tmp_path / "b.ir")
    ir.arrays_path(path).write_bytes(ir.arrays_path(other).read_bytes())
    with pytest.raises(BnnhwError, match="does not belong to IR file"):
        ir.load_graph(path)
    ir.arrays_path(other).unlink()
    with pytest.raises(BnnhwError, match="needs its arrays file"):
        ir.load_graph(other)
    path = ir.save_graph(graphs[1], tmp_path / "c.ir")
    doc = json.loads(path.read_text())
    doc["version"] = 1
    path.write_text(json.dumps(doc))
    with pytest.raises(BnnhwError, match="has version 1; this bnnhw reads versions 2, 3, 4 "
                                         "only"):
        ir.load_graph(path)
    doc["version"] = 2  # a version 2 file (no pixel tables) still reads
    for node in doc["nodes"]:
        node.pop("table", None)
    path.write_text(json.dumps(doc))
    assert ir.load_graph(path) == graphs[1]
    doc["nodes"][1]["op"] = "lstm"
    path.write_text(json.dumps(doc))
    with pytest.raises(BnnhwError, match="malformed: node 1: unknown op 'lstm'"):
        ir.load_graph(path)


@pytest.mark.parametrize("fail", ["arrays", "graph", "second-rename"])
def test_save_writes_both_files_or_neither(graphs, tmp_path, monkeypatch, fail):
    import os

    from bnnhw import errors

    path = tmp_path / "new" / "m.ir"
    calls = []
    real_replace, real_fdopen = os.replace, os.fdopen

    def replace(src, dst):
        calls.append(dst)
        if fail == "second-rename" and len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    opened = []

    def fdopen(fd, mode):
        opened.append(fd)
        if (fail == "arrays" and len(opened) == 1) or (fail == "graph" and len(opened) == 2):
            os.close(fd)
            raise OSError(28, "No space left on device")
        return real_fdopen(fd, mode)

    monkeypatch.setattr(errors.os, "replace", replace)
    monkeypatch.setattr(errors.os, "fdopen", fdopen)
    with pytest.raises((OSError, KeyboardInterrupt)):
        ir.save_graph(graphs[1], path)
    assert list(tmp_path.iterdir()) == []
    if fail == "second-rename":
        assert len(calls) == 2


def test_save_refuses_a_folder_or_special_file(graphs, tmp_path):
    import os

    (tmp_path / "d.ir").mkdir()
    with pytest.raises(BnnhwError, match="is a folder"):
        ir.save_graph(graphs[1], tmp_path / "d.ir")
    os.mkfifo(tmp_path / "p.ir.npz")
    with pytest.raises(BnnhwError, match="p.ir.npz is a named pipe"):
        ir.save_graph(graphs[1], tmp_path / "p.ir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.ir", "p.ir.npz"]


def test_more_load_errors(graphs, tmp_path):
    (tmp_path / "d.ir").mkdir()
    with pytest.raises(BnnhwError, match="IR file .*d.ir is a folder"):
        ir.load_graph(tmp_path / "d.ir")
    (tmp_path / "deep.ir").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BnnhwError, match="nests brackets more than 32 levels deep"):
        ir.load_graph(tmp_path / "deep.ir")
    path = ir.save_graph(graphs[1], tmp_path / "a.ir")
    doc = json.loads(path.read_text())
    for arrays in ({"file": "../a.ir.npz", "sha256": "0"}, "a.ir.npz", {"file": 3}):
        path.write_text(json.dumps({**doc, "arrays": arrays}))
        with pytest.raises(BnnhwError, match="its 'arrays' entry must name the arrays file"):
            ir.load_graph(path)
    path.write_text(json.dumps({**doc, "version": True}))
    with pytest.raises(BnnhwError, match="has version True"):
        ir.load_graph(path)
    path.write_text(json.dumps({**doc, "nodes": {"a": 1}}))
    with pytest.raises(BnnhwError, match="'nodes' must be a list"):
        ir.load_graph(path)
    path.write_text(json.dumps({**doc, "nodes": [1]}))
    with pytest.raises(BnnhwError, match="malformed"):
        ir.load_graph(path)
