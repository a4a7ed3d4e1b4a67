"""``bnnhw verify``: the generated RTL under Verilator against the golden model."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import BnnhwError, check_output_folder
from .common import (
    CHECK_BYTES_PER_VALUE,
    MODEL_HELP,
    MODEL_METAVAR,
    VERIFY_BYTES_PER_PIXEL,
    add_image_arguments,
    check_image_memory,
    load_model,
    positive_int,
    probability,
    select_images,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar=MODEL_METAVAR,
                        help=f"model to verify: {MODEL_HELP}")
    add_image_arguments(parser, default=20)
    parser.add_argument("--folding", metavar="F.json",
                        help='per-layer folding {"layers": {name: {"pe": N, "simd": N}}} '
                             "(default: balanced for --target-ii; not with --target-ii)")
    parser.add_argument("--target-ii", type=positive_int, metavar="CYCLES",
                        help="target cycles per image of the default folding (default: "
                             "about 256 XNOR lanes spread over the layers)")
    parser.add_argument("--stall", type=probability, default=0.0, metavar="P",
                        help="also run with random stalls of probability P in [0, 1) on "
                             "both ends")
    parser.add_argument("--engine", choices=("fast", "cocotb"), default="fast",
                        help="testbench: fast (a C++ harness compiled with the design, "
                             "millions of cycles per second) or cocotb (the Python bench, "
                             "about 100k cycles per second); default fast")
    parser.add_argument("--waves", metavar="DIR", default="build/waves",
                        help="folder where a mismatch's waveform goes (default build/waves)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..flows.verify import verify_graph
    from ..folding import default_folding, default_target, load_folding, matrix_layers

    if args.folding is not None and args.target_ii is not None:
        raise BnnhwError("--folding and --target-ii exclude each other: a folding file fixes "
                         "every layer's folding; give one of them")
    waves = check_output_folder(args.waves, "--waves")
    model = load_model(args.model)
    check_image_memory(args.images, model.input_shape, CHECK_BYTES_PER_VALUE,
                       VERIFY_BYTES_PER_PIXEL)
    images, source = select_images(args, model)
    graph = model.graph
    if args.folding:
        folds = load_folding(args.folding, matrix_layers(graph))
    else:
        folds = default_folding(graph, args.target_ii)

    def progress(msg: str) -> None:
        if not args.json:
            print(f"  {msg}...", file=sys.stderr, flush=True)

    progress(f"the model's own predictions ({model.reference})")
    qat_classes = model.classes(images)
    report = verify_graph(graph, folds, images, stall=args.stall, seed=args.seed,
                          waves_dir=waves, progress=progress, qat_classes=qat_classes,
                          engine=args.engine)
    report.reference = model.reference
    if args.json:
        print(json.dumps({"model": str(args.model), "source": source,
                          "target_ii": None if args.folding else
                          (args.target_ii or default_target(graph)),
                          **report.to_dict()}, default=str))
    else:
        print(f"{args.model}: {source}")
        print(report.format())
    return 0 if report.ok else 1
