"""Board builds of zoo TFC (or SFC): resources, post-route Fmax and build times per board.

Builds the board design of ``tfc`` (or ``--model sfc``; random weights:
``tests.bnn_cases.zoo_model(model, seed=0, calibration=2)``, the default folding, a
writable board core) with
``bnnhw.flows.synth.synthesise`` for the ULX3S (ECP5-85F: Yosys, nextpnr-ecp5, ecppack),
the iCEBreaker (iCE40UP5K: Yosys, nextpnr-ice40, icepack) and the Arty A7-35T (the
Vivado project, and a Yosys resource estimate unless Vivado is on PATH), each at the
board's default design clock unless ``--clock BOARD=MHZ`` says otherwise, and prints a
table: LUT, FF, block RAM, DSP, the design clock, its post-route Fmax and the build time.

    .venv/bin/python bench/board_builds.py [--boards ulx3s,icebreaker,arty] [--jobs 2]
        [--model tfc] [--seeds 1] [--clock ulx3s=80] [--out build/board_builds]
        [--json FILE]

``--jobs`` builds that many boards at once (and runs that many nextpnr seeds at once with
``--seeds``). Builds are cached by design hash (``build/synth_cache``): a second run of the
same design reports the first run's figures at once ("cached"). A board whose design does
not fit its device is reported as such, with the tool's message.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import boards
from bnnhw.errors import BnnhwError
from bnnhw.flows.synth import SynthResult, synthesise
from bnnhw.folding import default_folding
from bnnhw.frontend import compile_model
from rtl_gen.board_top import BoardTop, BoardTopParams
from tests.bnn_cases import zoo_model

DEFAULT_BOARDS = ("ulx3s", "icebreaker", "arty")


def build(name: str, graph, folds, clock_hz: int | None, out: Path, seeds: int, jobs: int
          ) -> tuple[str, SynthResult | str, float]:
    board = boards.get(name)
    start = time.perf_counter()
    try:
        core = board.core_params(graph, folds, clock_hz=clock_hz)
        result = synthesise(BoardTop(BoardTopParams(core)), board, out / board.name,
                            seeds=seeds, jobs=jobs)
    except (BnnhwError, ValueError) as e:
        return board.name, str(e), time.perf_counter() - start
    return board.name, result, time.perf_counter() - start


def row(name: str, r: SynthResult | str, wall: float) -> str:
    if isinstance(r, str):
        return f"{name:<12} FAILED: {r}"
    res, u = r.resources, r.utilisation()
    lut = f"{res['lut']:g}" + (f"/{res['lc']:g} LC" if "lc" in res and r.flow == "icestorm"
                               else "") + (f" {u['lut']:.0%}" if "lut" in u else "")
    bram = f"{res.get('bram', 0):g} {r.bram_kind}" + (f" +{res['spram']:g} SPRAM"
                                                       if res.get("spram") else "")
    f = r.design_fmax_mhz
    fmax = "none (estimate)" if f is None else f"{f:.1f} MHz" + ("" if r.timing_met else " !")
    steps = " ".join(f"{k} {v:.0f}s" for k, v in r.step_seconds.items())
    return (f"{name:<12} {r.flow:<15} {lut:<18} {res.get('ff', 0):>6g} {bram:<18} "
            f"{res.get('dsp', 0):>3g}  {r.clock_hz / 1e6:>6g} MHz  {fmax:<14} "
            f"{'cached' if r.cached else f'{wall:.0f} s':>7}  ({steps})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boards", default=",".join(DEFAULT_BOARDS))
    ap.add_argument("--clock", action="append", default=[], metavar="BOARD=MHZ",
                    help="design clock of a board in MHz (default: the board's)")
    ap.add_argument("--model", default="tfc", help="zoo model (default: tfc)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "board_builds")
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)

    names = [boards.get(n).name for n in args.boards.split(",") if n]
    clocks = {}
    for item in args.clock:
        board, _, mhz = item.partition("=")
        clocks[boards.get(board).name] = round(float(mhz) * 1e6)
    model = zoo_model(args.model, seed=0, calibration=2)
    graph = compile_model(model)
    folds = default_folding(graph)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(
            lambda n: build(n, graph, folds, clocks.get(n), args.out / args.model, args.seeds,
                              args.jobs),
            names))
    print(f"\nzoo {args.model} (random weights), default folding; {time.perf_counter() - start:.0f} s")
    print(f"{'board':<12} {'flow':<15} {'LUT':<18} {'FF':>6} {'block RAM':<18} {'DSP':>3}  "
          f"{'clock':>10}  {'Fmax':<14} {'time':>7}")
    for name, r, wall in results:
        print(row(name, r, wall))
    for name, r, _ in results:
        if not isinstance(r, str):
            for note in r.notes:
                print(f"  {name}: {note}")
    if args.json:
        args.json.write_text(json.dumps(
            {n: (r if isinstance(r, str) else r.to_json()) for n, r, _ in results}, indent=1))
    return 0 if all(not isinstance(r, str) for _, r, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
