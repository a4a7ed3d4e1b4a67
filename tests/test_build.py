"""``bnnhw build``: plans and reports, the refusal, user errors, and real builds.

The plans run no tool (``--plan-only``). The builds run the board's flow end to end:
Yosys, nextpnr and the packer for the ULX3S (ECP5-85F) and the iCEBreaker (iCE40UP5K),
the Vivado project and Yosys' estimate for the Arty; each checks the bitstream, the
parsed Fmax and that the report's figures are the tools'.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnnhw import cli
from bnnhw.checkpoint import save_checkpoint
from tests.bnn_cases import zoo_model

REPORT_KEYS = {"board", "fits", "ii_cycles", "clock_mhz", "fmax_mhz", "images_per_second",
               "latency_cycles", "resources"}
KINDS = ("lut", "ff", "bram36", "dsp")


def error_lines(err: str) -> list[str]:
    """The error lines of stderr (the rest is progress), after checking no traceback."""
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("bnnhw build: error: ")]


def run(argv, capsys):
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Zoo checkpoints with random weights (the build does not care how they trained)."""
    folder = tmp_path_factory.mktemp("build_models")
    out = {}
    for name in ("tiny", "tfc", "sfc"):
        out[name] = folder / f"{name}.pt"
        save_checkpoint(out[name], zoo_model(name, seed=0, calibration=2), name,
                        {"data": "mnist"})
    return out


def report_of(folder: Path) -> dict:
    doc = json.loads((folder / "report.json").read_text())
    assert REPORT_KEYS <= set(doc)
    for kind in KINDS:
        assert {"budget", "estimate", "synthesised"} <= set(doc["resources"][kind])
    return doc


def self_contained(html: str) -> bool:
    low = html.lower()
    return not any(s in low for s in ('src="http', "src='http", 'href="http', "url(http",
                                      "<link ", "<script src"))


def test_plan_only_writes_the_report_and_the_folding(ckpts, tmp_path, capsys):
    out = tmp_path / "tfc-arty"
    code, stdout, err = run(["build", "--board", "arty", "--model", ckpts["tfc"],
                             "--out", out, "--plan-only", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    rep = report_of(out)
    assert rep["board"] == "arty-a7-35" and rep["fits"] is True
    assert rep["fmax_mhz"] is None and rep["resources"]["lut"]["synthesised"] is None
    assert rep["ii_cycles"] == doc["ii_cycles"] and rep["ii_cycles"] >= 1
    assert rep["images_per_second"] == pytest.approx(rep["clock_mhz"] * 1e6 / rep["ii_cycles"])
    est = rep["resources"]
    assert 0 < est["lut"]["estimate"] <= est["lut"]["budget"]
    assert 0 <= est["bram36"]["estimate"] <= est["bram36"]["budget"]
    for f in ("report.json", "report.html", "folding.json", "manifest.json"):
        assert (out / f).is_file(), f
    assert self_contained((out / "report.html").read_text())
    # the folding it wrote is one the build takes back, to the same design
    again = tmp_path / "again"
    code, stdout, err = run(["build", "--board", "arty", "--model", ckpts["tfc"], "--out",
                             again, "--plan-only", "--json", "--folding",
                             out / "folding.json"], capsys)
    assert code == 0, err
    rep2 = report_of(again)
    assert [(la["name"], la["pe"], la["simd"]) for la in rep2["layers"]] == \
        [(la["name"], la["pe"], la["simd"]) for la in rep["layers"]]
    assert rep2["ii_cycles"] == rep["ii_cycles"]


def test_a_bigger_board_is_never_slower(tmp_path, capsys):
    path = tmp_path / "cnv.pt"
    save_checkpoint(path, zoo_model("cnv", seed=0, calibration=2), "cnv", {"data": "cifar10"})
    iis = {}
    for board in ("arty", "arty-a7-100"):
        code, stdout, err = run(["build", "--board", board, "--model", path, "--out",
                                 tmp_path / board, "--plan-only", "--json"], capsys)
        assert code == 0, err
        iis[board] = json.loads(stdout)["ii_cycles"]
    assert iis["arty"] > iis["arty-a7-100"]


def test_target_fps_gives_a_smaller_design_that_reaches_it(ckpts, tmp_path, capsys):
    code, stdout, err = run(["build", "--board", "arty", "--model", ckpts["sfc"], "--out",
                             tmp_path / "fast", "--plan-only", "--json"], capsys)
    fastest = json.loads(stdout)
    rate = fastest["images_per_second"] / 8
    code, stdout, err = run(["build", "--board", "arty", "--model", ckpts["sfc"], "--out",
                             tmp_path / "slow", "--plan-only", "--json", "--target-fps",
                             rate], capsys)
    assert code == 0, err
    slow = json.loads(stdout)
    assert slow["images_per_second"] >= rate
    assert slow["resources"]["lut"]["estimate"] < fastest["resources"]["lut"]["estimate"]


def test_a_board_without_dram_refuses_the_seed_vgg_with_the_figures(tmp_path, capsys):
    path = tmp_path / "vgg.pt"
    save_checkpoint(path, zoo_model("vgg", seed=0, calibration=2), "vgg", {"data": "cifar10"})
    out = tmp_path / "vgg-icebreaker"
    code, stdout, err = run(["build", "--board", "icebreaker", "--model", path, "--out", out],
                            capsys)
    assert code == 2 and stdout == ""
    assert len(error_lines(err)) == 1, err
    assert "does not fit iCE40UP5K" in err and "14.02 Mbit of binary weights" in err
    assert not out.exists() and list(tmp_path.iterdir()) == [path]


def test_the_largest_vgg_width_without_dram_fits(tmp_path):
    from dataclasses import replace

    from bnnhw.flows.boards import get
    from bnnhw.flows.build import largest_vgg_width

    arty = get("arty")
    no_dram = replace(arty, budget=replace(arty.budget, dram=None))
    w, choice = largest_vgg_width(no_dram, writable=False, clock_hz=100_000_000)
    assert 0 < w < 1 and choice.ii > 0 and not choice.dram_layers


def test_the_clock_follows_the_post_route_fmax(monkeypatch):
    """The clock search on a stand-in flow whose Fmax depends on the clock asked for."""
    from types import SimpleNamespace

    from bnnhw.flows import build as flow
    from bnnhw.flows.boards import get

    board = get("ulx3s")
    runs = []

    def fake(fmax_of):
        def synth(plan, hz, jobs, say, seed=None, cache=None):
            runs.append(hz)
            f = fmax_of(hz / 1e6)
            return SimpleNamespace(design_fmax_mhz=f, timing_met=f >= hz / 1e6, clock_hz=hz)
        return synth

    plan = SimpleNamespace(board=board, clock_hz=100_000_000)
    # met at 100 with room: one more build at the Fmax, met there too
    monkeypatch.setattr(flow, "_synthesise", fake(lambda mhz: 130.0))
    result, tried = flow.synthesise_with_clock(plan, fixed_clock=False, jobs=1, say=print)
    assert [c for c, _ in tried] == [100_000_000, 130_000_000]
    assert result.clock_hz == 130_000_000 and result.timing_met
    # missed at the higher clock: back to the fastest build that met (cached, no new run)
    runs.clear()
    monkeypatch.setattr(flow, "_synthesise", fake(lambda mhz: 120.0 if mhz < 110 else 112.0))
    result, tried = flow.synthesise_with_clock(plan, fixed_clock=False, jobs=1, say=print)
    assert runs[:2] == [100_000_000, 120_000_000] and result.timing_met
    assert result.clock_hz == max(c for c, f in tried if f >= c / 1e6)
    # missed at the first clock: down to the Fmax
    monkeypatch.setattr(flow, "_synthesise", fake(lambda mhz: 80.4))
    result, tried = flow.synthesise_with_clock(plan, fixed_clock=False, jobs=1, say=print)
    assert [c for c, _ in tried] == [100_000_000, 80_000_000] and result.timing_met
    # a fixed clock is built once, met or not
    result, tried = flow.synthesise_with_clock(plan, fixed_clock=True, jobs=1, say=print)
    assert len(tried) == 1 and not result.timing_met


@pytest.mark.parametrize("argv, words", [
    (["--board", "nexys"], "unknown board 'nexys'"),
    (["--board", "arty", "--clock", "0"], "expected a positive number"),
    (["--board", "ulx3s", "--clock", "333.3333"], "cannot make exactly"),
    (["--board", "arty", "--folding", "missing.json"], "folding file missing.json"),
])
def test_user_errors_are_one_line(ckpts, tmp_path, capsys, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["build", "--model", ckpts["tiny"], "--plan-only", *argv], capsys)
    assert code == 2, err
    lines = error_lines(err)
    assert len(lines) == 1 and words in lines[0], err
    assert not (tmp_path / "build").exists()


# -- real builds ---------------------------------------------------------------------------

@pytest.mark.parametrize("model, board, clock", [("tiny", "ulx3s", None), ("tfc", "ulx3s", 100),
                                                 ("tiny", "icebreaker", 12),
                                                 ("tfc", "icebreaker", 12)])
def test_lattice_build_makes_a_bitstream_with_its_fmax(ckpts, tmp_path, capsys, model, board,
                                                       clock):
    """One build follows the Fmax (``clock`` None), the others are built at a fixed clock
    the design meets (one place-and-route each, to keep the suite short)."""
    out = tmp_path / f"{model}-{board}"
    fixed = [] if clock is None else ["--clock", clock]
    code, _, err = run(["build", "--board", board, "--model", ckpts[model], "--out", out,
                        "--json", *fixed], capsys)
    assert code == 0, err
    rep = report_of(out)
    assert rep["fits"] is True
    bit = "top.bit" if board == "ulx3s" else "top.bin"
    assert (out / bit).is_file() and (out / bit).stat().st_size > 10_000
    assert rep["fmax_mhz"] is not None and rep["fmax_mhz"] > 0
    # the clock follows the Fmax: met, and no achievable clock between it and the Fmax
    assert rep["timing_met"] is True and rep["clock_mhz"] <= rep["fmax_mhz"]
    for kind in ("lut", "ff", "bram36"):
        assert rep["resources"][kind]["synthesised"] is not None
        assert rep["resources"][kind]["synthesised"] <= rep["resources"][kind]["budget"]
    assert bit in rep["files"]


def test_arty_build_writes_the_vivado_project_and_the_yosys_estimate(ckpts, tmp_path,
                                                                      capsys):
    out = tmp_path / "tfc-arty"
    code, _, err = run(["build", "--board", "arty", "--model", ckpts["tfc"], "--out", out,
                        "--json"], capsys)
    assert code == 0, err
    rep = report_of(out)
    for f in ("top.v", "top.xdc", "top.tcl", "build_top.sh"):
        assert (out / f).is_file(), f
    assert rep["fmax_mhz"] is None and rep["timing_met"] is None
    assert rep["resources"]["lut"]["synthesised"] > 0
    assert any("no timing was measured" in n for n in rep["notes"])
