"""Where bnnhw stands: the zoo networks built for each board, measured, beside the published
anchors (FINN, finn-examples, FracBNN, MLPerf Tiny).

    .venv/bin/python bench/benchmarks.py [--models tfc,sfc,lfc,cnv] [--boards arty,ulx3s,
        icebreaker] [--epochs 10] [--images 3] [--cifar10 DIR] [--out build/benchmarks]
        [--json FILE] [--skip-speed]

1. **Models.** ``tfc``, ``sfc`` and ``lfc`` are trained on the bundled MNIST (``bnnhw train
   --model M --data mnist --epochs E``, seed 0); their accuracy is the golden model's on
   the bundled test split (1,000 images: the accuracy of the hardware, which the checks
   hold equal bit for bit). ``cnv`` is trained on CIFAR-10 when ``--cifar10 DIR`` holds
   its python batches; without it the zoo ``cnv`` with random weights is built (its
   resources and speed do not depend on the weights' values), and no accuracy is given.
2. **Builds.** Each model for each board through ``bnnhw.flows.build.build`` (the folding
   the optimiser picks, the board flow, the clock following the post-route Fmax; cached
   by design hash in ``build/synth_cache``): LUT, FF, block RAM, DSP as synthesised
   (Yosys; nextpnr's placement for the Lattice parts), the post-route Fmax where a
   place-and-route runs, the initiation interval of the cycle model and as measured under
   Verilator (``bnnhw.flows.verify.verify_graph``, the C++ harness, ``--images`` images
   back to back: golden model == RTL on every beat is checked as well), images/s at the
   design clock, images/s per kLUT, the latency, the build time. A network that does not
   fit a board is reported with the optimiser's one-sentence refusal.
3. **Simulation speed.** One network (``sfc``, its default folding, the same images)
   under the Amaranth simulator, the cocotb + Verilator bench and the C++ Verilator
   harness, in one run: cycles per second of each and their ratios.

Each published anchor is printed with its source beside bnnhw's comparable figure; the
ratio that matters (images/s per kLUT against FINN's CNV-W1A1 on the Pynq-Z1) is computed
from figures measured in this run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ANCHORS = [
    {"what": "FINN / BNN-PYNQ CNV-W1A1, Pynq-Z1 (XC7Z020), II 32,768 cycles at 100 MHz",
     "lut": 26_072, "bram": "124 BRAM tiles", "images_per_second": 3_020.5,
     "accuracy": "84.19% CIFAR-10",
     "source": "finn-examples (BNN-PYNQ CNV-W1A1 on Pynq-Z1), measured throughput"},
    {"what": "FINN CNV-W1A1, AUP-ZU3 (2025)", "images_per_second": 5_310.9,
     "source": "FINN on AUP-ZU3 (2025)"},
    {"what": "FINN TFC-W1A1, AUP-ZU3 (2025)", "images_per_second": 1_089_429.6,
     "source": "FINN on AUP-ZU3 (2025)"},
    {"what": "finn-examples TFC-W1A1, Pynq-Z1", "images_per_second": 837_019,
     "source": "finn-examples (TFC-W1A1 on Pynq-Z1)"},
    {"what": "FINN CNV-W1A1 on an Arty A7-100T with a MicroBlaze", "images_per_second": 659,
     "accuracy": "84.5% CIFAR-10", "source": "MLPerf Tiny v0.7"},
    {"what": "FracBNN CIFAR-10, Ultra96v2 (layer-sequential HLS)",
     "images_per_second": 1_419, "accuracy": "89.1% CIFAR-10",
     "source": "Zhang et al., FracBNN, FPGA'21 (one image at a time)"},
]
FINN_CNV_PER_KLUT = 3_020.5 / 26.072
SMALL = ("tiny", "tfc", "sfc")


def say(message: str) -> None:
    print(message, flush=True)


# -- models -----------------------------------------------------------------------------------

def checkpoint(name: str, out: Path, epochs: int, cifar10: str | None) -> tuple[Path, str]:
    """The checkpoint of ``name`` and how its weights came about."""
    path = out / "models" / f"{name}.pt"
    if name == "cnv" and cifar10 is None:
        if not path.exists():
            from bnnhw.checkpoint import save_checkpoint
            from tests.bnn_cases import zoo_model

            save_checkpoint(path, zoo_model("cnv", seed=0, calibration=2), "cnv",
                            {"data": "cifar10"})
        return path, "random weights (no CIFAR-10 here)"
    data = ["--data", "cifar10", "--data-dir", cifar10] if name == "cnv" else ["--data", "mnist"]
    if not path.exists():
        say(f"training {name} ({epochs} epochs)")
        subprocess.run([str(Path(sys.executable).parent / "bnnhw"), "train", "--model", name,
                        *data, "--epochs", str(epochs), "--seed", "0", "--out", str(path)],
                       check=True, stdout=subprocess.DEVNULL)
    return path, f"trained {epochs} epochs on {'CIFAR-10' if name == 'cnv' else 'bundled MNIST'}"


def accuracy(graph, name: str, cifar10: str | None) -> float | None:
    """The golden model's test accuracy (None where the data is not here)."""
    import numpy as np

    from bnnhw import golden
    from bnnhw.data import load_dataset

    if name == "cnv" and cifar10 is None:
        return None
    data = load_dataset("cifar10", cifar10) if name == "cnv" else load_dataset("mnist")
    classes = golden.run(graph, data.test_x.numpy()).classes.numpy()
    return float(np.mean(classes == data.test_y.numpy()))


def chw(graph) -> tuple[int, int, int]:
    h, w, c = graph.nodes[0].in_shape
    return c, h, w


# -- builds -----------------------------------------------------------------------------------

def build_row(name: str, graph, arch: str, board_name: str, out: Path, images: int) -> dict:
    from bnnhw.check import random_images
    from bnnhw.errors import BnnhwError
    from bnnhw.flows.boards import get
    from bnnhw.flows.build import build, plan_build
    from bnnhw.flows.verify import verify_graph

    board = get(board_name)
    row: dict = {"model": name, "board": board.name, "device": board.fpga.describe()}
    t0 = time.perf_counter()
    try:
        plan = plan_build(graph, board, zoo=arch)
    except BnnhwError as e:
        return {**row, "fits": False, "refusal": str(e)}
    say(f"{name} on {board.name}: building (II {plan.choice.ii:,})")
    try:
        report = build(graph, board, out / "builds" / f"{name}-{board.name}", model=name,
                       zoo=arch, say=lambda m: say(f"  {m}"))
    except BnnhwError as e:
        return {**row, "fits": False, "refusal": str(e)}
    res = report["resources"]
    synth = {k: v["synthesised"] for k, v in res.items()}
    lut = synth["lut"]
    row.update({
        "fits": report["fits"], "lut": lut, "ff": synth["ff"], "bram": synth["bram36"],
        "bram_unit": res["bram36"]["unit"], "dsp": synth["dsp"], "spram": synth.get("spram"),
        "lut_estimate": res["lut"]["estimate"], "bram_estimate": res["bram36"]["estimate"],
        "clock_mhz": report["clock_mhz"], "fmax_mhz": report["fmax_mhz"],
        "timing_met": report["timing_met"], "ii_model": report["ii_cycles"],
        "images_per_second": report["images_per_second"],
        "images_per_second_per_klut": report["images_per_second"] / (lut / 1000),
        "latency_cycles": report["latency_cycles"],
        "latency_us": report["latency_cycles"] / report["clock_mhz"],
        "writable_weights": report["writable_weights"],
        "build_seconds": report["flow"].get("build seconds"),
        "cached": report["flow"].get("cached"), "flow": report["flow"].get("flow")})
    say(f"{name} on {board.name}: verifying {images} images under Verilator")
    v = verify_graph(graph, plan.folds, random_images(chw(graph), images, seed=1).numpy(),
                     engine="fast")
    row.update({"ii_measured": v.cycles_per_image, "verify_mismatches": v.mismatches,
                "verify_cycles_per_second": v.cycles_per_second,
                "wall_seconds": time.perf_counter() - t0})
    return row


# -- simulation speed ---------------------------------------------------------------------------

def sim_speed(images: int) -> dict:
    """cycles/s of the Amaranth simulator, cocotb bench and C++ harness on ``sfc``."""
    say("simulation speed: sfc under the Amaranth simulator, cocotb and the C++ harness")
    from bnnhw import golden
    from bnnhw.check import random_images
    from bnnhw.flows.verify import verify_graph
    from bnnhw.folding import default_folding
    from bnnhw.frontend import compile_model
    from rtl_gen.network import Network, NetworkParams
    from sim.stream_sim import run_stream
    from tests.bnn_cases import zoo_model

    graph = compile_model(zoo_model("sfc", seed=0, calibration=2))
    folds = default_folding(graph)
    x = random_images(chw(graph), images, seed=2).numpy()
    out = {}
    for engine in ("fast", "cocotb"):
        v = verify_graph(graph, folds, x, engine=engine)
        out[engine] = {"cycles_per_second": v.cycles_per_second, "cycles": v.sim_cycles,
                       "seconds": v.sim_seconds, "mismatches": v.mismatches}
    params = NetworkParams(graph, folds)
    gold = golden.run(graph, x)
    want = [params.format.result_beat(s, c)
            for s, c in zip(gold.scores.numpy(), gold.classes.numpy())]
    t0 = time.perf_counter()
    got = run_stream(Network(params), params.format.image_beats(x), len(want),
                     stall_in=0, stall_out=0, max_cycles=10_000_000)
    seconds = time.perf_counter() - t0
    cycles = len(x) * params.cycles_per_image + params.latency   # the run's span, modelled
    out["amaranth"] = {"cycles_per_second": cycles / seconds, "cycles": cycles,
                       "seconds": seconds,
                       "mismatches": int(sum(a != b for a, b in zip(got, want)))
                       + abs(len(got) - len(want))}
    out["ratio_fast_over_amaranth"] = (out["fast"]["cycles_per_second"]
                                       / out["amaranth"]["cycles_per_second"])
    out["ratio_cocotb_over_amaranth"] = (out["cocotb"]["cycles_per_second"]
                                         / out["amaranth"]["cycles_per_second"])
    out["images"] = len(x)
    out["design"] = f"zoo sfc, default folding, II {params.cycles_per_image:,} cycles"
    return out


# -- printing -------------------------------------------------------------------------------------

def _f(v, spec=",.0f") -> str:
    return "-" if v is None else format(v, spec)


def print_tables(doc: dict) -> None:
    print("\nBuilds (the optimiser's folding for each board; synthesised figures)")
    print(f"{'model':6} {'board':11} {'LUT':>7} {'FF':>7} {'BRAM':>9} {'DSP':>4} {'MHz':>5} "
          f"{'Fmax':>6} {'II model':>9} {'II sim':>9} {'images/s':>10} {'/kLUT':>7} "
          f"{'lat us':>8} {'build s':>8} {'acc':>7}")
    for r in doc["builds"]:
        acc = doc["accuracy"].get(r["model"])
        acc_s = "-" if acc is None else f"{100 * acc:.2f}%"
        if not r.get("lut"):
            print(f"{r['model']:6} {r['board']:11} does not fit: {r.get('refusal', '')}")
            continue
        bram = f"{r['bram']:g} {r['bram_unit'][:6]}"
        print(f"{r['model']:6} {r['board']:11} {_f(r['lut']):>7} {_f(r['ff']):>7} {bram:>9} "
              f"{_f(r['dsp']):>4} {r['clock_mhz']:>5g} {_f(r['fmax_mhz'], '.1f'):>6} "
              f"{_f(r['ii_model']):>9} {_f(r['ii_measured'], ',.1f'):>9} "
              f"{_f(r['images_per_second']):>10} {_f(r['images_per_second_per_klut']):>7} "
              f"{_f(r['latency_us'], ',.1f'):>8} {_f(r['build_seconds']):>8} {acc_s:>7}")
    s = doc.get("sim_speed")
    if s:
        print(f"\nSimulation speed ({s['design']}, {s['images']} images)")
        for k in ("amaranth", "cocotb", "fast"):
            print(f"  {k:9} {s[k]['cycles_per_second']:>12,.0f} cycles/s "
                  f"({s[k]['cycles']:,} cycles in {s[k]['seconds']:.1f} s, "
                  f"{s[k]['mismatches']} mismatches)")
        print(f"  C++ Verilator harness / Amaranth simulator: "
              f"{s['ratio_fast_over_amaranth']:.1f}x; cocotb + Verilator / Amaranth: "
              f"{s['ratio_cocotb_over_amaranth']:.1f}x")
    print("\nPublished anchors")
    for a in ANCHORS:
        extra = ", ".join(x for x in (f"{a['lut']:,} LUT" if "lut" in a else "",
                                      a.get("bram", ""), a.get("accuracy", "")) if x)
        print(f"  {a['what']}: {a['images_per_second']:,} images/s"
              f"{'; ' + extra if extra else ''} [{a['source']}]")
    cnv = [r for r in doc["builds"] if r["model"] == "cnv" and r.get("lut")]
    for r in cnv:
        print(f"  bnnhw CNV on {r['board']}: {r['images_per_second_per_klut']:,.0f} images/s "
              f"per kLUT against FINN's {FINN_CNV_PER_KLUT:,.0f} on the Pynq-Z1: "
              f"{r['images_per_second_per_klut'] / FINN_CNV_PER_KLUT:.2f}x")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tfc,sfc,lfc,cnv")
    ap.add_argument("--boards", default="arty,ulx3s,icebreaker")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--cifar10", default=None, help="folder of the CIFAR-10 python batches")
    ap.add_argument("--out", default="build/benchmarks")
    ap.add_argument("--json", default=None, help="write the figures here as well")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args(argv)

    from bnnhw.checkpoint import load_model
    from bnnhw.frontend import compile_model

    out = (ROOT / args.out) if not Path(args.out).is_absolute() else Path(args.out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    doc: dict = {"builds": [], "accuracy": {}, "weights": {}, "command": " ".join(sys.argv)}
    save = Path(args.json) if args.json else out / "benchmarks.json"
    start = time.perf_counter()
    models = {}
    for name in args.models.split(","):
        path, how = checkpoint(name, out, args.epochs, args.cifar10)
        model, ckpt = load_model(path)
        graph = compile_model(model)
        models[name] = (graph, ckpt.arch)
        doc["weights"][name] = how
        doc["accuracy"][name] = accuracy(graph, name, args.cifar10)
    # the cheap builds first (small networks, then the estimate-only Arty), so that a run
    # stopped early has the most rows; the simulation speed after the small networks
    boards = args.boards.split(",")
    pairs = sorted(((m, b) for m in models for b in boards),
                   key=lambda mb: (mb[0] not in SMALL, mb[1] != "arty", list(models).index(mb[0]),
                                   boards.index(mb[1])))
    speed_done = args.skip_speed
    for name, board in pairs:
        if not speed_done and name not in SMALL:
            doc["sim_speed"] = sim_speed(args.images)
            speed_done = True
        graph, arch = models[name]
        doc["builds"].append(build_row(name, graph, arch, board, out, args.images))
        save.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    if not speed_done:
        doc["sim_speed"] = sim_speed(args.images)
    doc["seconds"] = time.perf_counter() - start
    save.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print_tables(doc)
    print(f"\n{save} ({doc['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
