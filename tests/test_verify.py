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
from bnnhw.flows.verify import verify_graph
from bnnhw.folding import Fold, default_folding, matrix_layers, save_folding, two_foldings
from bnnhw.frontend import compile_model
from tests.bnn_cases import VERIFY_MODELS, zoo_model

IMAGES = 6


@pytest.mark.parametrize("fold_name", ["default", "fast"])
@pytest.mark.parametrize("model_name", list(VERIFY_MODELS))
def test_network_matches_golden_under_verilator(model_name, fold_name):
    model = VERIFY_MODELS[model_name]()
    graph = compile_model(model)
    folds = two_foldings(graph)[fold_name]
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
    save_folding(fold_file, default_folding(graph))
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
