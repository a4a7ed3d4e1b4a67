"""``bnnhw check``: the QAT model against the golden model on its IR, bit for bit."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import BnnhwError
from .common import (
    CHECK_BYTES_PER_VALUE,
    add_image_arguments,
    check_image_memory,
    naming_checkpoint,
    nonnegative_float,
    select_images,
)

# bnnhw.check.TIE_EPS, kept here so that ``bnnhw check --help`` needs no torch
# (tests/test_cli_errors.py checks that they agree).
TIE_EPS = 1e-5


def compile_model(model: Any) -> Any:
    """``bnnhw.frontend.compile_model``, imported when first needed."""
    from ..frontend import compile_model as compile_

    return compile_(model)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="M.pt", help="checkpoint to check")
    add_image_arguments(parser, default=100)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--eps", type=nonnegative_float, default=TIE_EPS,
                        help=f"relative margin under which a disagreeing bit counts as a float "
                             f"tie, a finite number >= 0 (default {TIE_EPS:g})")


def run(args: argparse.Namespace) -> int:
    from ..check import check_model
    from ..checkpoint import load_model

    model, ckpt = load_model(args.model)
    check_image_memory(args.images, model.spec["input"]["shape"], CHECK_BYTES_PER_VALUE)
    images, source = select_images(args, model.spec, ckpt)
    try:
        graph = compile_model(model)
    except BnnhwError as e:
        raise naming_checkpoint(args.model, e) from None
    report = check_model(model, images, graph, eps=args.eps, progress=sys.stderr.isatty())
    if args.json:
        print(json.dumps({"model": str(args.model), "source": source, **report.to_dict()}))
    else:
        print(f"{args.model}: {source}")
        print(report.format())
    return 0 if report.ok else 1
