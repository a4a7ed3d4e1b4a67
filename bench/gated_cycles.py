"""Cycles of a precision-gated layer against its gate density, measured under Verilator.

A fractional network whose gated convolution is the bottleneck (``gated8``: thermometer
input 1x8x8 with 3 levels, conv 16 k3 with a frac2 output, gated conv 32 k3 with a frac2
output, gated dense classifier 10; the gated conv folded at ``pe`` 1 or 4 and ``simd``
16, the other layers much faster) is given gate thresholds that open a chosen fraction
of each channel's gates on the bench images (the quantile of each row's MSB popcount).
For each density the images stream back to back with no stalls
(``bnnhw.flows.verify.verify_graph``, the fast harness): every beat is compared with the
golden model, the steady-state cycles per image are measured, and the gated unit's step
counters are read. The LSB pass's cost is the measured II less the MSB pass (``P * NF *
SF``, the layer's cycles with every gate closed), against ``d`` times the full LSB pass
(``d`` the measured item density: the fraction of (pixel, neuron fold) items with an open
gate). An ungated 2-bit engine takes both passes over every item.

Usage: ``python bench/gated_cycles.py [--images N] [--pe 1 4] [--densities ...]
[--markdown]``. Each density is one Verilator build.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from bnnhw import golden, ir
from bnnhw import reference as ref
from bnnhw.check import random_images, randomize_batchnorm
from bnnhw.flows.verify import verify_graph
from bnnhw.folding import Fold
from bnnhw.frontend import compile_model
from bnnhw.nn import build_model

SPEC = {"input": {"shape": [1, 8, 8], "encoding": "thermometer", "levels": 3}, "layers": [
    {"type": "conv", "out": 16, "kernel": 3, "activation": "frac2"},
    {"type": "conv", "out": 32, "kernel": 3, "activation": "frac2"},
    {"type": "dense", "out": 10}]}
DENSITIES = (0.05, 0.1, 0.25, 0.5, 1.0)


def network(seed: int = 0):
    torch.manual_seed(seed)
    model = randomize_batchnorm(build_model(SPEC), seed, 8)
    graph = compile_model(model)
    conv = next(n for n in graph.nodes if isinstance(n, ir.Conv) and n.gated)
    return graph, conv


def with_density(graph: ir.Graph, conv: ir.Conv, images: np.ndarray, d: float) -> ir.Graph:
    """``graph`` with the gated conv's thresholds opening about a fraction ``d`` of each
    row's gates on ``images``: ``G`` the ``1 - d`` quantile of the row's ``pc_m``."""
    x = torch.from_numpy(images).permute(0, 2, 3, 1)
    kind = "uint8"
    for node in graph.nodes:
        if node is conv:
            break
        x, kind = golden.run_node(node, x, kind), ir.out_kind(node, kind)
    win = ref.sliding_window(x, conv.kernel, conv.stride, conv.padding, conv.pad_bit)
    pc = ref.popcount_matvec(win >> 1, conv.weights).reshape(-1, conv.rows).numpy()
    if d >= 1:
        gate = np.zeros(conv.rows, np.int64)
    else:  # the least G opening at most a fraction d: pc >= G for the top d of the values
        gate = np.array([int(np.sort(pc[:, r])[min(len(pc) - 1, int(np.ceil((1 - d)
                        * len(pc))))]) for r in range(conv.rows)], np.int64)
        gate = np.clip(gate, 0, conv.cols + 1)
    node = conv.replace(gate=gate, gate_invert=np.zeros(conv.rows, np.uint8))
    return graph.replace([node if n is conv else n for n in graph.nodes])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--pe", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES))
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    graph, conv = network()
    c, h, w = SPEC["input"]["shape"]
    images = random_images((c, h, w), args.images, 1).numpy()
    head = ["pe", "target d", "item d", "gates open", "MSB pass", "II model", "II measured",
            "LSB measured", "d x full LSB", "gap", "LSB steps", "ungated 2-bit", "ok"]
    rows = []
    for pe in args.pe:
        folds = {graph.nodes[1].name: Fold(16, 3), conv.name: Fold(pe, 16),
                 graph.nodes[-1].name: Fold(10, 64)}
        for d in args.densities:
            g = with_density(graph, conv, images, d)
            rep = verify_graph(g, folds, images, engine="fast")
            (gl,) = [x for x in rep.gated if x.node == conv.name]
            measured = rep.cycles_per_image
            lsb = measured - gl.msb_cycles
            want = gl.item_density * gl.msb_cycles
            gap = (lsb / want - 1) if want else float("nan")
            rows.append([pe, f"{d:.2f}", f"{gl.item_density:.3f}",
                         f"{gl.channel_density:.3f}", gl.msb_cycles,
                         rep.model_cycles_per_image, f"{measured:.1f}", f"{lsb:.1f}",
                         f"{want:.1f}", f"{gap:+.2%}", f"{gl.lsb_steps:.1f}",
                         gl.ungated_cycles, "yes" if rep.ok else "NO"])
            print(" ".join(str(v) for v in rows[-1]), file=sys.stderr)
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(str(v) for v in r) + " |")
    else:
        print("  ".join(f"{x:>12}" for x in head))
        for r in rows:
            print("  ".join(f"{x!s:>12}" for x in r))
    return 0 if all(r[-1] == "yes" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
