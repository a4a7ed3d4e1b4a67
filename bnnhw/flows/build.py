"""``bnnhw build``: a checkpoint to a complete build for a board, and its report.

The steps, each one a function of this module:

1. **plan** (``plan_build``): the lowered graph, the board's budget and the design the
   folding optimiser (``bnnhw.optimiser``) chooses for it: pe/simd per layer, memory
   styles, pixels per beat, estimated with the resource model (``bnnhw.resources``) of the
   whole board design (network and link). A user folding (``--folding``) replaces the
   optimiser's pe/simd; ``--target-fps`` asks for the smallest design that reaches a rate.
   Weights are run-time writable (the host writes them over the link) unless baking them
   into the bitstream gives a faster design; ``--weights`` forces either. A design that fits no way
   is refused here, in seconds, before anything is written (``DoesNotFit``: the figures
   that do not fit and what would).
2. **synthesis** (``bnnhw.flows.synth.synthesise``): the board design (network, link,
   PLL, reset, LEDs) through the board's flow, cached by design hash.
3. **clock**: where a place-and-route ran, the design clock follows its post-route Fmax:
   the build is redone at the fastest frequency the board's PLL makes at or below the
   Fmax until a build meets its clock (``--clock MHZ`` fixes it: one build).
4. **report** (``bnnhw.report``): ``report.json`` and ``report.html`` beside the flow's
   files (RTL, constraints, project, bitstream), the chosen ``folding.json`` and the
   host's ``manifest.json``, all in ``build/<model>-<board>/`` (or ``--out``). The folder
   is assembled aside and moved into place when complete: a failed build leaves nothing.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BnnhwError

__all__ = ["BuildPlan", "build", "plan_build", "report_of"]

WEIGHTS = ("auto", "writable", "fixed")
DEFAULT_MAX_PAYLOAD = 4096   # frame buffer bytes per bank; the optimiser may halve it
MAX_CLOCK_BUILDS = 3
FMAX_MARGIN = 0.0         # the clock may reach the measured Fmax itself

Say = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


@dataclass
class BuildPlan:
    """What will be built: the board, the graph, the optimiser's choice (or the user's
    folding, estimated), whether the weights are writable, the design clock to try."""

    board: Any
    graph: Any
    choice: Any
    writable: bool
    clock_hz: int
    notes: list[str]
    seconds: float

    @property
    def folds(self):
        return self.choice.folds

    @property
    def network(self):
        """The ``rtl_gen.network.NetworkParams`` of the plan."""
        from rtl_gen.network import NetworkParams

        return NetworkParams(self.graph, **self.choice.network_kwargs())

    def core_params(self, clock_hz: int | None = None):
        """The ``BoardCoreParams`` at ``clock_hz`` (default: the plan's clock)."""
        c = self.choice
        return self.board.core_params(self.graph, c.folds, clock_hz=clock_hz or self.clock_hz,
                                      writable=self.writable, memory_styles=c.memory_styles,
                                      max_payload=c.link.max_payload)


def _optimise(graph, board, *, folding, target_fps, target_ii, clock_hz: int, writable: bool,
              max_payload: int):
    from .. import optimiser
    from ..resources import Link

    link = Link(max_payload=max_payload, clock_hz=clock_hz,
                baud=board.default_baud(clock_hz))
    return optimiser.optimise(graph, board.budget, target_rate=target_fps, target_ii=target_ii,
                              clock_hz=clock_hz,
                              runtime_writable=writable, link=link, max_pixels_per_beat=1,
                              folds=folding)


WIDTHS = tuple(round(0.05 * i, 2) for i in range(1, 41))   # zoo vgg widths 0.05 .. 2


def largest_vgg_width(board, *, writable: bool, clock_hz: int,
                      max_payload: int = DEFAULT_MAX_PAYLOAD):
    """``(width, choice)``: the largest zoo ``vgg`` width of ``WIDTHS`` that fits
    ``board``, or None when even the smallest does not."""
    from .. import optimiser
    from ..nn.zoo import get_spec
    from ..resources import Link

    link = Link(max_payload=max_payload, clock_hz=clock_hz,
                baud=board.default_baud(clock_hz))
    try:
        return optimiser.largest_width(lambda w: get_spec("vgg", width=w), WIDTHS,
                                       board.budget, runtime_writable=writable, link=link,
                                       max_pixels_per_beat=1, clock_hz=clock_hz)
    except optimiser.DoesNotFit:
        return None


def plan_build(graph, board, *, folding=None, target_fps: float | None = None,
               target_ii: int | None = None, clock_hz: int | None = None, weights: str = "auto",
               max_payload: int = DEFAULT_MAX_PAYLOAD, zoo: str | None = None,
               say: Say = _quiet) -> BuildPlan:
    """The plan of a build of lowered ``graph`` for ``board`` (see the module docstring);
    ``folding`` is a user folding (``{layer: Fold}``) or None; ``target_fps`` or
    ``target_ii`` ask for the smallest design reaching that rate or II; ``zoo`` the zoo model the
    checkpoint is (a refused ``vgg`` is told the largest ``--width`` that fits). Raises
    ``bnnhw.optimiser.DoesNotFit`` (a ``BnnhwError``) when nothing fits."""
    from ..optimiser import DoesNotFit

    try:
        return _plan(graph, board, folding=folding, target_fps=target_fps,
                     target_ii=target_ii, clock_hz=clock_hz, weights=weights,
                     max_payload=max_payload, say=say)
    except DoesNotFit as e:
        if zoo != "vgg" or folding is not None or target_fps is not None or \
                target_ii is not None:
            raise
        hz = board.default_clock_hz if clock_hz is None else int(clock_hz)
        say(f"{board.name}: looking for the largest vgg width that fits")
        found = largest_vgg_width(board, writable=weights == "writable", clock_hz=hz,
                                  max_payload=max_payload)
        if found is None:
            raise
        w, choice = found
        how = "" if weights == "writable" else ", its weights fixed in the bitstream"
        raise DoesNotFit(f"{e}. The largest zoo vgg that fits {board.name} has width {w:g} "
                         f"(II {choice.ii:,} cycles{how}): bnnhw train --model vgg "
                         f"--width {w:g}", e.figures) from None


def _plan(graph, board, *, folding, target_fps, target_ii, clock_hz, weights, max_payload,
          say) -> BuildPlan:
    from ..optimiser import DoesNotFit

    if weights not in WEIGHTS:
        raise BnnhwError(f"--weights must be one of {', '.join(WEIGHTS)}, not {weights!r}")
    start = time.perf_counter()
    hz = board.default_clock_hz if clock_hz is None else int(clock_hz)
    try:
        board.clock_settings(hz)
    except ValueError as e:
        raise BnnhwError(str(e)) from None
    notes: list[str] = []
    if target_fps is not None and target_ii is not None:
        raise BnnhwError("give a target rate or a target II, not both")
    kw = {"folding": folding, "target_fps": target_fps, "target_ii": target_ii, "clock_hz": hz,
          "max_payload": max_payload}
    say(f"{board.name}: choosing the folding for {board.budget.lut:,} LUT, "
        f"{board.budget.bram} {board.budget.bram_kind}")
    if weights != "auto":
        writable = weights == "writable"
        choice = _optimise(graph, board, writable=writable, **kw)
    else:
        # both ways; writable (the host can load other weights) unless fixed is faster (or,
        # with a target, unless writable ones miss it)
        try:
            rw = _optimise(graph, board, writable=True, **kw)
        except DoesNotFit as e:
            rw, why = None, str(e)
        try:
            ro = _optimise(graph, board, writable=False, **kw)
        except DoesNotFit:
            if rw is None:
                raise
            ro = None
        targeted = target_fps is not None or target_ii is not None
        if ro is None or (rw is not None and (rw.ii <= ro.ii or targeted)):
            choice, writable = rw, True
        else:
            choice, writable = ro, False
            notes.append("the weights are fixed in the bitstream (--weights writable for "
                         "run-time writable memories): " + (
                             f"II {ro.ii:,} cycles against {rw.ii:,} with writable ones"
                             if rw is not None else f"writable ones do not fit ({why})"))
    return BuildPlan(board, graph, choice, writable, hz, notes, time.perf_counter() - start)


# -- the clock ----------------------------------------------------------------------------

def clock_below(board, fmax_mhz: float) -> int | None:
    """The fastest design clock ``board`` makes exactly (1 MHz grid, the board clock too)
    at or below ``fmax_mhz`` (less ``FMAX_MARGIN``), None when none."""
    top = math.floor(fmax_mhz * (1 - FMAX_MARGIN) * 1e6)
    found = board.clock_frequencies(None, top)
    return found[-1] if found else None


def _synthesise(plan: BuildPlan, clock_hz: int, jobs: int, say: Say, seed: int | None = None,
                cache=None):
    """The synthesis result, its files left in the synthesis cache (a failed build's
    there too, in its ``.failed`` folder, which the error names)."""
    from rtl_gen.board_top import BoardTop, BoardTopParams

    from .synth import synthesise

    top = BoardTop(BoardTopParams(plan.core_params(clock_hz)))
    seeds = jobs if plan.board.stages()["place_and_route"] and seed is None else 1
    return synthesise(top, plan.board, None, jobs=jobs, seeds=seeds, seed=seed, progress=say,
                      cache=cache)


def synthesise_with_clock(plan: BuildPlan, *, fixed_clock: bool, jobs: int, say: Say,
                          seed: int | None = None, cache=None):
    """Synthesise at the plan's clock; unless ``fixed_clock``, follow the post-route Fmax:
    up to ``MAX_CLOCK_BUILDS`` builds, each at the fastest clock the PLL makes under the
    previous build's Fmax, ending on the fastest build that met its clock (cached, so
    going back to it costs no tool run). ``seed``: one nextpnr seed (default: ``jobs``
    seeds, the best kept); ``cache``: the synthesis cache folder. Returns the result and
    the clocks tried."""
    hz, tried, met = plan.clock_hz, [], None
    while True:
        result = _synthesise(plan, hz, jobs, say, seed, cache)
        f = result.design_fmax_mhz
        tried.append((hz, f))
        if fixed_clock or f is None:
            return result, tried
        if result.timing_met and (met is None or hz > met):
            met = hz
        nxt = clock_below(plan.board, f)
        done = {c for c, _ in tried}
        if nxt is None and met is None:
            raise BnnhwError(f"{plan.board.name}: the design's post-route Fmax is {f:.1f} "
                             f"MHz, below every clock the board's PLL makes")
        if (len(tried) >= MAX_CLOCK_BUILDS or nxt is None or nxt in done
                or (met is not None and nxt <= met)):
            if met is not None and met != hz:
                say(f"{plan.board.name}: back to the {met / 1e6:g} MHz build, which met "
                    f"its clock")
                result = _synthesise(plan, met, jobs, say, seed, cache)
            return result, tried
        say(f"{plan.board.name}: post-route Fmax {f:.1f} MHz at a {hz / 1e6:g} MHz clock; "
            f"building again at {nxt / 1e6:g} MHz")
        hz = nxt


# -- the report ---------------------------------------------------------------------------

def report_of(plan: BuildPlan, model: str, result=None, tried=(), files=()) -> dict[str, Any]:
    """The build report (``bnnhw.report`` fields) of ``plan`` and the synthesis
    ``result`` (None when no synthesis ran)."""
    from ..optimiser import lut_cells

    board, choice = plan.board, plan.choice
    net = plan.network
    est = choice.estimate.total
    budget = board.budget
    clock_hz = result.clock_hz if result is not None else plan.clock_hz
    fmax = result.design_fmax_mhz if result is not None else None
    synth = result.resources if result is not None else {}
    lut_synth = synth.get("lc", synth.get("lut")) if board.fpga.family != "xc7" else \
        synth.get("lut")
    resources = {
        "lut": {"budget": budget.lut, "estimate": round(lut_cells(est, budget.family)),
                "synthesised": lut_synth},
        "ff": {"budget": budget.ff, "estimate": round(est.ff), "synthesised": synth.get("ff")},
        "bram36": {"budget": budget.bram, "estimate": est.bram, "synthesised": synth.get("bram"),
                   "unit": budget.bram_kind},
        "dsp": {"budget": budget.dsp, "estimate": round(est.dsp),
                "synthesised": synth.get("dsp")},
    }
    if budget.spram:
        resources["spram"] = {"budget": budget.spram, "estimate": getattr(est, "spram", 0),
                              "synthesised": synth.get("spram")}
    ii = net.cycles_per_image
    mf_baud = plan.core_params(clock_hz).baud
    image_bytes = plan.core_params(clock_hz).manifest.image_bytes
    link_rate = mf_baud / 10 / image_bytes
    layers = layer_rows(choice)
    if result is None:
        flow = {"synthesis": "not run (--plan-only)"}
    else:
        flow = {"flow": result.flow, **{k: v or "not available here"
                                        for k, v in board.stages().items()},
                "timing measured": fmax is not None,
                "clocks tried (MHz: Fmax)": ", ".join(
                    f"{c / 1e6:g}: {'-' if f is None else f'{f:.1f}'}" for c, f in tried),
                "build seconds": round(result.build_seconds, 1),
                "cached": result.cached}
    notes = list(plan.notes)
    if result is not None:
        notes += list(result.notes)
        if "lut_cells" in synth:
            cells, ram = synth["lut_cells"], synth.get("lutram", 0)
            notes.append(f"Yosys made {cells:,} LUT cells and {ram:,} LUTs of LUT RAM "
                         f"({cells + ram:,} in all, the unit of the resource model's "
                         f"estimate); paired into LUT6 sites, its estimate is "
                         f"{synth['lut']:,}, the figure checked against the budget")
        if fmax is None and not any("no timing" in n for n in notes):
            notes.append("no timing was measured: no place-and-route for this device runs "
                         "here")
        elif fmax is not None and not result.timing_met:
            notes.append(f"timing is NOT met: post-route Fmax {fmax:.1f} MHz below the "
                         f"{clock_hz / 1e6:g} MHz design clock")
    notes.append(f"the {mf_baud / 1e6:g} Mbaud link carries at most {link_rate:,.0f} "
                 f"images/s of {image_bytes} bytes; the accelerator itself takes "
                 f"{clock_hz / ii:,.0f}")
    fits = all((v.get("synthesised") if v.get("synthesised") is not None
                else v["estimate"]) <= v["budget"] for v in resources.values())
    dram = choice.dram_summary(clock_hz) if choice.dram_layers else None
    if dram is not None:
        notes.append(f"{len(dram['layers'])} layers keep their weights in DRAM "
                     f"({', '.join(dram['layers'])}): {dram['bytes_per_image']:,} bytes per "
                     f"image, {dram['bandwidth_mb_s']:,.0f} of {dram['available_mb_s']:,.0f} "
                     f"MB/s ({dram['share']:.0%}); the host writes them at load time")
    return {
        "board": board.name, "device": board.fpga.describe(), "model": model,
        "fits": bool(fits), "ii_cycles": ii, "clock_mhz": clock_hz / 1e6,
        "fmax_mhz": fmax, "timing_met": None if result is None else result.timing_met,
        "images_per_second": clock_hz / ii, "link_images_per_second": link_rate,
        "latency_cycles": net.latency, "writable_weights": plan.writable,
        "pixels_per_beat": choice.pixels_per_beat,
        "explanation": choice.explanation.splitlines(),
        "resources": resources, "layers": layers, "dram": dram, "flow": flow, "notes": notes,
        "files": sorted(files),
    }


def layer_rows(choice) -> list[dict[str, Any]]:
    """The report's rows: one per matrix layer (its blocks' estimates summed, the cycles of
    its MVTU), then the other parts (input encoder, pools, classifier, link)."""
    blocks = {b.block.name: b for b in choice.estimate.blocks}
    rows, used = [], set()

    def est(names) -> dict[str, float]:
        lut = sum(blocks[n].total.lut_sites for n in names)
        ff = sum(blocks[n].total.ff for n in names)
        bram = sum(blocks[n].total.bram for n in names)
        return {"lut": round(lut), "ff": round(ff), "bram36": bram}

    for name, fold in choice.folds.items():
        mine = [n for n in blocks if n == name or n.startswith(f"{name}_")]
        used.update(mine)
        styles = [f"{k.split('.', 1)[1]} {v}" for k, v in choice.memory_styles.items()
                  if k.startswith(f"{name}.")]
        rows.append({"name": name, "pe": fold.pe, "simd": fold.simd,
                     "weights": "dram" if fold.in_dram else "chip",
                     "tile_rows": fold.tile_rows,
                     "cycles": max(choice.stages_ii.get(n, 0) for n in mine),
                     "estimate": est(mine), "memory": ", ".join(styles)})
    for n in blocks:
        if n not in used:
            rows.append({"name": n, "pe": None, "simd": None,
                         "cycles": choice.stages_ii.get(n, 0), "estimate": est([n]),
                         "memory": ""})
    return rows


# -- the whole build ----------------------------------------------------------------------

def _copy_files(result, folder: Path) -> None:
    """The flow's files and logs (the result's paths into the cache) into ``folder``."""
    from .synth import RESULT_FILE

    src = Path(result.folder)
    for item in src.iterdir():
        if item.is_file() and item.suffix != ".lock":
            shutil.copy2(item, folder / item.name)
        elif item.is_dir():
            shutil.copytree(item, folder / item.name, dirs_exist_ok=True)
    (folder / RESULT_FILE).rename(folder / "synthesis.json")


def _replace_folder(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def build(graph, board, out: str | os.PathLike[str], *, model: str, folding=None,
          target_fps: float | None = None, target_ii: int | None = None,
          clock_hz: int | None = None, weights: str = "auto", jobs: int = 1,
          plan_only: bool = False, max_payload: int = DEFAULT_MAX_PAYLOAD,
          zoo: str | None = None, seed: int | None = None, cache=None,
          say: Say = _quiet) -> dict[str, Any]:
    """Build ``graph`` (lowered) for ``board`` into folder ``out``; returns the report.
    ``seed`` is one nextpnr seed (default: ``jobs`` seeds), ``cache`` the synthesis cache
    folder (default ``bnnhw.flows.synth.cache_root()``)."""
    plan = plan_build(graph, board, folding=folding, target_fps=target_fps,
                      target_ii=target_ii, clock_hz=clock_hz, weights=weights,
                      max_payload=max_payload, zoo=zoo, say=say)
    say(f"{board.name}: " + plan.choice.explanation.splitlines()[0])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        result, tried = None, []
        if not plan_only:
            result, tried = synthesise_with_clock(plan, fixed_clock=clock_hz is not None,
                                                  jobs=jobs, say=say, seed=seed, cache=cache)
            _copy_files(result, tmp)
        clock = result.clock_hz if result is not None else plan.clock_hz
        core = plan.core_params(clock)
        from ..folding import save_folding

        save_folding(tmp / "folding.json", dict(plan.folds))
        (tmp / "manifest.json").write_text(json.dumps(core.manifest.doc, indent=1) + "\n")
        files = [p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file()]
        files += ["report.json", "report.html"]
        report = report_of(plan, model, result, tried, files)
        from ..report import write_report

        write_report(report, tmp)
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def progress_printer(enabled: bool) -> Say:
    if not enabled:
        return _quiet

    def say(message: str) -> None:
        sys.stderr.write(f"  {message}\n")
        sys.stderr.flush()
    return say
