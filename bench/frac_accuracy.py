"""Fractional against binary activations: test accuracy of the same topology trained the
same way.

For each seed, ``bnnhw train`` trains the zoo's fractional model (``cnv-frac`` by
default: CNV on an 8-level thermometer input, every hidden layer frac2, every layer
after the first precision-gated) and the same spec with every activation binary (no
gates), with the same epochs, image limit, seed and optimiser, on the bundled MNIST
fitted to the model's input. It prints each model's test accuracy, the fractional one's
final gate rates and both training times, then the mean per kind. The checkpoints stay in
``--out`` (``<model>-frac-s<seed>.pt``, ``<model>-binary-s<seed>.pt``).

Usage: ``python bench/frac_accuracy.py [--model cnv-frac] [--epochs 3] [--limit 2000]
[--seeds 0 1 2] [--out build/frac_accuracy] [--markdown]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from bnnhw.nn import zoo

BNNHW = [str(Path(sys.executable).parent / "bnnhw")]  # the venv's command


def binary_twin(spec: dict) -> dict:
    """``spec`` with every activation binary and no gate options."""
    spec = json.loads(json.dumps(spec))
    for lay in spec["layers"]:
        if lay["type"] != "maxpool":
            lay["activation"], lay["gate"] = "binary", None
    spec["name"] = spec.get("name", "model") + "-binary"
    return spec


def train(model: str, out: Path, args: argparse.Namespace, seed: int) -> dict:
    start = time.perf_counter()
    subprocess.run([*BNNHW, "train", "--model", model, "--epochs", str(args.epochs),
                    "--limit", str(args.limit), "--seed", str(seed), "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    ckpt = torch.load(out, weights_only=True)
    history = ckpt["meta"].get("history") or []
    return {"accuracy": ckpt["meta"]["test_accuracy"], "seconds": time.perf_counter() - start,
            "gate_rates": (history[-1].get("gate_rates") if history else None) or {}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cnv-frac")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("build/frac_accuracy"))
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    twin = args.out / f"{args.model}-binary.json"
    twin.write_text(json.dumps(binary_twin(zoo.get_spec(args.model)), indent=1))
    rows = []
    for seed in args.seeds:
        frac = train(args.model, args.out / f"{args.model}-frac-s{seed}.pt", args, seed)
        binary = train(str(twin), args.out / f"{args.model}-binary-s{seed}.pt", args, seed)
        rates = ", ".join(f"{k} {v:.1%}" for k, v in frac["gate_rates"].items())
        rows.append((seed, frac, binary, rates))
        print(f"seed {seed}: frac2 {frac['accuracy']:.2%} ({frac['seconds']:.0f} s), binary "
              f"{binary['accuracy']:.2%} ({binary['seconds']:.0f} s); gates {rates}",
              file=sys.stderr)
    mean_f = sum(r[1]["accuracy"] for r in rows) / len(rows)
    mean_b = sum(r[2]["accuracy"] for r in rows) / len(rows)
    if args.markdown:
        print("| seed | frac2 | binary | frac2 time | binary time | gate rates |")
        print("|---|---|---|---|---|---|")
        for seed, f, b, rates in rows:
            print(f"| {seed} | {f['accuracy']:.2%} | {b['accuracy']:.2%} | "
                  f"{f['seconds']:.0f} s | {b['seconds']:.0f} s | {rates} |")
        print(f"| mean | {mean_f:.2%} | {mean_b:.2%} | | | |")
    else:
        for seed, f, b, rates in rows:
            print(f"seed {seed}: frac2 {f['accuracy']:.2%}  binary {b['accuracy']:.2%}  "
                  f"gates {rates}")
        print(f"mean: frac2 {mean_f:.2%}  binary {mean_b:.2%}  "
              f"({args.epochs} epochs, {args.limit} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
