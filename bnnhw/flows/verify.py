"""RTL against the golden model: the whole network as Verilog under Verilator (cocotb, or
the C++ stream harness of ``sim.fast`` with ``engine="fast"``).

``verify_graph`` builds the network top of a lowered graph at a folding, streams images
through it back to back and compares every output beat (all class scores and the class)
exactly with what the golden model says, then keeps the sink ready a while longer: any
beat beyond one per image is a mismatch too. Given the QAT model's own predictions it
also reports how often the hardware's class is the model's (``class_agreement``) and how
many of the disagreements are float ties (``bnnhw.check.class_tie``).

The first run has no injected stalls; it measures the steady-state cycles per image (the
mean distance between consecutive images' output beats, the pipeline fill left out) and
the latency (first pixel in to first result out), compared with the cycle model. With
``stall > 0`` a second run repeats the comparison with seeded random stalls on both ends.

A network with precision-gated layers (FracBNN) is modelled at the gate densities of the
images it verifies (``bnnhw.gate_density``), and its top reads out every gated unit's
step counters after the unstalled run (both engines): the report gives per gated layer the measured
densities, the MSB and LSB steps per image the hardware took (the LSB steps are ``SF``
per open item, so they must equal the golden model's count), the modelled cycles and
those of an ungated 2-bit engine (``GatedLayer``).

On a mismatch the fault is traced: networks truncated after a node
(``NetworkParams.until``) replay the failing run (the same images up to the failing one,
the same stall pattern) and their output is compared with the golden activations of
that node, bisecting for the first layer whose input is right and whose output is wrong;
the first differing image, pixel and channel there are named, and a waveform of the
failing run is recorded on the full network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import golden, ir
from ..beats import element_beats, elements_layout
from ..check import class_tie
from ..folding import Fold
from ..manifest import fold_doc

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
class GatedLayer:
    """One precision-gated layer in a verify run: its item density at ``pe`` and its
    channel density (the golden model's gates on the verified images), the steps per image
    its passes took in the hardware (``None`` when the engine gives no counters), the
    modelled cycles per image at that density, its MSB pass alone, and an ungated 2-bit
    engine's (both passes over every item)."""

    node: str
    pe: int
    item_density: float
    channel_density: float
    msb_steps: float | None
    lsb_steps: float | None
    model_cycles: int
    msb_cycles: int
    ungated_cycles: int

    def format(self) -> str:
        measured = "steps not measured" if self.msb_steps is None else \
            f"MSB {self.msb_steps:,.1f} + LSB {self.lsb_steps:,.1f} steps per image"
        return (f"gated {self.node}: gates open {self.channel_density:.1%} (items at pe "
                f"{self.pe}: {self.item_density:.1%}); {measured}; model "
                f"{self.model_cycles:,} cycles, ungated 2-bit {self.ungated_cycles:,}")


@dataclass
class VerifyReport:
    images: int
    mismatches: int
    cycles_per_image: float | None
    model_cycles_per_image: int
    latency_cycles: int | None
    model_latency_cycles: int
    bottleneck: str
    folding: dict[str, dict[str, int]]
    sim_cycles: int
    sim_seconds: float
    cycles_per_second: float
    build_seconds: float
    build_cached: bool
    stalled_run: bool = False
    extra_beats: int = 0
    first_mismatch: Mismatch | None = None
    class_agreement: float | None = None
    class_ties: int | None = None
    reference: str = "the QAT model"
    stage_cycles: dict[str, int] = field(default_factory=dict)
    gated: list[GatedLayer] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.mismatches == 0 and self.extra_beats == 0

    @property
    def cycle_error(self) -> float | None:
        """Relative gap between the measured and the modelled cycles per image."""
        if self.cycles_per_image is None:
            return None
        return self.cycles_per_image / self.model_cycles_per_image - 1

    @property
    def latency_error(self) -> float | None:
        """Relative gap between the measured and the modelled latency."""
        if self.latency_cycles is None:
            return None
        return self.latency_cycles / self.model_latency_cycles - 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cycle_error"] = self.cycle_error
        d["latency_error"] = self.latency_error
        return d

    def format(self) -> str:
        lines = [f"images checked: {self.images}",
                 f"mismatches: {self.mismatches}"]
        if self.extra_beats:
            lines.append(f"extra output beats after the last image: {self.extra_beats}")
        if self.first_mismatch is not None:
            lines.append(self.first_mismatch.format())
        if self.class_agreement is not None:
            lines.append(f"class agreement with {self.reference}: {self.class_agreement:.2%} "
                         f"({self.class_ties} float ties)")
        if self.cycles_per_image is None:
            lines.append(f"cycles per image: not measured (needs 2+ images); model "
                         f"{self.model_cycles_per_image}")
        else:
            lines.append(f"cycles per image: {self.cycles_per_image:.1f} measured, "
                         f"{self.model_cycles_per_image} model ({self.cycle_error:+.2%}; "
                         f"bottleneck {self.bottleneck})")
        if self.latency_cycles is not None:
            lines.append(f"latency: {self.latency_cycles} cycles measured, "
                         f"{self.model_latency_cycles} model ({self.latency_error:+.2%}; "
                         f"first pixel in to scores out)")
        lines += [g.format() for g in self.gated]
        lines.append(f"simulation: {self.sim_cycles} cycles in {self.sim_seconds:.1f} s "
                     f"({self.cycles_per_second:,.0f} cycles/s); Verilator build "
                     f"{'cached' if self.build_cached else f'{self.build_seconds:.1f} s'}")
        return "\n".join(lines)


def _steady_cycles(out_cycles: list[int]) -> float | None:
    """Mean distance between consecutive output beats, the first gap (fill) left out."""
    if len(out_cycles) < 2:
        return None
    if len(out_cycles) == 2:
        return float(out_cycles[1] - out_cycles[0])
    return (out_cycles[-1] - out_cycles[1]) / (len(out_cycles) - 2)


def _network(graph: ir.Graph, folds: Mapping[str, Fold], until: str | None = None,
             blocks: Mapping[str, Any] | None = None, gate_stats: bool = False,
             gate_items: Mapping[str, Any] | None = None, dram_stall: float = 0.0):
    """The network's parameters and design: the ``Network``, or for weights in DRAM the
    Verilog of ``sim.dram_top.stream_top`` (the DRAM side stalled with ``dram_stall``)."""
    from rtl_gen.network import Network, NetworkParams

    params = NetworkParams(graph, folds, until=until, gate_stats=gate_stats,
                           gate_items=gate_items or {})
    names = {s.name for s in params.stages}
    chosen = {k: v for k, v in (blocks or {}).items() if k in names}
    if params.dram_stages:
        from sim.dram_top import stream_top

        return params, stream_top(params, chosen, stall=dram_stall)
    return params, Network(params, chosen)


ENGINES = ("cocotb", "fast")


def _cosim(net, params, beats: list[int], n_out: int, *, seed: int, stall: float,
           waves: bool | str = False, linger: bool = False, engine: str = "cocotb",
           read_ports: tuple[str, ...] = ()):
    if engine == "fast":
        from sim.fast import run_stream_fast as run
    else:
        from sim.cosim import run_stream_cosim as run

    images = max(1, len(beats) // params.format.pixels)
    timeout = (images + 8) * params.cycles_per_image * 4 + params.latency + 200_000
    if stall:
        timeout *= 4
    if params.dram_stages:  # the DRAM image's four writes a word before the first image
        timeout += 8 * sum(n for _, n in params.dram_layout.values()) + 100_000
    linger_cycles = 2 * params.cycles_per_image + params.latency + 100 if linger else 0
    extra = {"read_ports": read_ports} if read_ports else {}
    return run(net, beats, n_out, seed=seed, stall_in=stall, stall_out=stall,
               timeout_cycles=timeout, waves=waves, linger_cycles=linger_cycles, **extra)


def _field(value: int, layout: Any, name: str) -> int:
    """Field ``name`` of the integer ``value`` of an Amaranth struct ``layout``."""
    f = dict(iter(layout))[name]
    return (value >> f.offset) & ((1 << f.width) - 1)


def _first_items(graph: ir.Graph, folds: Mapping[str, Fold], images: np.ndarray
                 ) -> dict[str, np.ndarray]:
    """Per gated node, the open items ``[pixels, NF]`` of the first image: the latency model
    then follows that image (the latency measured is the first image's)."""
    out = {}
    for name, g in golden.gate_maps(graph, images[:1]).items():
        pe = folds[name].pe
        r = g.shape[-1]
        out[name] = g[0].reshape(-1, r // pe, pe).amax(dim=-1).numpy().astype(bool)
    return out


def _gated_layers(graph: ir.Graph, params: Any, images: np.ndarray, stats: int | None
                  ) -> list[GatedLayer]:
    """Per gated unit of ``params``: densities on ``images``, steps per image from the
    top's ``gate_stats`` value ``stats`` (``None``: not read), cycle figures."""
    from ..gate_density import item_density

    gates = golden.gate_maps(graph, images)
    out, n = [], max(1, len(images))
    layout = params.gate_stats_layout
    for stage in params.gated_stages:
        p = stage.params
        g = gates[stage.node]
        msb = lsb = None
        if stats is not None:
            unit = _field(stats, layout, stage.name)
            msb = _field(unit, dict(iter(layout))[stage.name].shape, "msb_steps") / n
            lsb = _field(unit, dict(iter(layout))[stage.name].shape, "lsb_steps") / n
        d = item_density(g, p.pe)
        base = p.pixels * p.nf * p.sf
        out.append(GatedLayer(stage.node, p.pe, d, item_density(g, 1), msb, lsb,
                              p.cycles_for_density(d), base, 2 * base))
    return out


def _first_difference(expected: np.ndarray, got: np.ndarray, shape: tuple[int, ...]
                      ) -> tuple[int, str, int, int]:
    """Image, position phrase, expected and received value of the first differing element
    of ``expected``/``got`` (each ``N`` images of ``shape``, flattened or not)."""
    e, g = expected.reshape(-1), got.reshape(-1)
    flat = int(np.flatnonzero(e != g)[0])
    image, *pos = np.unravel_index(flat, (len(e) // int(np.prod(shape)), *shape))
    if len(shape) == 3:
        phrase = f"pixel (row {pos[0]}, col {pos[1]}), channel {pos[2]}"
    else:
        phrase = f"channel {pos[0]}"
    return int(image), phrase, int(e[flat]), int(g[flat])


def _trace(graph: ir.Graph, hw: ir.Graph, folds: Mapping[str, Fold], images: np.ndarray,
           seed: int, stall: float, progress: Callable[[str], None],
           blocks: Mapping[str, Any] | None, engine: str) -> Mismatch:
    """Bisect networks of ``hw`` truncated after each node, replaying ``images`` with the
    failing run's stalls, against the golden activations of ``graph``, for the first
    layer whose input is right and whose output is wrong."""
    acts = golden.run(graph, images, activations=True).activations
    nodes = [n.name for n in graph.nodes]
    lo, hi = -1, len(nodes) - 1  # invariant: lo's output is right (-1: the pixels), hi's wrong
    got_hi: tuple[Any, list[int]] | None = None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        progress(f"tracing the mismatch: checking the output of {nodes[mid]}")
        params, net = _network(hw, folds, until=nodes[mid], blocks=blocks, dram_stall=stall)
        expected = element_beats(acts[nodes[mid]].numpy(), *params.out_elements)
        res = _cosim(net, params, params.format.image_beats(images), len(expected),
                     seed=seed, stall=stall, engine=engine)
        if res.out_beats != expected:
            hi, got_hi = mid, (params, res.out_beats)
        else:
            lo = mid
    node = graph.nodes[hi]
    want = acts[node.name].numpy()
    if hi == len(nodes) - 1:
        params, net = _network(hw, folds, blocks=blocks, dram_stall=stall)
        res = _cosim(net, params, params.format.image_beats(images), len(images), seed=seed,
                     stall=stall, engine=engine)
        decoded = [params.format.decode_result(b) for b in res.out_beats]
        got = np.array([s for s, _ in decoded]).reshape(-1, graph.classes)
        if np.array_equal(want, got):
            classes = golden.integer_classes(node, want)
            args = np.array([a for _, a in decoded])
            i = int(np.flatnonzero(classes != args)[0])
            return Mismatch(i, "classify", "class index", int(classes[i]), int(args[i]))
        img, phrase, e, g = _first_difference(want, got, want.shape[1:])
        return Mismatch(img, node.name, phrase.replace("channel", "class"), e, g)
    params, beats_got = got_hi  # type: ignore[misc]
    layout = elements_layout(*params.out_elements)
    got = np.concatenate([np.atleast_1d(layout.from_bits(b)["data"]) for b in beats_got])
    got = got[:want.size] if got.size >= want.size else np.pad(
        got, (0, want.size - got.size), constant_values=-1)
    img, phrase, e, g = _first_difference(want, got, want.shape[1:])
    return Mismatch(img, node.name, phrase, e, g)


def verify_graph(graph: ir.Graph, folds: Mapping[str, Fold], images: np.ndarray, *,
                 stall: float = 0.0, seed: int = 0, trace: bool = True,
                 waves_dir: str | Path | None = None,
                 progress: Callable[[str], None] = lambda _: None,
                 hardware_graph: ir.Graph | None = None,
                 qat_classes: np.ndarray | None = None,
                 blocks: Mapping[str, Any] | None = None,
                 engine: str = "cocotb") -> VerifyReport:
    """Co-simulate the network of ``graph`` on ``images`` (``[N, C, H, W]`` 8-bit pixels).

    The first run streams the images back to back with no stalls (exact comparison plus
    the cycle and latency measurements); with ``stall > 0`` a second run repeats the
    comparison with seeded random stalls on both ends. ``qat_classes`` (the QAT model's
    predictions) adds the class agreement. ``hardware_graph`` builds the hardware from
    another graph than the reference, and ``blocks`` (stage name -> block class, see
    ``rtl_gen.network.Network``) replaces engines: both plant faults, which the check must
    then report and the tracer attribute. ``engine`` runs the simulations on the cocotb
    bench (``"cocotb"``, ``sim.cosim``) or the C++ harness (``"fast"``, ``sim.fast``).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    from ..gate_density import attach, has_gates

    images = np.asarray(images)
    hw = graph if hardware_graph is None else hardware_graph
    gated = has_gates(hw)
    if gated:  # the cycle model at the gate densities of these very images
        hw = attach(hw, images, f"the {len(images)} verified images")
    progress("golden model")
    gold = golden.run(graph, images)
    scores, classes = gold.scores.numpy(), gold.classes.numpy()
    progress("generating the network")
    stats = gated
    items = _first_items(hw, folds, images) if gated else {}
    params, net = _network(hw, folds, blocks=blocks, gate_stats=stats, gate_items=items)
    fmt = params.format
    expected = [fmt.result_beat(s, c) for s, c in zip(scores, classes)]
    beats = fmt.image_beats(images)
    progress(f"co-simulating {len(images)} images under Verilator (model "
             f"{params.cycles_per_image} cycles per image)")
    res = _cosim(net, params, beats, len(images), seed=seed, stall=0.0, linger=True,
                 engine=engine, read_ports=("gate_stats",) if stats else ())
    runs = [(res, 0.0)]
    if stall:
        stalled = net
        if params.dram_stages:
            progress(f"co-simulating again with random stalls ({stall:.0%} both ends and "
                     f"on the DRAM's streams)")
            _, stalled = _network(hw, folds, blocks=blocks, gate_stats=stats,
                                  gate_items=items, dram_stall=stall)
        else:
            progress(f"co-simulating again with random stalls ({stall:.0%} both ends)")
        runs.append((_cosim(stalled, params, beats, len(images), seed=seed, stall=stall,
                            linger=True, engine=engine), stall))
    bad: list[int] = []
    extra, failing_stall = 0, 0.0
    for run, p in runs:
        bad = [i for i, (e, g) in enumerate(zip(expected, run.out_beats)) if e != g]
        extra = len(run.extra_beats)
        if bad or extra:
            failing_stall = p
            break
    first = None
    if bad and trace:
        i = bad[0]
        first = _trace(graph, hw, folds, images[:i + 1], seed, failing_stall, progress,
                       blocks, engine)
        if waves_dir is not None:
            progress("recording a waveform of the failing run")
            path = Path(waves_dir) / f"mismatch-image{i}.vcd"
            path.parent.mkdir(parents=True, exist_ok=True)
            _cosim(net, params, fmt.image_beats(images[:i + 1]), i + 1, seed=seed,
                   stall=failing_stall, waves=str(path.resolve()), engine=engine)
            first.waveform = str(path)
    agreement = ties = None
    if qat_classes is not None:
        qat = np.asarray(qat_classes).reshape(-1)
        hw_classes = np.array([fmt.decode_result(b)[1] for b in res.out_beats])
        n = min(len(hw_classes), len(qat))
        agree = hw_classes[:n] == qat[:n]
        agreement = float(agree.sum()) / len(qat) if len(qat) else 1.0
        last = graph.nodes[-1]
        ties = sum(class_tie(last, scores[i], int(hw_classes[i]), int(qat[i]))  # type: ignore
                   for i in np.flatnonzero(~agree))
    in_first = res.in_cycles[0] if res.in_cycles else 0
    return VerifyReport(
        images=len(images), mismatches=len(bad), extra_beats=extra,
        cycles_per_image=_steady_cycles(res.out_cycles),
        model_cycles_per_image=params.cycles_per_image,
        latency_cycles=(res.out_cycles[0] - in_first) if res.out_cycles else None,
        model_latency_cycles=params.latency,
        bottleneck=params.bottleneck.name,
        folding={k: fold_doc(f) for k, f in folds.items()},
        sim_cycles=res.cycles, sim_seconds=res.sim_seconds,
        cycles_per_second=res.cycles_per_second, build_seconds=res.build.seconds,
        build_cached=res.build.cached, stalled_run=len(runs) > 1, first_mismatch=first,
        class_agreement=agreement, class_ties=ties,
        stage_cycles={s.name: s.cycles_per_image for s in params.stages},
        gated=_gated_layers(hw, params, images, res.ports.get("gate_stats")) if gated else [])
