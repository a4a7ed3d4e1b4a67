"""``bnnhw compile``: lower a checkpoint or an ONNX graph to the integer IR (a JSON file plus
``<file>.npz``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import check_output
from .common import MODEL_HELP, MODEL_METAVAR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar=MODEL_METAVAR,
                        help=f"model to lower: {MODEL_HELP}")
    parser.add_argument("-o", "--out", metavar="M.ir",
                        help="IR file to write (default: the model path with .ir); the "
                             "arrays go to <file>.npz beside it, written together")


def summary(graph: Any) -> str:
    """One line per node of a ``bnnhw.ir.Graph``: shapes, memory bits and integer widths."""
    from .. import ir

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
    from .. import ir
    from ..model_file import is_onnx, load

    model = Path(args.model)
    out_text = args.out if args.out is not None else str(model.with_suffix(".ir"))
    inputs = [(model, f"the --model {'ONNX file' if is_onnx(model) else 'checkpoint'}")]
    out = check_output(out_text, "-o/--out", inputs, advice="give another -o")
    check_output(ir.arrays_path(out), "the IR's arrays file", inputs,
                 advice="remove it or give another -o")
    graph = load(model, with_meta=True).graph
    ir.save_graph(graph, out)
    print(summary(graph))
    print(f"wrote {out} and {ir.arrays_path(out)}")
    return 0
