"""A network with weights in DRAM under Verilator, on LiteDRAM's simulation core, against
the golden model: both of zoo tiny's binary-input layers weight-tiled (a conv in map mode
and a dense layer), the DRAM image written through the arbiter before the first image, the
stalled run stalling the DRAM's streams too; a flipped DRAM weight bit is reported."""

from __future__ import annotations

import pytest

from bnnhw.check import random_images
from bnnhw.flows.verify import verify_graph
from bnnhw.folding import Fold, default_folding
from bnnhw.frontend import compile_model
from tests.bnn_cases import zoo_model

pytest.importorskip("litedram", reason="the bnnhw[dram] extra is not installed")

IMAGES = 8


@pytest.fixture(scope="module")
def tiled():
    model = zoo_model("tiny", seed=0)
    graph = compile_model(model)
    folds = default_folding(graph)
    conv, dense = [n for n in folds][:2]
    folds[conv] = Fold(folds[conv].pe, folds[conv].simd, folds[conv].pe)
    folds[dense] = Fold(folds[dense].pe, folds[dense].simd, graph[dense].rows // 2)
    images = random_images(model.spec["input"]["shape"], IMAGES, 5)
    return graph, folds, images, dense


def test_dram_layers_match_golden_under_stalls(tiled):
    graph, folds, images, _ = tiled
    report = verify_graph(graph, folds, images, stall=0.25, seed=2, engine="fast")
    assert report.stalled_run
    assert report.mismatches == 0 and report.extra_beats == 0, report.format()
    assert abs(report.cycle_error) <= 0.05, report.format()
    assert report.bottleneck.endswith("_tiled"), report.format()


def test_flipped_dram_weight_bit_is_reported(tiled):
    graph, folds, images, dense = tiled
    node = graph[dense]
    w = node.weights.copy()
    w[:, 0] ^= 1  # column 0 of every row: every channel's popcount moves by one
    hw = graph.replace([n.replace(weights=w) if n is node else n for n in graph.nodes])
    report = verify_graph(graph, folds, images, hardware_graph=hw, trace=False,
                          engine="fast")
    assert report.mismatches > 0, report.format()
