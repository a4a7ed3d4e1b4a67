"""The network top: a lowered IR graph and a folding become one streaming accelerator.

One engine per IR node, joined by streams (``wiring.connect`` checks every join):

- ``InputEncoder`` -> ``rtl_gen.input_encoder`` (``pixels_per_beat`` pixels, all
  channels, per beat);
- ``Conv`` -> [width converter to ``simd`` elements] -> ``rtl_gen.sliding_window`` ->
  ``rtl_gen.mvtu`` (thresholds) -> ``rtl_gen.fifo``;
- ``MaxPool`` -> ``rtl_gen.maxpool`` (OR, AND for the channels of ``and_mask``);
- ``Dense`` -> [width converter] -> ``rtl_gen.mvtu`` (-> fifo unless last);
- a ``Conv``/``Dense`` whose input is a frac2 map (2-bit codes, FracBNN) is precision-gated:
  ``rtl_gen.gated_mvtu`` instead of the MVTU, its cycles per image at the item density
  measured on data (``bnnhw.gate_density``, the graph's meta; every gate open without
  one). A layer with three thresholds per channel outputs 2-bit codes: its FIFO, the
  max-pools and the width converters after it carry 2-bit elements;
- after the last ``Dense`` (signed scores): a width converter gathering all classes into
  one beat, and ``rtl_gen.classify`` adding the class (the argmax of the integer class
  map, which is the golden model's class).

Ports (their formats are ``bnnhw.beats.TopFormat``, which the host uses too):

- ``i_stream``: payload ``{"data": k * C pixel channels of 8 bits, "first": 1, "last":
  1}``: ``k = pixels_per_beat`` pixels per beat (1 by default), pixels of an image in
  row-major order, ``first`` on its first beat and ``last`` on its last. The encoder
  encodes all of them in one cycle and a width converter brings them to the first layer's
  ``simd``, so a dense first layer can take more than one pixel per cycle. The engines
  count beats themselves; a flag that disagrees with that count sets the sticky
  ``frame_error`` output.
- ``o_stream``: one beat per image, ``{"scores": classes signed scores, "argmax": class}``;
  a network truncated after a node emits that node's output instead
  (``bnnhw.beats.elements_layout(*NetworkParams.out_elements)``).

Images stream back to back with full valid/ready backpressure everywhere. The cycle model:
each engine reports its cycles per image at steady state; the network's initiation
interval (``cycles_per_image``) is the slowest engine's. The latency model (``latency``)
follows one image's beats through every engine (``rtl_gen.block``).

Memory styles (``NetworkParams.memory_styles``): every weight and threshold memory
(``"<node>.weights"``, ``"<node>.thresholds"``) can be given a style of
``rtl_gen.weight_memory.STYLES``; unnamed memories keep ``auto`` (the synthesis tool
decides, today's behaviour). The classifier's map memory (``"classify.class_map"``) takes
only ``auto`` (``rtl_gen.classify`` builds its memory itself).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from math import ceil
from typing import Any

import numpy as np
from amaranth import Module, Mux, Signal
from amaranth.hdl import Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bnnhw import ir
from bnnhw.beats import TopFormat
from bnnhw.folding import (
    DEFAULT_DRAM_LATENCY,
    DEFAULT_DRAM_WORDS_PER_CYCLE,
    Fold,
    can_tile,
    dram_layout,
    layer_density,
    matrix_layers,
)
from bnnhw.manifest import class_map_fields
from bnnhw.validate import ParameterError

from .block import struct_layout
from .classify import Classify, ClassifyParams
from .fifo import Fifo, FifoParams
from .gated_mvtu import STATS_LAYOUT, GatedMVTU, GatedMVTUParams
from .input_encoder import InputEncoder, InputEncoderParams
from .maxpool import MaxPool, MaxPoolParams
from .mvtu import MVTU, MVTUParams
from .sliding_window import SlidingWindow, SlidingWindowParams
from .threshold import ThresholdParams
from .tiled_mvtu import TiledMVTU, TiledMVTUParams, dram_read_signature
from .weight_memory import FoldedMemoryParams, check_style
from .width_converter import WidthConverter, WidthConverterParams

__all__ = ["CFG_TARGET_LAYOUT", "Network", "NetworkParams", "Stage"]

CFG_TARGET_LAYOUT = data.StructLayout({"target": 8, "beat": 64})
"""A configuration beat for the top: which target (``NetworkParams.targets``), and the
beat itself (``rtl_gen.weight_memory``)."""


@dataclass(frozen=True, eq=False, kw_only=True)
class StyledThresholdParams(ThresholdParams):
    """A threshold unit whose memory has style ``memory_style``."""

    memory_style: str = "auto"

    @property
    def memory(self) -> FoldedMemoryParams:
        plain = super().memory
        return FoldedMemoryParams(plain.width, plain.init, plain.sel, plain.writable,
                                  plain.name, self.memory_style)


class _Styled:
    """Weight and threshold memories with the styles ``weight_style`` and
    ``threshold_style`` (``rtl_gen.weight_memory.STYLES``), for an MVTU or a gated unit."""

    weight_style: str
    threshold_style: str

    @property
    def weight_memory(self) -> FoldedMemoryParams:
        plain = super().weight_memory  # type: ignore[misc]
        return FoldedMemoryParams(plain.width, plain.init, plain.sel, plain.writable,
                                  plain.name, self.weight_style)

    @property
    def threshold_params(self) -> ThresholdParams | None:
        plain = super().threshold_params  # type: ignore[misc]
        if plain is None:
            return None
        return StyledThresholdParams(**{f.name: getattr(plain, f.name) for f in fields(plain)},
                                     memory_style=self.threshold_style)


@dataclass(frozen=True, eq=False, kw_only=True)
class StyledGatedMVTUParams(_Styled, GatedMVTUParams):
    """A gated unit (``rtl_gen.gated_mvtu``) whose memories have styles (``_Styled``)."""

    weight_style: str = "auto"
    threshold_style: str = "auto"


@dataclass(frozen=True, eq=False, kw_only=True)
class StyledMVTUParams(_Styled, MVTUParams):
    """An MVTU whose weight and threshold memories have the styles ``weight_style`` and
    ``threshold_style`` (``rtl_gen.weight_memory.STYLES``); the unit is ``rtl_gen.mvtu``'s."""

    weight_style: str = "auto"
    threshold_style: str = "auto"


_BLOCKS = {
    InputEncoderParams: InputEncoder, WidthConverterParams: WidthConverter,
    SlidingWindowParams: SlidingWindow, MVTUParams: MVTU, StyledMVTUParams: MVTU,
    FifoParams: Fifo, MaxPoolParams: MaxPool, ClassifyParams: Classify,
    GatedMVTUParams: GatedMVTU, StyledGatedMVTUParams: GatedMVTU,
    TiledMVTUParams: TiledMVTU,
}




@dataclass(frozen=True)
class Stage:
    """One engine of the network: its name, its parameters, the IR node it serves."""

    name: str
    params: Any
    node: str
    density: float | None = None  # a gated unit's measured item density (None: all gated)
    gated: Any = None  # a gated unit's open items [pixels, NF] for the latency model

    @property
    def cycles_per_image(self) -> int:
        if self.density is not None:
            return self.params.cycles_for_density(self.density)
        return self.params.cycles_per_image


@dataclass(frozen=True, eq=False)
class NetworkParams:
    """A lowered graph, a folding per matrix node (``{name: Fold}``), FIFO depth.

    ``until`` names a node after which the network stops: its ``o_stream`` then carries
    that node's raw output stream (beats of elements in HWC order), which is how a
    mismatch is traced to the first layer that goes wrong. ``runtime_writable`` makes
    every weight, threshold and class-map memory rewritable through the top's ``cfg``
    stream (``Network``), in the order of the manifest's targets
    (``bnnhw.manifest.Manifest.targets``). ``pixels_per_beat`` pixels enter per input beat
    (it must divide the pixels of an image). ``memory_styles`` maps memory names
    (``memories``) to styles (``rtl_gen.weight_memory.STYLES``); the others are ``auto``.
    ``gate_stats`` gives the top a ``gate_stats`` output with the step counters of every
    gated unit (``gate_stats_layout``), which ``bnnhw verify`` reads after a run.
    ``gate_items`` maps gated nodes to the open items ``[pixels, NF]`` (bool) of the image
    the latency model follows (every item open for the others): the latency of that
    image, exactly. A layer whose fold has ``tile_rows`` keeps its weights in DRAM
    (``rtl_gen.tiled_mvtu``, at ``bnnhw.folding.dram_layout``'s addresses, words of
    ``dram_addr_width`` address bits); its cycles assume a port of
    ``dram_words_per_cycle`` words per cycle and ``dram_latency`` cycles of latency.
    """

    graph: ir.Graph
    folds: Mapping[str, Fold]
    fifo_depth: int = 4
    until: str | None = None
    runtime_writable: bool = False
    pixels_per_beat: int = 1
    memory_styles: Mapping[str, str] = field(default_factory=dict)
    gate_stats: bool = False
    gate_items: Mapping[str, Any] = field(default_factory=dict)
    dram_words_per_cycle: float = DEFAULT_DRAM_WORDS_PER_CYCLE
    dram_latency: int = DEFAULT_DRAM_LATENCY
    dram_addr_width: int = 24

    def __post_init__(self):
        self.graph.check_lowered()
        if self.until is not None and self.until not in [n.name for n in self.graph.nodes]:
            raise ParameterError(f"network: no node named {self.until!r} to stop after")
        for layer in matrix_layers(self.graph):
            if layer.name not in self.folds:
                raise ParameterError(f"network: no folding given for layer {layer.name}")
            layer.check(self.folds[layer.name])
        if self.fifo_depth < 3:
            raise ParameterError(f"network: fifo_depth must be at least 3 (full rate), "
                                 f"not {self.fifo_depth}")
        TopFormat.for_graph(self.graph, self.pixels_per_beat)  # validates pixels_per_beat
        object.__setattr__(self, "memory_styles", dict(self.memory_styles or {}))
        memories = self.memories
        for name, style in self.memory_styles.items():
            if name not in memories:
                raise ParameterError(f"network: no memory named {name!r} to give a style "
                                     f"(memories: {', '.join(memories)})")
            check_style(name, style, self.runtime_writable)
            if memories[name] == "class_map" and style != "auto":
                raise ParameterError(f"{name}: the classifier's map memory takes only style "
                                     f"'auto', not {style!r}")

    @property
    def memories(self) -> dict[str, str]:
        """Every styleable memory of the graph, ``{name: kind}`` with kind ``weights``,
        ``thresholds`` or ``class_map`` (the last only when the classifier stores a map)."""
        out = {}
        for node in self.graph.nodes:
            if isinstance(node, (ir.Conv, ir.Dense)):
                out[f"{node.name}.weights"] = "weights"
                if node.thresholds is not None:
                    out[f"{node.name}.thresholds"] = "thresholds"
        last = self.graph.nodes[-1]
        scales, offsets = set(last.class_scale.tolist()), set(last.class_offset.tolist())
        if self.runtime_writable or len(scales) > 1 or len(offsets) > 1:
            out["classify.class_map"] = "class_map"
        return out

    def memory_style(self, name: str) -> str:
        """The style of memory ``name`` (``auto`` unless ``memory_styles`` names it)."""
        return self.memory_styles.get(name, "auto")

    @property
    def stages(self) -> tuple[Stage, ...]:
        """Every engine in stream order."""
        return self._plan[0]

    @property
    def out_elements(self) -> tuple[int, int]:
        """``(elements per beat, bits per element)`` of a truncated network's output."""
        return self._plan[1]

    @cached_property
    def _plan(self) -> tuple[tuple[Stage, ...], tuple[int, int]]:
        g = self.graph
        enc = g.input
        h, w, c = enc.in_shape
        k = self.pixels_per_beat
        stages = [Stage(f"{enc.name}_encoder", InputEncoderParams(
            h, w, c, enc.encoding, simd=c, threshold=enc.threshold, levels=enc.levels,
            name=enc.name, pixels=k,
            table=None if enc.table is None else tuple(int(v) for v in enc.table)), enc.name)]
        h, w, c = enc.out_shape
        per_beat, elem = c * k, (8 if enc.out_kind == "uint8" else 1)

        def convert(node: str, to: int, frame: int, width: int = 1,
                    role: str = "convert") -> None:
            nonlocal per_beat
            if per_beat != to:
                stages.append(Stage(f"{node}_{role}", WidthConverterParams(
                    per_beat * width, to * width, frame, width, name=f"{node}_{role}"), node))
                per_beat = to

        for node in g.nodes[1:] if self.until != enc.name else ():
            if isinstance(node, ir.Conv) and self.folds[node.name].in_dram:
                fold = self.folds[node.name]
                convert(node.name, fold.simd, h * w * c, elem)
                stages.append(self._tiled(node, fold))
                oh, ow, r = node.out_shape
                stages.append(Stage(f"{node.name}_fifo", FifoParams(
                    fold.pe, self.fifo_depth, oh * ow * r // fold.pe,
                    name=f"{node.name}_fifo"), node.name))
                h, w, c, per_beat, elem = oh, ow, r, fold.pe, 1
            elif isinstance(node, ir.Conv):
                fold = self.folds[node.name]
                convert(node.name, fold.simd, h * w * c, elem)
                stages.append(Stage(f"{node.name}_window", SlidingWindowParams(
                    h, w, c, node.kernel, node.stride, node.padding, fold.simd, elem,
                    node.pad_bit, name=f"{node.name}_window"), node.name))
                oh, ow, r = node.out_shape
                stages.append(self._engine(node, fold, oh * ow))
                out = _out_bits(node)
                stages.append(Stage(f"{node.name}_fifo", FifoParams(
                    fold.pe * out, self.fifo_depth, oh * ow * r // fold.pe,
                    name=f"{node.name}_fifo"), node.name))
                h, w, c, per_beat, elem = oh, ow, r, fold.pe, out
            elif isinstance(node, ir.MaxPool):
                stages.append(Stage(f"{node.name}_pool", MaxPoolParams(
                    h, w, c, node.kernel, node.stride, per_beat,
                    tuple(int(b) for b in node.and_mask), name=f"{node.name}_pool",
                    elem_width=elem), node.name))
                h, w, c = node.out_shape
            elif isinstance(node, ir.Dense):
                fold = self.folds[node.name]
                convert(node.name, fold.simd, node.cols, elem)
                stages.append(self._tiled(node, fold) if fold.in_dram
                              else self._engine(node, fold, 1))
                per_beat, elem = fold.pe, _out_bits(node)
                if node.thresholds is not None:
                    stages.append(Stage(f"{node.name}_fifo", FifoParams(
                        fold.pe * elem, self.fifo_depth, node.rows // fold.pe,
                        name=f"{node.name}_fifo"), node.name))
                else:
                    sw = node.dot_bits
                    convert(node.name, node.rows, node.rows, sw, role="gather")
                    stages.append(Stage("classify", ClassifyParams(
                        node.rows, sw, node.dot_max, tuple(node.class_scale),
                        tuple(node.class_offset), writable=class_map_fields(node)
                        if self.runtime_writable else None), node.name))
            else:  # pragma: no cover - check_lowered admits no other node
                raise TypeError(f"unexpected node {node!r}")
            if node.name == self.until:
                break
        return tuple(stages), (per_beat, elem)

    def _engine(self, node, fold: Fold, pixels: int) -> Stage:
        """The matrix engine of ``node``: an MVTU, or a gated unit for frac2 inputs (its
        cycles at the measured item density, ``bnnhw.gate_density``)."""
        extra: dict[str, Any] = {}
        if node.thresholds is not None:
            extra = {"thresholds": node.thresholds}
            if isinstance(node, ir.Conv):
                extra.update(row_class=node.row_class, col_class=node.col_class)
        styles = {"weight_style": self.memory_style(f"{node.name}.weights"),
                  "threshold_style": self.memory_style(f"{node.name}.thresholds")}
        styled = set(styles.values()) != {"auto"}
        if styled:
            extra.update(styles)
        common = dict(name=node.name, rows=node.rows, cols=node.cols, pe=fold.pe,
                      simd=fold.simd, weights=node.weights, pixels=pixels,
                      runtime_writable=self.runtime_writable, **extra)
        name = f"{node.name}_mvtu"
        if not node.gated:
            cls = StyledMVTUParams if styled else MVTUParams
            return Stage(name, cls(input_kind=node.input_kind, **common), node.name)
        cls = StyledGatedMVTUParams if styled else GatedMVTUParams
        params = cls(gate_thresholds=node.gate, gate_invert=node.gate_invert,
                     stats=self.gate_stats, **common)
        density = dict(layer_density(self.graph, node.name)).get(fold.pe)
        return Stage(name, params, node.name, density, self.gate_items.get(node.name))

    def _tiled(self, node, fold: Fold) -> Stage:
        """The weight-tiled unit of ``node``, whose weights are in DRAM."""
        if not can_tile(node):
            raise ParameterError(f"layer {node.name}: only a layer with binary inputs and "
                                 f"binary outputs or scores can keep its weights in DRAM")
        extra: dict[str, Any] = {}
        if node.thresholds is not None:
            extra["thresholds"] = node.thresholds
        if isinstance(node, ir.Conv):
            if node.thresholds is not None:
                extra.update(row_class=node.row_class, col_class=node.col_class)
            extra.update(in_shape=tuple(node.in_shape), kernel=node.kernel,
                         stride=node.stride, padding=node.padding, pad_bit=node.pad_bit)
            pixels = node.out_pixels
        else:
            pixels = 1
        if self.runtime_writable:
            extra["runtime_writable"] = True
        base, _ = self.dram_layout[node.name]
        return Stage(f"{node.name}_tiled", TiledMVTUParams(
            name=node.name, rows=node.rows, cols=node.cols, pe=fold.pe, simd=fold.simd,
            tile_rows=fold.tile_rows, pixels=pixels, base_addr=base,
            addr_width=self.dram_addr_width, dram_words_per_cycle=self.dram_words_per_cycle,
            dram_latency=self.dram_latency, **extra), node.name)

    @cached_property
    def dram_layout(self) -> dict[str, tuple[int, int]]:
        """``{layer: (first word, words)}`` of the layers whose weights are in DRAM."""
        return dram_layout(self.graph, self.folds)

    @property
    def dram_stages(self) -> tuple[Stage, ...]:
        """The weight-tiled units, in stream order: ``Network``'s ``dram_<i>`` ports."""
        return tuple(s for s in self.stages if isinstance(s.params, TiledMVTUParams))

    def dram_image(self) -> list[int]:
        """Every DRAM word of the graph's DRAM layers, from word 0 (what the host writes
        and a simulation preloads)."""
        image: list[int] = []
        for s in self.dram_stages:
            node = self.graph[s.node]
            image += s.params.dram_image(node.weights)
        return image

    @property
    def targets(self) -> tuple[Stage, ...]:
        """The stages whose memories the ``cfg`` stream writes, by target index: every
        matrix layer's engine in graph order, then the classifier (``runtime_writable``)."""
        if not self.runtime_writable:
            return ()
        return tuple(s for s in self.stages if isinstance(
            s.params, (MVTUParams, GatedMVTUParams, TiledMVTUParams, ClassifyParams)))

    # Derived figures ------------------------------------------------------------------

    @property
    def classes(self) -> int:
        return self.graph.classes

    @property
    def truncated(self) -> bool:
        """Whether the network stops before its classifier (``until``)."""
        return self.until is not None and self.until != self.graph.nodes[-1].name

    @property
    def format(self) -> TopFormat:
        """The beat formats of the top's ports (shared with the host)."""
        return TopFormat.for_graph(self.graph, self.pixels_per_beat)

    @property
    def score_width(self) -> int:
        return self.format.score_width

    @property
    def pixels_per_image(self) -> int:
        h, w, _ = self.graph.input.in_shape
        return h * w

    @property
    def beats_per_image(self) -> int:
        """Input beats per image: ``pixels_per_image / pixels_per_beat``."""
        return self.pixels_per_image // self.pixels_per_beat

    @property
    def cycles_per_image(self) -> int:
        """Initiation interval: cycles per image of the slowest engine."""
        return max(s.cycles_per_image for s in self.stages)

    @property
    def latency(self) -> int:
        """Modelled cycles from the edge accepting an image's first beat to the edge at
        which its first output beat is taken, beats arriving one per cycle into an idle
        network (each engine's ``beat_times``, ``rtl_gen.block``)."""
        t = np.arange(self.beats_per_image, dtype=np.int64)
        for stage in self.stages:
            if isinstance(stage.params, TiledMVTUParams):
                t = _tiled_beat_times(stage.params, t)
            elif stage.gated is not None:
                t = stage.params.beat_times(t, gated=stage.gated)
            else:
                t = stage.params.beat_times(t)
        return int(t[0])

    @property
    def gated_stages(self) -> tuple[Stage, ...]:
        """The precision-gated units, in stream order."""
        return tuple(s for s in self.stages if isinstance(s.params, GatedMVTUParams))

    @property
    def gate_stats_layout(self) -> data.StructLayout:
        """The ``gate_stats`` output with ``gate_stats``: per gated unit (by stage name) its
        MSB and LSB step counters (``rtl_gen.gated_mvtu.STATS_LAYOUT``)."""
        return data.StructLayout({s.name: STATS_LAYOUT for s in self.gated_stages})

    @property
    def bottleneck(self) -> Stage:
        return max(self.stages, key=lambda s: s.cycles_per_image)

    @property
    def in_layout(self) -> data.StructLayout:
        return struct_layout(self.format.in_layout)


def _tiled_beat_times(p: TiledMVTUParams, t: np.ndarray) -> np.ndarray:
    """Output beat times of a weight-tiled unit for one image's input beats at ``t``, its
    first tile loaded beforehand: the sweep starts once the image is stored; with one
    tile a pixel's beats leave as its last step's result is thresholded, with several the
    results leave in order once the image's last tile is done (an estimate: the tile loads
    of a latency-bound unit are taken at the model's mean)."""
    start = int(t[-1]) + 2
    pipe = p.tree_latency + 4
    k = np.arange(p.pixels * p.nf, dtype=np.int64)
    if p.tiles == 1:
        return start + (k + 1) * p.sf + pipe
    tile = p.tile_cycles(p.dram_words_per_cycle, p.dram_latency)
    done = start + ceil(p.tiles * tile) + pipe
    return done + k + 2


def _out_bits(node: ir.Conv | ir.Dense) -> int:
    """Bits per output element of a thresholded matrix node: 1, or 2 for a frac2 map."""
    return 2 if node.out_levels == 3 else 1


class Network(wiring.Component):
    """The accelerator of a ``NetworkParams`` (see the module docstring).

    ``frame_error`` goes high, and stays high, when an input beat's ``first``/``last``
    flag disagrees with the beat count of the image being received. ``blocks`` maps stage
    names to other block classes for those engines (a planted fault in a test); the
    others are the ones ``rtl_gen`` makes for their parameters.
    """

    def __init__(self, params: NetworkParams,
                 blocks: Mapping[str, Callable[[Any], wiring.Component]] | None = None):
        self.params = params
        chosen = dict(blocks or {})
        unknown = set(chosen) - {s.name for s in params.stages}
        if unknown:
            raise ParameterError(f"network: no stage named {min(unknown)!r}")
        self.blocks = [chosen.get(s.name, _BLOCKS[type(s.params)])(s.params)
                       for s in params.stages]
        members = {
            "i_stream": In(stream.Signature(params.in_layout)),
            "o_stream": self.blocks[-1].signature.members["o_stream"],
            "frame_error": Out(1),
        }
        if params.runtime_writable:
            members["cfg"] = In(stream.Signature(CFG_TARGET_LAYOUT))
        if params.gate_stats and params.gated_stages:
            members["gate_stats"] = Out(params.gate_stats_layout)
        for i, _ in enumerate(params.dram_stages):
            members[f"dram_{i}"] = Out(dram_read_signature(params.dram_addr_width))
        super().__init__(members)

    @property
    def cycles_per_image(self) -> int:
        return self.params.cycles_per_image

    def elaborate(self, platform):
        p = self.params
        m = Module()
        for stage, block in zip(p.stages, self.blocks, strict=True):
            m.submodules[stage.name] = block

        first = self.blocks[0]
        m.d.comb += [first.i_stream.payload.eq(Value.cast(self.i_stream.payload.data)),
                     first.i_stream.valid.eq(self.i_stream.valid),
                     self.i_stream.ready.eq(first.i_stream.ready)]
        for a, b in zip(self.blocks, self.blocks[1:]):
            wiring.connect(m, a.o_stream, b.i_stream)
        wiring.connect(m, self.blocks[-1].o_stream, wiring.flipped(self.o_stream))

        if p.runtime_writable:
            # every memory takes a beat per cycle: the target index only steers valid
            names = [s.name for s in p.stages]
            for index, stage in enumerate(p.targets):
                cfg = self.blocks[names.index(stage.name)].cfg
                m.d.comb += [cfg.payload.eq(self.cfg.payload.beat),
                             cfg.valid.eq(self.cfg.valid & (self.cfg.payload.target == index))]
            m.d.comb += self.cfg.ready.eq(1)

        names = [s.name for s in p.stages]
        for i, stage in enumerate(p.dram_stages):
            block = self.blocks[names.index(stage.name)]
            wiring.connect(m, block.dram, wiring.flipped(getattr(self, f"dram_{i}")))

        if "gate_stats" in self.signature.members:
            names = [s.name for s in p.stages]
            for stage in p.gated_stages:
                block = self.blocks[names.index(stage.name)]
                m.d.comb += getattr(self.gate_stats, stage.name).eq(block.stats)

        count = Signal(range(p.beats_per_image), name="pixel_count")
        with m.If(self.i_stream.valid & self.i_stream.ready):
            at_first, at_last = count == 0, count == p.beats_per_image - 1
            with m.If((self.i_stream.payload.first != at_first)
                      | (self.i_stream.payload.last != at_last)):
                m.d.sync += self.frame_error.eq(1)
            m.d.sync += count.eq(Mux(at_last, 0, count + 1))
        return m
