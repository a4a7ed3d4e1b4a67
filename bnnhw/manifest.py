"""The build manifest: what one accelerator build is, as plain data the host can check.

A manifest is computed from a lowered graph and its folding (``Manifest.of``), by the
generator for the design it builds and by the host for the model it wants to run; the
board states the first 8 bytes of its SHA-256 (``digest``) when identified, so the host
loads weights only into a design of the same topology. It holds the topology (every
node's shapes and hardware parameters, but no weight, threshold or class-map value), the
folding, the weight layout (every writable memory's select, depth and width, in the order
of ``targets``), the link (image and result formats, the largest payload), the board and
its clock. Torch-free and amaranth-free.

Formats on the wire (``docs/protocol.md``):

- an image: HWC pixels; a ``binary``-encoded model's pixels are compared with its
  threshold by the host and sent as bits, 8 to a byte, LSB first; others as bytes (a
  pixel table, part of the topology, is applied on the board);
- a result: the class (1 byte, 2 above 256 classes), then each class's score as two's
  complement little-endian in ``score_bytes`` bytes;
- a write: a target index, then configuration beats (``bnnhw.packing.cfg_beats``) for
  that target's memories.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import ir
from . import numerics as nx
from .folding import DRAM_WORD_BITS, Fold, dram_layout, tiled_shape
from .packing import CFG_ADDR_BITS, MemSel, cfg_beats, matrix_words, table_words
from .protocol import PROTOCOL_VERSION

__all__ = ["CLASS_SCALE_FIELD_BITS", "Manifest", "Memory", "Target", "class_map_fields"]

CLASS_SCALE_FIELD_BITS = 17
"""Bits of a class multiplier in a writable class map (the frontend keeps them <= 2**16)."""


def class_map_fields(node: ir.Dense) -> tuple[int, int]:
    """``(scale bits, offset bits)`` of a writable class map: wide enough for any model of
    this topology. Offsets are clamped and centred by the frontend to ``|b| <= M * D + 1``
    (``M`` the largest multiplier, ``D`` the largest dot product)."""
    bound = ((1 << (CLASS_SCALE_FIELD_BITS - 1)) * node.dot_max) + 1
    return CLASS_SCALE_FIELD_BITS, nx.signed_bits(-bound, bound)


@dataclass(frozen=True)
class Memory:
    """One writable memory of a target: its select, depth (words) and width (bits)."""

    sel: int
    depth: int
    width: int


@dataclass(frozen=True)
class Target:
    """A block whose memories a ``WRITE`` frame can rewrite: a matrix layer's engine
    (weights and thresholds) or the classifier's class map."""

    name: str
    kind: str
    memories: tuple[Memory, ...]


def _matrix_memories(node: ir.Conv | ir.Dense, fold: Fold) -> tuple[Memory, ...]:
    nf, sf = node.rows // fold.pe, node.cols // fold.simd
    if fold.in_dram:  # weights in the DRAM target; the thresholds regrouped per tile
        if not node.thresholded:
            return ()
        shape = tiled_shape(node, fold)
        ny, nx_ = node.thresholds.shape[:2]  # type: ignore[union-attr]
        return (Memory(int(MemSel.THRESHOLDS), shape.tiles * ny * nx_ * shape.tile_nf,
                       fold.pe * node.threshold_bits),)
    mems = [Memory(int(MemSel.WEIGHTS), nf * sf, fold.pe * fold.simd)]
    if node.thresholded:
        ny, nx_ = node.thresholds.shape[:2]  # type: ignore[union-attr]
        mems.append(Memory(int(MemSel.THRESHOLDS), ny * nx_ * nf,
                           fold.pe * node.out_levels * node.threshold_bits))
    if node.gated:
        mems.append(Memory(int(MemSel.GATES), nf, fold.pe * (node.gate_bits + 1)))
    return tuple(mems)


def fold_doc(fold: Fold) -> dict[str, int]:
    """A fold as the manifest and reports write it: ``pe``, ``simd`` and, for weights in
    DRAM, ``tile_rows``."""
    doc = {"pe": fold.pe, "simd": fold.simd}
    if fold.in_dram:
        doc["tile_rows"] = int(fold.tile_rows)  # type: ignore[arg-type]
    return doc


def threshold_table_words(node: ir.Conv | ir.Dense, pe: int) -> list[int]:
    """The threshold memory words of a thresholded matrix node at ``pe`` (clamped; a
    frac2 output's three thresholds of a lane side by side, lane ``i``'s at entries
    ``i * 3 + k``)."""
    t = np.clip(node.thresholds, node.threshold_min, node.threshold_max)
    levels = node.out_levels
    t = t.reshape(*t.shape[:2], node.rows * levels)  # type: ignore[union-attr]
    return table_words(t, pe * levels, node.threshold_bits)


def gate_table_words(node: ir.Conv | ir.Dense, pe: int) -> list[int]:
    """The gate memory words of a gated node at ``pe``: per lane its threshold ``G`` and,
    above it, its invert bit."""
    lanes = node.gate.astype(np.int64) | (node.gate_invert.astype(np.int64)  # type: ignore
                                          << node.gate_bits)
    return table_words(lanes, pe, node.gate_bits + 1)


def _node_doc(node: ir.Node) -> dict[str, Any]:
    """A node's topology: every dataclass field but its values (weights, thresholds,
    scales, the class map) and its provenance."""
    values = {"weights", "thresholds", "scale", "bias", "class_scale", "class_offset",
              "class_gain", "class_exact", "source", "channels", "gate", "gate_invert"}
    doc: dict[str, Any] = {"op": node.op}
    for name in node.__dataclass_fields__:  # type: ignore[attr-defined]
        if name in values:
            continue
        v = getattr(node, name)
        if (name == "table" or name.startswith("gate")) and v is None:
            continue  # fields an older build did not have: the same digest as before
        doc[name] = v.tolist() if isinstance(v, np.ndarray) else (
            list(v) if isinstance(v, tuple) else v)
    if isinstance(node, (ir.Conv, ir.Dense)):
        doc["rows"], doc["cols"] = node.rows, node.cols
        if isinstance(node, ir.Conv) and node.thresholds is not None:
            doc["border_classes"] = list(node.border_classes)
        if node.out_levels == 3:
            doc["out_levels"] = 3
    return doc


@dataclass(frozen=True)
class Manifest:
    """One build (see the module docstring); ``doc`` is its JSON-able content."""

    doc: dict[str, Any] = field(compare=True)

    @classmethod
    def of(cls, graph: ir.Graph, folds: Mapping[str, Fold], *, board: str = "sim",
           clock_hz: int = 100_000_000, baud: int = 3_000_000, writable: bool = True,
           max_payload: int = 4096) -> Manifest:
        graph.check_lowered()
        targets = []
        for node in graph.nodes:
            if isinstance(node, (ir.Conv, ir.Dense)):
                targets.append(Target(node.name, "matrix",
                                      _matrix_memories(node, folds[node.name])))
        last: ir.Dense = graph.nodes[-1]  # type: ignore[assignment]
        sb, ob = class_map_fields(last)
        targets.append(Target(f"{last.name}_classes", "classes",
                              (Memory(int(MemSel.CLASSES), last.rows, sb + ob),)))
        layout = dram_layout(graph, folds)
        if layout:
            words = sum(n for _, n in layout.values())
            if words > 1 << CFG_ADDR_BITS:
                raise ValueError(f"the DRAM layers' {words} words exceed the "
                                 f"{1 << CFG_ADDR_BITS} a configuration beat addresses")
            targets.append(Target("dram", "dram",
                                  (Memory(int(MemSel.WEIGHTS), words, DRAM_WORD_BITS),)))
        enc = graph.input
        doc = {
            "format": "bnnhw-manifest", "protocol": PROTOCOL_VERSION,
            "board": board, "clock_hz": int(clock_hz), "baud": int(baud),
            "writable": bool(writable), "max_payload": int(max_payload),
            "nodes": [_node_doc(n) for n in graph.nodes],
            "folding": {k: fold_doc(f) for k, f in sorted(folds.items())},
            "targets": [{"name": t.name, "kind": t.kind,
                         "memories": [[m.sel, m.depth, m.width] for m in t.memories]}
                        for t in targets],
            "image": {"shape": list(enc.in_shape), "encoding": enc.encoding,
                      "threshold": enc.threshold, "levels": enc.levels},
            "classes": graph.classes, "score_width": last.dot_bits,
            "class_map": [sb, ob],
        }
        if layout:
            doc["dram"] = {name: {"base": b, "words": n} for name, (b, n) in layout.items()}
        return cls(doc)

    # -- identity -----------------------------------------------------------------------

    @property
    def text(self) -> str:
        """The canonical JSON text the digest is taken of."""
        return json.dumps(self.doc, sort_keys=True, separators=(",", ":"))

    @property
    def digest(self) -> bytes:
        """The first 8 bytes of the SHA-256 of ``text``: what a board identifies with."""
        return hashlib.sha256(self.text.encode()).digest()[:8]

    def topology(self) -> dict[str, Any]:
        """What must match for weights of one model to fit a design built for another."""
        return {k: v for k, v in self.doc.items() if k not in ("board", "clock_hz", "baud",
                                                                "max_payload")}

    def differences(self, other: Manifest) -> list[str]:
        """The top-level entries that differ, by name (for an error message)."""
        keys = sorted(set(self.doc) | set(other.doc))
        return [k for k in keys if self.doc.get(k) != other.doc.get(k)]

    # -- the link's formats ----------------------------------------------------------------

    @property
    def targets(self) -> list[Target]:
        return [Target(t["name"], t["kind"], tuple(Memory(*m) for m in t["memories"]))
                for t in self.doc["targets"]]

    @property
    def classes(self) -> int:
        return int(self.doc["classes"])

    @property
    def binary_image(self) -> bool:
        return self.doc["image"]["encoding"] == "binary"

    @property
    def image_values(self) -> int:
        h, w, c = self.doc["image"]["shape"]
        return h * w * c

    @property
    def image_bytes(self) -> int:
        """Bytes of one image in an ``INFER`` frame."""
        n = self.image_values
        return -(-n // 8) if self.binary_image else n

    @property
    def class_bytes(self) -> int:
        return 1 if self.classes <= 256 else 2

    @property
    def score_bytes(self) -> int:
        return -(-int(self.doc["score_width"]) // 8)

    @property
    def result_bytes(self) -> int:
        """Bytes of one result in a ``RESULTS`` frame."""
        return self.class_bytes + self.classes * self.score_bytes

    @property
    def images_per_frame(self) -> int:
        """The most images one ``INFER`` frame can carry (at most 255)."""
        return max(0, min(255, (int(self.doc["max_payload"]) - 1) // self.image_bytes,
                          (int(self.doc["max_payload"]) - 3) // self.result_bytes))

    def encode_images(self, images: np.ndarray) -> list[bytes]:
        """Each image of ``images`` (8-bit ``[N, C, H, W]``) as it travels."""
        images = np.asarray(images)
        h, w, c = self.doc["image"]["shape"]
        if images.ndim != 4 or images.shape[1:] != (c, h, w):
            raise ValueError(f"images of shape {list(images.shape[1:])} do not fit the "
                             f"design's input [{c}, {h}, {w}]")
        hwc = np.moveaxis(images, 1, -1).reshape(len(images), h * w * c)
        if not self.binary_image:
            return [row.astype(np.uint8).tobytes() for row in hwc]
        bits = (hwc >= int(self.doc["image"]["threshold"])).astype(np.uint8)
        return [np.packbits(row, bitorder="little").tobytes() for row in bits]

    def decode_results(self, payload: bytes) -> tuple[np.ndarray, np.ndarray]:
        """``(scores int64 [n, classes], classes int64 [n])`` of a ``RESULTS`` payload's
        results (after its CRC and count)."""
        rb = self.result_bytes
        if len(payload) % rb:
            raise ValueError(f"{len(payload)} result bytes are not whole results of {rb}")
        n = len(payload) // rb
        scores = np.empty((n, self.classes), np.int64)
        classes = np.empty(n, np.int64)
        cb, sb = self.class_bytes, self.score_bytes
        for i in range(n):
            r = payload[i * rb:(i + 1) * rb]
            classes[i] = int.from_bytes(r[:cb], "little")
            for c in range(self.classes):
                scores[i, c] = int.from_bytes(r[cb + c * sb:cb + (c + 1) * sb], "little",
                                              signed=True)
        return scores, classes

    def encode_result(self, scores: Iterable[int], cls: int) -> bytes:
        """One result as the board sends it (the inverse of ``decode_results``)."""
        out = int(cls).to_bytes(self.class_bytes, "little")
        return out + b"".join(int(s).to_bytes(self.score_bytes, "little", signed=True)
                              for s in scores)

    # -- weights ---------------------------------------------------------------------------

    def target_beats(self, graph: ir.Graph, index: int) -> list[int]:
        """The configuration beats writing ``graph``'s values into target ``index``."""
        target = self.targets[index]
        folds = self.doc["folding"]
        if target.kind == "classes":
            last: ir.Dense = graph.nodes[-1]  # type: ignore[assignment]
            sb, ob = self.doc["class_map"]
            lo, hi = -(1 << (ob - 1)), (1 << (ob - 1)) - 1
            if int(last.class_offset.min()) < lo or int(last.class_offset.max()) > hi:
                raise ValueError(f"{last.name}: class offsets do not fit {ob} bits")
            if int(last.class_scale.max()) >= 1 << sb:
                raise ValueError(f"{last.name}: class multipliers do not fit {sb} bits")
            words = [int(m) | ((int(b) & ((1 << ob) - 1)) << sb)
                     for m, b in zip(last.class_scale, last.class_offset)]
            (mem,) = target.memories
            return cfg_beats(mem.sel, words, mem.width)
        if target.kind == "dram":
            image: list[int] = []
            for name in self.doc["dram"]:
                image += tiled_shape(graph[name], Fold(**folds[name])).dram_image(
                    graph[name].weights)
            return cfg_beats(int(MemSel.WEIGHTS), image, DRAM_WORD_BITS)
        node = graph[target.name]
        fold = folds[target.name]
        pe, simd = fold["pe"], fold["simd"]
        if "tile_rows" in fold:
            if not node.thresholded:
                return []
            shape = tiled_shape(node, Fold(**fold))
            table = shape.tile_table(np.clip(node.thresholds, node.threshold_min,
                                             node.threshold_max))
            return cfg_beats(int(MemSel.THRESHOLDS), table_words(table, pe,
                                                                 node.threshold_bits),
                             pe * node.threshold_bits)
        beats = cfg_beats(int(MemSel.WEIGHTS), matrix_words(node.weights, pe, simd), pe * simd)
        if node.thresholded:
            beats += cfg_beats(int(MemSel.THRESHOLDS), threshold_table_words(node, pe),
                               pe * node.out_levels * node.threshold_bits)
        if node.gated:
            beats += cfg_beats(int(MemSel.GATES), gate_table_words(node, pe),
                               pe * (node.gate_bits + 1))
        return beats
