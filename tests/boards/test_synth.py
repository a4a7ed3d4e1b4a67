# amaranth: UnusedElaboratable=no
"""Synthesis flows: a tiny network's board design built end to end for the ULX3S (through
its EHXPLLL) and the iCEBreaker (through SB_PLL40_PAD), bitstream, Fmax and utilisation
parsed, then found in the cache; the Arty's Vivado project and Yosys estimate; the log
parsers on the tools' formats; failing, silent and missing tools reported in one sentence.

The real builds are cached by design hash under ``build/synth_cache`` (about 30 s for the
ULX3S and 50 s for the iCEBreaker the first time, nothing after); the failing-tool tests
use stand-in tools and a private cache.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import boards
from bnnhw.errors import BnnhwError
from bnnhw.flows.synth import (
    SynthResult,
    parse_nextpnr_log,
    parse_vivado_timing,
    parse_vivado_utilisation,
    parse_yosys_stat,
    synthesise,
)
from bnnhw.folding import default_folding
from bnnhw.frontend import compile_model
from rtl_gen.board_top import BoardTop, BoardTopParams
from tests.bnn_cases import spec_model

LAYERS = [{"type": "dense", "out": 8}, {"type": "dense", "out": 4}]


@pytest.fixture(scope="module")
def graph():
    return compile_model(spec_model(LAYERS, "binary", (1, 4, 4)))


def board_top(graph, name: str, clock_hz: int | None = None) -> BoardTop:
    b = boards.get(name)
    core = b.core_params(graph, default_folding(graph), clock_hz=clock_hz, max_payload=64)
    return BoardTop(BoardTopParams(core))


@pytest.mark.parametrize("name, clock_hz, cells", [
    ("ulx3s", None, ("LUT4", "TRELLIS_FF", "EHXPLLL")),
    ("icebreaker", 18_000_000, ("SB_LUT4", "SB_CARRY", "SB_PLL40_PAD"))])
def test_open_flow_end_to_end(graph, tmp_path, name, clock_hz, cells):
    b = boards.get(name)
    said: list[str] = []
    r = synthesise(board_top(graph, name, clock_hz), name, tmp_path / "out",
                   progress=said.append)
    assert r.board == b.name and r.flow == b.toolchain and not r.estimate
    assert r.clock_hz == (clock_hz or b.default_clock_hz)
    bit = Path(r.files["bitstream"])
    assert bit.parent == tmp_path / "out" and bit.stat().st_size > 10_000
    for role in ("synthesis", "place_and_route"):
        assert Path(r.logs[role]).is_file()
    assert "End of script" in Path(r.logs["synthesis"]).read_text()[-4000:]
    # the design clock is the PLL's output, constrained to the design's frequency
    assert r.design_clock in r.fmax_mhz
    assert 5 < r.design_fmax_mhz < 500 and r.timing_met
    res = r.resources
    assert res["lut"] > 500 and res["ff"] > 500 and res["lc"] >= res["lut"] * 0.5
    assert {"bram", "dsp", "carry"} <= set(res)
    assert all(k in r.cells for k in cells)
    assert 0 < r.utilisation()["lut"] < 1 and 0 < r.utilisation()["ff"] < 1
    assert r.step_seconds["synthesis"] > 0 and r.step_seconds["place_and_route"] > 0
    assert said[0].startswith(f"{b.name}: elaborating") and said[-1] == r.summary()
    if not r.cached:                 # a warm cache from an earlier run builds nothing
        assert any(m.startswith(f"{b.name}: synthesis (yosys)") for m in said)
    doc = json.loads(json.dumps(r.to_json()))
    assert SynthResult.from_json(doc).resources == res

    again = synthesise(board_top(graph, name, clock_hz), b, tmp_path / "again", progress=None)
    assert again.cached and again.key == r.key and again.resources == res
    assert again.fmax_mhz == r.fmax_mhz and again.seconds < 15
    assert Path(again.files["bitstream"]).read_bytes() == bit.read_bytes()
    assert "cached" in again.summary()


def test_arty_project_and_estimate(graph, tmp_path, monkeypatch):
    monkeypatch.delenv("VIVADO", raising=False)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))     # no vivado here
    r = synthesise(board_top(graph, "arty", 50_000_000), "arty", tmp_path, progress=False)
    assert r.flow == "yosys-estimate" and r.estimate
    assert r.fmax_mhz is None and r.design_fmax_mhz is None and r.timing_met is None
    assert any("no timing was measured" in n for n in r.notes)
    for role in ("verilog", "constraints", "vivado_script", "script"):
        assert Path(r.files[role]).is_file()
    verilog = Path(r.files["verilog"]).read_text()
    assert "MMCME2_BASE" in verilog and "CLKFBOUT_MULT_F" in verilog
    xdc = Path(r.files["constraints"]).read_text()
    assert "set_property LOC A9" in xdc and "set_property LOC D10" in xdc
    assert "synth_design -top top" in Path(r.files["vivado_script"]).read_text()
    res = r.resources
    assert res["lut"] > 300 and res["ff"] > 500 and res["carry"] > 0
    assert res["lut_cells"] == sum(res[f"lut{k}"] for k in range(1, 7))
    assert res["bram"] == res["ramb36"] + res["ramb18"] / 2
    assert {"dsp", "lutram"} <= set(res)
    assert r.cells["MMCME2_BASE"] == 1 and r.cells["BUFG"] == 1
    assert "estimate" in r.summary() and "no timing measured" in r.summary()


# -- parsers --------------------------------------------------------------------------------

NEXTPNR_ECP5 = """\
Info: Logic utilisation before packing:
Info:     Total LUT4s:      2582/83640     3%
Info:         logic LUTs:   1774/83640     2%
Info:         carry LUTs:    520/83640     0%
Info:           RAM LUTs:    192/10455     1%
Info:          RAMW LUTs:     96/20910     0%

Info:      Total DFFs:      1323/83640     1%

Info:     Derived frequency constraint of 40.0 MHz for net board_top.clk
Info: Device utilisation:
Info: 	          TRELLIS_IO:       7/    365     1%
Info: 	              DP16KD:       3/    208     1%
Info: 	          MULT18X18D:       2/    156     1%
Info: 	             EHXPLLL:       1/      4    25%
Info: 	          TRELLIS_FF:    1323/  83640     1%
Info: 	        TRELLIS_COMB:    2702/  83640     3%

Info: Placed 11 cells based on constraints.
Info: Max frequency for clock '$glbnet$board_top.clk': 75.16 MHz (PASS at 40.00 MHz)
Info: Max frequency for clock '$glbnet$board_top.clk': 85.76 MHz (PASS at 40.00 MHz)
Info: Max frequency for clock 'other': 12.50 MHz (FAIL at 25.00 MHz)
"""


def test_parse_nextpnr_log():
    p = parse_nextpnr_log(NEXTPNR_ECP5)
    assert p["fmax"] == {"board_top.clk": 85.76, "other": 12.5}      # the last, post-route
    assert p["targets"] == {"board_top.clk": 40.0, "other": 25.0}
    assert p["placed"]["DP16KD"] == (3, 208) and p["placed"]["TRELLIS_COMB"] == (2702, 83640)
    assert p["before_packing"] == {"Total LUT4s": 2582, "logic LUTs": 1774, "carry LUTs": 520,
                                   "RAM LUTs": 192, "RAMW LUTs": 96, "Total DFFs": 1323}


def test_parse_yosys_stat():
    doc = {"design": {"num_cells_by_type": {"$scopeinfo": 4, "LUT4": 10, "CCU2C": 2},
                      "estimated_num_lc": 7}}
    assert parse_yosys_stat(doc) == {"cells": {"LUT4": 10, "CCU2C": 2}, "estimated_lc": 7}


VIVADO_UTILISATION = """\
1. Slice Logic
--------------

+-------------------------+------+-------+------------+-----------+-------+
|        Site Type        | Used | Fixed | Prohibited | Available | Util% |
+-------------------------+------+-------+------------+-----------+-------+
| Slice LUTs              | 1702 |     0 |          0 |     20800 |  8.18 |
|   LUT as Logic          | 1582 |     0 |          0 |     20800 |  7.61 |
|   LUT as Memory         |  120 |     0 |          0 |      9600 |  1.25 |
| Slice Registers         | 1950 |     0 |          0 |     41600 |  4.69 |
|   Register as Flip Flop | 1950 |     0 |          0 |     41600 |  4.69 |
| F7 Muxes                |    4 |     0 |          0 |     16300 |  0.02 |
+-------------------------+------+-------+------------+-----------+-------+

3. Memory
---------

+-------------------+------+-------+------------+-----------+-------+
|     Site Type     | Used | Fixed | Prohibited | Available | Util% |
+-------------------+------+-------+------------+-----------+-------+
| Block RAM Tile    |  6.5 |     0 |          0 |        50 | 13.00 |
|   RAMB36/FIFO*    |    6 |     0 |          0 |        50 | 12.00 |
|   RAMB18          |    1 |     0 |          0 |       100 |  1.00 |
+-------------------+------+-------+------------+-----------+-------+

4. DSP
------

+-----------+------+-------+------------+-----------+-------+
| Site Type | Used | Fixed | Prohibited | Available | Util% |
+-----------+------+-------+------------+-----------+-------+
| DSPs      |    3 |     0 |          0 |        90 |  3.33 |
+-----------+------+-------+------------+-----------+-------+
"""

VIVADO_TIMING = """\
------------------------------------------------------------------------------------------------
| Clock Summary
| -------------
------------------------------------------------------------------------------------------------

Clock         Waveform(ns)       Period(ns)      Frequency(MHz)
-----         ------------       ----------      --------------
clk100_0__io  {0.000 5.000}      10.000          100.000
  pll_clkout0   {0.000 10.000}     20.000          50.000
  pll_feedback  {0.000 5.000}      10.000          100.000


------------------------------------------------------------------------------------------------
| Intra Clock Table
| -----------------
------------------------------------------------------------------------------------------------

{intra}

------------------------------------------------------------------------------------------------
| Inter Clock Table
| -----------------
------------------------------------------------------------------------------------------------
"""

INTRA_COLUMNS = ["WNS(ns)", "TNS(ns)", "TNS Failing Endpoints", "TNS Total Endpoints",
                 "WHS(ns)", "THS(ns)", "THS Failing Endpoints", "THS Total Endpoints",
                 "WPWS(ns)", "TPWS(ns)", "TPWS Failing Endpoints", "TPWS Total Endpoints"]


def intra_clock_table(rows: dict[str, list[str]]) -> str:
    """Vivado's layout: a name column, then each value right-aligned under its header;
    a clock with pulse-width checks only leaves the first eight columns blank."""
    def line(name, cells):
        return f"{name:<16}" + "".join(f"  {c:>{len(h) + 1}}" for h, c in
                                       zip(INTRA_COLUMNS, cells))
    out = [line("Clock", INTRA_COLUMNS), line("-----", ["-" * len(h) for h in INTRA_COLUMNS])]
    out += [line(name, cells) for name, cells in rows.items()]
    return "\n".join(out)


VIVADO_TIMING = VIVADO_TIMING.replace("{intra}", intra_clock_table({
    "clk100_0__io": [""] * 8 + ["3.000", "0.000", "0", "1"],
    "  pll_clkout0": ["7.500", "0.000", "0", "3321", "0.052", "0.000", "0", "3321", "9.500",
                      "0.000", "0", "1702"],
    "  pll_feedback": [""] * 8 + ["8.751", "0.000", "0", "2"]}))


def test_parse_vivado_reports():
    u = parse_vivado_utilisation(VIVADO_UTILISATION)
    assert u == {"lut": 1702, "lutram": 120, "ff": 1950, "bram": 6.5, "ramb36": 6,
                 "ramb18": 1, "dsp": 3}
    t = parse_vivado_timing(VIVADO_TIMING)
    assert t["periods"] == {"clk100_0__io": 10.0, "pll_clkout0": 20.0, "pll_feedback": 10.0}
    assert t["fmax"] == {"pll_clkout0": pytest.approx(1000 / 12.5)}


# -- tools that fail ----------------------------------------------------------------------

def fake_tool(folder: Path, name: str, body: str) -> Path:
    """A stand-in for an FPGA tool: a Python script that sees the tool's arguments."""
    path = folder / name
    path.write_text(f"#!{sys.executable}\nimport sys, json\nargs = sys.argv[1:]\n{body}\n")
    path.chmod(0o755)
    return path


YOSYS_OK = """\
log = args[args.index("-l") + 1]
open("top.stat.json", "w").write(json.dumps({"design": {"num_cells_by_type": {}}}))
open("top.json", "w").write("{}")
open(log, "w").write("Executing JSON backend.\\n\\nEnd of script. Logfile hash: 0\\n")
"""


def failing(graph, tmp_path, name="icebreaker"):
    with pytest.raises(BnnhwError) as e:
        synthesise(board_top(graph, name), name, tmp_path / "out", progress=False,
                   cache=tmp_path / "cache")
    message = str(e.value)
    assert "\n" not in message
    return message


def test_failing_yosys_is_one_sentence(graph, tmp_path, monkeypatch):
    yosys = fake_tool(tmp_path, "yosys", """\
log = args[args.index("-l") + 1]
open(log, "w").write("1. Executing RTLIL frontend.\\nERROR: Module `FOO' referenced in module "
                     "`top' in cell `u' is not part of the design.\\n")
sys.exit(1)""")
    monkeypatch.setenv("YOSYS", str(yosys))
    message = failing(graph, tmp_path)
    log = tmp_path / "out" / "top.rpt"
    assert message == (f"icebreaker: synthesis failed: yosys exited with status 1 (Module "
                       f"`FOO' referenced in module `top' in cell `u' is not part of the "
                       f"design.); see {log}")
    assert log.is_file()                             # the failed build is kept, and copied
    assert list((tmp_path / "cache").glob("icebreaker-*.failed/top.rpt"))


def test_yosys_that_stops_silently_is_caught(graph, tmp_path, monkeypatch):
    yosys = fake_tool(tmp_path, "yosys", """\
log = args[args.index("-l") + 1]
open(log, "w").write("2.40. Executing ABC9 pass.\\n2.40.1. Executing ABC9_OPS pass\\n")
""")
    monkeypatch.setenv("YOSYS", str(yosys))
    message = failing(graph, tmp_path)
    assert message.startswith("icebreaker: synthesis stopped before the end of its Yosys "
                              "script (last step: ABC9_OPS pass); see ")
    assert message.endswith("top.rpt")


def test_failing_nextpnr_names_what_does_not_fit(graph, tmp_path, monkeypatch):
    monkeypatch.setenv("YOSYS", str(fake_tool(tmp_path, "yosys", YOSYS_OK)))
    nextpnr = fake_tool(tmp_path, "nextpnr", """\
log = args[args.index("--log") + 1]
open(log, "w").write(
    "Info: Device utilisation:\\n"
    "Info: \\t         ICESTORM_LC:    4837/   5280    91%\\n"
    "Info: \\t        ICESTORM_RAM:      49/     30   163%\\n\\n"
    "ERROR: Unable to place cell 'mem_RAM', no BELs remaining to implement cell type "
    "'ICESTORM_RAM'\\n")
sys.exit(1)""")
    monkeypatch.setenv("NEXTPNR_ICE40", str(nextpnr))
    message = failing(graph, tmp_path)
    assert message == ("icebreaker: place and route failed: nextpnr-ice40 exited with status 1 "
                       "(Unable to place cell 'mem_RAM', no BELs remaining to implement cell "
                       "type 'ICESTORM_RAM'), the design needing 49 of 30 ICESTORM_RAM; see "
                       f"{tmp_path / 'out' / 'top.tim'}")


def test_missing_tool(graph, tmp_path, monkeypatch):
    monkeypatch.setenv("YOSYS", str(tmp_path / "no-such-yosys"))
    message = failing(graph, tmp_path, "ulx3s")
    assert message.startswith("ulx3s: synthesis could not start ")
    assert "no-such-yosys" in message


def test_vivado_flow_with_a_stand_in(graph, tmp_path, monkeypatch):
    """The Vivado branch: the plan's command runs and its reports are parsed (Vivado
    itself is not here; a stand-in writes reports in its format)."""
    (tmp_path / "util.rpt").write_text(VIVADO_UTILISATION)
    (tmp_path / "timing.rpt").write_text(VIVADO_TIMING)
    vivado = fake_tool(tmp_path, "vivado", f"""\
import shutil
assert args[:2] == ["-mode", "batch"] and "top.tcl" in args
open(args[args.index("-log") + 1], "w").write("vivado stand-in\\n")
shutil.copy({str(tmp_path / 'util.rpt')!r}, "top_utilization_place.rpt")
shutil.copy({str(tmp_path / 'timing.rpt')!r}, "top_timing.rpt")
open("top.bit", "wb").write(b"bit")""")
    monkeypatch.setenv("VIVADO", str(vivado))
    r = synthesise(board_top(graph, "arty", 50_000_000), "arty", tmp_path / "out",
                   progress=False, cache=tmp_path / "cache", jobs=2)
    assert r.flow == "vivado" and not r.estimate
    assert r.resources["bram"] == 6.5 and r.resources["lut"] == 1702
    assert r.design_clock == "pll_clkout0" and r.design_fmax_mhz == pytest.approx(80.0)
    assert r.timing_met
    assert "set_param general.maxThreads 2" in (tmp_path / "out" / "top.tcl").read_text()
