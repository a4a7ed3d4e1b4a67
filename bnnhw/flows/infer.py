"""Inference over the host link: a board (or the simulated board) classifies images.

``infer(...)`` identifies the design behind ``url``, writes the model's weights,
thresholds and class map when the design is writable (else checks that it was built for
this model), streams the images (``host.accelerator.Accelerator``: several frames in
flight, retries, results in order) and, unless told not to, compares every score and
class with the golden model. ``simulated_board(graph, folds)`` builds the board core of
a model (``rtl_gen.board_core``) and serves it on a loopback port
(``sim.board.SimBoard``), so the same host code runs with no board at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .. import ir
from ..errors import BnnhwError
from ..folding import Fold

__all__ = ["InferReport", "infer", "simulated_board"]


@dataclass
class InferReport:
    images: int
    correct: int | None
    accuracy: float | None
    mismatches: int | None           # against the golden model (None: not checked)
    first_mismatch: int | None
    images_per_second: float
    link_efficiency: float
    retries: int
    nacks: int
    timeouts: int
    seconds: float
    board: str
    design: str
    loaded: bool                     # weights written over the link

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        lines = [f"board {self.board!r}, design {self.design}"
                 + (", weights written over the link" if self.loaded else "")]
        if self.accuracy is not None:
            lines.append(f"accuracy: {self.accuracy:.2%} ({self.correct}/{self.images})")
        if self.mismatches is None:
            lines.append("golden model check: skipped (--no-check)")
        else:
            lines.append(f"mismatches with the golden model: {self.mismatches} of "
                         f"{self.images} images"
                         + (f" (first: image {self.first_mismatch})" if self.mismatches else ""))
        lines.append(f"{self.images} images in {self.seconds:.2f} s: "
                     f"{_rate(self.images_per_second)} images/s; link efficiency "
                     f"{self.link_efficiency:.1%} (image bytes / bytes sent); {self.retries} "
                     f"retries ({self.nacks} NACKs, {self.timeouts} timeouts)")
        return "\n".join(lines)


def _rate(per_second: float) -> str:
    """Images per second to three significant figures (0.0667, 23.4, 1,520)."""
    return f"{per_second:,.0f}" if per_second >= 100 else f"{per_second:.3g}"


def model_figures(graph: ir.Graph, folds: Mapping[str, Fold],
                  clock_hz: int = 100_000_000) -> dict[str, Any]:
    """What the cycle model predicts for the design of ``graph`` and ``folds`` on a board at
    ``clock_hz``: cycles per image, images/s and, with weights in DRAM, the DRAM's words
    per image and bandwidth (``rtl_gen.network.NetworkParams``)."""
    from rtl_gen.network import NetworkParams

    net = NetworkParams(graph, folds)
    ii = net.cycles_per_image
    out: dict[str, Any] = {"cycles_per_image": ii, "clock_hz": clock_hz,
                           "images_per_second": clock_hz / ii,
                           "bottleneck": net.bottleneck.name}
    if net.dram_stages:
        words = sum(n for _, n in net.dram_layout.values())
        out.update(dram_layers=[s.node for s in net.dram_stages], dram_words_per_image=words,
                   dram_mb_per_second=words * 16 * clock_hz / ii / 1e6)
    return out


def describe_sim(stats, model: Mapping[str, Any]) -> str:
    """Two lines: what the simulated board clocked, and the model's board figure."""
    mhz = model["clock_hz"] / 1e6
    lines = []
    if stats is not None:
        lines.append(f"simulated board: {stats.cycles:,} cycles in {stats.busy_seconds:.1f} s "
                     f"of simulation ({stats.cycles_per_second:,.0f} cycles/s)")
    line = (f"model: {model['cycles_per_image']:,} cycles per image (bottleneck "
            f"{model['bottleneck']}): {_rate(model['images_per_second'])} images/s at "
            f"{mhz:g} MHz on the board")
    if "dram_layers" in model:
        line += (f"; {len(model['dram_layers'])} layers in DRAM, "
                 f"{model['dram_words_per_image']:,} words per image, "
                 f"{model['dram_mb_per_second']:,.1f} MB/s")
    return "\n".join(lines + [line])


def simulated_board(graph: ir.Graph, folds: Mapping[str, Fold], *, port: int = 0,
                    cycles_per_byte: int = 0, progress: Callable[[str], None] = print):
    """A started ``sim.board.SimBoard`` running the board core of ``graph`` (writable, so
    any model of its topology can be loaded into it)."""
    from rtl_gen.board_core import BoardCore, BoardCoreParams
    from sim.board import SimBoard

    params = BoardCoreParams(graph, folds, board="sim")
    if params.network.dram_stages:   # the controller on LiteDRAM's simulation core
        from sim.dram_top import board_top

        words = sum(n for _, n in params.network.dram_layout.values())
        progress(f"{len(params.network.dram_stages)} layers keep their weights in the "
                 f"simulated DRAM ({words:,} words of 128 bits)")
        design = board_top(params)
    else:
        design = BoardCore(params)
    progress("building the simulated board (Verilator, cached by design)")
    return SimBoard(design, port=port, cycles_per_byte=cycles_per_byte)


SIM_CYCLES_PER_SECOND = 200_000
"""A floor on how fast the simulated board runs (it measured 0.8 to 1.8 million cycles
per second here): what its answer timeouts are sized for."""


def answer_timeout(graph: ir.Graph, folds: Mapping[str, Fold], timeout_s: float,
                   cycles_per_second: float) -> float:
    """``timeout_s``, or longer when an image takes the board longer than that: the host
    waits that long for an answer before it sends a frame again. The first answer waits
    for the pipeline to fill (the modelled latency; with weights in DRAM every tiled layer
    holds a whole image), and the DRAM model's simulation runs at half the speed."""
    from rtl_gen.network import NetworkParams

    net = NetworkParams(graph, folds)
    if net.dram_stages:
        cycles_per_second /= 2
    return max(timeout_s, 4 * (net.cycles_per_image + net.latency) / cycles_per_second)


def infer(url: str, graph: ir.Graph, folds: Mapping[str, Fold], images: np.ndarray,
          labels: np.ndarray | None = None, *, baud: int = 3_000_000, check: bool = True,
          window: int = 8, timeout_s: float = 0.5,
          progress: Callable[[int, int], None] | None = None,
          say: Callable[[str], None] = lambda _: None) -> tuple[InferReport, np.ndarray,
                                                               np.ndarray]:
    """Classify ``images`` (8-bit ``[N, C, H, W]``) on the board at ``url``; return the
    report with the scores and classes."""
    from host.accelerator import Accelerator
    from host.errors import AcceleratorError

    from ..manifest import Manifest

    try:
        acc = Accelerator.open(url, baud, window=window, timeout_s=timeout_s)
    except AcceleratorError as e:
        raise BnnhwError(str(e)) from None
    try:
        ident = acc.identify()
        say(f"board {ident.board!r}: design {ident.manifest_hash.hex()}, "
            f"{'writable' if ident.writable else 'weights built in'}")
        loaded = ident.writable or any(f.in_dram for f in folds.values())
        if ident.writable:
            say("writing the model's weights, thresholds and class map")
            acc.load(graph, folds)
        elif loaded:
            say("writing the DRAM layers' weights (the others are built in)")
            acc.load(graph, folds)
        else:
            acc.check(Manifest.of(graph, folds, board=ident.board, clock_hz=ident.clock_hz,
                                  baud=ident.baud, writable=False,
                                  max_payload=ident.max_payload))
        acc.reset_stats()
        scores, classes = acc.infer(images, progress=progress)
        stats = acc.stats
    except AcceleratorError as e:
        raise BnnhwError(str(e)) from None
    finally:
        acc.close()

    mismatches = first = None
    if check:
        from .. import golden

        say("comparing with the golden model")
        gold = golden.run(graph, images)
        bad = np.flatnonzero((gold.scores.numpy() != scores).any(axis=1)
                             | (gold.classes.numpy() != classes))
        mismatches = len(bad)
        first = int(bad[0]) if len(bad) else None
    correct = accuracy = None
    if labels is not None:
        correct = int((classes == labels).sum())
        accuracy = correct / len(labels) if len(labels) else None
    report = InferReport(
        images=len(images), correct=correct, accuracy=accuracy, mismatches=mismatches,
        first_mismatch=first, images_per_second=stats.images_per_s,
        link_efficiency=stats.link_efficiency, retries=stats.retries, nacks=stats.nacks,
        timeouts=stats.timeouts, seconds=stats.seconds, board=ident.board,
        design=ident.manifest_hash.hex(), loaded=loaded)
    return report, scores, classes
