"""QONNX import: Brevitas bnn_pynq-style models exported both ways, raw and cleaned, lower to
one IR whose golden model equals QONNX's execute_onnx on every output (the input encoder
on every pixel value, every activation bit, the scores, the classes and the float32
logits); FINN's streamlined ops; planted faults the check must catch; refusals naming the
node, its op type and the reason."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bnnhw import ir
from bnnhw.errors import BnnhwError
from bnnhw.onnx_check import Executor, check_onnx
from bnnhw.onnx_frontend import import_onnx
from tests.onnx_cases import (
    QONNX,
    STYLES,
    Builder,
    batchnorm,
    bipolar,
    exports,
    random_pixels,
    tiny,
)

FULL = 64    # images checked on the default export
OTHERS = 8   # on the three other styles (their IR is checked to be the same)


def nodes(graph: ir.Graph) -> list[ir.Node]:
    """The nodes without their provenance (ONNX node names differ between exports)."""
    return [n.replace(source=()) for n in graph.nodes]


def assert_exact(report, images: int, classes: int = 10) -> None:
    assert report.ok, report.format()
    assert report.images == report.class_matches == images
    assert report.bugs == report.ties == report.class_ties == 0
    assert all(u.compared > 0 and u.disagreements == 0 for u in report.layers)
    assert report.logits_exact and report.logits_equal == report.logits_compared == \
        images * classes


@pytest.mark.parametrize("name", ["tfc", "tfc8", "cnv", "cnv8", "pad8"])
def test_every_export_lowers_to_one_ir_equal_to_execute_onnx(name):
    imports = {style: import_onnx(path) for style, path in exports(name).items()}
    assert set(imports) == set(STYLES)
    first = nodes(imports["dynamo"].graph)
    for style, imp in imports.items():
        assert imp.graph.lowered
        got = nodes(imp.graph)
        assert len(got) == len(first) and all(a == b for a, b in zip(got, first)), style
        count = FULL if style == "dynamo" else OTHERS
        images = random_pixels(imp.input_shape, count, seed=len(style))
        assert np.array_equal(np.unique(images), np.arange(256))  # every pixel value
        assert_exact(check_onnx(imp, images), count)


def test_the_imported_encoders_and_padding():
    tfc = import_onnx(exports("tfc")["dynamo"]).graph
    assert (tfc.input.encoding, tfc.input.threshold, tfc.input.table) == ("binary", 128, None)
    # CNV's Q1.7 input: round(128 (2k / 255 - 1)) in -128..127, as codes + 128
    cnv8 = import_onnx(exports("cnv8")["torchscript"]).graph
    k = np.arange(256)
    want = np.clip(np.round(128 * (2 * k / 255 - 1)), -128, 127).astype(np.int64) + 128
    assert cnv8.input.encoding == "uint8" and np.array_equal(cnv8.input.table, want)
    assert cnv8.input.table[254] == cnv8.input.table[255] and 128 not in cnv8.input.table
    # FC's narrow 8-bit input: round(127 (2k / 255 - 1)) in -127..127, as codes + 127
    tfc8 = import_onnx(exports("tfc8")["dynamo-clean"]).graph
    want = np.round(127 * (2 * k / 255 - 1)).astype(np.int64) + 127
    assert np.array_equal(tfc8.input.table, want)
    pad8 = import_onnx(exports("pad8")["dynamo"]).graph
    first, second = (n for n in pad8.nodes if isinstance(n, ir.Conv))
    assert (first.input_kind, first.padding, first.pad_bit) == ("uint8", 1, 128)
    assert second.zero_padding and second.border_classes == (3, 3)


def test_a_negative_tensornorm_flips_every_class():
    for name, flipped in (("cnv8", True), ("cnv", False)):
        imp = import_onnx(exports(name)["dynamo"])
        assert imp.flipped.all() if flipped else not imp.flipped.any()


# --- planted faults --------------------------------------------------------------------------

def _swap(imp, name, **changes):
    graph = imp.graph
    nodes_ = [n.replace(**changes) if n.name == name else n for n in graph.nodes]
    return dataclasses.replace(imp, graph=graph.replace(nodes_))


@pytest.fixture(scope="module")
def cnv8():
    imp = import_onnx(exports("cnv8")["dynamo"])
    return imp, random_pixels(imp.input_shape, 12, seed=9)


def test_check_catches_a_wrong_threshold(cnv8):
    imp, images = cnv8
    conv = imp.graph["conv6"]
    t = conv.thresholds.copy()
    # the channel's threshold moved to where its accumulators are
    acc = np.median(t)
    t[..., :] = np.clip(t[..., :] + np.where(t[..., :] > acc, -3, 3), 0, conv.cols + 1)
    report = check_onnx(_swap(imp, "conv6", thresholds=t), images)
    unit = next(u for u in report.layers if u.nodes == ("conv6",))
    assert unit.bugs > 0 and not report.ok


def test_check_catches_a_wrong_table_entry(cnv8):
    imp, images = cnv8
    table = imp.graph.input.table.copy()
    table[200] += 1
    report = check_onnx(_swap(imp, "input", table=table), images)
    assert report.layers[0].disagreements > 0 and not report.ok


def test_check_catches_a_wrong_classifier_weight(cnv8):
    imp, images = cnv8
    last = imp.graph.nodes[-1]
    w = last.weights.copy()
    w[3, :5] ^= 1
    report = check_onnx(_swap(imp, last.name, weights=w), images)
    assert report.layers[-1].kind == "scores" and report.layers[-1].disagreements > 0
    assert report.logits_equal < report.logits_compared and not report.ok


def test_check_catches_a_wrong_class_offset(cnv8):
    imp, images = cnv8
    last = imp.graph.nodes[-1]
    off = last.class_offset.copy()
    off[int(np.argmin(off))] += 10 ** 6  # that class now always wins
    report = check_onnx(_swap(imp, last.name, class_offset=off), images)
    assert report.class_matches < report.images and report.class_bugs > 0 and not report.ok


# --- FINN's streamlined ops -------------------------------------------------------------------

def test_streamlined_multithreshold_and_xnor_popcount(tmp_path):
    """A FINN-streamlined binary FC: MultiThreshold to 0/1 bits, XnorPopcountMatMul on 0/1
    weights, then a bipolar MultiThreshold into a MatMul of plain +-1 weights."""
    rng = np.random.default_rng(3)
    b = Builder((1, 5, 5))
    b.op("Reshape", np.array([1, -1], np.int64))
    b.op("MultiThreshold", np.array([[0.4]], np.float32), domain=QONNX, out_dtype="BINARY")
    b.op("XnorPopcountMatMul", (rng.random((25, 12)) < 0.5).astype(np.float32), domain=QONNX)
    b.op("MultiThreshold", rng.integers(8, 18, (12, 1)).astype(np.float32) + 0.5,
         domain=QONNX, out_dtype="BIPOLAR", out_scale=2.0, out_bias=-1.0)
    b.op("MatMul", bipolar(rng, 12, 7) * 0.5)
    b.op("Mul", np.array([0.25], np.float32)).op("Add", np.array([1.0], np.float32))
    imp = import_onnx(b.save(tmp_path / "streamlined.onnx"))
    assert imp.graph.input.threshold == 102  # k / 255 >= 0.4
    assert_exact(check_onnx(imp, random_pixels((1, 5, 5), FULL, seed=2)), FULL, 7)


def test_zero_one_activations_into_a_plain_conv(tmp_path):
    """0/1-valued activations (MultiThreshold without out_scale) into a padded Conv: the
    hardware pads with bit 0, whose value is 0."""
    rng = np.random.default_rng(8)
    b = Builder((2, 6, 6))
    b.op("MultiThreshold", np.array([[0.5]], np.float32), domain=QONNX, out_dtype="BINARY")
    b.op("Conv", bipolar(rng, 4, 2, 3, 3), kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    b.op("BatchNormalization", *batchnorm(rng, 4))
    b.op("MultiThreshold", np.zeros((4, 1), np.float32), domain=QONNX, out_dtype="BINARY")
    b.op("Conv", bipolar(rng, 3, 4, 3, 3), kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    b.op("BipolarQuant", np.array([1.0], np.float32), domain=QONNX)
    b.op("Flatten").op("Gemm", bipolar(rng, 5, 108), transB=1)
    imp = import_onnx(b.save(tmp_path / "zero_one.onnx"))
    convs = [n for n in imp.graph.nodes if isinstance(n, ir.Conv)]
    assert [(c.pad_bit, c.zero_padding) for c in convs] == [(0, False), (0, False)]
    assert_exact(check_onnx(imp, random_pixels((2, 6, 6), 32, seed=1)), 32, 5)


def test_pool_before_batchnorm(tmp_path):
    """Conv -> MaxPool -> BatchNorm (negative gammas: those channels pool with AND) ->
    BipolarQuant, and a stride-2 convolution."""
    rng = np.random.default_rng(5)
    b = Builder((1, 9, 9))
    b.op("BipolarQuant", np.array([1.0], np.float32), domain=QONNX)
    b.op("Conv", b.quantised(rng.uniform(-1, 1, (6, 1, 3, 3))), kernel_shape=[3, 3])
    b.op("MaxPool", kernel_shape=[2, 2], strides=[2, 2])
    gamma, beta, mean, var = batchnorm(rng, 6)
    gamma[1:4] = -np.abs(gamma[1:4]) - 0.1
    b.op("BatchNormalization", gamma, beta, mean, var)
    b.op("BipolarQuant", np.array([1.0], np.float32), domain=QONNX)
    b.op("Conv", bipolar(rng, 4, 6, 3, 3), kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
    b.op("BatchNormalization", *batchnorm(rng, 4))
    b.op("BipolarQuant", np.array([1.0], np.float32), domain=QONNX)
    b.op("Reshape", np.array([1, -1], np.int64)).op("MatMul", bipolar(rng, 16, 3))
    imp = import_onnx(b.save(tmp_path / "pool_first.onnx"))
    pool = next(n for n in imp.graph.nodes if isinstance(n, ir.MaxPool))
    assert pool.and_mask.tolist() == [0, 1, 1, 1, 0, 0]
    assert_exact(check_onnx(imp, random_pixels((1, 9, 9), 32, seed=6)), 32, 3)


# --- refusals ----------------------------------------------------------------------------------

def _quant(b, w, bits, name):
    return b.node("Quant", [np.asarray(w, np.float32), np.array([0.5], np.float32),
                            np.array([0.0], np.float32), np.array([float(bits)], np.float32)],
                  domain=QONNX, name=name, signed=1, narrow=1, rounding_mode="ROUND")


def _act(op_type, **attrs):
    def act(b):
        consts = {"Quant": [np.array([1.0], np.float32), np.array([0.0], np.float32),
                            np.array([2.0], np.float32)],
                  "BipolarQuant": [np.linspace(0.5, 1.5, 8).astype(np.float32).reshape(1, 8)],
                  "MultiThreshold": [np.zeros((8, 1), np.float32)]}[op_type]
        b.op(op_type, *consts, domain=QONNX, name="act1", **attrs)
    return act


REFUSED = {
    "2-bit weights": ({"weight": lambda b: _quant(b, np.random.default_rng(0).uniform(
        -1, 1, (8, 16)), 2, "wq")}, (r"node 'wq' \(Quant\): quantises the weights of node "
                                    r"'fc1' \(Gemm\) to more than two values; bnnhw takes "
                                    r"binary \(1-bit\) weights only")),
    "2-bit activation": ({"act": _act("Quant", signed=1, narrow=0, rounding_mode="ROUND")},
                         r"node 'act1' \(Quant\): is a 2-bit activation quantiser"),
    "per-channel scale": ({"act": _act("BipolarQuant")},
                          (r"node 'act1' \(BipolarQuant\): has a per-channel scale \(shape "
                          r"\[1, 8\]\), which cannot be folded: it varies along the next "
                          r"layer's reduction axis")),
    "channels last": ({"act": _act("MultiThreshold", out_dtype="BINARY",
                                   data_layout="NHWC")},
                      r"node 'act1' \(MultiThreshold\): works on the NHWC layout"),
    "residual add": ({"extra": lambda b: b.op("Add", b.node("Mul", [b.last, np.float32(2)]),
                                              name="res")},
                     (r"node 'res' \(Add\): combines 2 computed tensors \(a residual "
                     r"connection or a concatenation\)")),
    "relu": ({"extra": lambda b: b.op("Relu", name="relu")},
             r"node 'relu' \(Relu\): bnnhw does not lower this operation"),
    "branch": ({"extra": lambda b: b.node("Identity", [b.last], name="side")},
               r"node '.*' \(.*\): its input '.*' also feeds another node \(a branch\)"),
    "float weights": ({"weight": lambda b: np.linspace(-1, 1, 128).astype(
        np.float32).reshape(8, 16)}, r"node 'fc1' \(Gemm\): its weights are not binary"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refusals_name_the_node_its_op_and_the_reason(case, tmp_path):
    change, pattern = REFUSED[case]
    path = tiny(tmp_path, case.replace(" ", "_"), **change)
    with pytest.raises(BnnhwError, match=pattern) as info:
        import_onnx(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and "\n" not in text


def test_more_refusals(tmp_path):
    rng = np.random.default_rng(0)
    b = Builder((16,))  # not an image
    b.op("BipolarQuant", np.array([1.0], np.float32), domain=QONNX)
    b.op("Gemm", bipolar(rng, 3, 16), transB=1)
    with pytest.raises(BnnhwError, match=r"the graph input 'x' has shape \[1, 16\]; bnnhw "
                                         r"takes images as NCHW"):
        import_onnx(b.save(tmp_path / "flat.onnx"))
    b = Builder((3, 4, 4))
    b.op("Mul", np.array([1.0, 2.0, 3.0], np.float32).reshape(1, 3, 1, 1), name="norm")
    b.op("BipolarQuant", np.array([1.0], np.float32), domain=QONNX)
    with pytest.raises(BnnhwError, match=r"node 'norm' \(Mul\): applies a per-channel or "
                                         r"per-pixel map to the input"):
        import_onnx(b.save(tmp_path / "norm.onnx"))
    b = Builder((2, 4, 4))
    b.op("BipolarQuant", np.array([1.0], np.float32), domain=QONNX)
    b.op("Conv", bipolar(rng, 4, 1, 3, 3), kernel_shape=[3, 3], group=2, name="grouped")
    with pytest.raises(BnnhwError, match=r"node 'grouped' \(Conv\): is grouped or dilated"):
        import_onnx(b.save(tmp_path / "grouped.onnx"))
    b = Builder((1, 4, 4))
    b.op("BipolarQuant", np.array([1.0], np.float32), domain=QONNX)
    b.op("Conv", bipolar(rng, 4, 1, 3, 3), kernel_shape=[3, 3], name="last")
    with pytest.raises(BnnhwError, match=r"the last layer 'last' is a Conv"):
        import_onnx(b.save(tmp_path / "conv_last.onnx"))
    b = Builder((1, 4, 4))
    b.op("BipolarQuant", np.array([1.0], np.float32), domain=QONNX)
    b.op("Flatten").op("Gemm", bipolar(rng, 3, 16), transB=1)
    b.op("BipolarQuant", np.array([1.0], np.float32), domain=QONNX, name="out_quant")
    with pytest.raises(BnnhwError, match=r"node 'out_quant' quantises the network's output"):
        import_onnx(b.save(tmp_path / "quantised_out.onnx"))
    b = Builder((1, 4, 4))
    b.op("BipolarQuant", np.array([1.0], np.float32), domain=QONNX)
    b.op("Flatten").op("XnorPopcountMatMul", np.ones((16, 3), np.float32), domain=QONNX,
                       name="xnor")
    with pytest.raises(BnnhwError, match=r"node 'xnor' \(XnorPopcountMatMul\): takes 0/1 "
                                         r"bits"):
        import_onnx(b.save(tmp_path / "xnor.onnx"))


def test_unreadable_files(tmp_path):
    with pytest.raises(BnnhwError, match="does not exist"):
        import_onnx(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a protobuf at all\xff" * 3)
    with pytest.raises(BnnhwError, match=r"bad.onnx is not a readable ONNX model"):
        import_onnx(bad)


def test_executor_is_the_reference(tmp_path):
    """The executor's outputs are qonnx's own, for the pixels fed as float32(k) / 255."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    path = exports("tfc")["torchscript-clean"]
    imp = import_onnx(path)
    images = random_pixels(imp.input_shape, 3, seed=4)
    model = ModelWrapper(str(path))
    name = model.graph.input[0].name
    want = np.concatenate([execute_onnx(model, {name: (img[None].astype(np.float32)
                                                        / np.float32(255))})[
        model.graph.output[0].name] for img in images])
    assert np.array_equal(Executor(imp).logits(images), want)
