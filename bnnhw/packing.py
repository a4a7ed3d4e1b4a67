"""Bit packing shared by the golden model, the RTL generators and the host.

Conventions (docs/architecture.md, "Numeric conventions"):

- element ``i`` of a vector occupies bits ``[i * width, (i + 1) * width)`` of its word
  (LSB first); signed elements are two's complement;
- feature maps stream in HWC order (row, column, channel; channel innermost);
- a weight matrix ``W[R, C]`` folded onto ``pe`` rows and ``simd`` columns has
  ``NF = R / pe`` neuron folds and ``SF = C / simd`` synapse folds; PE ``i`` computes rows
  ``nf * pe + i``; the memory word at address ``nf * SF + sf`` holds, for each PE ``i``,
  the ``simd`` elements ``W[nf * pe + i, sf * simd : (sf + 1) * simd]`` at element offset
  ``i * simd``;
- a per-row table ``T[..., R]`` (thresholds, with optional leading class axes) folded onto
  ``pe`` has one word per ``(class, nf)`` at address ``class * NF + nf``, PE ``i``'s entry
  at element offset ``i``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence

import numpy as np

from .beats import CFG_BEAT
from .validate import divides

CFG_DATA_BITS = CFG_BEAT.fields[0].width    # 32 data bits per configuration beat
CFG_CHUNK_BITS = CFG_BEAT.fields[1].width
CFG_ADDR_BITS = CFG_BEAT.fields[2].width
CFG_SEL_BITS = CFG_BEAT.fields[3].width


class MemSel(enum.IntEnum):
    """Memory select field of a configuration beat (``rtl_gen.weight_memory``)."""

    WEIGHTS = 0
    THRESHOLDS = 1
    CLASSES = 2      # the classifier's integer class map (``rtl_gen.classify``)
    GATES = 3        # a precision-gated unit's gate thresholds (``rtl_gen.gated_mvtu``)


def cfg_word(sel: int, addr: int, chunk: int, value: int) -> int:
    """One configuration beat: ``value`` (32 bits) as chunk ``chunk`` of word ``addr`` of
    memory ``sel``."""
    try:
        return CFG_BEAT.const(data=value, chunk=chunk, addr=addr, sel=sel)
    except ValueError as e:
        raise ValueError(f"cfg beat: {e}") from None


def cfg_beats(sel: int, words: Sequence[int], width: int, base: int = 0) -> list[int]:
    """Configuration beats writing ``words`` (``width`` bits each) at ``base, ...``."""
    chunks = -(-width // CFG_DATA_BITS)
    mask = (1 << CFG_DATA_BITS) - 1
    return [cfg_word(sel, base + a, c, (int(w) >> (c * CFG_DATA_BITS)) & mask)
            for a, w in enumerate(words) for c in range(chunks)]


def pack(values: Iterable[int], width: int = 1) -> int:
    """Pack integers (``width`` bits each, two's complement if negative), element 0 first."""
    mask = (1 << width) - 1
    word = 0
    for i, v in enumerate(values):
        word |= (int(v) & mask) << (i * width)
    return word


def unpack(word: int, count: int, width: int = 1, signed: bool = False) -> np.ndarray:
    """Inverse of ``pack``: ``count`` elements of ``width`` bits as an int64 array."""
    mask = (1 << width) - 1
    out = np.empty(count, dtype=np.int64)
    for i in range(count):
        v = (int(word) >> (i * width)) & mask
        if signed and v >> (width - 1):
            v -= 1 << width
        out[i] = v
    return out


def beats(values: Iterable[int], per_beat: int, width: int = 1) -> list[int]:
    """Cut a flat element sequence into stream beats of ``per_beat`` elements each."""
    values = [int(v) for v in values]
    if len(values) % per_beat:
        raise ValueError(f"{len(values)} elements do not split into beats of {per_beat}")
    return [pack(values[i:i + per_beat], width) for i in range(0, len(values), per_beat)]


def chw_to_hwc(x: np.ndarray) -> np.ndarray:
    """Reorder a ``[C, H, W]`` (or ``[N, C, H, W]``) array to HWC order."""
    return np.moveaxis(np.asarray(x), -3, -1)


def fold_counts(rows: int, cols: int, pe: int, simd: int, name: str = "layer") -> tuple[int, int]:
    """``(NF, SF)`` of a ``rows x cols`` matrix on ``pe x simd``; ``ParameterError`` (a
    ``ValueError``) if uneven."""
    divides(name, "pe", pe, rows, "output channels")
    divides(name, "simd", simd, cols, "inputs")
    return rows // pe, cols // simd


def matrix_words(w: np.ndarray, pe: int, simd: int, width: int = 1) -> list[int]:
    """Memory words of ``w[R, C]`` folded onto ``pe x simd`` (see the module docstring)."""
    w = np.asarray(w)
    nf, sf = fold_counts(w.shape[0], w.shape[1], pe, simd)
    words = []
    for n in range(nf):
        for s in range(sf):
            block = w[n * pe:(n + 1) * pe, s * simd:(s + 1) * simd]
            words.append(pack(block.reshape(-1), width))
    return words


def words_to_matrix(words: list[int], rows: int, cols: int, pe: int, simd: int,
                  width: int = 1, signed: bool = False) -> np.ndarray:
    """Inverse of ``matrix_words``."""
    nf, sf = fold_counts(rows, cols, pe, simd)
    w = np.empty((rows, cols), dtype=np.int64)
    for n in range(nf):
        for s in range(sf):
            block = unpack(words[n * sf + s], pe * simd, width, signed).reshape(pe, simd)
            w[n * pe:(n + 1) * pe, s * simd:(s + 1) * simd] = block
    return w


def table_words(t: np.ndarray, pe: int, width: int) -> list[int]:
    """Memory words of a per-row table ``t[..., R]`` folded onto ``pe`` PEs."""
    t = np.asarray(t)
    rows = t.shape[-1]
    nf, _ = fold_counts(rows, 1, pe, 1)
    flat = t.reshape(-1, rows)
    return [pack(flat[c, n * pe:(n + 1) * pe], width)
            for c in range(flat.shape[0]) for n in range(nf)]


def words_to_table(words: list[int], shape: tuple[int, ...], pe: int, width: int,
                 signed: bool = True) -> np.ndarray:
    """Inverse of ``table_words`` for a table of ``shape`` (last axis: rows)."""
    rows = shape[-1]
    nf, _ = fold_counts(rows, 1, pe, 1)
    classes = int(np.prod(shape[:-1], dtype=np.int64))
    out = np.empty((classes, rows), dtype=np.int64)
    for c in range(classes):
        for n in range(nf):
            out[c, n * pe:(n + 1) * pe] = unpack(words[c * nf + n], pe, width, signed)
    return out.reshape(shape)
