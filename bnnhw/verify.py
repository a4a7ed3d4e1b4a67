"""RTL against the golden model: the whole network as Verilog under Verilator (cocotb).

``verify_graph`` builds the network top of a lowered graph at a folding, streams images
through it back to back and compares every output beat (all class scores and the argmax)
exactly with what the golden model says. With no injected stalls it also measures the
steady-state cycles per image (the distance between consecutive images' output beats)
to compare with the cycle model. On a mismatch it traces the fault: networks truncated
after a node (``NetworkParams.until``) are compared with the golden activations of that
node, bisecting for the first layer whose input is right and whose output is wrong, and
names the first differing pixel and channel there; a waveform of the failing image is
recorded on the full network.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from . import golden, ir
from .folding import Fold

__all__ = ["Mismatch", "VerifyReport", "verify_graph"]


@dataclass
class Mismatch:
    """The first wrong value: image, layer, element position, expected and received."""

    image: int
    layer: str
    position: str
    expected: Any
    got: Any
    waveform: str | None = None

    def format(self) -> str:
        text = (f"first mismatch: image {self.image}, layer {self.layer}, {self.position}: "
                f"expected {self.expected}, got {self.got}")
        if self.waveform:
            text += f"\n  waveform: {self.waveform}"
        return text


@dataclass
class VerifyReport:
    images: int
    mismatches: int
    cycles_per_image: float | None
    model_cycles_per_image: int
    latency_cycles: int | None
    bottleneck: str
    folding: dict[str, dict[str, int]]
    sim_cycles: int
    sim_seconds: float
    cycles_per_second: float
    build_seconds: float
    build_cached: bool
    stalled_run: bool = False
    first_mismatch: Mismatch | None = None
    stage_cycles: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.mismatches == 0

    @property
    def cycle_error(self) -> float | None:
        """Relative gap between the measured and the modelled cycles per image."""
        if self.cycles_per_image is None:
            return None
        return self.cycles_per_image / self.model_cycles_per_image - 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cycle_error"] = self.cycle_error
        return d

    def format(self) -> str:
        lines = [f"images checked: {self.images}",
                 f"mismatches: {self.mismatches}"]
        if self.first_mismatch is not None:
            lines.append(self.first_mismatch.format())
        if self.cycles_per_image is None:
            lines.append(f"cycles per image: not measured (needs 2+ images); model "
                         f"{self.model_cycles_per_image}")
        else:
            lines.append(f"cycles per image: {self.cycles_per_image:.1f} measured, "
                         f"{self.model_cycles_per_image} model ({self.cycle_error:+.2%}; "
                         f"bottleneck {self.bottleneck})")
        if self.latency_cycles is not None:
            lines.append(f"latency: {self.latency_cycles} cycles (first pixel in to scores out)")
        lines.append(f"simulation: {self.sim_cycles} cycles in {self.sim_seconds:.1f} s "
                     f"({self.cycles_per_second:,.0f} cycles/s); Verilator build "
                     f"{'cached' if self.build_cached else f'{self.build_seconds:.1f} s'}")
        return "\n".join(lines)


def _steady_cycles(out_cycles: list[int]) -> float | None:
    """Median distance between consecutive output beats, the first (pipeline fill) left out."""
    gaps = [b - a for a, b in pairwise(out_cycles)]
    return float(statistics.median(gaps)) if gaps else None


def _network(graph: ir.Graph, folds: Mapping[str, Fold], until: str | None = None):
    from rtl_gen.network import Network, NetworkParams

    params = NetworkParams(graph, folds, until=until)
    return params, Network(params)


def _cosim(net, params, beats: list[int], n_out: int, *, seed: int, stall: float,
           waves: bool | str = False):
    from sim.cosim import run_stream_cosim

    timeout = (n_out + 8) * params.cycles_per_image * 4 + 200_000
    if stall:
        timeout *= 4
    return run_stream_cosim(net, beats, n_out, seed=seed, stall_in=stall, stall_out=stall,
                            timeout_cycles=timeout, waves=waves)


def _first_difference(expected: np.ndarray, got: np.ndarray, shape: tuple[int, ...]
                      ) -> tuple[str, int, int]:
    """Position phrase, expected and received value of the first differing element."""
    flat = int(np.flatnonzero(expected.reshape(-1) != got.reshape(-1))[0])
    idx = np.unravel_index(flat, shape)
    if len(shape) == 3:
        phrase = f"pixel (row {idx[0]}, col {idx[1]}), channel {idx[2]}"
    else:
        phrase = f"channel {idx[0]}"
    return phrase, int(expected.reshape(-1)[flat]), int(got.reshape(-1)[flat])


def _trace(graph: ir.Graph, hw: ir.Graph, folds: Mapping[str, Fold], image: np.ndarray,
           index: int, progress: Callable[[str], None]) -> Mismatch:
    """Bisect networks of ``hw`` truncated after each node, against the golden activations
    of ``graph``, for the first layer whose input is right and output wrong on ``image``."""
    acts = golden.run(graph, image, activations=True).activations
    nodes = [n.name for n in graph.nodes]
    lo, hi = -1, len(nodes) - 1  # invariant: lo's output is right (-1: the pixels), hi's wrong
    got_hi: tuple[Any, Any] | None = None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        progress(f"tracing the mismatch: checking the output of {nodes[mid]}")
        params, net = _network(hw, folds, until=nodes[mid])
        expected = params.node_beats(acts[nodes[mid]].numpy())
        res = _cosim(net, params, params.input_beats(image), len(expected), seed=0, stall=0)
        if res.out_beats != expected:
            hi, got_hi = mid, (params, res.out_beats)
        else:
            lo = mid
    node = graph.nodes[hi]
    want = acts[node.name].numpy()[0]
    if hi == len(nodes) - 1:
        scores_exp = want
        params, net = _network(hw, folds)
        res = _cosim(net, params, params.input_beats(image), 1, seed=0, stall=0)
        scores_got, arg = params.decode_output(res.out_beats[0])
        if np.array_equal(scores_exp, scores_got):
            return Mismatch(index, "argmax", "class index", int(np.argmax(scores_exp)), arg)
        where, e, g = _first_difference(scores_exp, scores_got, scores_exp.shape)
        return Mismatch(index, node.name, where.replace("channel", "class"), e, g)
    params, beats_got = got_hi  # type: ignore[misc]
    per_beat, elem = params.out_elements
    from .packing import unpack

    got = np.concatenate([unpack(b, per_beat, elem) for b in beats_got])
    got = got[:want.size] if got.size >= want.size else np.pad(got, (0, want.size - got.size),
                                                               constant_values=-1)
    where, e, g = _first_difference(want, got.reshape(want.shape), want.shape)
    return Mismatch(index, node.name, where, e, g)


def verify_graph(graph: ir.Graph, folds: Mapping[str, Fold], images: np.ndarray, *,
                 stall: float = 0.0, seed: int = 0, trace: bool = True,
                 waves_dir: str | Path | None = None,
                 progress: Callable[[str], None] = lambda _: None,
                 hardware_graph: ir.Graph | None = None) -> VerifyReport:
    """Co-simulate the network of ``graph`` on ``images`` (``[N, C, H, W]`` 8-bit pixels).

    The first run streams the images back to back with no stalls (exact comparison plus
    the cycle measurement); with ``stall > 0`` a second run repeats the comparison with
    seeded random stalls on both ends. ``hardware_graph`` builds the hardware from another
    graph than the reference (a planted fault: the check must then report mismatches).
    """
    images = np.asarray(images)
    hw = graph if hardware_graph is None else hardware_graph
    progress("golden model")
    scores = golden.run(graph, images).scores.numpy()
    progress("generating the network")
    params, net = _network(hw, folds)
    expected = [params.output_beat(s) for s in scores]
    beats = params.input_beats(images)
    progress(f"co-simulating {len(images)} images under Verilator (model "
             f"{params.cycles_per_image} cycles per image)")
    res = _cosim(net, params, beats, len(images), seed=seed, stall=0.0)
    bad = [i for i, (e, g) in enumerate(zip(expected, res.out_beats)) if e != g]
    stalled = False
    if stall and not bad:
        progress(f"co-simulating again with random stalls ({stall:.0%} both ends)")
        res2 = _cosim(net, params, beats, len(images), seed=seed, stall=stall)
        bad = [i for i, (e, g) in enumerate(zip(expected, res2.out_beats)) if e != g]
        stalled = True
    first = None
    if bad and trace:
        i = bad[0]
        first = _trace(graph, hw, folds, images[i:i + 1], i, progress)
        if waves_dir is not None:
            progress("recording a waveform of the failing image")
            path = Path(waves_dir) / f"mismatch-image{i}.vcd"
            path.parent.mkdir(parents=True, exist_ok=True)
            _cosim(net, params, params.input_beats(images[i:i + 1]), 1, seed=0, stall=0,
                   waves=str(path.resolve()))
            first.waveform = str(path)
    in_first = res.in_cycles[0] if res.in_cycles else 0
    return VerifyReport(
        images=len(images), mismatches=len(bad),
        cycles_per_image=_steady_cycles(res.out_cycles),
        model_cycles_per_image=params.cycles_per_image,
        latency_cycles=(res.out_cycles[0] - in_first) if res.out_cycles else None,
        bottleneck=params.bottleneck.name,
        folding={k: {"pe": f.pe, "simd": f.simd} for k, f in folds.items()},
        sim_cycles=res.cycles, sim_seconds=res.sim_seconds,
        cycles_per_second=res.cycles_per_second, build_seconds=res.build.seconds,
        build_cached=res.build.cached, stalled_run=stalled, first_mismatch=first,
        stage_cycles={s.name: s.cycles_per_image for s in params.stages})
