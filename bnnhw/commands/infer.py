"""``bnnhw infer``: classify images on a board, or on the simulated board, over the link."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import BnnhwError
from .common import MODEL_HELP, MODEL_METAVAR, model_graph_folding, positive_float, positive_int

DEFAULT_BAUD = 3_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", metavar="URL",
                       help="the board's serial port (/dev/ttyUSB1), or any pyserial URL "
                            "(socket://127.0.0.1:PORT for a board served by bnnhw sim-board)")
    where.add_argument("--sim", action="store_true",
                       help="start a simulated board of the model (Verilator) and use it")
    parser.add_argument("--model", required=True, metavar=MODEL_METAVAR,
                        help=f"model whose weights are written and whose golden model checks "
                             f"the results: {MODEL_HELP}")
    parser.add_argument("--images", metavar="SOURCE",
                        help="mnist (the bundled test split), cifar10:DIR, an .npz file "
                             "(images, labels) or a folder of PNG/JPEG images (default: the "
                             "checkpoint's test split)")
    parser.add_argument("--count", type=positive_int, metavar="N",
                        help="classify only the first N images")
    parser.add_argument("--baud", type=positive_int, default=DEFAULT_BAUD,
                        help=f"serial baud rate (default {DEFAULT_BAUD})")
    parser.add_argument("--folding", metavar="F.json",
                        help="the design's folding (default: the default folding)")
    parser.add_argument("--window", type=positive_int, default=8, metavar="W",
                        help="frames in flight (default 8)")
    parser.add_argument("--timeout", type=positive_float, default=0.5, metavar="S",
                        help="seconds without an answer before a frame is sent again "
                             "(default 0.5; with --sim, at least 4 image times of the "
                             "simulated board)")
    parser.add_argument("--no-check", action="store_true",
                        help="do not compare the results with the golden model")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def default_source(model) -> str:
    """The model's own test split as an ``--images`` source."""
    name, folder = model.meta.get("data"), model.meta.get("data_dir")
    if name not in ("mnist", "cifar10"):
        raise BnnhwError(f"{model.what} does not say which data set it was trained on; "
                         f"give --images")
    if folder is not None and not isinstance(folder, str):
        raise BnnhwError(f"{model.what}: its meta 'data_dir' is not a folder name; give "
                         f"--images")
    return name if folder is None else f"{name}:{folder}"


def run(args: argparse.Namespace) -> int:
    from ..flows.infer import (
        SIM_CYCLES_PER_SECOND,
        answer_timeout,
        describe_sim,
        infer,
        model_figures,
        simulated_board,
    )
    from ..images import load_images

    model, folds = model_graph_folding(args)
    graph = model.graph
    source = args.images or default_source(model)
    images, labels, what = load_images(source, model.input_shape, args.count)

    def say(msg: str) -> None:
        if not args.json:
            print(f"  {msg}...", file=sys.stderr, flush=True)

    bar = None
    if not args.json and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(images), unit="img", desc="infer", file=sys.stderr, leave=False)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)

    board = stats = None
    try:
        if args.sim:
            board = simulated_board(graph, folds, progress=say)
            url = board.url
            timeout = answer_timeout(graph, folds, args.timeout, SIM_CYCLES_PER_SECOND)
        else:
            url = args.port
            timeout = args.timeout
        report, _, _ = infer(url, graph, folds, images, labels, baud=args.baud,
                             check=not args.no_check, window=args.window,
                             timeout_s=timeout, progress=progress, say=say)
    finally:
        if bar is not None:
            bar.close()
        if board is not None:
            stats = board.stop()
    sim = None
    if args.sim:
        figures = model_figures(graph, folds)
        sim = {"model": figures, "cycles": None if stats is None else stats.cycles,
               "cycles_per_second": None if stats is None else stats.cycles_per_second}
    if args.json:
        print(json.dumps({"model": str(args.model), "source": what, "url": url,
                          **report.to_dict(), **({"sim": sim} if sim else {})}))
    else:
        print(f"{args.model}: {what} on {url}")
        print(report.format())
        if sim:
            print(describe_sim(stats, sim["model"]))
    return 0 if report.ok else 1
