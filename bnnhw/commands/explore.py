"""``bnnhw explore``: a design-space sweep of a model on a board, every point a whole
build, run on Dask, and its Pareto page (``bnnhw.flows.explore``)."""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

from ..errors import BnnhwError
from .common import positive_int


def _list(parse, what: str):
    def parse_list(text: str) -> list:
        try:
            values = [parse(v) for v in text.split(",") if v.strip()]
        except ValueError:
            values = []
        if not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, "
                                             f"not {text!r}")
        return values
    return parse_list


def _positive(kind):
    def parse(text: str):
        v = kind(text)
        if not v > 0:
            raise ValueError(text)
        return v
    return parse


def _weights(text: str) -> str:
    if text not in ("auto", "writable", "fixed"):
        raise ValueError(text)
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--board", required=True, metavar="NAME", help="the board")
    parser.add_argument("--model", required=True, metavar="M.pt", help="the checkpoint")
    parser.add_argument("--out", metavar="DIR",
                        help="sweep folder (default build/explore-<model>-<board>)")
    parser.add_argument("--target-ii", type=_list(_positive(int), "positive integers"),
                        metavar="II,II,...",
                        help="designs: the smallest reaching each initiation interval "
                             "(default: the fastest design and 2, 4 and 8 times its II)")
    parser.add_argument("--folding", action="append", default=[], metavar="F.json",
                        help="a design of this folding (repeatable; with or instead of "
                             "--target-ii)")
    parser.add_argument("--weights", type=_list(_weights, "auto, writable, fixed"),
                        default=["auto"], metavar="W,W",
                        help="memory styles: writable (block RAM or LUT RAM), fixed (block "
                             "RAM or logic ROMs), auto (default)")
    parser.add_argument("--clock", type=_list(_positive(float), "positive numbers"),
                        metavar="MHZ,MHZ", help="design clocks (default: follow the post-route "
                                                "Fmax, as bnnhw build does)")
    parser.add_argument("--seeds", type=_list(_positive(int), "positive integers"),
                        metavar="S,S", help="nextpnr seeds, one point each (default: seed 1)")
    parser.add_argument("--workers", type=positive_int, metavar="N",
                        help="local Dask workers (default: one per CPU)")
    parser.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                        help="run the points on this Dask scheduler's workers instead")
    parser.add_argument("--json", action="store_true", help="print the sweep as JSON")


def run(args: argparse.Namespace) -> int:
    from ..flows.boards import get
    from ..flows.build import plan_build, progress_printer
    from ..flows.explore import explore, grid
    from ..folding import load_folding, matrix_layers
    from .build import _graph_and_folding, default_out

    board = get(args.board)
    if args.scheduler is not None and args.workers is not None:
        raise BnnhwError("--workers sizes the local cluster: give it or --scheduler, not both")
    out = Path(args.out) if args.out else default_out(args.model, board.name).with_name(
        f"explore-{default_out(args.model, board.name).name}")
    if out.exists() and not out.is_dir():
        raise BnnhwError(f"--out {out} is a file; give a folder")
    say = progress_printer(not args.json)
    start = time.perf_counter()
    args.folding, foldings = None, args.folding
    graph, _, arch = _graph_and_folding(args, say)
    folds_of = {str(Path(f).resolve()): load_folding(f, matrix_layers(graph)) for f in foldings}
    iis = args.target_ii
    if iis is None and not foldings:
        fastest = plan_build(graph, board, say=say).choice.ii
        iis = [None, 2 * fastest, 4 * fastest, 8 * fastest]
    points = grid(iis or [], list(folds_of), args.weights, args.clock or [None],
                  args.seeds or [None])
    digest = hashlib.sha256(Path(args.model).read_bytes()).hexdigest()
    doc = explore(graph, board, points, out, model=Path(args.model).stem, model_digest=digest,
                  folds_of=folds_of, zoo=arch, scheduler=args.scheduler, workers=args.workers,
                  say=say)
    failed = [r for r in doc["points"] if "error" in r]
    if args.json:
        print(json.dumps({"out": str(out), **doc}))
    else:
        _print(doc, out, time.perf_counter() - start)
    if len(failed) == len(doc["points"]):
        raise BnnhwError(f"every point of the sweep failed; the first: {failed[0]['error']}")
    return 0


def _print(doc: dict, out: Path, seconds: float) -> None:
    ok = [r for r in doc["points"] if "error" not in r]
    front = set(doc["pareto"]["lut"])
    print(f"{doc['model']} on {doc['board']}: {len(doc['points'])} points, {len(ok)} built, "
          f"{len(doc['points']) - len(ok)} failed")
    print(f"  {'point':48} {'II':>9} {'MHz':>6} {'Fmax':>6} {'images/s':>10} {'LUT':>7} "
          f"{'BRAM':>5}")
    for r in sorted(ok, key=lambda r: -r["images_per_second"]):
        fmax = "-" if r["fmax_mhz"] is None else f"{r['fmax_mhz']:.1f}"
        star = "*" if r["key"] in front else " "
        print(f" {star}{r['label'][:48]:48} {r['ii_cycles']:>9,} {r['clock_mhz']:>6g} "
              f"{fmax:>6} {r['images_per_second']:>10,.0f} {r['lut']:>7,.0f} {r['bram']:>5g}")
    for r in doc["points"]:
        if "error" in r:
            print(f"  FAILED {r['label']}: {r['error']}")
    print(f"  *: on the Pareto front of images/s against LUTs; {out}/explore.html "
          f"({seconds:.0f} s)")
