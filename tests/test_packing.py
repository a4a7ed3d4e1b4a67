"""bnnhw.packing: round trips, and the documented layout checked element by element."""

from __future__ import annotations

import numpy as np
import pytest

from bnnhw import packing

RNG = np.random.default_rng(0)


def _values(count, width, signed):
    lo, hi = (-(1 << (width - 1)), 1 << (width - 1)) if signed else (0, 1 << width)
    return RNG.integers(lo, hi, size=count)


def _pack_by_string(values, width):
    """Independent packing: element 0 is the rightmost (least significant) bit field."""
    mask = (1 << width) - 1
    text = "".join(format(int(v) & mask, f"0{width}b") for v in reversed(list(values)))
    return int(text, 2) if text else 0


@pytest.mark.parametrize("width", [1, 2, 3, 7, 8, 9, 16])
@pytest.mark.parametrize("signed", [False, True])
def test_pack_layout_and_round_trip(width, signed):
    for count in (0, 1, 5, 33):
        v = _values(count, width, signed)
        word = packing.pack(v, width)
        assert word == _pack_by_string(v, width)
        assert np.array_equal(packing.unpack(word, count, width, signed), v)


def test_unpack_field_by_field():
    word = 0b1011_0010_1111
    assert packing.unpack(word, 3, 4).tolist() == [0b1111, 0b0010, 0b1011]
    assert packing.unpack(word, 3, 4, signed=True).tolist() == [-1, 2, -5]


def test_beats():
    v = RNG.integers(0, 256, size=24)
    got = packing.beats(v, 6, 8)
    assert got == [_pack_by_string(v[i:i + 6], 8) for i in range(0, 24, 6)]
    with pytest.raises(ValueError, match="24 elements do not split into beats of 5"):
        packing.beats(v, 5, 8)


def test_chw_to_hwc():
    x = RNG.integers(0, 9, size=(2, 3, 4, 5))
    y = packing.chw_to_hwc(x)
    assert y.shape == (2, 4, 5, 3)
    for n, c, h, w in np.ndindex(x.shape):
        assert y[n, h, w, c] == x[n, c, h, w]


def _check_fold_matrix(words, w, pe, simd, width):
    """Element (nf*pe + i, sf*simd + j) sits in word nf*SF + sf at element offset i*simd + j."""
    rows, cols = w.shape
    nf_count, sf_count = rows // pe, cols // simd
    assert len(words) == nf_count * sf_count
    mask = (1 << width) - 1
    for r, c in np.ndindex(w.shape):
        nf, i = divmod(r, pe)
        sf, j = divmod(c, simd)
        field = (words[nf * sf_count + sf] >> ((i * simd + j) * width)) & mask
        assert field == int(w[r, c]) & mask, (r, c)


@pytest.mark.parametrize(("rows", "cols", "pe", "simd", "width"), [
    (4, 6, 1, 1, 1), (4, 6, 2, 3, 1), (6, 8, 3, 4, 1), (8, 12, 8, 12, 1), (4, 6, 2, 2, 8),
])
def test_fold_matrix_layout_and_round_trip(rows, cols, pe, simd, width):
    w = RNG.integers(0, 1 << width, size=(rows, cols))
    words = packing.matrix_words(w, pe, simd, width)
    _check_fold_matrix(words, w, pe, simd, width)
    assert np.array_equal(packing.words_to_matrix(words, rows, cols, pe, simd, width), w)


def test_fold_matrix_signed_round_trip():
    w = RNG.integers(-8, 8, size=(6, 4))
    words = packing.matrix_words(w, 3, 2, 4)
    assert np.array_equal(packing.words_to_matrix(words, 6, 4, 3, 2, 4, signed=True), w)


def _check_fold_table(words, t, pe, width):
    """Entry (class, nf*pe + i) sits in word class*NF + nf at element offset i (signed)."""
    flat = t.reshape(-1, t.shape[-1])
    nf_count = flat.shape[1] // pe
    mask = (1 << width) - 1
    for cls, r in np.ndindex(flat.shape):
        nf, i = divmod(r, pe)
        field = (words[cls * nf_count + nf] >> (i * width)) & mask
        assert field == int(flat[cls, r]) & mask, (cls, r)


@pytest.mark.parametrize("shape", [(6,), (1, 1, 6), (3, 2, 6)])
@pytest.mark.parametrize("pe", [1, 2, 3, 6])
def test_fold_table_layout_and_round_trip(shape, pe):
    t = RNG.integers(-50, 50, size=shape)
    words = packing.table_words(t, pe, 7)
    _check_fold_table(words, t, pe, 7)
    assert np.array_equal(packing.words_to_table(words, shape, pe, 7, signed=True), t)


def test_fold_errors_name_the_problem():
    with pytest.raises(ValueError, match="pe must divide the 6 output channels, not 4"):
        packing.matrix_words(np.zeros((6, 4), np.int64), 4, 1)
    with pytest.raises(ValueError, match="simd must divide the 4 inputs, not 3"):
        packing.matrix_words(np.zeros((6, 4), np.int64), 2, 3)
    with pytest.raises(ValueError, match="conv3: pe must be a positive integer, not 0"):
        packing.fold_counts(6, 4, 0, 1, "conv3")
    with pytest.raises(ValueError, match="pe must divide the 5 output channels"):
        packing.table_words(np.zeros(5, np.int64), 2, 4)


def test_layout_checkers_catch_planted_faults():
    w = RNG.integers(0, 2, size=(4, 6))
    words = packing.matrix_words(w, 2, 3)
    with pytest.raises(AssertionError):  # PE order reversed inside each word
        _check_fold_matrix(packing.matrix_words(w[[1, 0, 3, 2]], 2, 3), w, 2, 3, 1)
    with pytest.raises(AssertionError):  # synapse folds stored before neuron folds
        sf_major = [words[nf * 2 + sf] for sf in range(2) for nf in range(2)]
        _check_fold_matrix(sf_major, w, 2, 3, 1)
    t = RNG.integers(-50, 50, size=(2, 1, 4))
    with pytest.raises(AssertionError):  # classes in the wrong order
        _check_fold_table(packing.table_words(t[::-1], 2, 7), t, 2, 7)
    with pytest.raises(AssertionError):  # element 0 in the most significant field
        assert packing.pack([1, 0, 0], 2) == _pack_by_string([0, 0, 1], 2)
