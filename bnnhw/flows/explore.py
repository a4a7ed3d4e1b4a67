"""``bnnhw explore``: a design-space sweep of one model on one board, run on Dask.

A sweep is the cross product of its axes (``grid``): the design (a target initiation
interval, or a user folding), the weights (``auto``, ``writable``: block RAM or LUT RAM,
``fixed``: block RAM or logic ROMs), the design clock (fixed, or None: follow the
post-route Fmax as ``bnnhw build`` does) and the nextpnr seed. Every point is a whole
``bnnhw build`` (``bnnhw.flows.build.build``) into ``<out>/points/<key>/``, run as a task on
a ``dask.distributed`` cluster: a local one sized to the machine by default (one
single-threaded worker process per core: each point runs one tool at a time), or an
existing scheduler's.

Resuming: a point's key hashes the model, the board and the point; a point whose folder
already holds its report is taken as it is, and synthesis results are cached by design
hash (``bnnhw.flows.synth``), so an interrupted sweep redoes only what had not finished.
A point that fails (a folding that does not fit, a clock the PLL cannot make, a tool
error) is reported with its one-sentence reason; the others complete.

The results: ``explore.json`` (every point: its axes, figures, folder, or its error) and a
self-contained ``explore.html`` (the Pareto table of images/s against LUTs, every point,
the failures, and plots of images/s against LUT, block RAM and post-route Fmax).
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import BnnhwError

__all__ = ["Point", "explore", "grid", "pareto", "run_point", "write_page"]

Say = Callable[[str], None]
FORMAT = 1


@dataclass(frozen=True)
class Point:
    """One design point. ``target_ii`` and ``folding`` (a folding file's name, its folds
    given beside) are alternatives: neither is the optimiser's fastest design."""

    target_ii: int | None = None
    folding: str | None = None
    weights: str = "auto"
    clock_mhz: float | None = None
    seed: int | None = None

    @property
    def label(self) -> str:
        design = (f"folding {Path(self.folding).name}" if self.folding
                  else f"II <= {self.target_ii:,}" if self.target_ii else "fastest")
        clock = f"{self.clock_mhz:g} MHz" if self.clock_mhz else "clock follows Fmax"
        seed = f", seed {self.seed}" if self.seed is not None else ""
        return f"{design}, weights {self.weights}, {clock}{seed}"


def grid(target_iis: Sequence[int | None] = (None,), foldings: Sequence[str] = (),
         weights: Sequence[str] = ("auto",), clocks_mhz: Sequence[float | None] = (None,),
         seeds: Sequence[int | None] = (None,)) -> list[Point]:
    """The cross product of the axes; the designs are the target IIs then the foldings."""
    designs = [(ii, None) for ii in target_iis] + [(None, f) for f in foldings]
    return [Point(ii, f, w, c, s) for (ii, f), w, c, s
            in itertools.product(designs, weights, clocks_mhz, seeds)]


def point_key(model_digest: str, board: str, point: Point,
              folds: Mapping[str, Any] | None) -> str:
    doc = {"format": FORMAT, "model": model_digest, "board": board, "point": asdict(point),
           "folds": None if folds is None else {k: [f.pe, f.simd] for k, f in folds.items()}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def run_point(graph, board_name: str, point: Point, folds, folder: str, cache: str,
              model: str, zoo: str | None = None) -> dict[str, Any]:
    """Build one point into ``folder`` (a Dask task: every path absolute); its summary row,
    or ``{"error": sentence}`` for a point that cannot be built."""
    from .boards import get
    from .build import build

    start = time.perf_counter()
    try:
        board = get(board_name)
        clock_hz = None if point.clock_mhz is None else round(point.clock_mhz * 1e6)
        report = build(graph, board, folder, model=model, folding=folds,
                       target_ii=point.target_ii, clock_hz=clock_hz, weights=point.weights,
                       seed=point.seed, cache=cache, zoo=zoo)
    except (BnnhwError, ValueError) as e:
        return {"error": str(e), "seconds": time.perf_counter() - start}
    except Exception as e:  # noqa: BLE001 -- a point's failure of any kind is reported
        return {"error": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - start}
    return {**summary_of(report), "seconds": time.perf_counter() - start}


def summary_of(report: Mapping[str, Any]) -> dict[str, Any]:
    """A point's figures from its build report (synthesised where a tool ran)."""
    res = report["resources"]

    def used(kind: str) -> float | None:
        v = res.get(kind)
        if v is None:
            return None
        return v["synthesised"] if v.get("synthesised") is not None else v["estimate"]

    flow = report.get("flow", {})
    return {"ii_cycles": report["ii_cycles"], "clock_mhz": report["clock_mhz"],
            "fmax_mhz": report["fmax_mhz"], "timing_met": report.get("timing_met"),
            "images_per_second": report["images_per_second"],
            "latency_cycles": report["latency_cycles"], "fits": report["fits"],
            "lut": used("lut"), "ff": used("ff"), "bram": used("bram36"), "dsp": used("dsp"),
            "bram_unit": res["bram36"].get("unit", "RAMB36"),
            "synthesised": res["lut"].get("synthesised") is not None,
            "writable_weights": report.get("writable_weights"),
            "build_seconds": flow.get("build seconds"), "cached": flow.get("cached")}


def pareto(rows: Sequence[Mapping[str, Any]], cost: str,
           gain: str = "images_per_second") -> list[int]:
    """Indices of the rows no other row dominates: at most its ``cost``, at least its
    ``gain``, better in one. Rows without both figures are left out."""
    have = [i for i, r in enumerate(rows) if r.get(cost) is not None
            and r.get(gain) is not None]
    front = []
    for i in have:
        c, g = rows[i][cost], rows[i][gain]
        if not any(rows[j][cost] <= c and rows[j][gain] >= g
                   and (rows[j][cost] < c or rows[j][gain] > g) for j in have if j != i):
            front.append(i)
    return sorted(front, key=lambda i: rows[i][cost])


def _client(scheduler: str | None, workers: int | None):
    """A Dask client (and the local cluster it made, or None)."""
    import logging

    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            return Client(scheduler, timeout=10), None
        except (OSError, TimeoutError) as e:
            raise BnnhwError(f"cannot reach the Dask scheduler at {scheduler} ({e}); start "
                             f"one with 'dask scheduler' and workers with 'dask worker "
                             f"{scheduler}'") from None
    n = workers or max(1, os.cpu_count() or 1)
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=logging.ERROR)
    return Client(cluster), cluster


def explore(graph, board, points: Sequence[Point], out: str | os.PathLike[str], *,
            model: str, model_digest: str, folds_of: Mapping[str, Any] | None = None,
            zoo: str | None = None, scheduler: str | None = None, workers: int | None = None,
            cache: str | os.PathLike[str] | None = None, say: Say = lambda m: None
            ) -> dict[str, Any]:
    """Run the sweep of ``points`` for lowered ``graph`` on ``board`` into folder ``out``
    and write its page; returns the sweep's document (``explore.json``). ``folds_of``
    maps a point's folding name to its folds; ``cache`` is the synthesis cache
    (default ``bnnhw.flows.synth.cache_root()``)."""
    from .synth import cache_root

    if not points:
        raise BnnhwError("the sweep has no points")
    start = time.perf_counter()
    out = Path(out).resolve()
    (out / "points").mkdir(parents=True, exist_ok=True)
    cache_dir = str(Path(cache).resolve() if cache is not None else cache_root())
    folds_of = folds_of or {}
    rows: list[dict[str, Any] | None] = [None] * len(points)
    todo = []
    for i, p in enumerate(points):
        folds = folds_of.get(p.folding) if p.folding else None
        key = point_key(model_digest, board.name, p, folds)
        folder = out / "points" / key
        done = folder / "point.json"
        if done.is_file():
            rows[i] = {**json.loads(done.read_text()), "resumed": True}
        else:
            todo.append((i, p, folds, key, folder))
    say(f"{board.name}: {len(points)} points, {len(points) - len(todo)} already built")
    if todo:
        client, cluster = _client(scheduler, workers)
        try:
            n_workers = len(client.scheduler_info()["workers"])
            where = scheduler or f"a local cluster of {n_workers} workers"
            say(f"{board.name}: running {len(todo)} points on {where}")
            remote = client.scatter(graph, broadcast=True)
            futures = {}
            for i, p, folds, key, folder in todo:
                shutil.rmtree(folder, ignore_errors=True)   # a half-built point's leftovers
                f = client.submit(run_point, remote, board.name, p, folds, str(folder),
                                  cache_dir, model, zoo, key=f"point-{key}", pure=False)
                futures[f] = (i, p, key, folder)
            for n, f in enumerate(_completed(futures, say, board.name), 1):
                i, p, key, folder = futures[f]
                try:
                    row = f.result()
                except Exception as e:  # noqa: BLE001 -- a worker lost, a task killed
                    row = {"error": f"{type(e).__name__}: {e}"}
                row = {"key": key, "point": asdict(p), "label": p.label,
                       "folder": f"points/{key}", **row}
                say(f"[{n}/{len(todo)}] {p.label}: " + _said(row))
                if "error" not in row:
                    (folder / "point.json").write_text(json.dumps(row, indent=1) + "\n")
                rows[i] = {**row, "resumed": False}
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    doc = {"format": FORMAT, "board": board.name, "device": board.fpga.describe(),
           "model": model, "points": rows, "scheduler": scheduler or "local",
           "seconds": time.perf_counter() - start}
    ok = [r for r in rows if "error" not in r]
    doc["pareto"] = {cost: [ok[i]["key"] for i in pareto(ok, cost)]
                     for cost in ("lut", "bram")}
    (out / "explore.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "explore.html").write_text(write_page(doc))
    return doc


def _completed(futures, say: Say, board: str, every: float = 30.0):
    """The futures as they complete; every ``every`` seconds without one, a line saying
    how many are done and how long the sweep has run."""
    from distributed import wait

    pending, done, start = set(futures), 0, time.perf_counter()
    while pending:
        try:
            finished, pending = wait(pending, timeout=every, return_when="FIRST_COMPLETED")
        except TimeoutError:
            say(f"{board}: {done} of {len(futures)} points done, "
                f"{time.perf_counter() - start:.0f} s")
            continue
        for f in finished:
            done += 1
            yield f


def _said(row: Mapping[str, Any]) -> str:
    if "error" in row:
        return f"FAILED: {row['error']}"
    fmax = "" if row["fmax_mhz"] is None else f", Fmax {row['fmax_mhz']:.1f} MHz"
    return (f"II {row['ii_cycles']:,} at {row['clock_mhz']:g} MHz{fmax}: "
            f"{row['images_per_second']:,.0f} images/s, {row['lut']:,.0f} LUT, "
            f"{row['bram']:g} {row['bram_unit']} ({row.get('seconds', 0):.0f} s)")


# -- the page -------------------------------------------------------------------------------

def _plot(rows: Sequence[Mapping[str, Any]], cost: str, label: str, front: Iterable[int],
          higher_is_better: bool = False) -> str:
    from ..report import figure, svg

    have = [r for r in rows if r.get(cost) is not None]
    if not have:
        return f"<p>No point has a measured {html.escape(label)}.</p>"
    fig = figure(7.5, 3.4)
    ax = fig.subplots()
    ax.scatter([r[cost] for r in have], [r["images_per_second"] for r in have],
               color="#2e86c1", label="design points", zorder=2)
    front = list(front)
    if front:
        xs = [rows[i][cost] for i in front]
        ys = [rows[i]["images_per_second"] for i in front]
        ax.plot(xs, ys, color="#c0392b", marker="o", linestyle="-", label="Pareto front",
                zorder=3)
    ax.set(xlabel=label, ylabel="images/s",
           title=f"images/s against {label}" + (" (higher is better)" if higher_is_better
                                                else ""))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return svg(fig)


def write_page(doc: Mapping[str, Any]) -> str:
    """The sweep's self-contained HTML page."""
    from ..report import CSS, fmt

    rows = doc["points"]
    ok = [r for r in rows if "error" not in r]
    bad = [r for r in rows if "error" in r]
    unit = ok[0]["bram_unit"] if ok else "block RAM"
    lut_front = pareto(ok, "lut")
    fmax_front = pareto([{**r, "neg_fmax": -r["fmax_mhz"]} if r.get("fmax_mhz") else r
                         for r in ok], "neg_fmax")

    def table(items: Sequence[Mapping[str, Any]], marks: set[int] = frozenset()) -> str:
        head = ("<tr><th>design</th><th>weights</th><th>seed</th><th>II</th><th>clock MHz</th>"
                "<th>Fmax MHz</th>"
                "<th>timing</th><th>images/s</th><th>LUT</th><th>FF</th>"
                f"<th>{html.escape(unit)}</th><th>DSP</th><th>build s</th><th>report</th></tr>")
        body = []
        for i, r in enumerate(items):
            timing = "&mdash;" if r.get("timing_met") is None else (
                "met" if r["timing_met"] else "NOT met")
            est = "" if r.get("synthesised") else " (est.)"
            star = " &#9733;" if i in marks else ""
            p = r["point"]
            design = (f"folding {Path(p['folding']).name}" if p.get("folding")
                      else f"II &le; {p['target_ii']:,}" if p.get("target_ii") else "fastest")
            body.append(
                f"<tr><td>{design}{star}</td><td>{html.escape(p['weights'])}</td>"
                f"<td>{fmt(p.get('seed'))}</td><td>{fmt(r['ii_cycles'])}</td>"
                f"<td>{fmt(r['clock_mhz'])}</td><td>{fmt(r['fmax_mhz'])}</td><td>{timing}</td>"
                f"<td>{fmt(round(r['images_per_second']))}</td>"
                f"<td>{fmt(round(r['lut']))}{est}</td><td>{fmt(round(r['ff']))}</td>"
                f"<td>{fmt(r['bram'])}</td><td>{fmt(round(r['dsp']))}</td>"
                f"<td>{fmt(round(r.get('seconds') or 0))}</td>"
                f"<td><a href=\"{html.escape(r['folder'])}/report.html\">report</a></td></tr>")
        return f"<table>{head}{''.join(body)}</table>"

    order = sorted(range(len(ok)), key=lambda i: -ok[i]["images_per_second"])
    by_rate = [ok[i] for i in order]
    marks = {order.index(i) for i in lut_front}
    failures = "".join(f"<tr><td>{html.escape(r['label'])}</td><td>{html.escape(r['error'])}"
                       f"</td></tr>" for r in bad)
    failures = (f"<h2>Failed points ({len(bad)})</h2><table><tr><th>point</th><th>why</th>"
                f"</tr>{failures}</table>") if bad else ""
    plots = [_plot(ok, "lut", "LUTs", lut_front),
             _plot(ok, "bram", unit, pareto(ok, "bram")),
             _plot(ok, "fmax_mhz", "post-route Fmax (MHz)", fmax_front, True)]
    title = f"bnnhw explore: {doc['model']} on {doc['board']}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}
body {{ max-width: 72em; }} td:first-child {{ white-space: nowrap; }}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="sub">{html.escape(doc['device'])}: {len(rows)} points, {len(ok)} built,
{len(bad)} failed; {fmt(doc['seconds'])} s on {html.escape(doc['scheduler'])} Dask
workers. &#9733;: on the Pareto front of images/s against LUTs.</p>
<h2>Pareto front: images/s against LUTs</h2>
{table([ok[i] for i in lut_front])}
{plots[0]}
<h2>Every point</h2>
{table(by_rate, marks)}
{failures}
<h2>Block RAM and Fmax</h2>
{plots[1]}
{plots[2]}
</body></html>
"""
