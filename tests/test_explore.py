"""``bnnhw explore``: a small sweep on a local Dask cluster and on a separately started
scheduler and worker, a failing point reported while the others complete, resuming, the
Pareto front."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from bnnhw.checkpoint import save_checkpoint
from bnnhw.flows.explore import Point, grid, pareto
from tests import test_build as build_tests
from tests.bnn_cases import zoo_model
from tests.test_build import self_contained


def run(argv, capsys):
    code, out, err = build_tests.run(argv, capsys)
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("explore_model") / "tiny.pt"
    save_checkpoint(path, zoo_model("tiny", seed=0, calibration=2), "tiny", {"data": "mnist"})
    return path


def test_grid_is_the_cross_product_of_the_axes():
    points = grid([None, 3000], ["f.json"], ["auto", "fixed"], [None, 50.0], [None, 2])
    assert len(points) == 3 * 2 * 2 * 2 and len(set(points)) == len(points)
    assert Point(None, "f.json", "fixed", 50.0, 2) in points
    assert all((p.target_ii is None) or (p.folding is None) for p in points)


def test_pareto_keeps_exactly_the_undominated_points():
    rows = [{"lut": 100, "images_per_second": 10.0},   # front
            {"lut": 200, "images_per_second": 10.0},   # dominated by the first
            {"lut": 300, "images_per_second": 50.0},   # front
            {"lut": 250, "images_per_second": 40.0},   # front
            {"lut": 400, "images_per_second": 45.0},   # dominated by the third
            {"lut": None, "images_per_second": 99.0}]  # no figure: left out
    assert pareto(rows, "lut") == [0, 3, 2]
    rows[1]["images_per_second"] = 11.0               # now it beats the first on rate
    assert pareto(rows, "lut") == [0, 1, 3, 2]


def test_a_sweep_builds_its_points_reports_a_failing_one_and_resumes(tiny, tmp_path, capsys):
    out = tmp_path / "sweep"
    # one design (II at most 6,000 cycles) at 100 MHz, and at a clock no PLL makes
    code, _, err = run(["explore", "--board", "ulx3s", "--model", tiny, "--target-ii",
                        "6000", "--clock", "100,1000", "--workers", "2", "--out", out,
                        "--json"], capsys)
    assert code == 0, err
    doc = json.loads((out / "explore.json").read_text())
    rows = doc["points"]
    assert len(rows) == 2
    bad = [r for r in rows if "error" in r]
    good = [r for r in rows if "error" not in r]
    assert len(bad) == 1 and "1000 MHz" in bad[0]["error"] and bad[0]["point"]["clock_mhz"] == 1000
    (row,) = good
    report = json.loads((out / row["folder"] / "report.json").read_text())
    # the row's figures are its build's: synthesised by the tools, the II within the target
    assert row["ii_cycles"] == report["ii_cycles"] <= 6000
    assert row["lut"] == report["resources"]["lut"]["synthesised"] > 0
    assert row["fmax_mhz"] == report["fmax_mhz"] is not None and row["clock_mhz"] == 100
    assert (out / row["folder"] / "top.bit").stat().st_size > 0
    assert doc["pareto"]["lut"] == [row["key"]]
    page = (out / "explore.html").read_text()
    assert "Pareto front" in page and "1000 MHz" in page and "<svg" in page
    assert self_contained(page)

    # a second run resumes: the built point is taken as it is, the failed one retried
    code, _, err = run(["explore", "--board", "ulx3s", "--model", tiny, "--target-ii",
                        "6000", "--clock", "100,1000", "--workers", "1", "--out", out],
                       capsys)
    assert code == 0
    assert "1 already built" in err and "running 1 points" in err
    again = json.loads((out / "explore.json").read_text())["points"]
    assert [r.get("resumed") for r in again] == [True, False]
    assert {k: v for k, v in again[0].items() if k != "resumed"} == \
        {k: v for k, v in row.items() if k != "resumed"}


def test_every_point_failing_is_an_error(tiny, tmp_path, capsys):
    code, _, err = run(["explore", "--board", "ulx3s", "--model", tiny, "--target-ii", "10",
                        "--workers", "1", "--out", tmp_path / "s"], capsys)
    assert code == 2
    lines = [x for x in err.splitlines() if x.startswith("bnnhw explore: error:")]
    assert len(lines) == 1 and "every point of the sweep failed" in lines[0]
    assert "cannot reach II 10" in lines[0]


@pytest.mark.parametrize("argv, words", [
    (["--target-ii", "0"], "comma-separated list of positive integers"),
    (["--weights", "auto,rom"], "auto, writable, fixed"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not both"),
])
def test_user_errors_are_one_line(tiny, tmp_path, capsys, argv, words):
    code, _, err = run(["explore", "--board", "ulx3s", "--model", tiny, "--out",
                        tmp_path / "s", *argv], capsys)
    assert code == 2 and words in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_sweep_runs_on_a_separately_started_scheduler(tiny, tmp_path, capsys):
    """``dask scheduler`` and ``dask worker`` started as a user would; the point is the
    fastest tiny at 100 MHz, the design of the sweep above (cached by design hash)."""
    dask = shutil.which("dask", path=os.path.dirname(sys.executable))
    assert dask is not None, "the dask command is installed with bnnhw"
    address = f"tcp://127.0.0.1:{_free_port()}"
    env = {**os.environ, "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED": "error"}
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port",
                               address.rsplit(":", 1)[1], "--no-dashboard"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(2)
        procs.append(subprocess.Popen([dask, "worker", address, "--nthreads", "1",
                                       "--no-dashboard"], cwd=tmp_path, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        code, _, err = run(["explore", "--board", "ulx3s", "--model", tiny, "--target-ii",
                            "6000", "--clock", "100", "--scheduler", address, "--out",
                            tmp_path / "remote"], capsys)
        assert code == 0, err
        assert f"running 1 points on {address}" in err
        doc = json.loads((tmp_path / "remote" / "explore.json").read_text())
        assert doc["scheduler"] == address and "error" not in doc["points"][0]
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def test_an_unreachable_scheduler_is_one_line(tiny, tmp_path, capsys):
    code, _, err = run(["explore", "--board", "ulx3s", "--model", tiny, "--target-ii", "6000",
                        "--scheduler", f"tcp://127.0.0.1:{_free_port()}", "--out",
                        tmp_path / "s"], capsys)
    assert code == 2 and "cannot reach the Dask scheduler" in err
