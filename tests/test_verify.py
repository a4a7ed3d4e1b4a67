"""The whole network as Verilog under Verilator (cocotb) against the golden model.

Four networks at two foldings each, images back to back with random stalls on both ends
(input idles and held result beats, both checked to have happened), every output beat
compared exactly; the measured steady-state cycles per image within 5% of the cycle model;
a flipped weight bit reported as a mismatch and traced to its layer; a hidden layer's FIFO
that fails only under backpressure caught by the stalled run alone and traced to its layer.
"""

import json

import pytest
from amaranth import Array, Module, Mux, Signal

from bnnhw.check import random_images
from bnnhw.checkpoint import save_checkpoint
from bnnhw.cli import main
from bnnhw.flows.verify import verify_graph
from bnnhw.folding import Fold, default_folding, matrix_layers, save_folding, two_foldings
from bnnhw.frontend import compile_model
from rtl_gen.block import StreamBlock
from rtl_gen.fifo import FifoParams
from tests.bnn_cases import VERIFY_MODELS, zoo_model
from tests.stream_helpers import assert_stalled

IMAGES = 6


@pytest.fixture
def cosim_runs(monkeypatch):
    """Every Verilator run of the test, as ``(stall_out, CosimResult)`` in order."""
    import sim.cosim

    runs, real = [], sim.cosim.run_stream_cosim

    def recording(*args, **kwargs):
        result = real(*args, **kwargs)
        runs.append((kwargs.get("stall_out", 0.3), result))
        return result

    monkeypatch.setattr(sim.cosim, "run_stream_cosim", recording)
    return runs


@pytest.mark.parametrize("fold_name", ["default", "fast"])
@pytest.mark.parametrize("model_name", list(VERIFY_MODELS))
def test_network_matches_golden_under_verilator(model_name, fold_name, cosim_runs):
    model = VERIFY_MODELS[model_name]()
    graph = compile_model(model)
    folds = two_foldings(graph)[fold_name]
    images = random_images(model.spec["input"]["shape"], IMAGES, 7)
    report = verify_graph(graph, folds, images, stall=0.3, seed=3)
    assert report.stalled_run
    assert report.mismatches == 0, report.format()
    assert abs(report.cycle_error) <= 0.05, report.format()
    (_, stalled), = [(p, r) for p, r in cosim_runs if p > 0]
    assert_stalled(stalled)   # the stalled run idled the input and held result beats


def test_flipped_weight_bit_is_reported_and_traced():
    model = zoo_model("tfc", seed=0, calibration=2)
    graph = compile_model(model)
    hidden = graph.nodes[2]  # the second dense layer
    w = hidden.weights.copy()
    w[:, 0] ^= 1  # column 0 of every row: every channel's popcount moves by one
    bad = graph.replace([hidden.replace(weights=w) if n is hidden else n
                         for n in graph.nodes])
    images = random_images(model.spec["input"]["shape"], 4, 1)
    report = verify_graph(graph, default_folding(graph), images, hardware_graph=bad)
    assert report.mismatches > 0
    assert report.first_mismatch.layer == hidden.name, report.format()


class OverfullFifo(StreamBlock):
    """A planted backpressure fault: a stream FIFO (output register plus memory, like
    ``rtl_gen.fifo``) whose memory is one word short of what its full flag counts. The
    beat that fills it overwrites the oldest beat stored, which is lost while the new one
    comes out twice; beats are counted right, so nothing hangs, and the output register
    keeps the stream rule. While it never fills it is exact."""

    Params = FifoParams

    def elaborate(self, platform):
        m = Module()
        p = self.params
        words = p.depth - 2                    # the fault: a correct FIFO has depth - 1
        mem = Array(Signal(p.width, name=f"word{k}") for k in range(words))
        rd, wr = Signal(range(words)), Signal(range(words))
        level = Signal(range(p.depth))         # beats in the memory
        i, o = self.i_stream, self.o_stream
        push = i.valid & i.ready
        free = ~o.valid | o.ready
        pop = free & (level > 0)
        bypass = free & (level == 0) & push
        m.d.comb += i.ready.eq(level < p.depth - 1)
        with m.If(pop):
            m.d.sync += [o.payload.eq(mem[rd]), o.valid.eq(1),
                         rd.eq(Mux(rd == words - 1, 0, rd + 1))]
        with m.Elif(bypass):
            m.d.sync += [o.payload.eq(i.payload), o.valid.eq(1)]
        with m.Elif(o.ready):
            m.d.sync += o.valid.eq(0)
        with m.If(push & ~bypass):
            m.d.sync += [mem[wr].eq(i.payload), wr.eq(Mux(wr == words - 1, 0, wr + 1))]
        m.d.sync += level.eq(level + (push & ~bypass) - pop)
        return m


def test_backpressure_fault_is_caught_by_the_stalled_run_and_traced(cosim_runs):
    """dense4's FIFO fails only when it fills, which no unstalled run makes it do (the
    layers after it keep up). In the stalled run (seed 3) the first result is held for
    thousands of cycles while ten images stream in, which backs the network up into it;
    the tracer's replays, stalled alike, find the layer (its truncated network holds the
    FIFO's output directly)."""
    model = zoo_model("tfc", seed=0, calibration=2)
    graph = compile_model(model)
    folds = default_folding(graph)
    images = random_images(model.spec["input"]["shape"], 10, 7)
    blocks = {"dense4_fifo": OverfullFifo}
    assert verify_graph(graph, folds, images, blocks=blocks).ok
    del cosim_runs[:]
    report = verify_graph(graph, folds, images, stall=0.3, seed=3, blocks=blocks)
    assert report.mismatches > 0
    assert report.first_mismatch.layer == "dense4", report.format()
    (p0, free), (p1, stalled), *replays = cosim_runs
    assert (p0, p1) == (0.0, 0.3) and free.held_out_beats == 0
    assert_stalled(stalled)
    assert replays and all(p == 0.3 for p, _ in replays)   # the tracer's replays stall too


def test_verify_cli_json(tmp_path, capsys):
    model = zoo_model("tfc", seed=0, calibration=2)
    ckpt = tmp_path / "tfc.pt"
    save_checkpoint(ckpt, model, "tfc", {"data": "mnist"})
    graph = compile_model(model)
    fold_file = tmp_path / "fold.json"
    save_folding(fold_file, default_folding(graph))
    code = main(["verify", "--model", str(ckpt), "--images", "5", "--folding",
                 str(fold_file), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["images"] == 5 and out["mismatches"] == 0
    assert out["model_cycles_per_image"] == max(
        layer.cycles(Fold(**out["folding"][layer.name])) for layer in matrix_layers(graph))
    assert isinstance(out["cycles_per_image"], float)


def test_verify_cli_bad_folding(tmp_path, capsys):
    model = zoo_model("tfc", seed=0, calibration=2)
    ckpt = tmp_path / "tfc.pt"
    save_checkpoint(ckpt, model, "tfc", {"data": "mnist"})
    fold_file = tmp_path / "fold.json"
    fold_file.write_text('{"layers": {"dense1": {"pe": 5, "simd": 16}}}')
    code = main(["verify", "--model", str(ckpt), "--images", "2", "--folding",
                 str(fold_file)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
