"""Measured vs modelled cycles per image and latency of whole networks under Verilator.

For zoo ``tfc``, ``sfc``, ``tiny`` and a small CNV-shaped net (``cnv12``: uint8 3x12x12,
conv 8 k3 valid, conv 8 k3, max-pool 2, conv 16 k3, dense 10), each at its default
folding and at one other folding, streams random images back to back with no stalls
(``bnnhw.flows.verify.verify_graph``) and prints the steady-state cycles per image
(distance between consecutive images' output beats) next to the cycle model (the slowest
engine's ``cycles_per_image``), the latency (first pixel in to result out) next to the
latency model (``NetworkParams.latency``), both gaps, the bottleneck engine and whether
every beat matched the golden model. The bound both are held to is 5%.

Usage: ``python bench/network_cycles.py [--images N] [NAME ...]``. Each distinct design
costs one Verilator build (cached in ``BNNHW_SIM_CACHE`` or ``build/sim_cache``).
"""

from __future__ import annotations

import argparse
import sys

import torch

from bnnhw.check import random_images, randomize_batchnorm
from bnnhw.flows.verify import verify_graph
from bnnhw.folding import Fold, default_folding
from bnnhw.frontend import compile_model
from bnnhw.nn import build_model, zoo

CNV12 = {"input": {"shape": [3, 12, 12], "encoding": "uint8"}, "layers": [
    {"type": "conv", "out": 8, "kernel": 3}, {"type": "conv", "out": 8, "kernel": 3},
    {"type": "maxpool", "kernel": 2}, {"type": "conv", "out": 16, "kernel": 3},
    {"type": "dense", "out": 10}]}

# The other folding of each net, (pe, simd) per matrix layer in order: slower first
# layers for the dense nets (an MVTU with NF > 1 behind a slow input), balanced conv
# layers for cnv12 (conv3 and conv7 at the same II, conv7 fed windows at conv3's pace).
OTHER = {
    "tfc": [(2, 16), (1, 8), (1, 8), (1, 1)],
    "sfc": [(8, 16), (1, 64), (1, 64), (1, 2)],
    "tiny": [(8, 1), (1, 6), (1, 1)],
    "cnv12": [(4, 3), (2, 8), (1, 2), (1, 1)],
}


def build(name: str):
    torch.manual_seed(0)
    spec = CNV12 if name == "cnv12" else zoo.get_spec(name)
    model = randomize_batchnorm(build_model(spec), 0, 2)
    return model, compile_model(model)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(OTHER)}")
    ap.add_argument("--images", type=int, default=4)
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in OTHER]
    if unknown:
        ap.error(f"unknown net {unknown[0]!r}: choose from {', '.join(OTHER)}")
    print(f"{'net':6} {'folding':8} {'II model':>8} {'measured':>9} {'gap':>7} "
          f"{'lat. model':>10} {'measured':>9} {'gap':>7}  ok    bottleneck   "
          "(pe, simd) per layer")
    worst = 0.0
    for name in args.names or OTHER:
        model, graph = build(name)
        images = random_images(model.spec["input"]["shape"], args.images, 1)
        default = default_folding(graph)
        other = {k: Fold(*f) for k, f in zip(default, OTHER[name], strict=True)}
        for label, folds in (("default", default), ("other", other)):
            r = verify_graph(graph, folds, images, trace=False)
            gap, lat_gap = r.cycle_error, r.latency_error
            worst = max(worst, abs(gap or 0.0), abs(lat_gap or 0.0))
            folding = " ".join(f"({f.pe},{f.simd})" for f in folds.values())
            measured = "-" if r.cycles_per_image is None else f"{r.cycles_per_image:.0f}"
            gap_text = "-" if gap is None else f"{gap:+.1%}"
            lat_text = "-" if lat_gap is None else f"{lat_gap:+.1%}"
            print(f"{name:6} {label:8} {r.model_cycles_per_image:8} {measured:>9} "
                  f"{gap_text:>7} {r.model_latency_cycles:10} {r.latency_cycles or '-':>9} "
                  f"{lat_text:>7}  {r.ok!s:5} {r.bottleneck:12} {folding}", flush=True)
    print(f"largest gap {worst:.1%} (bound 5%)")
    return 0 if worst <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
