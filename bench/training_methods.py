"""Training methods compared: STE, self-binarizing, DFA and DRTP, with and without
BatchNorm, several seeds, on the bundled MNIST, scikit-learn's bundled 8x8 digits (when
scikit-learn is installed) and any local data set folder given.

Per (data set, method, BatchNorm): test accuracy (mean, min and max over the seeds; for
self-binarizing also the last smooth network's), epochs and training time per run (mean).
Every trained model is also checked against its golden model on the test images
(``bnnhw.check``: classes and every activation bit), and the table says how many passed.

Models: ``sfc`` (784-256-256-256-10) on MNIST-shaped data, 64-64-64-10 on the 8x8
digits, a 32C3-MP2-64C3-MP2-128-10 conv net on CIFAR-10. Learning rates: bnnhw train's
defaults (Adam 0.1 with BatchNorm, 0.01 without).

    .venv/bin/python bench/training_methods.py [--seeds 3] [--epochs 10]
        [--fashion-dir DIR] [--cifar-dir DIR] [--quick] [--markdown]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bnnhw import methods as mt
from bnnhw.check import check_model
from bnnhw.data import Dataset, load_dataset
from bnnhw.nn import without_batchnorm, zoo
from bnnhw.train import TrainConfig, default_lr, train

DIGITS_SPEC = {"input": {"shape": [1, 8, 8], "encoding": "binary", "threshold": 128},
               "layers": [{"type": "dense", "out": 64} for _ in range(3)]
               + [{"type": "dense", "out": 10}]}
CIFAR_SPEC = {"input": {"shape": [3, 32, 32], "encoding": "uint8"},
              "layers": [{"type": "conv", "out": 32, "kernel": 3},
                         {"type": "maxpool", "kernel": 2},
                         {"type": "conv", "out": 64, "kernel": 3},
                         {"type": "maxpool", "kernel": 2},
                         {"type": "dense", "out": 128}, {"type": "dense", "out": 10}]}


def digits() -> Dataset | None:
    """scikit-learn's 1,797 8x8 digits (pixels 0..16 scaled to 0..255); every fifth image
    is a test image. None when scikit-learn is not installed."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    d = load_digits()
    x = torch.from_numpy((d.images * 255 / 16).round().astype("uint8")).unsqueeze(1)
    y = torch.from_numpy(d.target).to(torch.int64)
    test = torch.arange(len(y)) % 5 == 0
    return Dataset("digits8x8", x[~test].contiguous(), y[~test], x[test].contiguous(),
                   y[test], tuple(str(i) for i in range(10)), (1, 8, 8))


def run(spec, data, method, bn, seed, epochs):
    spec = spec if bn else without_batchnorm(spec)
    cfg = TrainConfig(epochs=epochs, seed=seed, method=method, lr=default_lr(spec, "adam"))
    start = time.perf_counter()
    result = train(spec, data, cfg)
    seconds = time.perf_counter() - start
    ok = check_model(result.model, data.test_x).ok
    return result, seconds, ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--fashion-dir", help="Fashion-MNIST IDX files (the MNIST file names)")
    ap.add_argument("--cifar-dir", help="CIFAR-10 python batches")
    ap.add_argument("--quick", action="store_true", help="1 seed, 2 epochs")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.epochs = 1, 2
    torch.set_num_threads(1)
    sets = [("mnist (bundled)", load_dataset("mnist"), zoo.get_spec("sfc"), args.epochs)]
    dg = digits()
    if dg is None:
        print("scikit-learn is not installed: the 8x8 digits are left out "
              "(pip install scikit-learn)")
    else:
        sets.append(("digits 8x8 (sklearn)", dg, DIGITS_SPEC, args.epochs * 2))
    if args.fashion_dir:
        sets.append(("fashion-mnist", load_dataset("mnist", args.fashion_dir),
                     zoo.get_spec("sfc"), args.epochs))
    if args.cifar_dir:
        sets.append(("cifar10", load_dataset("cifar10", args.cifar_dir), CIFAR_SPEC,
                     args.epochs))
    print(f"torch threads 1, seeds 0..{args.seeds - 1}")
    if args.markdown:
        print("| data set | method | BN | test accuracy, mean (min-max) | smooth net | "
              "epochs | time/run | golden check |")
        print("|---|---|---|---|---|---|---|---|")
    else:
        print(f"{'data set':<22} {'method':<16} {'BN':<3} {'test acc mean':>13} "
              f"{'min':>7} {'max':>7} {'smooth':>7} {'epochs':>6} {'s/run':>6} {'check':>6}")
    for label, data, spec, epochs in sets:
        for bn in (True, False):
            for method in mt.METHODS:
                accs, floats, secs, oks = [], [], [], 0
                for seed in range(args.seeds):
                    result, seconds, ok = run(spec, data, method, bn, seed, epochs)
                    accs.append(result.test_accuracy)
                    if result.float_test_accuracy is not None:
                        floats.append(result.float_test_accuracy)
                    secs.append(seconds)
                    oks += ok
                mean = statistics.mean(accs)
                smooth = f"{100 * statistics.mean(floats):.2f}%" if floats else "-"
                bn_text = "yes" if bn else "no"
                if args.markdown:
                    print(f"| {label} | {method} | {bn_text} | {100 * mean:.2f}% "
                          f"({100 * min(accs):.2f}-{100 * max(accs):.2f}) | {smooth} | "
                          f"{epochs} | {statistics.mean(secs):.1f} s | "
                          f"{oks}/{args.seeds} |")
                else:
                    print(f"{label:<22} {method:<16} {bn_text:<3} {100 * mean:>12.2f}% "
                          f"{100 * min(accs):>6.2f}% {100 * max(accs):>6.2f}% "
                          f"{smooth:>7} {epochs:>6} {statistics.mean(secs):>6.1f} "
                          f"{oks:>3}/{args.seeds}", flush=True)


if __name__ == "__main__":
    main()
