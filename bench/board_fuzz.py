"""Random bytes into the simulated board: the frame parser never hangs.

Sends N random bytes (default 1,000,000) to a simulated board (``sim.board.SimBoard``)
running the board core of a small network, then IDENTIFY until it is answered, then
STATUS, and prints how long it took, how many answers came (all NACKs unless the random
bytes happened to form a good frame), the counters and whether they agree with the
answers. Usage: ``python bench/board_fuzz.py [--bytes N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bnnhw.folding import default_folding
from bnnhw.frontend import compile_model
from rtl_gen.board_core import BoardCore, BoardCoreParams
from sim.board import SimBoard
from tests.bnn_cases import spec_model
from tests.sim.test_sim_board import LAYERS, fuzz


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bytes", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    graph = compile_model(spec_model(LAYERS, "binary", (1, 4, 4), seed=0))
    params = BoardCoreParams(graph, default_folding(graph), max_payload=4096,
                             timeout_cycles=1 << 20)
    garbage = random.Random(args.seed).randbytes(args.bytes)
    with SimBoard(BoardCore(params)) as board:
        start = time.perf_counter()
        answers, counters = fuzz(board.port, garbage, deadline_s=600)
        seconds = time.perf_counter() - start
        stats = board.stop()
    nacks = sum(a.op == 0x8F for a in answers)
    consistent = counters.frames_good + counters.frames_bad == len(answers) + 1  # + RESET
    print(f"{args.bytes:,} random bytes (seed {args.seed}) in {seconds:.1f} s; "
          f"{len(answers)} answers before STATUS ({nacks} NACKs); identify answered")
    print(f"counters: {counters}; consistent with the answers: {consistent}")
    print(f"board: {stats}")
    return 0 if consistent else 1


if __name__ == "__main__":
    sys.exit(main())
