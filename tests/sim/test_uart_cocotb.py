"""The UART PHY under Verilator, driven by cocotb with ``cocotbext.uart`` (``sim.uart_tb``):
100 MHz at 3 and 12 Mbaud, the exact rate and 2 % or more either way, a break, and tx
checked by a ``UartSink`` and looped back into rx.

One Verilator build per design (two, cached across runs) and one simulator run per
design, which runs every case of the bench. A third run reuses the 3 Mbaud build with the
bench told the wrong rate: every case of the bench must fail.
"""

from __future__ import annotations

import json

import pytest

from rtl_gen.uart import UART, UARTParams
from sim.verilator import CocotbError, run_cocotb, verilator_build

CLOCK = 100_000_000
BENCH = "sim.uart_tb"
CONF_ENV = "BNNHW_UART_CONF"      # the name sim.uart_tb reads; it is not imported here


def run_bench(tmp_path, design_baud: int, bench_baud: int, n_bytes: int = 24) -> dict:
    build = verilator_build(UART(UARTParams(CLOCK, design_baud)), toplevel="uart")
    out = tmp_path / "result.json"
    conf = {"clock_hz": CLOCK, "baud": bench_baud, "bytes": n_bytes, "seed": design_baud,
            "out_file": str(out)}
    run_cocotb(build, BENCH, run_dir=tmp_path / "run", env={CONF_ENV: json.dumps(conf)})
    return json.loads(out.read_text())


@pytest.mark.parametrize("baud", [3_000_000, 12_000_000], ids=["3M", "12M"])
def test_uart_under_verilator(tmp_path, baud):
    result = run_bench(tmp_path, baud, baud)
    lo, hi = UARTParams(CLOCK, baud).baud_error_limits
    assert abs(result["rx_exact"]["baud_error"]) < 0.005
    # the sender really was 2 % or more off, and within what the design claims to take
    assert 0.02 <= result["rx_fast"]["baud_error"] < hi
    assert lo < result["rx_slow"]["baud_error"] <= -0.02
    assert result["tx_loopback"]["bytes"] == 24


def test_bench_fails_on_a_rate_mismatch(tmp_path):
    """Planted fault: the 3 Mbaud design against a bench that expects 10 % more."""
    with pytest.raises(CocotbError, match="5 of 5 cocotb tests of sim.uart_tb failed"):
        run_bench(tmp_path, 3_000_000, 3_300_000, n_bytes=8)
