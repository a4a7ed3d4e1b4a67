"""``bnnhw verify``: the generated RTL under Verilator against the golden model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..checkpoint import load_model
from ..errors import BnnhwError
from ..flows.verify import verify_graph
from ..folding import default_folding, default_target, load_folding, matrix_layers
from ..frontend import compile_model
from .common import add_image_arguments, select_images

HELP = ("Co-simulate the generated accelerator (Verilator + cocotb) on images and compare "
        "every score with the golden model.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="M.pt", help="checkpoint to verify")
    add_image_arguments(parser, default=20)
    parser.add_argument("--folding", metavar="F.json",
                        help='per-layer folding {"layers": {name: {"pe": N, "simd": N}}} '
                             "(default: balanced for --target-ii)")
    parser.add_argument("--target-ii", type=int, metavar="CYCLES",
                        help="target cycles per image of the default folding (default: "
                             "about 256 XNOR lanes spread over the layers)")
    parser.add_argument("--stall", type=float, default=0.0, metavar="P",
                        help="also run with random stalls of probability P on both ends")
    parser.add_argument("--waves", metavar="DIR", default="build/waves",
                        help="where a mismatch's waveform goes (default build/waves)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def qat_predictions(model, images):
    """The QAT model's own classes of ``images`` (eval mode, float32 as trained)."""
    import torch

    with torch.no_grad():
        x = torch.as_tensor(np.asarray(images)).to(torch.float32)
        return model(x).argmax(dim=1).numpy()


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.stall < 1:
        raise BnnhwError(f"--stall must be a probability in [0, 1), not {args.stall}")
    if args.target_ii is not None and args.target_ii < 1:
        raise BnnhwError(f"--target-ii must be a positive number of cycles, not "
                         f"{args.target_ii}")
    model, ckpt = load_model(args.model)
    images, source = select_images(args, model.spec, ckpt)
    graph = compile_model(model)
    if args.folding:
        folds = load_folding(args.folding, matrix_layers(graph))
    else:
        folds = default_folding(graph, args.target_ii)

    def progress(msg: str) -> None:
        if not args.json:
            print(f"  {msg}...", file=sys.stderr, flush=True)

    qat_classes = qat_predictions(model, images)
    report = verify_graph(graph, folds, images, stall=args.stall, seed=args.seed,
                          waves_dir=Path(args.waves), progress=progress,
                          qat_classes=qat_classes)
    if args.json:
        print(json.dumps({"model": str(args.model), "source": source,
                          "target_ii": None if args.folding else
                          (args.target_ii or default_target(graph)),
                          **report.to_dict()}, default=str))
    else:
        print(f"{args.model}: {source}")
        print(report.format())
    return 0 if report.ok else 1
