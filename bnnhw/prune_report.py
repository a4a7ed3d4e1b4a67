"""Accuracy against size for the checkpoints of a pruned training (``bnnhw prune-report``).

Every checkpoint (each epoch's, ``<stem>.epochNN.pt``, and optionally the unpruned parent)
is lowered (the pruned filters leave the hardware, ``bnnhw.frontend``) and costed: the
hidden filters kept, the weight and threshold memory bits of the IR, and the resource
model's estimate (``bnnhw.resources.estimate``) of its cheapest folding
(``bnnhw.folding.fold_for_target``) that is at least as fast as the parent's (or the
first checkpoint's) default folding: every point is costed at the same throughput or a
higher one. A point is on the Pareto front when no other point
is at least as accurate with at most as many LUTs, one of the two strictly.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from . import ir
from .errors import BnnhwError


@dataclass
class Point:
    """One checkpoint's accuracy and size."""

    path: str
    epoch: int | None
    test_accuracy: float | None
    filters: int
    filters_kept: int
    weight_bits: int
    threshold_bits: int
    lut: float
    ff: float
    bram: float
    ii: int
    pareto: bool = False

    @property
    def memory_bits(self) -> int:
        return self.weight_bits + self.threshold_bits

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "memory_bits": self.memory_bits}


def epoch_checkpoints(path: str | os.PathLike[str]) -> list[Path]:
    """The epoch checkpoints ``<stem>.epochNN.pt`` beside ``path``, by epoch."""
    path = Path(path)
    stem = path.with_suffix("").name if path.suffix == ".pt" else path.name
    pat = re.compile(re.escape(stem) + r"\.epoch(\d+)\.pt")
    found = [(int(m.group(1)), p) for p in path.parent.glob(f"{stem}.epoch*.pt")
             if (m := pat.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def hidden_filters(graph: ir.Graph, spec: dict[str, Any]) -> tuple[int, int]:
    """``(filters, kept)`` over the hidden conv/dense layers: the spec's and the IR's."""
    layers = [lay for lay in spec["layers"] if lay["type"] != "maxpool"][:-1]
    total = sum(lay["out"] for lay in layers)
    kept = sum(n.rows for n in graph.nodes[1:-1] if isinstance(n, (ir.Conv, ir.Dense)))
    return total, kept


def cost(path: Path, family: str, target_ii: int | None) -> tuple[Point, int]:
    """The point of checkpoint ``path`` and its II, folded for ``target_ii`` (its default
    folding's when None)."""
    from . import resources as rs
    from .checkpoint import load_model
    from .folding import default_target, fold_for_target, initiation_interval, matrix_layers
    from .frontend import compile_model

    model, ckpt = load_model(path)
    graph = compile_model(model)
    ii = default_target(graph) if target_ii is None else target_ii
    layers = matrix_layers(graph)
    folds = fold_for_target(layers, ii)
    total = rs.estimate(rs.plan_blocks(graph, folds), family).total
    mats = [n for n in graph.nodes if isinstance(n, (ir.Conv, ir.Dense))]
    filters, kept = hidden_filters(graph, ckpt.spec)
    acc = ckpt.meta.get("test_accuracy")
    return Point(str(path), ckpt.meta.get("epoch"), acc if isinstance(acc, float) else None,
                 filters, kept, sum(n.weight_bits for n in mats),
                 sum(n.threshold_memory_bits for n in mats), float(total.lut),
                 float(total.ff), float(total.bram), initiation_interval(layers, folds)), \
        initiation_interval(layers, folds)


def mark_pareto(points: list[Point]) -> None:
    """Set ``pareto`` on the points no other point dominates (accuracy up, LUTs down)."""
    for p in points:
        a = p.test_accuracy if p.test_accuracy is not None else -1.0
        p.pareto = not any(
            (q.test_accuracy or -1.0) >= a and q.lut <= p.lut
            and ((q.test_accuracy or -1.0) > a or q.lut < p.lut) for q in points)


def report(paths: list[Path], family: str, parent: Path | None = None) -> list[Point]:
    """Points of ``parent`` (first, if given) and ``paths``, each folded to be at least as
    fast as the first."""
    if not paths:
        raise BnnhwError("no checkpoints to report on")
    points, ii = [], None
    for p in ([parent] if parent is not None else []) + paths:
        point, achieved = cost(p, family, ii)
        ii = achieved if ii is None else ii
        points.append(point)
    mark_pareto(points)
    return points


def format_table(points: list[Point], family: str) -> str:
    lines = [(f"{'checkpoint':<34} {'epoch':>5} {'test acc':>9} {'filters':>11} "
              f"{'removed':>8} {'memory bits':>12} {'LUT':>8} {'BRAM':>6} {'II':>7}  pareto "
              f"(resource model, {family})")]
    for p in points:
        acc = "-" if p.test_accuracy is None else f"{100 * p.test_accuracy:.2f}%"
        removed = 1 - p.filters_kept / p.filters if p.filters else 0.0
        lines.append(f"{Path(p.path).name:<34} {p.epoch if p.epoch else '-':>5} {acc:>9} "
                     f"{p.filters_kept:>5}/{p.filters:<5} {100 * removed:>7.1f}% "
                     f"{p.memory_bits:>12,} {p.lut:>8,.0f} {p.bram:>6g} {p.ii:>7,}  "
                     f"{'*' if p.pareto else ''}")
    return "\n".join(lines)


def render_plot(points: list[Point], f: BinaryIO, title: str = "") -> None:
    """Accuracy against LUTs (and memory bits), the Pareto front joined, as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax_lut, ax_mem = fig.subplots(1, 2)
    pts = [p for p in points if p.test_accuracy is not None]
    for ax, key, label in ((ax_lut, "lut", "LUTs (resource model)"),
                           (ax_mem, "memory_bits", "weight + threshold bits")):
        xs = [getattr(p, key) for p in pts]
        ax.scatter(xs, [100 * p.test_accuracy for p in pts], c="tab:blue")
        for p, x in zip(pts, xs):
            ax.annotate(str(p.epoch) if p.epoch else "parent", (x, 100 * p.test_accuracy),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")
        front = sorted((getattr(p, key), 100 * p.test_accuracy) for p in pts if p.pareto)
        if front:
            ax.plot(*zip(*front), color="tab:red", label="Pareto (by LUTs)")
            ax.legend()
        ax.set(xlabel=label, ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    FigureCanvasAgg(fig)
    fig.savefig(f, format="png", dpi=100)
