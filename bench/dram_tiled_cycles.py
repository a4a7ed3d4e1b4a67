"""Cycles of a weight-tiled layer on LiteDRAM's simulation core against the cycle model.

A binary MLP (input 1x16x16 binary, dense 256, dense 512, dense 10) whose middle layer
(512 x 256) keeps its weights in DRAM (``rtl_gen.tiled_mvtu`` behind
``rtl_gen.dram_arbiter`` and the LiteDRAM controller over its DRAM model,
``sim.dram_top``), folded so that the tiled unit is the slowest engine: compute-bound
(few lanes), bandwidth-bound (wide words, every word used once) and latency-bound (tiny
tiles). For each folding the images stream back to back with no stalls
(``bnnhw.flows.verify.verify_graph``, the fast harness): every beat is compared with the
golden model, and the steady-state cycles per image are compared with the model at the
default port figures (0.85 words per cycle, 24 cycles of latency:
``bnnhw.folding.DEFAULT_DRAM_*``) and at the port figures that would fit the measurement.

Usage: ``python bench/dram_tiled_cycles.py [--images N] [--markdown]``. Each folding is
one Verilator build (about 15 s).
"""

from __future__ import annotations

import argparse
import sys

from bnnhw.check import random_images, randomize_batchnorm
from bnnhw.flows.verify import verify_graph
from bnnhw.folding import DEFAULT_DRAM_LATENCY, DEFAULT_DRAM_WORDS_PER_CYCLE, Fold, tiled_shape
from bnnhw.frontend import compile_model
from bnnhw.nn import build_model

SPEC = {"input": {"shape": [1, 16, 16], "encoding": "binary"}, "layers": [
    {"type": "dense", "out": 256}, {"type": "dense", "out": 512},
    {"type": "dense", "out": 10}]}
# (what binds, pe, simd, tile_rows) of the middle layer
CASES = (("compute", 4, 8, 64), ("bandwidth", 16, 64, 64), ("bandwidth", 8, 32, 128),
         ("latency", 1, 128, 1), ("latency", 2, 64, 2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    graph = compile_model(randomize_batchnorm(build_model(SPEC), 0, 8))
    first, middle, last = [n.name for n in graph.nodes[1:]]
    images = random_images(SPEC["input"]["shape"], args.images, 1)
    rows = []
    for what, pe, simd, tile in CASES:
        folds = {first: Fold(16, 64), middle: Fold(pe, simd, tile), last: Fold(10, 64)}
        shape = tiled_shape(graph[middle], folds[middle])
        rep = verify_graph(graph, folds, images, engine="fast")
        model = shape.cycles(DEFAULT_DRAM_WORDS_PER_CYCLE, DEFAULT_DRAM_LATENCY)
        measured = rep.cycles_per_image
        err = (measured - model) / model
        rows.append((what, pe, simd, tile, shape.tiles, shape.dram_words, model, measured,
                     err, rep.mismatches, rep.bottleneck))
        print(f"{what:9s} pe {pe:2d} simd {simd:3d} tile_rows {tile:3d}: {shape.tiles:3d} "
              f"tiles, {shape.dram_words:5d} words; model {model:7,d}, measured "
              f"{measured:9,.1f} ({err:+.2%}), {rep.mismatches} mismatches, bottleneck "
              f"{rep.bottleneck}", flush=True)
    if args.markdown:
        print("\n| binds | pe | simd | tile_rows | tiles | DRAM words | model | measured | "
              "error | mismatches |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for what, pe, simd, tile, t, d, model, measured, err, bad, _ in rows:
            print(f"| {what} | {pe} | {simd} | {tile} | {t} | {d:,} | {model:,} | "
                  f"{measured:,.1f} | {err:+.2%} | {bad} |")
    return 0 if all(r[9] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
