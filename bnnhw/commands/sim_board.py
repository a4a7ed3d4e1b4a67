"""``bnnhw sim-board``: serve a model's simulated board on a loopback port until stopped."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from ..errors import BnnhwError
from .common import MODEL_HELP, MODEL_METAVAR, model_graph_folding, natural_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar=MODEL_METAVAR,
                        help=f"model whose design the board runs (its weights can be replaced "
                             f"over the link by any model of the same topology): {MODEL_HELP}")
    parser.add_argument("--port", type=natural_int, default=0,
                        help="TCP port on 127.0.0.1 (default 0: any free port)")
    parser.add_argument("--folding", metavar="F.json",
                        help="the design's folding (default: the default folding)")
    parser.add_argument("--cycles-per-byte", type=natural_int, default=0, metavar="N",
                        help="pace the link like a UART: N clock cycles per byte each way "
                             "(333 is 3 Mbaud at 100 MHz; default 0: as fast as it runs)")


def run(args: argparse.Namespace) -> int:
    from ..flows.infer import simulated_board

    model, folds = model_graph_folding(args)
    graph = model.graph
    board = simulated_board(graph, folds, port=args.port,
                            cycles_per_byte=args.cycles_per_byte,
                            progress=lambda m: print(f"  {m}...", file=sys.stderr, flush=True))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print(f"simulated board of {args.model} on {board.url} (Ctrl-C stops it)", flush=True)
    died = False
    try:
        while not stop and board.running:
            time.sleep(0.2)
        died = not stop
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
    if died:
        raise BnnhwError("the simulated board stopped by itself; run it again, or report it")
    return 0
