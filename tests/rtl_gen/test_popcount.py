# amaranth: UnusedElaboratable=no
"""Pipelined compressor-tree popcount and operand sum against the shared reference, with a
random clock enable (stalls) and random valid bits."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

import rtl_gen.popcount as popcount_mod
from bnnhw.reference import popcount_matvec, signed_matvec
from rtl_gen.popcount import OperandSum, Popcount, final_heights, tree_plan


def run_pipeline(dut, count, width, cycles, seed):
    """Drive random data/valid/en; return (inputs as [n, count] array of the enabled valid
    samples, outputs seen, expected-valid flags, observed-valid flags)."""
    rng = random.Random(seed)
    fed, seen, exp_valid, got_valid = [], [], [], []

    async def bench(ctx):
        history = []  # (valid, operands) of every enabled edge
        for _ in range(cycles):
            en = rng.random() < 0.7
            valid = rng.random() < 0.8
            ops = [rng.getrandbits(width) for _ in range(count)]
            word = sum(v << (j * width) for j, v in enumerate(ops))
            ctx.set(dut.en, en)
            ctx.set(dut.i_valid, valid)
            ctx.set(dut.i_data, word)
            await ctx.tick()
            if en:
                history.append((valid, ops))
            want = history[-dut.latency] if len(history) >= dut.latency else (False, None)
            exp_valid.append(want[0])
            got_valid.append(bool(ctx.get(dut.o_valid)))
            if want[0]:
                fed.append(want[1])
                seen.append(ctx.get(dut.o_data))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return np.array(fed, dtype=np.int64).reshape(-1, count), np.array(seen), exp_valid, got_valid


@pytest.mark.parametrize("n,levels_per_stage,fanin,seed", [
    (1, 1, 6, 0), (5, 1, 3, 1), (6, 2, 6, 2), (13, 1, 6, 3), (32, 2, 3, 4), (37, 3, 6, 5),
])
def test_popcount_matches_reference(n, levels_per_stage, fanin, seed):
    dut = Popcount(n, levels_per_stage=levels_per_stage, fanin=fanin)
    x, got, exp_valid, got_valid = run_pipeline(dut, n, 1, 150, seed)
    assert got_valid == exp_valid
    want = popcount_matvec(x, np.ones((1, n), dtype=np.int64))[:, 0].numpy()
    assert len(want) > 50
    assert np.array_equal(got, want)
    assert dut.out_width == n.bit_length()


@pytest.mark.parametrize("count,width,seed", [(3, 8, 0), (9, 8, 1), (4, 3, 2)])
def test_operand_sum_matches_reference(count, width, seed):
    dut = OperandSum(count, width, levels_per_stage=1)
    x, got, exp_valid, got_valid = run_pipeline(dut, count, width, 120, seed)
    assert got_valid == exp_valid
    want = signed_matvec(x, np.ones((1, count), dtype=np.int64))[:, 0].numpy()
    assert np.array_equal(got, want)


def test_wrong_counter_is_caught(monkeypatch):
    real = popcount_mod._counter

    def swapped(bits):  # planted fault: 6:3 counters swap their two low output bits
        outs = real(bits)
        return [outs[1], outs[0], *outs[2:]] if len(bits) == 6 else outs

    monkeypatch.setattr(popcount_mod, "_counter", swapped)
    dut = Popcount(13, levels_per_stage=1)
    x, got, _, _ = run_pipeline(dut, 13, 1, 60, 0)
    want = popcount_matvec(x, np.ones((1, 13), dtype=np.int64))[:, 0].numpy()
    assert not np.array_equal(got, want)


def test_tree_is_logarithmic_and_ends_in_two_rows():
    for n in (2, 7, 32, 100, 1024, 4096):
        plan = tree_plan([n], 6)
        assert max(final_heights([n], plan)) <= 2
        assert len(plan) <= 2 * n.bit_length() // 3 + 2
    # 1024 bits: nine levels of counters plus the final adder, versus 10 adder levels for
    # a binary adder tree and 1023 for a chain.
    assert Popcount(1024, levels_per_stage=1).levels <= 10
    assert Popcount(1024, levels_per_stage=3).latency == -(-Popcount(1024).levels // 3)


@pytest.mark.parametrize("kwargs,message", [
    ({"n": 0}, "popcount: count must be a positive integer, not 0"),
    ({"n": 8, "levels_per_stage": 0}, "popcount: levels_per_stage must be a positive integer"),
    ({"n": 8, "fanin": 4}, "popcount: fanin must be one of 3, 6, not 4"),
])
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Popcount(**kwargs)
