"""Kernel-sparsity pruning and class specialisation, carried to the hardware.

For ``sfc`` and a CNV-shaped network (FINN's CNV layer structure at a quarter of its
channels: 16C3-16C3-MP2-32C3-32C3-MP2-64C3-64C3-FC128-FC128-FC10, uint8 3x32x32 input;
MNIST is zero-padded to 32x32 and repeated over 3 channels) on the bundled MNIST: an
unpruned parent and a pruned model trained alike (same seed and epochs), then, for each,
the test accuracy, the hidden filters kept, the IR's weight + threshold bits and the
resource model's LUTs / block RAM of the cheapest folding at the parent's default target
II (``bnnhw.prune_report``). Then a 3-class model specialised from the sfc parent.

    .venv/bin/python bench/pruning.py [--epochs 10] [--lam 0.1] [--family xc7] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from bnnhw.checkpoint import save_checkpoint
from bnnhw.data import load_dataset
from bnnhw.nn import normalize_spec, zoo
from bnnhw.prune_report import format_table, report
from bnnhw.specialise import specialise, subset_classes
from bnnhw.train import TrainConfig, train

CNV_SHAPED = {"input": {"shape": [3, 32, 32], "encoding": "uint8"},
              "layers": [{"type": "conv", "out": 16, "kernel": 3},
                         {"type": "conv", "out": 16, "kernel": 3},
                         {"type": "maxpool", "kernel": 2},
                         {"type": "conv", "out": 32, "kernel": 3},
                         {"type": "conv", "out": 32, "kernel": 3},
                         {"type": "maxpool", "kernel": 2},
                         {"type": "conv", "out": 64, "kernel": 3},
                         {"type": "conv", "out": 64, "kernel": 3},
                         {"type": "dense", "out": 128}, {"type": "dense", "out": 128},
                         {"type": "dense", "out": 10}]}


def trained(name, spec, data, cfg, folder):
    start = time.perf_counter()
    result = train(spec, data, cfg)
    path = folder / f"{name}.pt"
    save_checkpoint(path, result.model, "spec", {"data": "mnist",
                                                 "test_accuracy": result.test_accuracy})
    print(f"  trained {name}: {result.test_accuracy:.2%} in {time.perf_counter() - start:.0f} s",
          flush=True)
    return path, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lam", type=float, default=0.1, help="prune lambda (default 0.1)")
    ap.add_argument("--family", default="xc7")
    ap.add_argument("--quick", action="store_true", help="2 epochs")
    args = ap.parse_args()
    epochs = 2 if args.quick else args.epochs
    torch.set_num_threads(1)
    data = load_dataset("mnist")
    folder = Path(tempfile.mkdtemp(prefix="bnnhw-prune-"))
    print(f"bundled MNIST, {epochs} epochs, seed 0, prune lambda {args.lam}, t 0.01, "
          f"multiple 8; resource model {args.family}")
    for name, spec in (("sfc", zoo.get_spec("sfc")), ("cnv-shaped", CNV_SHAPED)):
        print(f"{name}:")
        parent, presult = trained(name, spec, data, TrainConfig(epochs=epochs), folder)
        pruned, _ = trained(f"{name}-pruned", spec, data,
                            TrainConfig(epochs=epochs, prune_lambda=args.lam), folder)
        print(format_table(report([pruned], args.family, parent), args.family))
        if name == "sfc":
            classes = [3, 5, 8]
            sspec, state = specialise(normalize_spec(copy.deepcopy(spec)),
                                      presult.model.state_dict(), classes)
            sub = subset_classes(data, classes)
            start = time.perf_counter()
            res = train(sspec, sub, TrainConfig(epochs=epochs, prune_lambda=args.lam),
                        init=state)
            path = folder / "sfc-358.pt"
            save_checkpoint(path, res.model, "spec", {"data": "mnist", "classes": classes,
                                                      "test_accuracy": res.test_accuracy})
            sub_parent = presult.model.eval()
            with torch.no_grad():
                logits = sub_parent(sub.test_x.float())[:, classes]
            parent_acc = float((logits.argmax(1) == sub.test_y).float().mean())
            print(f"specialised to classes 3,5,8 ({time.perf_counter() - start:.0f} s): "
                  f"{res.test_accuracy:.2%} on their {len(sub.test_y)} test images; the "
                  f"parent restricted to those 3 classes: {parent_acc:.2%}")
            print(format_table(report([path], args.family, parent), args.family))
    print(f"checkpoints in {folder}")


if __name__ == "__main__":
    main()
