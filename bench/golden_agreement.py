"""Agreement of the golden model (on the compiled IR) with the QAT models, per zoo model.

Two kinds of model:

- ``random``: each zoo model with random weights and stressed BatchNorm statistics
  (``bnnhw.check.randomize_batchnorm``: thresholds inside the data, zero and negative
  gammas), checked on random 8-bit images of its input shape;
- ``trained``: tfc and sfc trained for ``--epochs`` on the bundled MNIST, checked on its
  test split.

Prints, per model: images, class agreement, activation bits compared, bit agreement, float
ties, unexplained disagreements (must be 0) and wall time (compile + check).

    .venv/bin/python bench/golden_agreement.py [--images 100] [--epochs 2] [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch

from bnnhw.check import check_model, random_images, randomize_batchnorm
from bnnhw.frontend import compile_model
from bnnhw.nn import build_model, zoo


def _row(label: str, report, seconds: float) -> str:
    return (f"{label:<18} {report.images:>6} {100 * report.class_agreement:>8.2f}% "
            f"{report.bits:>12} {100 * report.bit_agreement:>10.5f}% {report.ties:>6} "
            f"{report.bugs:>5} {seconds:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="images per small model")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (trained)")
    parser.add_argument("--quick", action="store_true", help="few images, no training")
    args = parser.parse_args()
    n = 8 if args.quick else args.images
    print(f"{'model':<18} {'images':>6} {'classes':>9} {'bits':>12} {'bit agree':>11} "
          f"{'ties':>6} {'bugs':>5} {'time s':>8}")
    cases = [("tfc", {}, n), ("sfc", {}, n), ("lfc", {}, n), ("tiny", {}, n),
             ("cnv", {}, max(2, n // 10)), ("vgg", {"width": 0.25}, max(2, n // 10)),
             ("vgg", {}, 2 if args.quick else 4)]
    for name, kwargs, count in cases:
        torch.manual_seed(0)
        model = randomize_batchnorm(build_model(zoo.get_spec(name, **kwargs)), seed=0)
        images = random_images(model.spec["input"]["shape"], count, seed=1)
        t = time.perf_counter()
        report = check_model(model, images, compile_model(model))
        label = f"{name}{'-w' + str(kwargs['width']) if kwargs else ''} random"
        print(_row(label, report, time.perf_counter() - t), flush=True)
    if args.quick:
        return
    from bnnhw.data import load_dataset
    from bnnhw.train import TrainConfig, train

    data = load_dataset("mnist")
    for name in ("tfc", "sfc"):
        result = train(zoo.get_spec(name), data, TrainConfig(epochs=args.epochs, seed=0))
        t = time.perf_counter()
        report = check_model(result.model, data.test_x, compile_model(result.model))
        label = f"{name} trained ({100 * result.test_accuracy:.1f}%)"
        print(_row(label, report, time.perf_counter() - t), flush=True)


if __name__ == "__main__":
    main()
