"""The DDR3 controller component on LiteDRAM's simulation core under Verilator
(``sim.dram_sim``): random words at random addresses written, partly rewritten with byte
masks, read back and mixed with more reads and writes, compared byte for byte with a
model of the memory, with random stalls on all three streams; in the controller's own
domain and through the clock-domain crossing. Two planted faults must be caught."""

from __future__ import annotations

import importlib.util
import json

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("litedram") is None,
    reason="the bnnhw[dram] extra is not installed (pip install 'bnnhw[dram]')")


def run_pattern(tmp_path, cross_domain, fault=None, words=1024, ops=1024):
    from sim import dram_sim
    from sim.verilator import run_cocotb

    build = dram_sim.build(cross_domain)
    out = tmp_path / "result.json"
    conf = {"test": "pattern", "seed": 7, "words": words, "ops": ops, "stall": 0.3,
            "fault": fault, "out_file": str(out)}
    run_cocotb(build, "sim.dram_sim", run_dir=tmp_path / "run",
               env={dram_sim.CONF_ENV: json.dumps(conf)})
    return json.loads(out.read_text())


@pytest.mark.parametrize("cross_domain", [None, "sync"], ids=["user_clk", "crossing"])
def test_pattern_reads_back(tmp_path, cross_domain):
    result = run_pattern(tmp_path, cross_domain)
    # every word read back once, plus the reads among the mixed operations
    assert result["words"] > 1024 and result["mismatches"] == 0


@pytest.mark.parametrize("fault", ["read_addr", "mask"])
def test_checker_catches_planted_faults(tmp_path, fault):
    """Reads one word off, or byte masks the hardware never sees: the bench must fail."""
    from sim.verilator import CocotbError

    with pytest.raises(CocotbError, match="sim.dram_sim"):
        run_pattern(tmp_path, None, fault=fault, words=256, ops=256)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["mismatches"] > 0
    assert fault != "read_addr" or result["mismatches"] == result["words"]
