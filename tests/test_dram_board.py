"""The simulated board with weights in DRAM: the host uploads the DRAM layers' weights over
the link (the manifest's DRAM target), resets the network so its tiled units fetch them,
and the scores equal the golden model's; a second model of the same topology loaded into
the same board replaces the first one's weights (the units fetch again after the reset)."""

from __future__ import annotations

import numpy as np
import pytest

from bnnhw import golden
from bnnhw.check import random_images
from bnnhw.flows.infer import infer, simulated_board
from bnnhw.folding import Fold, default_folding
from bnnhw.frontend import compile_model
from tests.bnn_cases import zoo_model

pytest.importorskip("litedram", reason="the bnnhw[dram] extra is not installed")


def _tiled(graph):
    folds = default_folding(graph)
    conv, dense = list(folds)[:2]
    folds[conv] = Fold(folds[conv].pe, folds[conv].simd, folds[conv].pe)
    folds[dense] = Fold(folds[dense].pe, folds[dense].simd, graph[dense].rows // 2)
    return folds


def test_weights_uploaded_into_simulated_dram():
    model_a, model_b = zoo_model("tiny", seed=0), zoo_model("tiny", seed=1)
    a, b = compile_model(model_a), compile_model(model_b)
    folds = _tiled(a)
    images = random_images(model_a.spec["input"]["shape"], 12, 3)
    board = simulated_board(a, folds, progress=lambda _: None)
    try:
        for graph in (a, b, a):
            report, scores, classes = infer(board.url, graph, folds, images, timeout_s=2.0)
            gold = golden.run(graph, images)
            assert np.array_equal(scores, gold.scores.numpy())
            assert np.array_equal(classes, gold.classes.numpy())
            assert report.mismatches == 0
        # the two models disagree, so a board that kept the first one's weights would fail
        assert not np.array_equal(golden.run(a, images).scores.numpy(),
                                  golden.run(b, images).scores.numpy())
    finally:
        board.stop()


def test_built_in_weights_with_dram_layers_upload_only_the_dram():
    from rtl_gen.board_core import BoardCoreParams
    from sim.board import SimBoard
    from sim.dram_top import board_top

    model = zoo_model("tiny", seed=0)
    graph = compile_model(model)
    folds = _tiled(graph)
    images = random_images(model.spec["input"]["shape"], 6, 4)
    board = SimBoard(board_top(BoardCoreParams(graph, folds, board="sim", writable=False)))
    try:
        report, scores, classes = infer(board.url, graph, folds, images, timeout_s=2.0)
        gold = golden.run(graph, images)
        assert np.array_equal(scores, gold.scores.numpy())
        assert np.array_equal(classes, gold.classes.numpy())
        assert report.mismatches == 0 and report.loaded
    finally:
        board.stop()
