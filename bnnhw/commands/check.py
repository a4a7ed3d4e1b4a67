"""``bnnhw check``: the QAT model against the golden model on its IR, bit for bit."""

from __future__ import annotations

import argparse
import json
import sys

from ..check import TIE_EPS, check_model
from ..checkpoint import load_model
from ..frontend import compile_model
from .common import add_image_arguments, select_images

HELP = "Compare the QAT model with the golden model of its IR: classes and every activation bit."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="M.pt", help="checkpoint to check")
    add_image_arguments(parser, default=100)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--eps", type=float, default=TIE_EPS,
                        help=f"relative margin under which a disagreeing bit counts as a float "
                             f"tie (default {TIE_EPS:g})")


def run(args: argparse.Namespace) -> int:
    model, ckpt = load_model(args.model)
    images, source = select_images(args, model.spec, ckpt)
    graph = compile_model(model)
    report = check_model(model, images, graph, eps=args.eps, progress=sys.stderr.isatty())
    if args.json:
        print(json.dumps({"model": str(args.model), "source": source, **report.to_dict()}))
    else:
        print(f"{args.model}: {source}")
        print(report.format())
    return 0 if report.ok else 1
