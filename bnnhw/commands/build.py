"""``bnnhw build``: a checkpoint or an ONNX graph to a board build (RTL, constraints, project, bitstream
where a toolchain here makes one) and its report (``bnnhw.flows.build``)."""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from ..errors import BnnhwError
from .common import (
    MODEL_HELP,
    MODEL_METAVAR,
    cpu_count,
    load_model,
    positive_float,
    positive_int,
    thread_count,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--board", required=True, metavar="NAME",
                        help="the board (bnnhw boards lists them: arty, arty-a7-100, ulx3s, "
                             "icebreaker)")
    parser.add_argument("--model", required=True, metavar=MODEL_METAVAR,
                        help=f"the model: {MODEL_HELP}")
    parser.add_argument("--out", metavar="DIR",
                        help="build folder (default build/<model>-<board>)")
    parser.add_argument("--folding", metavar="F.json",
                        help="use this folding instead of the optimiser's pe/simd")
    parser.add_argument("--target-fps", type=positive_float, metavar="R",
                        help="the smallest design reaching R images/s at the design clock "
                             "(default: the fastest design that fits)")
    parser.add_argument("--target-ii", type=positive_int, metavar="CYCLES",
                        help="the smallest design whose initiation interval is at most CYCLES "
                             "(instead of --target-fps)")
    parser.add_argument("--clock", type=positive_float, metavar="MHZ",
                        help="design clock in MHz (default: the board's, then the fastest "
                             "its PLL makes under the post-route Fmax)")
    parser.add_argument("--weights", choices=("auto", "writable", "fixed"), default="auto",
                        help="writable: the host writes the weights at run time; fixed: "
                             "in the bitstream; auto (default): writable when it fits")
    parser.add_argument("--jobs", type=thread_count, default=1, metavar="N",
                        help=f"parallel tool runs (nextpnr seeds), 1..{cpu_count()} "
                             "(default 1)")
    parser.add_argument("--plan-only", action="store_true",
                        help="choose and estimate the design, write the report, run no tool")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def default_out(model: str, board: str) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model).stem) or "model"
    return Path("build") / f"{stem}-{board}"


def run(args: argparse.Namespace) -> int:
    from ..flows.boards import get
    from ..flows.build import progress_printer

    board = get(args.board)
    out = Path(args.out) if args.out else default_out(args.model, board.name)
    if args.target_fps is not None and args.target_ii is not None:
        raise BnnhwError("give --target-fps or --target-ii, not both")
    if out.exists() and not out.is_dir():
        raise BnnhwError(f"--out {out} is a file; give a folder")
    clock_hz = None
    if args.clock is not None:
        clock_hz = round(args.clock * 1e6)
    say = progress_printer(not args.json)
    start = time.perf_counter()
    graph, folding, arch = _graph_and_folding(args, say)

    from ..flows.build import build

    report = build(graph, board, out, model=Path(args.model).stem, folding=folding,
                   target_fps=args.target_fps, target_ii=args.target_ii, clock_hz=clock_hz, weights=args.weights,
                   jobs=args.jobs, plan_only=args.plan_only, zoo=arch, say=say)
    if args.json:
        print(json.dumps({"out": str(out), **report}))
        return 0
    _print(report, out, time.perf_counter() - start)
    return 0


def _graph_and_folding(args, say):
    """The lowered graph, the user's folding (None without ``--folding``) and the model's
    architecture (a zoo name, ``spec`` or ``onnx``)."""
    from ..folding import load_folding, matrix_layers

    say(f"reading {args.model} and lowering it to the integer IR")
    model = load_model(args.model)
    graph = model.graph
    folding = load_folding(args.folding, matrix_layers(graph)) if args.folding else None
    return graph, folding, model.arch


def _print(r: dict, out: Path, seconds: float) -> None:
    res = r["resources"]

    def kind(k: str, label: str) -> str:
        v = res[k]
        s = v["synthesised"]
        got = f"{s:g} synthesised, " if s is not None else ""
        return f"{label} {got}{v['estimate']:g} estimated of {v['budget']:g}"

    print(f"{r['model']} on {r['board']} ({r['device']}): "
          f"{'fits' if r['fits'] else 'DOES NOT FIT'}")
    for line in r["explanation"]:
        print(f"  {line}")
    print("  " + "; ".join([kind("lut", "LUT"), kind("ff", "FF"),
                           kind("bram36", res["bram36"]["unit"]), kind("dsp", "DSP")]))
    fmax = "not measured" if r["fmax_mhz"] is None else f"{r['fmax_mhz']:.1f} MHz"
    print(f"  clock {r['clock_mhz']:g} MHz (post-route Fmax {fmax}); II {r['ii_cycles']:,} "
          f"cycles: {r['images_per_second']:,.0f} images/s; latency {r['latency_cycles']:,} "
          f"cycles")
    for note in r["notes"]:
        print(f"  note: {note}")
    print(f"  {out}/report.html ({seconds:.0f} s)")
