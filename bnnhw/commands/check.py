"""``bnnhw check``: the QAT model against the golden model on its IR, bit for bit."""

from __future__ import annotations

import argparse
import json
import sys

from ..check import TIE_EPS, check_model, random_images
from ..checkpoint import load_model
from ..data import adapt, load_dataset
from ..errors import BnnhwError
from ..frontend import compile_model

HELP = "Compare the QAT model with the golden model of its IR: classes and every activation bit."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="M.pt", help="checkpoint to check")
    parser.add_argument("--images", type=int, default=100, metavar="N",
                        help="number of images (default 100)")
    parser.add_argument("--random", action="store_true",
                        help="random 8-bit images of the model's input shape instead of the "
                             "checkpoint's test set")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random images")
    parser.add_argument("--data-dir", metavar="D",
                        help="data folder (default: the checkpoint's data_dir, else bundled)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--eps", type=float, default=TIE_EPS,
                        help=f"relative margin under which a disagreeing bit counts as a float "
                             f"tie (default {TIE_EPS:g})")


def run(args: argparse.Namespace) -> int:
    if args.images < 1:
        raise BnnhwError(f"--images must be at least 1, not {args.images}")
    model, ckpt = load_model(args.model)
    shape = model.spec["input"]["shape"]
    if args.random:
        images = random_images(shape, args.images, args.seed)
        source = f"{args.images} random images (seed {args.seed})"
    else:
        name = ckpt.meta.get("data")
        if not isinstance(name, str):
            raise BnnhwError(f"checkpoint {args.model} does not say which data set it was "
                             f"trained on (no meta 'data'); use --random")
        data = load_dataset(name, args.data_dir or ckpt.meta.get("data_dir"))
        images = adapt(data.test_x[:args.images], shape)
        source = f"{len(images)} {name} test images"
    graph = compile_model(model)
    report = check_model(model, images, graph, eps=args.eps, progress=sys.stderr.isatty())
    if args.json:
        print(json.dumps({"model": str(args.model), "source": source, **report.to_dict()}))
    else:
        print(f"{args.model}: {source}")
        print(report.format())
    return 0 if report.ok else 1
