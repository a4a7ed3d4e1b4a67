"""Beat formats of the network top, shared by the generator and the host.

A ``BeatLayout`` lists the fields of a stream payload in order, LSB first; an array field
holds ``count`` elements of ``width`` bits, element ``i`` at bits ``[i * width, (i + 1) *
width)`` of the field, two's complement when ``signed``. ``rtl_gen`` builds its port
layouts from these same objects (``rtl_gen.block.struct_layout``), so the packing here
(``const``) and the unpacking (``from_bits``) follow every change of a port; the tests
compare both with Amaranth's own ``Layout.const``. Torch-free and amaranth-free.

The top's formats (``TopFormat``):

- input, ``k`` pixels per beat (``pixels_per_beat``, 1 by default; HWC order, row-major
  pixels, so a beat holds ``k * C`` consecutive pixel channels, element ``i`` of the beat
  being channel ``i % C`` of its ``i // C``-th pixel): ``data`` (``k * C`` values of 8
  bits), ``first`` (on the image's first beat), ``last`` (on its last); ``k`` divides the
  pixels of an image;
- output, one beat per image: ``scores`` (one signed dot product per class) and
  ``argmax`` (the class: first index of the largest integer logit);
- a network truncated after a node (``rtl_gen.network.NetworkParams.until``) emits that
  node's output as beats of ``per_beat`` elements (``elements_layout``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import numerics as nx
from .validate import ParameterError, integer

__all__ = ["CFG_BEAT", "BeatLayout", "Field", "TopFormat", "element_beats", "elements_layout"]


@dataclass(frozen=True)
class Field:
    """One field: ``count`` elements of ``width`` bits (a scalar when ``count`` is 1)."""

    name: str
    width: int
    count: int = 1
    signed: bool = False

    def __post_init__(self) -> None:
        integer(f"field {self.name!r}", "width", self.width, 1)
        integer(f"field {self.name!r}", "count", self.count, 1)

    @property
    def size(self) -> int:
        return self.width * self.count


class BeatLayout:
    """An ordered set of fields packed LSB first (see the module docstring)."""

    def __init__(self, *fields: Field):
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise ParameterError(f"beat layout: field names repeat in {names}")
        self.fields = tuple(fields)
        self._offsets: dict[str, int] = {}
        offset = 0
        for f in fields:
            self._offsets[f.name] = offset
            offset += f.size
        self.size = offset

    def __repr__(self) -> str:
        return f"BeatLayout({', '.join(f'{f.name}: {f.count}x{f.width}' for f in self.fields)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BeatLayout) and self.fields == other.fields

    __hash__ = None  # type: ignore[assignment]

    def offset(self, name: str) -> int:
        return self._offsets[name]

    def const(self, **values: Any) -> int:
        """The beat holding ``values`` (missing fields are 0); ``ValueError`` for an unknown
        field or a value that does not fit."""
        unknown = set(values) - set(self._offsets)
        if unknown:
            raise ParameterError(f"{self!r} has no field {min(unknown)!r}")
        beat = 0
        for f in self.fields:
            if f.name not in values:
                continue
            items = values[f.name]
            items = [items] if f.count == 1 and np.ndim(items) == 0 else list(
                np.asarray(items).reshape(-1))
            if len(items) != f.count:
                raise ParameterError(f"field {f.name!r} holds {f.count} elements, not "
                                     f"{len(items)}")
            lo, hi = (-(1 << (f.width - 1)), (1 << (f.width - 1)) - 1) if f.signed \
                else (0, (1 << f.width) - 1)
            mask = (1 << f.width) - 1
            for i, v in enumerate(items):
                v = int(v)
                if not lo <= v <= hi:
                    raise ParameterError(f"field {f.name!r}: {v} does not fit {f.width} "
                                         f"{'signed ' if f.signed else ''}bits")
                beat |= (v & mask) << (self._offsets[f.name] + i * f.width)
        return beat

    def from_bits(self, beat: int) -> dict[str, Any]:
        """The fields of ``beat``: an ``int`` for a scalar, an int64 array for an array."""
        beat = int(beat)
        out: dict[str, Any] = {}
        for f in self.fields:
            mask = (1 << f.width) - 1
            items = []
            for i in range(f.count):
                v = (beat >> (self._offsets[f.name] + i * f.width)) & mask
                if f.signed and v >> (f.width - 1):
                    v -= 1 << f.width
                items.append(v)
            out[f.name] = items[0] if f.count == 1 else np.array(items, dtype=np.int64)
        return out


CFG_BEAT = BeatLayout(Field("data", 32), Field("chunk", 10), Field("addr", 20), Field("sel", 2))
"""A configuration beat of a block's memories (``rtl_gen.weight_memory``): 32 data bits,
the 32-bit chunk of the word they go to, the word address, the memory select."""


def elements_layout(per_beat: int, elem_width: int) -> BeatLayout:
    """Beats of ``per_beat`` unsigned elements of ``elem_width`` bits."""
    return BeatLayout(Field("data", elem_width, per_beat))


@dataclass(frozen=True)
class TopFormat:
    """The formats of a network top with ``channels``-channel pixels, ``height x width``
    pixels per image, ``pixels_per_beat`` of them per input beat, and ``classes`` scores of
    ``score_width`` bits."""

    height: int
    width: int
    channels: int
    classes: int
    score_width: int
    pixels_per_beat: int = 1

    def __post_init__(self) -> None:
        for what in ("height", "width", "channels", "classes", "score_width"):
            integer("top format", what, getattr(self, what), 1)
        k = integer("top format", "pixels_per_beat", self.pixels_per_beat, 1)
        if self.pixels % k:
            raise ParameterError(f"top format: pixels_per_beat must divide the {self.pixels} "
                                 f"pixels of an image, not {k}")

    @classmethod
    def for_graph(cls, graph: Any, pixels_per_beat: int = 1) -> TopFormat:
        """The formats of the top of a lowered ``bnnhw.ir.Graph``."""
        h, w, c = graph.input.in_shape
        return cls(h, w, c, graph.classes, graph.nodes[-1].dot_bits, pixels_per_beat)

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def beats_per_image(self) -> int:
        """Input beats per image: ``pixels / pixels_per_beat``."""
        return self.pixels // self.pixels_per_beat

    @property
    def in_layout(self) -> BeatLayout:
        return BeatLayout(Field("data", nx.PIXEL_BITS, self.channels * self.pixels_per_beat),
                          Field("first", 1), Field("last", 1))

    @property
    def out_layout(self) -> BeatLayout:
        return BeatLayout(Field("scores", self.score_width, self.classes, signed=True),
                          Field("argmax", nx.index_bits(self.classes)))

    def image_beats(self, images: np.ndarray) -> list[int]:
        """Input beats of ``images`` (8-bit ``[N, C, H, W]``), framing flags included."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (self.channels, self.height, self.width):
            raise ParameterError(f"images of shape {list(images.shape)[1:]} do not match "
                                 f"the model input [{self.channels}, {self.height}, "
                                 f"{self.width}]")
        n, beats = images.shape[0], self.beats_per_image
        pixels = np.moveaxis(images, 1, -1).reshape(n, beats, -1)
        layout, last = self.in_layout, beats - 1
        return [layout.const(data=px, first=int(i == 0), last=int(i == last))
                for img in pixels for i, px in enumerate(img)]

    def result_beat(self, scores: Sequence[int], argmax: int) -> int:
        """The output beat of one image."""
        return self.out_layout.const(scores=scores, argmax=argmax)

    def decode_result(self, beat: int) -> tuple[np.ndarray, int]:
        """``(scores int64 [classes], argmax)`` of one output beat."""
        fields = self.out_layout.from_bits(beat)
        scores = fields["scores"]
        if self.classes == 1:
            scores = np.array([scores], dtype=np.int64)
        return scores, int(fields["argmax"])


def element_beats(values: Iterable[Any], per_beat: int, elem_width: int) -> list[int]:
    """Beats of ``values[N, ...]`` (each image flattened, HWC) cut ``per_beat`` elements a
    beat."""
    layout = elements_layout(per_beat, elem_width)
    out = []
    for img in values:
        flat = np.asarray(img).reshape(-1)
        if len(flat) % per_beat:
            raise ParameterError(f"{len(flat)} elements do not split into beats of "
                                 f"{per_beat}")
        out += [layout.const(data=flat[i:i + per_beat]) for i in range(0, len(flat), per_beat)]
    return out
