# amaranth: UnusedElaboratable=no
"""The C++ stream harness (sim.fast.run_stream_fast) against the cocotb bench and the
golden model, and ``bnnhw verify`` on it.

Designs, each built once for the harness (the cocotb builds are shared with
``test_verilator.py`` and ``test_verify.py``): the tfc, sfc and CNV-shaped network tops,
the 200-bit stream adder of ``test_verilator.py`` and its faulty twin, and a plain
48-bit register given as Verilog text (QData ports) with a planted valid-drop. With no
stalls both benches give the same beats and the same cycle stamps; with the harness's own
stalls the outputs still equal the golden model and the stalls are recorded; drawing the
stalls in Python (``python_stalls``) makes every stamp equal the cocotb bench's; planted
stream-rule breaks, a dropped beat (timeout) and too-wide beats are reported.
"""

import json
import shutil

import numpy as np
import pytest

from bnnhw import golden
from bnnhw.check import random_images
from bnnhw.checkpoint import save_checkpoint
from bnnhw.cli import main
from bnnhw.flows.verify import verify_graph
from bnnhw.folding import default_folding, two_foldings
from bnnhw.frontend import compile_model
from rtl_gen.network import Network, NetworkParams
from sim.cosim import CosimError, CosimTimeout, run_stream_cosim
from sim.fast import STREAM_MAIN, python_pauses, run_stream_fast, stream_build
from sim.verilator import VerilatorBuildError, exe_build_key, port_widths, to_rtlil
from tests.bnn_cases import VERIFY_MODELS, zoo_model
from tests.sim.test_verilator import FAULTY, Adder, model, random_beats
from tests.stream_helpers import assert_stalled

NETWORKS = ["tfc", "sfc", "cnv_small"]
IMAGES = 4

# A plain register given as Verilog text: 48-bit payloads (a QData port in C++). The
# planted fault: a beat of value DEAD_BEEF_0000 drops valid while it is held.
REG48_V = """
module reg48 (input clk, input rst,
              input [47:0] i_stream__payload, input i_stream__valid, output i_stream__ready,
              output reg [47:0] o_stream__payload, output reg o_stream__valid,
              input o_stream__ready);
  assign i_stream__ready = !o_stream__valid || o_stream__ready;
  always @(posedge clk)
    if (rst) o_stream__valid <= 0;
    else if (i_stream__valid && i_stream__ready) begin
      o_stream__payload <= i_stream__payload;
      o_stream__valid <= 1;
    end else if (o_stream__ready || o_stream__payload == 48'hDEAD_BEEF_0000)
      o_stream__valid <= 0;
endmodule
"""
MASK48 = (1 << 48) - 1


def network_case(name: str):
    """(network, params, input beats, expected result beats) of IMAGES random images at
    the default folding (the one ``test_verify.py`` and the CLI tests build too)."""
    model_ = VERIFY_MODELS[name]()
    graph = compile_model(model_)
    params = NetworkParams(graph, two_foldings(graph)["default"])
    images = random_images(model_.spec["input"]["shape"], IMAGES, 11)
    gold = golden.run(graph, images)
    expected = [params.format.result_beat(s, c)
                for s, c in zip(gold.scores.numpy(), gold.classes.numpy(), strict=True)]
    return Network(params), params, params.format.image_beats(images), expected


def same_run(a, b) -> None:
    assert a.out_beats == b.out_beats
    assert a.out_cycles == b.out_cycles
    assert a.in_cycles == b.in_cycles
    assert a.cycles == b.cycles
    assert a.extra_beats == b.extra_beats
    assert (a.idle_in_cycles, a.held_out_beats, a.held_out_cycles) == \
        (b.idle_in_cycles, b.held_out_beats, b.held_out_cycles)


@pytest.mark.parametrize("name", NETWORKS)
def test_network_matches_cocotb_and_golden(name):
    net, params, beats, expected = network_case(name)
    timeout = 20 * IMAGES * params.cycles_per_image + 50_000
    fast = run_stream_fast(net, beats, IMAGES, stall_in=0, stall_out=0, linger_cycles=300,
                           timeout_cycles=timeout)
    slow = run_stream_cosim(net, beats, IMAGES, stall_in=0, stall_out=0, linger_cycles=300,
                            timeout_cycles=timeout)
    assert fast.out_beats == expected
    same_run(fast, slow)
    assert fast.in_cycles[0] == 0 and len(fast.in_cycles) == len(beats)
    # With the harness's own stalls: the same beats, and the stalls happened.
    stalled = run_stream_fast(net, beats, IMAGES, seed=5, stall_in=0.3, stall_out=0.5,
                              timeout_cycles=4 * timeout)
    assert stalled.out_beats == expected
    assert_stalled(stalled)
    assert stalled.cycles > fast.cycles - 300
    assert fast.build_cached or fast.build.seconds > 0


def test_python_stalls_give_the_cocotb_stamps():
    """Stall counts drawn in Python the way sim.stream_tb draws them: every stamp and
    every stall statistic equals the cocotb bench's, on the adder and on a network."""
    beats = random_beats(300, 2)
    kw = {"seed": 2, "stall_in": 0.3, "stall_out": 0.4, "linger_cycles": 20}
    same_run(run_stream_fast(Adder(), beats, 290, python_stalls=True, **kw),
             run_stream_cosim(Adder(), beats, 290, **kw))
    net, _, beats, expected = network_case("tfc")
    kw = {"seed": 3, "stall_in": 0.3, "stall_out": 0.3, "timeout_cycles": 10**6}
    fast = run_stream_fast(net, beats, IMAGES, python_stalls=True, **kw)
    assert fast.out_beats == expected
    same_run(fast, run_stream_cosim(net, beats, IMAGES, **kw))
    assert python_pauses(0, 0.0, 3) == [0, 0, 0]


def test_adder_wide_payloads_under_stalls_and_seeds():
    beats = random_beats(400, 0)
    runs = [run_stream_fast(Adder(), beats, len(beats), seed=s, stall_in=0.3, stall_out=0.4)
            for s in (0, 0, 1)]
    for r in runs:
        assert r.out_beats == model(beats)
        assert len(r.in_cycles) == len(beats)
        assert r.in_cycles == sorted(set(r.in_cycles))
        assert all(i < o for i, o in zip(r.in_cycles, r.out_cycles, strict=True))
        assert r.cycles == r.out_cycles[-1] + 1
        assert_stalled(r)
        assert r.held_out_beats > 0.2 * len(beats)
    same_run(runs[0], runs[1])                         # a seed fixes the stalls
    assert runs[0].out_cycles != runs[2].out_cycles    # another seed, other stalls


def test_adder_full_rate_linger_and_progress():
    beats = random_beats(100, 7)
    calls = []
    r = run_stream_fast(Adder(), beats, 97, stall_in=0, stall_out=0, linger_cycles=10,
                        progress=lambda n, cycle: calls.append((n, cycle)))
    assert r.in_cycles == list(range(100))
    assert r.out_cycles == list(range(1, 98))
    assert r.out_beats == model(beats)[:97] and r.extra_beats == model(beats)[97:]
    assert r.cycles == 98 + 10
    assert calls[-1] == (97, 97) and calls == sorted(calls)
    assert (r.idle_in_cycles, r.held_out_beats, r.held_out_cycles) == (0, 0, 0)
    assert r.build_cached and r.sim_cpu_seconds >= 0 and r.run_seconds > 0


@pytest.mark.parametrize("stall_out", [0.3, 0.95], ids=["short-holds", "long-holds"])
def test_altered_held_beat_breaks_the_stream_rule(stall_out):
    beats = random_beats(100, 15)
    with pytest.raises(CosimError, match=r"stream rule broken on o_stream: payload changed "
                                         r"from 0x[0-9a-f]+ to 0x[0-9a-f]+ at cycle \d+ "
                                         r"while the beat offered since cycle \d+ waited") as err:
        run_stream_fast(Adder(**FAULTY), beats, len(beats) - 1, seed=15, stall_out=stall_out)
    shutil.rmtree(err.value.run_dir)


def test_dropped_beat_times_out_naming_the_count():
    beats = random_beats(40, 11)
    with pytest.raises(CosimTimeout, match=r"39 of 40 output beats arrived within 2000") as err:
        run_stream_fast(Adder(**FAULTY), beats, len(beats), seed=11, timeout_cycles=2000)
    shutil.rmtree(err.value.run_dir)
    partial = err.value.partial
    assert partial.cycles == 2000 and len(partial.out_beats) == 39
    assert partial.out_beats[:30] == [b ^ (i == 5) for i, b in enumerate(model(beats)[:30])]
    assert partial.out_beats[30:] == model(beats)[31:]


def test_verilog_register_qdata_valid_drop_and_width():
    beats = [b & MASK48 for b in random_beats(200, 4)]
    fast = run_stream_fast(REG48_V, beats, len(beats), toplevel="reg48", stall_in=0,
                           stall_out=0)
    assert fast.out_beats == beats
    assert fast.in_cycles == list(range(200)) and fast.out_cycles == list(range(1, 201))
    assert port_widths(fast.build)["i_stream___05Fpayload"] == 48
    stalled = run_stream_fast(REG48_V, beats, len(beats), toplevel="reg48", seed=1)
    assert stalled.out_beats == beats
    assert_stalled(stalled)
    # The planted fault: the beat DEAD_BEEF_0000 drops valid while it is held.
    with pytest.raises(CosimError, match=r"stream rule broken on o_stream: valid dropped at "
                                         r"cycle \d+ before the beat offered since cycle \d+ "
                                         r"was taken \(payload 0xdeadbeef0000") as err:
        run_stream_fast(REG48_V, [1, 0xDEAD_BEEF_0000, 2], 3, toplevel="reg48",
                        stall_in=0, stall_out=0.9, seed=0)
    shutil.rmtree(err.value.run_dir)
    # Verilog text gets no width check in Python: the harness refuses the beat.
    with pytest.raises(CosimError, match=r"does not fit the 48-bit i_stream payload") as err:
        run_stream_fast(REG48_V, [1 << 48], 1, toplevel="reg48")
    shutil.rmtree(err.value.run_dir)


def test_waves_are_recorded(tmp_path):
    path = tmp_path / "reg.vcd"
    r = run_stream_fast(REG48_V, [5, 6, 7], 3, toplevel="reg48", waves=str(path))
    assert r.waves == path and r.build.waves == "vcd"
    text = path.read_text()
    assert "$var" in text and "o_stream__payload" in text


def test_build_failure_names_the_log():
    with pytest.raises(VerilatorBuildError, match=r"Verilator build of 'broken' with "
                                                  r"stream_main.cpp failed .*build.log"):
        run_stream_fast("module broken (input clk);\n  wire x = ;\nendmodule\n", [0], 1,
                        toplevel="broken")


def test_bad_arguments_and_build_key(tmp_path):
    with pytest.raises(ValueError, match=r"input beat 1 = 0x1" + "0" * 50):
        run_stream_fast(Adder(), [0, 1 << 200], 2)
    with pytest.raises(ValueError, match="stall_out must be a probability"):
        run_stream_fast(Adder(), [0], 1, stall_out=1.0)
    with pytest.raises(ValueError, match="is not an identifier"):
        stream_build(Adder(), i_port="i stream")
    text = to_rtlil(Adder())
    edited = tmp_path / "stream_main.cpp"         # the harness with a header changed
    shutil.copy(STREAM_MAIN, edited)
    (tmp_path / "harness.h").write_text((STREAM_MAIN.parent / "harness.h").read_text() + "\n")
    assert exe_build_key(text, STREAM_MAIN) == exe_build_key(text, "sim/harness/stream_main.cpp")
    keys = {exe_build_key(text, STREAM_MAIN), exe_build_key(text, edited),
            exe_build_key(text, "sim/harness/stream_main.cpp", defines={"X": "1"}),
            exe_build_key(text, "sim/harness/stream_main.cpp", waves="vcd"),
            exe_build_key(to_rtlil(Adder(addend=3)), "sim/harness/stream_main.cpp")}
    assert len(keys) == 5


def test_verify_graph_on_the_fast_engine():
    model_ = zoo_model("tfc", seed=0, calibration=2)
    graph = compile_model(model_)
    images = random_images(model_.spec["input"]["shape"], 6, 7)
    report = verify_graph(graph, default_folding(graph), images, stall=0.3, seed=3,
                          engine="fast")
    assert report.ok and report.stalled_run, report.format()
    assert abs(report.cycle_error) <= 0.05
    assert report.cycles_per_second > 0
    with pytest.raises(ValueError, match="engine must be one of cocotb, fast"):
        verify_graph(graph, default_folding(graph), images, engine="verilator")


@pytest.mark.parametrize("engine", [None, "cocotb", "fast"])
def test_verify_cli_engines(engine, tmp_path, capsys, monkeypatch):
    """``--engine`` picks the bench; fast when not given."""
    import sim.cosim
    import sim.fast

    used = []
    for mod, name in ((sim.cosim, "run_stream_cosim"), (sim.fast, "run_stream_fast")):
        real = getattr(mod, name)

        def recording(*args, _real=real, _name=name, **kwargs):
            used.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(mod, name, recording)
    model_ = zoo_model("tfc", seed=0, calibration=2)
    ckpt = tmp_path / "tfc.pt"
    save_checkpoint(ckpt, model_, "tfc", {"data": "mnist"})
    args = ["verify", "--model", str(ckpt), "--images", "3", "--json"]
    code = main(args + ([] if engine is None else ["--engine", engine]))
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["mismatches"] == 0 and out["images"] == 3
    want = "run_stream_cosim" if engine == "cocotb" else "run_stream_fast"
    assert used and set(used) == {want}


def test_network_beats_are_decoded_alike():
    """The harness's hex round trip of 104-bit result beats (VlWide<4>) is exact."""
    net, params, beats, expected = network_case("sfc")
    r = run_stream_fast(net, beats, IMAGES, stall_in=0, stall_out=0)
    decoded = [params.format.decode_result(b) for b in r.out_beats]
    assert [params.format.result_beat(s, c) for s, c in decoded] == expected
    assert np.all([0 <= c < 10 for _, c in decoded])
