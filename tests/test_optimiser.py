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


# -- weights in DRAM ---------------------------------------------------------------------


def _check_dram(choice, graph):
    """A choice with layers in DRAM is consistent: only binary-input layers are there, its
    estimate is the model's of its blocks (the tiled units, the controller once, the
    link), it fits its budget, and its II is its slowest engine's, no less than any tiled
    unit's cycles on the port nor the shared port's cycles for all the DRAM words."""
    from bnnhw.folding import can_tile, tiled_shape

    budget, port = choice.budget, choice.budget.dram
    nodes = {n.name: n for n in graph.nodes}
    assert choice.dram_layers and all(can_tile(nodes[n]) for n in choice.dram_layers)
    blocks = rs.plan_blocks(graph, choice.folds, pixels_per_beat=choice.pixels_per_beat,
                            memory_styles=choice.memory_styles, dram=port)
    words = sum(tiled_shape(nodes[n], choice.folds[n]).dram_words
                for n in choice.dram_layers)
    blocks.append(port.block(words))
    if choice.link is not None:
        blocks.append(choice.link.block(graph))
    est = rs.estimate(blocks, budget.family, beats_per_image=graph.input.in_shape[0]
                      * graph.input.in_shape[1] // choice.pixels_per_beat)
    assert est.total == choice.total
    params = NetworkParams(graph, **choice.network_kwargs())  # the network builds it
    assert rs.blocks_of_stages(params.stages) == blocks[:len(params.stages)]
    assert params.cycles_per_image == max(b.cycles for b in blocks[:len(params.stages)])
    t = choice.total
    assert t.lut_sites <= budget.lut * (1 - choice.margin) and t.bram <= budget.bram
    assert t.ff <= budget.ff and t.dsp <= budget.dsp
    assert next(b for b in est.blocks if b.block.kind == "dram").total == port.controller
    summary = choice.dram_summary(100e6)
    assert summary["words_per_image"] == words
    assert choice.ii == max(b.cycles for b in blocks if b.kind != "link")
    assert choice.ii >= port.port_cycles(words)
    for name in choice.dram_layers:
        ts = tiled_shape(nodes[name], choice.folds[name])
        assert summary["layers"][name] == {"tile_rows": choice.folds[name].tile_rows,
                                           "words_per_image": ts.dram_words,
                                           "cycles": ts.cycles(port.words_per_cycle,
                                                               port.latency)}
        assert choice.ii >= summary["layers"][name]["cycles"]
    return summary


@pytest.fixture(scope="module")
def vgg():
    return shape_graph(get_spec("vgg"))


def test_seed_vgg_plans_on_the_arty_with_layers_in_dram(vgg):
    """The seed VGG (14,022,016 weights) does not fit the XC7A35T's block RAM and LUTs;
    with the Arty's DDR3 the layers that do not fit stream their weights from it."""
    import boards

    budget = boards.get("arty").budget
    link = rs.Link(4096, 100_000_000, 12_000_000)
    choice = optimise(vgg, budget, link=link, max_pixels_per_beat=1)
    s = _check_dram(choice, vgg)
    assert sum(m.rows * m.cols for m in matrix_layers(vgg)) == 14_022_016
    assert "conv0" not in choice.dram_layers  # its inputs are bytes: on chip
    assert choice.ii <= 2_000_000  # at least 50 images/s at 100 MHz
    assert s["bytes_per_image"] == 16 * s["words_per_image"]
    assert s["available_mb_s"] == 0.85 * 16 * 100 and 0 < s["share"] <= 1
    assert s["bandwidth_mb_s"] == s["bytes_per_image"] * 100e6 / choice.ii / 1e6
    assert "weights in DRAM: " in choice.explanation and "MB/s" in choice.explanation
    print(f"\nseed vgg on {budget.name}: II {choice.ii:,}, {choice.rate(100e6):.1f} images/s, "
          f"DRAM {s['share']:.0%} of the port\n{choice.explanation}")


def test_the_dram_checker_catches_a_wrong_ii(vgg):
    """Planted fault: the checker above refuses a choice whose II is below its slowest
    engine's (a DRAM layer made to look faster than the port lets it be)."""
    from dataclasses import replace

    import boards

    choice = optimise(vgg, boards.get("arty").budget, target_ii=3_000_000)
    _check_dram(choice, vgg)
    with pytest.raises(AssertionError):
        _check_dram(replace(choice, ii=choice.ii - 1), vgg)


def test_a_network_that_fits_on_chip_ignores_the_dram(cnv, tfc):
    """With a DRAM port that is no faster to use, a network that fits on chip keeps every
    weight on chip: the very design it gets without one (only the explanation says the
    DRAM is unused), or a faster on-chip one that the search among DRAM designs came
    across (tfc at 0.88 words per cycle: II 13 against the bisection's 14)."""
    from dataclasses import replace

    for port in (rs.DramPort(16 << 20, 0.85, 24), rs.DramPort(16 << 20)):
        for graph in (cnv, tfc):
            plain = optimise(graph, A35)
            with_dram = optimise(graph, replace(A35, dram=port))
            assert with_dram.dram_layers == [] and with_dram.dram is None
            assert "the DRAM is unused" in with_dram.explanation
            assert with_dram.ii <= plain.ii
            if with_dram.ii == plain.ii:
                for what in ("folds", "memory_styles", "pixels_per_beat", "estimate"):
                    assert getattr(with_dram, what) == getattr(plain, what), what
                assert with_dram.explanation.startswith(plain.explanation)


def test_the_shared_port_bounds_the_ii():
    """A port of 0.01 words per cycle: a dense net that cannot fit on chip keeps its
    weights in DRAM and its II is at least all their words over the port's rate."""
    import copy

    spec = copy.deepcopy(get_spec("tfc"))
    for lay in spec["layers"][:-1]:
        lay["out"] = 512
    graph = shape_graph(spec)
    port = rs.DramPort(1 << 20, 0.01, 24, rs.Resources(300, 300))
    budget = rs.Budget("small", "xc7", 6000, 12000, 0, 10, dram=port)
    choice = optimise(graph, budget)
    s = _check_dram(choice, graph)
    assert choice.ii >= s["words_per_image"] * 100
    assert choice.stages_ii["dram"] == choice.ii  # the port is the slowest engine
    assert all(v["cycles"] < choice.ii for v in s["layers"].values())
    with pytest.raises(DoesNotFit, match="the board's DRAM has"):
        optimise(graph, rs.Budget("small", "xc7", 6000, 12000, 0, 10,
                                  dram=rs.DramPort(100, 0.01, 24)))


def test_a_user_folding_in_dram_is_kept(tfc):
    folds = {**default_folding(tfc)}
    first = matrix_layers(tfc)[0]
    folds[first.name] = Fold(folds[first.name].pe, folds[first.name].simd,
                             folds[first.name].pe)
    budget = rs.Budget("XC7A35T", "xc7", 20_800, 41_600, 50, 90,
                       dram=rs.DramPort(1 << 20, 0.85, 24))
    choice = optimise(tfc, budget, folds=folds)
    assert choice.folds == folds and choice.dram_layers == [first.name]
    _check_dram(choice, tfc)
    with pytest.raises(ValueError, match="has no DRAM port"):
        optimise(tfc, A35, folds=folds)


def test_boards_without_dram_still_refuse_the_seed_vgg(vgg):
    import boards

    for name in ("icebreaker", "ulx3s"):
        budget = boards.get(name).budget
        assert budget.dram is None
        with pytest.raises(DoesNotFit) as e:
            optimise(vgg, budget)
        assert f"vgg does not fit {budget.name}" in str(e.value)
        assert "Mbit of binary weights" in str(e.value) and "bigger device" in str(e.value)
