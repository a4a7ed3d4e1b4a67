"""The simulated board end to end through the host driver, the way ``bnnhw infer --sim``
runs it.

For each model (zoo ``tfc``, ``sfc``, ``cnv`` with random weights and stressed BatchNorm
as in ``tests/bnn_cases.py``, at the default folding; or checkpoints given with
``--model``): build the board core (``rtl_gen.board_core``, Verilator, cached), serve it
(``sim.board.SimBoard``), write another model's weights of the same topology over the link
(``host.Accelerator.load``), classify N random images and compare every score and class
with that model's golden model. Printed: images/s end to end, link efficiency, retries,
mismatches, the model's cycles per image and the simulated cycles/s. Then, for the first
model, the same through a fault-injecting proxy (1% of bytes corrupted, 0.5% dropped,
both ways) on ``--fault-images`` images, weights loaded through it too (with up to 100
retries per frame: at 1.5% of bytes hit, a frame of a few hundred bytes rarely arrives
whole, and the driver shrinks its frames as it learns that).

Usage: ``python bench/sim_board.py [--images N] [--fault-images N] [NAME ...]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from bnnhw import golden
from bnnhw.check import random_images
from bnnhw.flows.infer import SIM_CYCLES_PER_SECOND, answer_timeout
from bnnhw.folding import default_folding
from bnnhw.frontend import compile_model
from host import Accelerator, FaultProxy, Faults
from rtl_gen.board_core import BoardCore, BoardCoreParams
from sim.board import SimBoard
from tests.bnn_cases import zoo_model


def run(url: str, graph, images, **kw):
    with Accelerator.open(url, **kw) as acc:
        acc.load(graph)
        acc.reset_stats()
        start = time.perf_counter()
        scores, classes = acc.infer(images)
        seconds = time.perf_counter() - start
        stats = acc.stats
    gold = golden.run(graph, images)
    bad = int(((gold.scores.numpy() != scores).any(axis=1)
               | (gold.classes.numpy() != classes)).sum())
    return seconds, stats, bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=["tfc", "sfc", "cnv"])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--fault-images", type=int, default=2000)
    args = ap.parse_args()
    worst = 0
    for i, name in enumerate(args.names):
        design = compile_model(zoo_model(name, seed=0, calibration=2))
        other = compile_model(zoo_model(name, seed=1, calibration=2))
        folds = default_folding(design)
        params = BoardCoreParams(design, folds)
        t = time.perf_counter()
        with SimBoard(BoardCore(params)) as board:
            built = time.perf_counter() - t
            c, h, w = (design.input.in_shape[2], *design.input.in_shape[:2])
            images = random_images((c, h, w), args.images, 3)
            timeout = answer_timeout(design, folds, 1.0, SIM_CYCLES_PER_SECOND)
            seconds, stats, bad = run(board.url, other, images, timeout_s=timeout, window=16)
            worst = max(worst, bad)
            ii = params.network.cycles_per_image
            print(f"{name:4} {args.images} images: {args.images / seconds:8,.0f} images/s end "
                  f"to end, link efficiency {stats.link_efficiency:.1%}, {stats.retries} "
                  f"retries, {bad} mismatches; II {ii} cycles (so {ii * args.images / seconds:,.0f}"
                  f" cycles/s at least); board up in {built:.1f} s", flush=True)
            if i == 0 and args.fault_images:
                images = random_images((c, h, w), args.fault_images, 4)
                with FaultProxy(board.url, Faults(2026, flip=0.01, drop=0.005)) as proxy:
                    seconds, stats, bad = run(proxy.url, other, images, timeout_s=0.2,
                                              window=32, max_retries=100)
                    up, down = proxy.faults.counts("up"), proxy.faults.counts("down")
                worst = max(worst, bad)
                print(f"{name:4} through 1% corrupted + 0.5% dropped both ways: "
                      f"{args.fault_images} images in {seconds:.1f} s, {bad} wrong, lost, "
                      f"duplicated or reordered; {stats.retries} retries ({stats.nacks} "
                      f"NACKs, {stats.timeouts} timeouts); faults up {up}, down {down}",
                      flush=True)
            print(f"     board: {board.stop()}")
    return 0 if worst == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
