"""bnnhw.reference against independent slow formulations (loops, float convolutions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnnhw import reference as ref
from bnnhw.nn import thermometer_thresholds

# Each check_* runs one reference function over seeded random cases and compares it,
# exactly, with a formulation that shares no code with it. The planted-fault test at the
# end shows each of them rejects a wrong implementation.


def check_encode(encode) -> None:
    rng = np.random.default_rng(1)
    for _ in range(8):
        h, w, c = rng.integers(1, 6, size=3)
        px = rng.integers(0, 256, size=(2, h, w, c)).astype(np.uint8)
        px[0, 0, 0, 0] = 128  # exercise the >= edge of the default threshold
        thr, levels = int(rng.integers(0, 256)), int(rng.integers(1, 9))
        binary = np.zeros((2, h, w, c), np.int64)
        therm = np.zeros((2, h, w, c * levels), np.int64)
        levels_t = thermometer_thresholds(levels)
        for idx in np.ndindex(px.shape):
            binary[idx] = int(px[idx]) >= thr
            for k in range(levels):
                therm[idx[:-1] + (idx[-1] * levels + k,)] = int(px[idx]) >= levels_t[k]
        got = encode(px, "binary", threshold=thr)
        assert got.dtype == torch.int64 and np.array_equal(got.numpy(), binary)
        assert np.array_equal(encode(px, "thermometer", levels=levels).numpy(), therm)
        assert np.array_equal(encode(px, "uint8").numpy(), px.astype(np.int64))


def check_sliding_window(sliding_window) -> None:
    rng = np.random.default_rng(2)
    for _ in range(12):
        k, s, p = int(rng.integers(1, 5)), int(rng.integers(1, 3)), int(rng.integers(0, 3))
        h, w = (int(v) for v in rng.integers(max(1, k - 2 * p), 7, size=2))
        c, pv = int(rng.integers(1, 4)), int(rng.integers(0, 2))
        x = rng.integers(0, 256, size=(2, h, w, c))
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        want = np.zeros((2, oh, ow, k * k * c), np.int64)
        for n in range(2):
            for oy in range(oh):
                for ox in range(ow):
                    col = 0
                    for ky in range(k):
                        for kx in range(k):
                            for ch in range(c):
                                iy, ix = oy * s + ky - p, ox * s + kx - p
                                inside = 0 <= iy < h and 0 <= ix < w
                                want[n, oy, ox, col] = x[n, iy, ix, ch] if inside else pv
                                col += 1
        got = sliding_window(x, k, s, p, pv)
        assert got.dtype == torch.int64 and np.array_equal(got.numpy(), want), (k, s, p, h, w)


def check_popcount_matvec(popcount_matvec) -> None:
    rng = np.random.default_rng(3)
    for _ in range(8):
        c, r = int(rng.integers(1, 80)), int(rng.integers(1, 9))
        x = rng.integers(0, 2, size=(3, 2, c))
        w = rng.integers(0, 2, size=(r, c))
        want = np.zeros((3, 2, r), np.int64)
        for idx in np.ndindex(3, 2):
            for row in range(r):
                want[idx + (row,)] = sum(int(x[idx + (i,)] == w[row, i]) for i in range(c))
        got = popcount_matvec(torch.from_numpy(x), w)
        assert got.dtype == torch.int64 and np.array_equal(got.numpy(), want)


def check_signed_matvec(signed_matvec) -> None:
    rng = np.random.default_rng(4)
    for big in (False, True):
        c, r = int(rng.integers(1, 60)), int(rng.integers(1, 9))
        x = rng.integers(-(2**40) if big else 0, 2**40 if big else 256, size=(2, c))
        w = rng.integers(0, 2, size=(r, c))
        want = np.array([[sum(int(x[n, i]) * (2 * int(w[row, i]) - 1) for i in range(c))
                          for row in range(r)] for n in range(2)], dtype=np.int64)
        got = signed_matvec(x, w)
        assert got.dtype == torch.int64 and np.array_equal(got.numpy(), want)


def check_threshold(threshold) -> None:
    rng = np.random.default_rng(5)
    for _ in range(6):
        oh, ow, r = (int(v) for v in rng.integers(1, 6, size=3))
        ny, nx = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        acc = rng.integers(-20, 20, size=(2, oh, ow, r))
        t = rng.integers(-21, 22, size=(ny, nx, r))
        rc, cc = rng.integers(0, ny, size=oh), rng.integers(0, nx, size=ow)
        want = np.zeros_like(acc)
        for n, oy, ox, row in np.ndindex(acc.shape):
            want[n, oy, ox, row] = acc[n, oy, ox, row] >= t[rc[oy], cc[ox], row]
        assert np.array_equal(threshold(acc, t, rc, cc).numpy(), want)
        dense = acc[:, 0, 0, :]
        want_dense = np.array([[int(dense[n, row] >= t[0, 0, row]) for row in range(r)]
                               for n in range(2)])
        assert np.array_equal(threshold(dense, t[:1, :1]).numpy(), want_dense)
        assert np.array_equal(threshold(dense, t[0, 0]).numpy(), want_dense)


def check_maxpool(maxpool) -> None:
    rng = np.random.default_rng(6)
    for _ in range(8):
        k, s = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        h, w = (int(v) for v in rng.integers(k, 8, size=2))
        c = int(rng.integers(1, 7))
        # sparse and dense bit maps so both OR and AND outputs take both values
        x = (rng.random((2, h, w, c)) < rng.choice([0.15, 0.85])).astype(np.int64)
        mask = rng.integers(0, 2, size=c)
        # float max-pool on +-1 values (NCHW), AND as -max(-x)
        pm = torch.from_numpy(2.0 * x - 1).permute(0, 3, 1, 2)
        or_ = F.max_pool2d(pm, k, s)
        and_ = -F.max_pool2d(-pm, k, s)
        pooled = torch.where(torch.from_numpy(mask).bool().view(1, -1, 1, 1), and_, or_)
        want = ((pooled.permute(0, 2, 3, 1) + 1) / 2).to(torch.int64).numpy()
        assert np.array_equal(maxpool(x, k, s, mask).numpy(), want)
        assert np.array_equal(maxpool(x, k, s).numpy(),
                              ((or_.permute(0, 2, 3, 1) + 1) / 2).to(torch.int64).numpy())


def check_multi_threshold(multi_threshold) -> None:
    """Codes against a loop over the levels, and against the quantisation of the real value
    ``acc / 3`` (thresholds -2, 0, 2 on ``acc``: the levels -2/3, 0, 2/3)."""
    rng = np.random.default_rng(9)
    for _ in range(6):
        oh, ow, r = (int(v) for v in rng.integers(1, 6, size=3))
        ny, nx = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        acc = rng.integers(-12, 12, size=(2, oh, ow, r))
        t = np.sort(rng.integers(-13, 14, size=(ny, nx, r, 3)), axis=-1)
        t[0, 0, 0] = [acc[0, 0, 0, 0]] * 3  # ties: the code jumps from 0 to 3 on T
        rc, cc = rng.integers(0, ny, size=oh), rng.integers(0, nx, size=ow)
        want = np.zeros_like(acc)
        for n, oy, ox, row in np.ndindex(acc.shape):
            for k in range(3):
                want[n, oy, ox, row] += acc[n, oy, ox, row] >= t[rc[oy], cc[ox], row, k]
        assert np.array_equal(multi_threshold(acc, t, rc, cc).numpy(), want)
        dense = acc[:, 0, 0, :]
        want_dense = np.array([[sum(int(dense[n, row] >= t[0, 0, row, k]) for k in range(3))
                                for row in range(r)] for n in range(2)])
        assert np.array_equal(multi_threshold(dense, t[:1, :1]).numpy(), want_dense)
        assert np.array_equal(multi_threshold(dense, t[0, 0]).numpy(), want_dense)
    acc = np.arange(-9, 10)
    levels = np.array([-3, -1, 1, 3])  # -1, -1/3, 1/3, 1 in thirds, exact
    nearest = [int(np.flatnonzero(np.abs(levels - a) == np.abs(levels - a).min())[-1])
               for a in np.clip(acc, -3, 3)]  # ties go up
    got = multi_threshold(acc[:, None], np.array([[-2, 0, 2]])).numpy()[:, 0]
    assert np.array_equal(got, nearest)


def check_maxpool_codes(maxpool) -> None:
    """2-bit codes: the max (min on AND channels) over each window, by loops."""
    rng = np.random.default_rng(10)
    for _ in range(8):
        k, s = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        h, w = (int(v) for v in rng.integers(k, 8, size=2))
        c = int(rng.integers(1, 7))
        x = rng.choice(4, size=(2, h, w, c), p=rng.dirichlet(np.ones(4)))
        x[0, :k, :k, 0] = rng.choice([1, 2], size=(k, k))  # codes 1 and 2 meet
        mask = rng.integers(0, 2, size=c)
        oh, ow = (h - k) // s + 1, (w - k) // s + 1
        want = np.zeros((2, oh, ow, c), np.int64)
        for n, oy, ox, ch in np.ndindex(want.shape):
            win = x[n, oy * s:oy * s + k, ox * s:ox * s + k, ch]
            want[n, oy, ox, ch] = win.min() if mask[ch] else win.max()
        assert np.array_equal(maxpool(x, k, s, mask, element_bits=2).numpy(), want)


def check_conv_as_window_popcount(sliding_window, popcount_matvec) -> None:
    """A binary conv via windows + popcount equals torch's float conv on +-1 values."""
    rng = np.random.default_rng(7)
    for _ in range(6):
        k, s, p = int(rng.integers(1, 6)), int(rng.integers(1, 3)), int(rng.integers(0, 3))
        h, w = (int(v) for v in rng.integers(max(1, k - 2 * p), 9, size=2))
        c, r, pad = int(rng.integers(1, 6)), int(rng.integers(1, 7)), int(rng.integers(0, 2))
        x = rng.integers(0, 2, size=(2, h, w, c))
        wt = rng.integers(0, 2, size=(r, k * k * c))  # (ky, kx, c) column order
        xf = torch.from_numpy(2.0 * x - 1).permute(0, 3, 1, 2)
        xf = F.pad(xf, (p,) * 4, value=2.0 * pad - 1)
        wf = torch.from_numpy(2.0 * wt - 1).view(r, k, k, c).permute(0, 3, 1, 2)
        dot = F.conv2d(xf, wf, stride=s).permute(0, 2, 3, 1)
        want = ((dot + k * k * c) / 2).to(torch.int64).numpy()
        got = popcount_matvec(sliding_window(x, k, s, p, pad), wt)
        assert np.array_equal(got.numpy(), want)


CHECKS = {
    "encode": (check_encode, ("encode",)),
    "sliding_window": (check_sliding_window, ("sliding_window",)),
    "popcount_matvec": (check_popcount_matvec, ("popcount_matvec",)),
    "signed_matvec": (check_signed_matvec, ("signed_matvec",)),
    "threshold": (check_threshold, ("threshold",)),
    "maxpool": (check_maxpool, ("maxpool",)),
    "conv": (check_conv_as_window_popcount, ("sliding_window", "popcount_matvec")),
    "multi_threshold": (check_multi_threshold, ("multi_threshold",)),
    "maxpool_codes": (check_maxpool_codes, ("maxpool",)),
}


@pytest.mark.parametrize("name", CHECKS)
def test_reference_matches_slow_formulation(name):
    check, funcs = CHECKS[name]
    check(*(getattr(ref, f) for f in funcs))


def _plant(func, fault):
    """Wrap ``func`` so its output is damaged by ``fault`` (one element changed)."""
    def faulty(*args, **kwargs):
        return fault(func(*args, **kwargs).clone())
    return faulty


def _flip_last(out):
    out.view(-1)[-1] ^= 1
    return out


def _bump_first(out):
    out.view(-1)[0] += 1
    return out


def _swap_window_order(x, kernel, stride=1, padding=0, pad_value=0):
    # (kx, ky, c) instead of (ky, kx, c): a plausible ordering bug
    out = ref.sliding_window(x, kernel, stride, padding, pad_value)
    c = out.shape[-1] // (kernel * kernel)
    return out.unflatten(-1, (kernel, kernel, c)).transpose(-3, -2).flatten(-3)


def _gt_instead_of_ge(acc, t, row_class=None, col_class=None):
    bits = ref.threshold(acc, t, row_class, col_class)
    eq = ref.threshold(-torch.as_tensor(acc), -torch.as_tensor(t), row_class, col_class)
    return bits & (1 - (bits & eq))  # drop the acc == t cases


def _binary_weighted_levels(acc, t, row_class=None, col_class=None):
    # the outer comparisons read as the code's two bits: level 2 comes out as 1
    t = torch.as_tensor(t)
    return (ref.threshold(acc, t[..., 0], row_class, col_class)
            + 2 * ref.threshold(acc, t[..., 2], row_class, col_class))


def _bitwise_code_pool(x, kernel, stride=None, and_mask=None, element_bits=2):
    # each bit plane pooled on its own (OR/AND of the codes): codes 1 and 2 give 3
    x = torch.as_tensor(x)
    return (ref.maxpool(x & 1, kernel, stride, and_mask)
            + 2 * ref.maxpool(x >> 1, kernel, stride, and_mask))


FAULTS = {
    "encode": (check_encode, (_plant(ref.encode, _flip_last),)),
    "sliding_window": (check_sliding_window, (_swap_window_order,)),
    "popcount_matvec": (check_popcount_matvec, (_plant(ref.popcount_matvec, _bump_first),)),
    "signed_matvec": (check_signed_matvec, (_plant(ref.signed_matvec, _bump_first),)),
    "threshold": (check_threshold, (_gt_instead_of_ge,)),
    "maxpool": (check_maxpool, (lambda x, k, s, m=None: ref.maxpool(x, k, s, None),)),
    "conv": (check_conv_as_window_popcount, (_swap_window_order, ref.popcount_matvec)),
    "multi_threshold": (check_multi_threshold, (_binary_weighted_levels,)),
    "maxpool_codes": (check_maxpool_codes, (_bitwise_code_pool,)),
}


@pytest.mark.parametrize("name", FAULTS)
def test_checks_catch_planted_faults(name):
    check, funcs = FAULTS[name]
    with pytest.raises(AssertionError):
        check(*funcs)


def test_reference_rejects_bad_inputs():
    with pytest.raises(ValueError, match="bits 0/1"):
        ref.popcount_matvec([[2, 0]], [[1, 0]])
    with pytest.raises(ValueError, match="w\\[R, C\\]"):
        ref.popcount_matvec([[1, 0, 1]], [[1, 0]])
    with pytest.raises(ValueError, match="integer"):
        ref.sliding_window(np.zeros((3, 3, 1)), 2)
    with pytest.raises(ValueError, match="encoding"):
        ref.encode(np.zeros((2, 2, 1), np.uint8), "ternary")
    with pytest.raises(ValueError, match="larger"):
        ref.sliding_window(np.zeros((3, 3, 1), np.int64), 4)
    with pytest.raises(ValueError, match="and_mask"):
        ref.maxpool(np.zeros((4, 4, 2), np.int64), 2, 2, [1, 0, 1])
    with pytest.raises(ValueError, match="x must hold bits 0/1, found values in 3..3"):
        ref.maxpool(np.full((4, 4, 2), 3), 2)
    with pytest.raises(ValueError, match="x must hold 2-bit codes 0..3, found values in 0..4"):
        ref.maxpool(np.arange(32).reshape(4, 4, 2) % 5, 2, element_bits=2)
    with pytest.raises(ValueError, match="element_bits must be 1 or 2, not 8"):
        ref.maxpool(np.zeros((4, 4, 2), np.int64), 2, element_bits=8)
    with pytest.raises(ValueError, match=r"t\[NY, NX, R, 3\] or t\[R, 3\], not shape \(2, 2\)"):
        ref.multi_threshold(np.zeros((3, 2), np.int64), np.zeros((2, 2), np.int64))


def test_batch_dims_and_inputs_types_agree():
    rng = np.random.default_rng(8)
    x = rng.integers(0, 2, size=(2, 3, 5, 5, 4))
    w = rng.integers(0, 2, size=(6, 36))
    batched = ref.popcount_matvec(ref.sliding_window(x, 3, 1, 1, 1), w)
    single = ref.popcount_matvec(ref.sliding_window(torch.from_numpy(x[1, 2]), 3, 1, 1, 1), w)
    assert torch.equal(batched[1, 2], single)
