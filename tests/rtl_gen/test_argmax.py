"""Argmax against ``torch.argmax``: random class counts and folds, many ties, extreme
signed scores, images back to back, random stalls."""

import random
from itertools import pairwise

import numpy as np
import pytest
import torch
from amaranth.back import verilog
from stream_helpers import output_cycles

import rtl_gen.argmax
from bnnhw.packing import beats
from rtl_gen.argmax import Argmax, ArgmaxParams
from sim.stream_sim import run_stream


def scores(params, images, rng):
    """Signed scores drawn from a few values (ties are common) including both extremes."""
    lo, hi = -(1 << (params.width - 1)), (1 << (params.width - 1)) - 1
    pool = np.unique(np.concatenate([[lo, hi, 0, -1], rng.integers(lo, hi + 1, 3)]))
    return rng.choice(pool, (images, params.classes))


def check(params, images=12, seed=0, dut=None, stall=0.3):
    """``(hardware indices, torch.argmax indices)`` for ``images`` random score vectors."""
    rng = np.random.default_rng(seed)
    s = scores(params, images, rng)
    expected = torch.argmax(torch.from_numpy(s), dim=1).tolist()
    got = run_stream(dut or Argmax(params), beats(s.reshape(-1), params.pe, params.width),
                     len(expected), seed=seed, stall_in=stall, stall_out=stall)
    return got, expected


def test_torch_argmax_takes_the_first_maximum():
    # the tie rule the block follows, checked on the installed torch
    assert torch.argmax(torch.tensor([1, 7, 3, 7, 7])).item() == 1
    assert torch.argmax(torch.tensor([[-4, -4], [2, 2]]), dim=1).tolist() == [0, 0]


@pytest.mark.parametrize("seed", range(8))
def test_random_params_match_torch(seed):
    rng = random.Random(seed)
    classes = rng.choice([1, 2, 3, 5, 10, 12])
    pe = rng.choice([d for d in range(1, classes + 1) if classes % d == 0])
    p = ArgmaxParams(classes, rng.choice([2, 4, 9, 16]), pe)
    got, expected = check(p, seed=seed)
    assert got == expected, p


def test_one_image_per_fold():
    p = ArgmaxParams(10, 8, pe=2)
    s = scores(p, 4, np.random.default_rng(0))
    stamps, got = output_cycles(Argmax(p), beats(s.reshape(-1), p.pe, p.width), 4)
    assert got == torch.argmax(torch.from_numpy(s), dim=1).tolist()
    assert [b - a for a, b in pairwise(stamps)] == [p.cycles_per_image] * 3
    assert stamps[0] == p.fold            # last score beat accepted at cycle fold - 1


def test_ties_to_the_last_index_are_caught(monkeypatch):
    """Planted fault: a later score equal to the best replaces it."""
    monkeypatch.setattr(rtl_gen.argmax, "_better", lambda a, b: a >= b)
    p = ArgmaxParams(10, 4, pe=2)
    got, expected = check(p, seed=4)
    assert got != expected


def test_params_are_validated():
    with pytest.raises(ValueError, match="head: pe must divide the 10 classes, not 4"):
        ArgmaxParams(10, 8, pe=4, name="head")
    with pytest.raises(ValueError, match="width must be an integer >= 1, not 0"):
        ArgmaxParams(10, 0)
    assert ArgmaxParams(10, 8).index_width == 4
    assert ArgmaxParams(1, 8).index_width == 1


def test_converts_to_verilog():
    assert "module head" in verilog.convert(Argmax(ArgmaxParams(10, 12, pe=5)), name="head")
