"""``bnnhw check``: the model itself (the QAT model of a checkpoint, QONNX's execute_onnx
for an ONNX graph) against the golden model on its IR, bit for bit."""

from __future__ import annotations

import argparse
import json
import sys

from .common import (
    CHECK_BYTES_PER_VALUE,
    MODEL_HELP,
    MODEL_METAVAR,
    add_image_arguments,
    check_image_memory,
    load_model,
    nonnegative_float,
    select_images,
)

# bnnhw.check.TIE_EPS, kept here so that ``bnnhw check --help`` needs no torch
# (tests/test_cli_errors.py checks that they agree).
TIE_EPS = 1e-5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar=MODEL_METAVAR,
                        help=f"model to check: {MODEL_HELP}")
    add_image_arguments(parser, default=100)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--eps", type=nonnegative_float, default=TIE_EPS,
                        help=f"relative margin under which a disagreeing bit counts as a float "
                             f"tie, a finite number >= 0 (default {TIE_EPS:g})")


def run(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    check_image_memory(args.images, model.input_shape, CHECK_BYTES_PER_VALUE)
    images, source = select_images(args, model)
    report = model.check(images, eps=args.eps, progress=sys.stderr.isatty())
    if args.json:
        print(json.dumps({"model": str(args.model), "source": source, **report.to_dict()}))
    else:
        print(f"{args.model}: {source}")
        print(report.format())
    return 0 if report.ok else 1
