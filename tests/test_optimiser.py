"""The folding optimiser (``bnnhw.optimiser``) on real and synthetic budgets: fastest
within a budget, smallest meeting a target, a user folding kept, refusals with their
figures. Estimates only (no synthesis); ``bench/resource_model.py`` checks the model."""

from __future__ import annotations

import pytest

from bnnhw import resources as rs
from bnnhw.folding import Fold, default_folding, matrix_layers
from bnnhw.frontend import compile_model
from bnnhw.nn.zoo import get_spec
from bnnhw.optimiser import DoesNotFit, largest_width, optimise, shape_graph
from rtl_gen.network import NetworkParams
from tests.bnn_cases import zoo_model

A35 = rs.BUDGETS["xc7a35t"]
UP5K = rs.BUDGETS["ice40up5k"]


@pytest.fixture(scope="module")
def tfc():
    return compile_model(zoo_model("tfc", seed=0, calibration=2))


@pytest.fixture(scope="module")
def cnv():
    return shape_graph(get_spec("cnv"))


def _check(choice, graph):
    """The choice builds: its folding, styles and pixels per beat make a network whose
    II is the choice's, and its estimate is the model's of that network."""
    params = NetworkParams(graph, **choice.network_kwargs())
    assert params.cycles_per_image == choice.ii
    blocks = rs.blocks_of_stages(params.stages)
    if choice.link is not None:
        blocks.append(choice.link.block(graph))
    est = rs.estimate(blocks, choice.budget.family, beats_per_image=params.beats_per_image)
    assert est.total == choice.total
    return params


def test_shape_graph_matches_the_compiled_model():
    """A shape-only graph has the compiled model's nodes, shapes and memories (all but the
    classifier's map, whose widths follow the trained scales and offsets)."""
    for name in ("tfc", "tiny", "cnv"):
        real = compile_model(zoo_model(name, seed=0, calibration=2))
        shaped = shape_graph(get_spec(name))
        assert [n.name for n in shaped.nodes] == [n.name for n in real.nodes]
        assert [n.out_shape for n in shaped.nodes] == [n.out_shape for n in real.nodes]
        folds = default_folding(real)
        def engines(g, folds=folds):
            return [b for b in rs.plan_blocks(g, folds) if b.kind != "classify"]
        assert engines(shaped) == engines(real)


def test_cnv_on_the_xc7a35t(cnv):
    choice = optimise(cnv, A35)
    _check(choice, cnv)
    assert choice.ii <= 32_768
    t = choice.total
    assert t.lut_sites <= A35.lut * (1 - choice.margin) and t.bram <= A35.bram
    assert "II" in choice.explanation and "binds" in choice.explanation


def test_a_bigger_budget_is_never_slower(tfc):
    iis = []
    for scale in (0.1, 0.2, 0.4, 0.8, 1.6):
        budget = A35.scaled(lut=scale, bram=scale)
        try:
            iis.append(optimise(tfc, budget).ii)
        except DoesNotFit:
            iis.append(None)
    got = [ii for ii in iis if ii is not None]
    assert got and got == sorted(got, reverse=True)
    assert iis[-1] is not None and (iis[0] is None or iis[0] > iis[-1])


def test_target_ii_gives_the_smallest_design_meeting_it(tfc):
    fastest = optimise(tfc, A35)
    for target in (784, 4096, 20_000):
        choice = optimise(tfc, A35, target_ii=target)
        _check(choice, tfc)
        assert choice.ii <= target
        assert choice.total.lut <= fastest.total.lut + 1e-6
    slow, fast = optimise(tfc, A35, target_ii=20_000), optimise(tfc, A35, target_ii=784)
    assert slow.total.lut < fast.total.lut
    rate = optimise(tfc, A35, target_rate=100e6 / 4096, clock_hz=100e6)
    assert rate.ii <= 4096


def test_a_user_folding_is_kept(tfc):
    folds = default_folding(tfc)
    choice = optimise(tfc, A35, folds=folds)
    assert choice.folds == folds
    _check(choice, tfc)
    with pytest.raises(DoesNotFit, match="the given folding takes .* cycles per image, more "
                                         "than the target II 100"):
        optimise(tfc, A35, folds=folds, target_ii=100)
    with pytest.raises(ValueError, match="the folding gives no pe/simd for dense10"):
        optimise(tfc, A35, folds={k: v for k, v in folds.items() if k != "dense10"})


def test_pixels_per_beat_lift_a_dense_first_layer(tfc):
    free = optimise(tfc, A35)
    one = optimise(tfc, A35, max_pixels_per_beat=1)
    assert one.pixels_per_beat == 1 and one.ii >= 784
    assert free.ii < 784 and free.pixels_per_beat > 1


def test_tfc_fits_the_icebreaker_with_its_link(tfc):
    link = rs.Link(4096, 12_000_000, 3_000_000)
    choice = optimise(tfc, UP5K, runtime_writable=True, link=link, max_pixels_per_beat=1)
    _check(choice, tfc)
    t = choice.total
    assert t.bram <= UP5K.bram and t.lut_sites <= UP5K.lut * (1 - choice.margin)
    assert choice.link is not None


def test_a_budget_nothing_fits_is_refused_with_figures(tfc):
    tight = A35.scaled(lut=0.01)
    with pytest.raises(DoesNotFit) as e:
        optimise(tfc, tight)
    assert "does not fit" in str(e.value) and "LUT" in str(e.value)
    assert e.value.figures["lut"] > tight.lut


def test_seed_vgg_is_refused_before_any_search():
    graph = shape_graph(get_spec("vgg"))
    with pytest.raises(DoesNotFit) as e:
        optimise(graph, A35)
    text = str(e.value)
    assert "vgg does not fit XC7A35T" in text
    assert "Mbit of binary weights" in text and "50 RAMB36" in text
    assert "bigger device" in text and "smaller network" in text and "times its channels" in text
    assert e.value.figures["weight_bits"] > e.value.figures["room_bits"]


def test_largest_width(tfc):
    width, choice = largest_width(lambda w: get_spec("vgg", width=w), [0.125, 0.25, 0.5, 1.0],
                                  A35)
    assert width in (0.125, 0.25, 0.5)
    assert choice.total.bram <= A35.bram
    with pytest.raises(DoesNotFit, match="width 1 already does not fit"):
        largest_width(lambda w: get_spec("vgg", width=w), [1.0], A35)


def test_layers_are_balanced(tfc):
    """No layer is folded faster than it needs to be for the II (within one step)."""
    choice = optimise(tfc, A35.scaled(lut=0.3, bram=0.3))
    for m in matrix_layers(tfc):
        f = choice.folds[m.name]
        assert m.cycles(f) <= choice.ii
        slower = [Fold(pe, f.simd) for pe in range(1, f.pe) if m.rows % pe == 0]
        if slower:
            assert m.cycles(slower[-1]) > choice.ii or f.simd == 1
