"""``bnnhw compile``: lower a checkpoint to the integer IR (a JSON file plus ``<file>.npz``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import ir
from ..frontend import compile_checkpoint

HELP = "Lower a trained checkpoint to the integer IR (JSON graph + .npz arrays)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="M.pt", help="checkpoint to lower")
    parser.add_argument("-o", "--out", metavar="M.ir",
                        help="IR file to write (default: the checkpoint path with .ir); the "
                             "arrays go to <file>.npz beside it")


def summary(graph: ir.Graph) -> str:
    """One line per node: shapes, memory bits and integer widths."""
    lines = [(f"{'node':<10} {'op':<8} {'in':>12} {'out':>12} {'weight bits':>12} "
             f"{'classes':>7} {'acc bits':>8} {'thr bits':>8}")]
    for n in graph.nodes:
        shape_in = "x".join(map(str, n.in_shape))
        shape_out = "x".join(map(str, n.out_shape))
        extra = ""
        if isinstance(n, (ir.Conv, ir.Dense)):
            classes = "x".join(map(str, n.thresholds.shape[:2])) if n.thresholded else "-"
            acc = n.acc_bits if n.thresholded else n.dot_bits
            extra = (f" {n.weight_bits:>12} {classes:>7} {acc:>8} "
                     f"{n.threshold_bits or '-':>8}")
        lines.append(f"{n.name:<10} {n.op:<8} {shape_in:>12} {shape_out:>12}{extra}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(args.model).with_suffix(".ir")
    graph = compile_checkpoint(args.model)
    ir.save_graph(graph, out)
    print(summary(graph))
    print(f"wrote {out} and {ir.arrays_path(out)}")
    return 0
