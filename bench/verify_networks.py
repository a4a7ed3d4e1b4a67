"""Verify the regression networks at length and the full CNV, through ``bnnhw verify``.

Prints, per network and folding: images, mismatches, measured and modelled cycles per
image, simulation speed and wall time; then the full CNV at a folding with II <= 32768
(FINN's CNV folding on the Pynq-Z1): Verilog generation time and a 10-image verify.

    .venv/bin/python bench/verify_networks.py [--images 200] [--skip-cnv]

The models are the test suite's (zoo tfc/sfc and two small conv nets, random weights and
far-from-trivial BatchNorm statistics); images are random 8-bit pixels.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bnnhw.checkpoint import save_checkpoint
from bnnhw.folding import fold_for_target, matrix_layers, save_folding, two_foldings
from bnnhw.frontend import compile_model
from tests.bnn_cases import VERIFY_MODELS, zoo_model

OUT = Path("build/bench")
BNNHW = str(Path(sys.executable).with_name("bnnhw"))


def verify(ckpt: Path, fold_file: Path, images: int, stall: float) -> tuple[dict, float]:
    cmd = [BNNHW, "verify", "--model", str(ckpt), "--random", "--images", str(images),
           "--folding", str(fold_file), "--json"]
    if stall:
        cmd += ["--stall", str(stall)]
    start = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if run.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{run.stderr}")
    return json.loads(run.stdout), wall


def row(name: str, fold: str, r: dict, wall: float) -> str:
    measured = r["cycles_per_image"]
    return (f"{name:<14}{fold:<9}{r['images']:>7}{r['mismatches']:>11}{measured:>11.1f}"
            f"{r['model_cycles_per_image']:>9}{r['cycle_error']:>+9.2%}"
            f"{r['cycles_per_second']:>12,.0f}{wall:>9.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--stall", type=float, default=0.2)
    ap.add_argument("--skip-cnv", action="store_true")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"{'network':<14}{'folding':<9}{'images':>7}{'mismatches':>11}{'cycles':>11}"
          f"{'model':>9}{'error':>9}{'cycles/s':>12}{'wall s':>9}")
    for name, make in VERIFY_MODELS.items():
        model = make()
        ckpt = OUT / f"{name}.pt"
        save_checkpoint(ckpt, model, "spec", {"origin": "bench: random weights and BN"})
        graph = compile_model(model)
        for fold_name, folds in two_foldings(graph).items():
            fold_file = OUT / f"{name}-{fold_name}.json"
            save_folding(fold_file, folds)
            result, wall = verify(ckpt, fold_file, args.images, args.stall)
            print(row(name, fold_name, result, wall), flush=True)

    if args.skip_cnv:
        return
    model = zoo_model("cnv", seed=0, calibration=2)
    ckpt = OUT / "cnv.pt"
    save_checkpoint(ckpt, model, "cnv", {"origin": "bench: random weights and BN"})
    graph = compile_model(model)
    folds = fold_for_target(matrix_layers(graph), 32768)
    fold_file = OUT / "cnv-32768.json"
    save_folding(fold_file, folds)
    from rtl_gen.network import Network, NetworkParams
    from sim.verilator import to_verilog

    start = time.perf_counter()
    text = to_verilog(Network(NetworkParams(graph, folds)))
    gen = time.perf_counter() - start
    print(f"\ncnv: Verilog generated in {gen:.1f} s ({len(text) / 1e6:.1f} MB); folding "
          + ", ".join(f"{k} {f.pe}x{f.simd}" for k, f in folds.items()))
    result, wall = verify(ckpt, fold_file, 10, 0.0)
    print(row("cnv", "32768", result, wall))
    print(f"cnv: Verilator build {result['build_seconds']:.0f} s"
          f"{' (cached)' if result['build_cached'] else ''}, latency "
          f"{result['latency_cycles']} cycles")


if __name__ == "__main__":
    main()
