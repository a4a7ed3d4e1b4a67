"""The whole network as Verilog under Verilator (cocotb) against the golden model.

Four networks at two foldings each, images back to back with random stalls on both ends,
every output beat compared exactly; the measured steady-state cycles per image within 5%
of the cycle model; a flipped weight bit reported as a mismatch and traced to its layer.
"""

import json

import pytest

from bnnhw.check import random_images
from bnnhw.checkpoint import save_checkpoint
from bnnhw.cli import main
from bnnhw.folding import Fold, default_folding, fold_for_target, matrix_layers, save_folding
from bnnhw.frontend import compile_model
from bnnhw.verify import verify_graph
from tests.bnn_cases import spec_model, zoo_model

IMAGES = 6


def cnv_small():
    """CNV-shaped: uint8 input, valid convolutions, two pools."""
    return spec_model([{"type": "conv", "out": 8, "kernel": 3},
                       {"type": "conv", "out": 8, "kernel": 3},
                       {"type": "maxpool", "kernel": 2},
                       {"type": "conv", "out": 16, "kernel": 3},
                       {"type": "maxpool", "kernel": 2},
                       {"type": "dense", "out": 16},
                       {"type": "dense", "out": 10}],
                      encoding="uint8", shape=(3, 16, 16), seed=4)


def padded_small():
    """Zero padding 1 on binary maps (border-class thresholds) and a pool before BN."""
    return spec_model([{"type": "conv", "out": 6, "kernel": 3, "padding": 1},
                       {"type": "conv", "out": 8, "kernel": 3, "padding": 1},
                       {"type": "maxpool", "kernel": 2, "before_bn": True},
                       {"type": "conv", "out": 8, "kernel": 3, "padding": 1, "pad_value": -1},
                       {"type": "dense", "out": 10}],
                      encoding="thermometer", shape=(1, 10, 10), seed=5)


MODELS = {
    "tfc": lambda: zoo_model("tfc", seed=0, calibration=2),
    "sfc": lambda: zoo_model("sfc", seed=0, calibration=2),
    "cnv_small": cnv_small,
    "padded_small": padded_small,
}


def foldings(graph):
    """The default folding and a faster one (a quarter of its II)."""
    default = default_folding(graph)
    layers = matrix_layers(graph)
    ii = max(layer.cycles(default[layer.name]) for layer in layers)
    return {"default": default, "fast": fold_for_target(layers, max(1, ii // 4))}


@pytest.mark.parametrize("fold_name", ["default", "fast"])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_network_matches_golden_under_verilator(model_name, fold_name):
    model = MODELS[model_name]()
    graph = compile_model(model)
    folds = foldings(graph)[fold_name]
    images = random_images(model.spec["input"]["shape"], IMAGES, 7)
    report = verify_graph(graph, folds, images, stall=0.3, seed=3)
    assert report.stalled_run
    assert report.mismatches == 0, report.format()
    assert abs(report.cycle_error) <= 0.05, report.format()


def test_flipped_weight_bit_is_reported_and_traced():
    model = zoo_model("tfc", seed=0, calibration=2)
    graph = compile_model(model)
    hidden = graph.nodes[2]  # the second dense layer
    w = hidden.weights.copy()
    w[:, 0] ^= 1  # column 0 of every row: every channel's popcount moves by one
    bad = graph.replace([hidden.replace(weights=w) if n is hidden else n
                         for n in graph.nodes])
    images = random_images(model.spec["input"]["shape"], 4, 1)
    report = verify_graph(graph, default_folding(graph), images, hardware_graph=bad)
    assert report.mismatches > 0
    assert report.first_mismatch.layer == hidden.name, report.format()


def test_verify_cli_json(tmp_path, capsys):
    model = zoo_model("tfc", seed=0, calibration=2)
    ckpt = tmp_path / "tfc.pt"
    save_checkpoint(ckpt, model, "tfc", {"data": "mnist"})
    graph = compile_model(model)
    fold_file = tmp_path / "fold.json"
    save_folding(fold_file, foldings(graph)["default"])
    code = main(["verify", "--model", str(ckpt), "--images", "5", "--folding",
                 str(fold_file), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["images"] == 5 and out["mismatches"] == 0
    assert out["model_cycles_per_image"] == max(
        layer.cycles(Fold(**out["folding"][layer.name])) for layer in matrix_layers(graph))
    assert isinstance(out["cycles_per_image"], float)


def test_verify_cli_bad_folding(tmp_path, capsys):
    model = zoo_model("tfc", seed=0, calibration=2)
    ckpt = tmp_path / "tfc.pt"
    save_checkpoint(ckpt, model, "tfc", {"data": "mnist"})
    fold_file = tmp_path / "fold.json"
    fold_file.write_text('{"layers": {"dense1": {"pe": 5, "simd": 16}}}')
    code = main(["verify", "--model", str(ckpt), "--images", "2", "--folding",
                 str(fold_file)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
