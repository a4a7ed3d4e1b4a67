"""The classifier's argmax block against its reference: the first index of the largest
``class_scale * score + class_offset``, under random stalls, for every shape of map the
frontend makes (plain argmax, one common multiplier with offsets, distinct multipliers)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bnnhw.beats import TopFormat
from rtl_gen.classify import Classify, ClassifyParams
from sim.stream_sim import run_stream
from tests.stream_helpers import assert_stalled, output_cycles

MAPS = {  # classes, score width, dot_max, multipliers, offsets
    "plain": (10, 8, 100, [1] * 10, [0] * 10),
    "shift": (6, 9, 200, [8] * 6, [-40, 3, 17, 0, 1000, -1000]),
    "general": (10, 11, 784, [47330, 44032, 38315, 35680, 37479, 35096, 38871, 41284, 31778,
                              29683], [125859, -57314, -68867, 143266, 118917, 167011, 54122,
                                       -5835, -110733, -45217]),
    "zero_scales": (4, 6, 20, [0, 3, 0, 5], [7, -2, 60, 1]),
    "one_class": (1, 5, 10, [2], [3]),
}


def reference(params, scores):
    z = np.asarray(scores, np.int64) * np.array(params.class_scale) + np.array(
        params.class_offset)
    return np.argmax(z, axis=1)


def stimulus(params, rng, images):
    """Random scores, plus images where several classes tie on the largest logit."""
    d = params.dot_max
    scores = rng.integers(-d, d + 1, (images, params.classes))
    if params.classes > 1 and params.common_scale:
        scores[0] = 0  # every logit is its offset; equal offsets tie
        scores[1] = scores[1, 0] if not params.has_offsets else scores[1]
    return scores


def beats_in(params, scores):
    w = params.score_width
    return [sum((int(v) & ((1 << w) - 1)) << (i * w) for i, v in enumerate(row))
            for row in scores]


@pytest.mark.parametrize("name", list(MAPS))
def test_argmax_matches_reference_under_stalls(name):
    p = ClassifyParams(*MAPS[name][:3], tuple(MAPS[name][3]), tuple(MAPS[name][4]))
    rng = np.random.default_rng(len(name))
    scores = stimulus(p, rng, 24)
    out = run_stream(Classify(p), beats_in(p, scores), len(scores), seed=3)
    assert_stalled(out)
    fmt = TopFormat(1, 1, 1, p.classes, p.score_width)
    got = [fmt.decode_result(int(b)) for b in out]
    assert np.array_equal(np.array([s for s, _ in got]), scores)
    assert np.array_equal(np.array([a for _, a in got]), reference(p, scores))


def test_ties_go_to_the_first_index():
    p = ClassifyParams(5, 6, 20, (2, 2, 2, 2, 2), (0, 0, 0, 0, 0))
    scores = np.array([[3, 7, 7, 1, 7], [-5, -5, -5, -5, -5], [0, 0, 9, 9, 1]])
    out = run_stream(Classify(p), beats_in(p, scores), 3, seed=1, stall_in=0, stall_out=0)
    fmt = TopFormat(1, 1, 1, 5, 6)
    assert [fmt.decode_result(int(b))[1] for b in out] == [1, 0, 2]


def test_hardware_follows_the_map():
    """A plain argmax stores nothing; a common multiplier stores only offsets."""
    plain = ClassifyParams(*MAPS["plain"][:3], tuple(MAPS["plain"][3]), tuple(MAPS["plain"][4]))
    shift = ClassifyParams(*MAPS["shift"][:3], tuple(MAPS["shift"][3]), tuple(MAPS["shift"][4]))
    general = ClassifyParams(*MAPS["general"][:3], tuple(MAPS["general"][3]),
                             tuple(MAPS["general"][4]))
    assert plain.map_words == [] and plain.logit_bits == 8
    assert shift.scale_bits == 0 and shift.offset_bits == 11
    assert general.scale_bits == 16 and general.scan_bits == 16 + general.offset_bits


def test_cycles_and_latency():
    p = ClassifyParams(*MAPS["general"][:3], tuple(MAPS["general"][3]),
                       tuple(MAPS["general"][4]))
    scores = stimulus(p, np.random.default_rng(0), 4)
    stamps, _ = output_cycles(Classify(p), beats_in(p, scores), 4)
    assert stamps[0] == p.latency  # the first image is accepted at edge 0
    assert all(b - a == p.cycles_per_image for a, b in itertools.pairwise(stamps))


def test_a_wrong_offset_is_seen():
    """The comparison can fail: one offset off by a lot changes some classes."""
    good = MAPS["general"]
    offsets = list(good[4])
    offsets[3] += 10 ** 6
    p = ClassifyParams(*good[:3], tuple(good[3]), tuple(offsets))
    ref = ClassifyParams(*good[:3], tuple(good[3]), tuple(good[4]))
    scores = stimulus(p, np.random.default_rng(5), 16)
    out = run_stream(Classify(p), beats_in(p, scores), 16, seed=2)
    fmt = TopFormat(1, 1, 1, p.classes, p.score_width)
    assert not np.array_equal([fmt.decode_result(int(b))[1] for b in out],
                              reference(ref, scores))


def test_params_are_validated():
    with pytest.raises(ValueError, match="class_scale must have shape \\[3\\]"):
        ClassifyParams(3, 6, 20, (1, 1), (0, 0, 0))
    with pytest.raises(ValueError, match="class_scale must lie in 0"):
        ClassifyParams(2, 6, 20, (1, -1), (0, 0))
    with pytest.raises(ValueError, match="dot_max must be an integer in 0..31, not 40"):
        ClassifyParams(2, 6, 40, (1, 1), (0, 0))
