# amaranth: UnusedElaboratable=no
"""Folded weight/threshold memories: init from bnnhw.packing, synchronous reads held by
``en``, run-time rewrites through the cfg stream."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from bnnhw.packing import matrix_words, words_to_matrix, words_to_table
from rtl_gen.weight_memory import (
    CFG_LAYOUT,
    FoldedMemory,
    FoldedMemoryParams,
    MemSel,
    cfg_beats,
    cfg_word,
)


def simulate(params, cfg=(), seed=0):
    """Send ``cfg`` beats (random gaps), then read every address once with random ``en``
    stalls; return the words read."""
    dut = FoldedMemory(params)
    rng = random.Random(seed)
    words = []

    async def bench(ctx):
        for beat in cfg:
            while rng.random() < 0.3:
                await ctx.tick()
            ctx.set(dut.cfg.payload, beat)
            ctx.set(dut.cfg.valid, 1)
            await ctx.tick().until(dut.cfg.ready)
            ctx.set(dut.cfg.valid, 0)
        for addr in range(params.depth):
            ctx.set(dut.rd.addr, addr)
            ctx.set(dut.rd.en, 1)
            await ctx.tick()
            ctx.set(dut.rd.addr, rng.randrange(params.depth))  # must not matter while en=0
            ctx.set(dut.rd.en, 0)
            for _ in range(rng.randrange(3)):
                await ctx.tick()
            words.append(ctx.get(dut.rd.data))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return words


def test_weights_init_follows_fold_matrix():
    rng = np.random.default_rng(0)
    w = rng.integers(0, 2, size=(6, 12))
    params = FoldedMemoryParams.for_weights("conv1", w, pe=3, simd=4)
    assert (params.depth, params.width) == (2 * 3, 12)
    words = simulate(params)
    assert np.array_equal(words_to_matrix(words, 6, 12, 3, 4), w)


def test_thresholds_init_follows_fold_table():
    rng = np.random.default_rng(1)
    t = rng.integers(-40, 40, size=(2, 3, 4))
    params = FoldedMemoryParams.for_thresholds("conv1", t, pe=2, width=7)
    words = simulate(params)
    assert np.array_equal(words_to_table(words, t.shape, 2, 7, signed=True), t)


def rewrite_beats(new_w, pe, simd, seed):
    """cfg beats of new_w in shuffled order, mixed with beats every memory must ignore."""
    words = matrix_words(new_w, pe, simd)
    beats = cfg_beats(MemSel.WEIGHTS, words, pe * simd)
    depth = len(words)
    beats += [cfg_word(MemSel.THRESHOLDS, 0, 0, 0xFFFFFFFF),   # other memory
              cfg_word(MemSel.WEIGHTS, depth, 0, 0xFFFFFFFF),  # past the last word
              cfg_word(MemSel.WEIGHTS, 0, 5, 0xFFFFFFFF)]      # past the last chunk
    random.Random(seed).shuffle(beats)
    return beats


@pytest.mark.parametrize("pe,simd,seed", [(2, 20, 0), (1, 8, 1)])
def test_runtime_rewrite(pe, simd, seed):
    rng = np.random.default_rng(seed)
    old_w = rng.integers(0, 2, size=(2 * pe, 3 * simd))
    new_w = rng.integers(0, 2, size=old_w.shape)
    params = FoldedMemoryParams.for_weights("fc1", old_w, pe, simd, writable=True)
    words = simulate(params, rewrite_beats(new_w, pe, simd, seed), seed)
    assert np.array_equal(words_to_matrix(words, *old_w.shape, pe, simd), new_w)


def test_runtime_rewrite_of_a_one_word_memory():
    params = FoldedMemoryParams(width=40, init=(12345,), sel=MemSel.THRESHOLDS, writable=True)
    new = (1 << 39) | 0xABCDE12
    assert simulate(params, cfg_beats(MemSel.THRESHOLDS, [new], 40)) == [new]


def test_dropped_cfg_beat_is_caught():
    rng = np.random.default_rng(5)
    old_w = rng.integers(0, 2, size=(4, 40))
    new_w = 1 - old_w  # every bit differs, so any unwritten chunk shows
    beats = rewrite_beats(new_w, 2, 20, 0)
    beats.remove(next(b for b in beats if (b >> 62) == MemSel.WEIGHTS and (b >> 42) & 0xFFFFF
                      == 1))
    params = FoldedMemoryParams.for_weights("fc1", old_w, 2, 20, writable=True)
    words = simulate(params, beats)
    assert not np.array_equal(words_to_matrix(words, 4, 40, 2, 20), new_w)


def test_cfg_layout_is_the_documented_one():
    assert CFG_LAYOUT.size == 64
    assert [(name, f.offset, f.width) for name, f in CFG_LAYOUT] == [
        ("data", 0, 32), ("chunk", 32, 10), ("addr", 42, 20), ("sel", 62, 2)]
    assert cfg_word(1, 3, 2, 0xDEADBEEF) == 0xDEADBEEF | 2 << 32 | 3 << 42 | 1 << 62


@pytest.mark.parametrize("kwargs,message", [
    ({"width": 0, "init": (0,)}, "fc2: memory width must be a positive integer, not 0"),
    ({"width": 4, "init": ()}, "fc2: memory needs at least one word"),
    ({"width": 4, "init": (16,)}, "fc2: memory word 16 does not fit 4 bits"),
    ({"width": 4, "init": (0,), "sel": 4}, r"fc2: sel must be one of \[0, 1, 2, 3\]"),
    ({"width": 4, "init": (0,) * ((1 << 20) + 1), "writable": True},
     "fc2: 1048577 words exceed the 1048576 addresses of the cfg stream"),
    ({"width": 40000, "init": (0,), "writable": True}, "fc2: 40000-bit words exceed"),
])
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FoldedMemoryParams(name="fc2", **kwargs)
    with pytest.raises(ValueError, match="cfg beat: field 'addr': -1 does not fit 20 bits"):
        cfg_word(0, -1, 0, 0)


@pytest.mark.parametrize("style", ["auto", "block", "logic"])
def test_read_only_styles_read_the_same_words(style):
    rng = np.random.default_rng(7)
    w = rng.integers(0, 2, size=(6, 24))
    params = FoldedMemoryParams.for_weights("conv2", w, pe=3, simd=4, style=style)
    assert params.style == style
    assert np.array_equal(words_to_matrix(simulate(params, seed=3), 6, 24, 3, 4), w)


@pytest.mark.parametrize("style", ["auto", "block", "lutram"])
def test_writable_styles_take_rewrites(style):
    rng = np.random.default_rng(8)
    old_w = rng.integers(0, 2, size=(4, 40))
    new_w = 1 - old_w
    params = FoldedMemoryParams.for_weights("fc1", old_w, 2, 20, writable=True, style=style)
    words = simulate(params, rewrite_beats(new_w, 2, 20, 1), 1)
    assert np.array_equal(words_to_matrix(words, 4, 40, 2, 20), new_w)


def test_style_attributes_reach_the_netlist():
    """``block``/``lutram``/``logic`` put ``ram_style``/``rom_style`` on the memory (Yosys
    and Vivado read them); ``auto`` puts none. The mapping they cause on xc7 is measured
    by ``bench/calibrate_resources.py`` (``tests/test_resources.py`` checks it)."""
    from amaranth.back import rtlil

    w = np.random.default_rng(0).integers(0, 2, size=(4, 16))
    for style, attr in (("block", "block"), ("logic", "logic"), ("auto", None)):
        text = rtlil.convert(FoldedMemory(FoldedMemoryParams.for_weights(
            "m", w, 2, 4, style=style)))
        if attr is None:
            assert "ram_style" not in text and "rom_style" not in text
        else:
            assert f'attribute \\rom_style "{attr}"' in text
            assert f'attribute \\ram_style "{attr}"' in text
    text = rtlil.convert(FoldedMemory(FoldedMemoryParams.for_weights(
        "m", w, 2, 4, writable=True, style="lutram")))
    assert 'attribute \\ram_style "distributed"' in text


@pytest.mark.parametrize("kwargs,message", [
    ({"style": "bram"}, ("fc3: memory style must be one of auto, block, lutram, logic, "
                         "not 'bram'")),
    ({"style": "logic", "writable": True}, ("fc3: a run-time writable memory cannot be a "
                                            "ROM of LUTs")),
    ({"style": "lutram"}, "fc3: a read-only memory cannot be LUT RAM"),
])
def test_styles_a_memory_cannot_take_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FoldedMemoryParams(width=4, init=(1, 2), name="fc3", **kwargs)
