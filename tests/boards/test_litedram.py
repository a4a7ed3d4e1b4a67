"""The LiteDRAM controller generated from the installed packages (``boards.litedram``):
the simulation and the Arty (no CPU) cores, their ports and CSRs, the cache, and the
sentences for a missing extra, a missing cross compiler and a failing generator."""

from __future__ import annotations

import importlib.util

import pytest

from bnnhw.errors import BnnhwError
from boards import litedram

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("litedram") is None,
    reason="the bnnhw[dram] extra is not installed (pip install 'bnnhw[dram]')")


def _widths(core) -> dict[str, int]:
    return {p.name: p.width for p in core.ports}


def test_sim_core_ports_and_cache(tmp_path):
    core = litedram.generate(litedram.SIM_CONFIG, sim=True, cache=tmp_path)
    assert not core.cached
    w = _widths(core)
    # the Arty's x16 DDR3 at 1:4: 128-bit words, 16 byte enables, 24 word address bits
    assert (core.data_width, core.address_width) == (128, 24)
    assert w["user_port_0_wdata_we"] == 16 and w["user_port_0_rdata_data"] == 128
    assert core.port("user_clk").direction == "output"
    assert not any(name.startswith("ddram_") for name in w)      # the model replaces the PHY
    assert core.csr["ddrctrl_init_done"] == 0 and "sdram_dfii_control" in core.csr
    again = litedram.generate(litedram.SIM_CONFIG, sim=True, cache=tmp_path)
    assert again.cached and again.directory == core.directory
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == \
        [core.directory.name]


def test_key_follows_config():
    other = {**litedram.SIM_CONFIG, "sys_clk_freq": 50_000_000}
    keys = {litedram.config_key(litedram.SIM_CONFIG, True),
            litedram.config_key(litedram.SIM_CONFIG, False), litedram.config_key(other, True)}
    assert len(keys) == 3


def test_arty_core_pins_match_the_board(tmp_path):
    from amaranth_boards.arty_a7 import ArtyA7_35Platform

    from rtl_gen.dram_controller import LITEDRAM_PINS, _pin

    core = litedram.generate(litedram.arty_config(cpu=None), cache=tmp_path)
    pads = ArtyA7_35Platform().request("ddr3", 0, dir="-")
    ddram = [p for p in core.ports if p.name.startswith("ddram_")]
    assert {p.name for p in ddram} == set(LITEDRAM_PINS)
    for p in ddram:
        assert len(_pin(pads, p.name)) == p.width, p.name
    assert {"wb_ctrl_adr", "clk", "rst", "user_clk"} <= set(_widths(core))


def test_missing_extra(monkeypatch, tmp_path):
    monkeypatch.setattr(litedram, "_missing", lambda names: ["litedram"])
    with pytest.raises(BnnhwError, match=r"^install bnnhw\[dram\]: .*litedram is not installed"):
        litedram.generate(litedram.SIM_CONFIG, sim=True, cache=tmp_path)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_cpu_needs_a_cross_compiler(monkeypatch, tmp_path):
    monkeypatch.setattr(litedram, "_missing", lambda names: [])
    monkeypatch.setattr(litedram.shutil, "which", lambda name: None)
    with pytest.raises(BnnhwError, match="RISC-V cross compiler.*gcc-riscv64-unknown-elf"):
        litedram.generate(litedram.arty_config(), cache=tmp_path)


def test_cpu_packages_named(monkeypatch, tmp_path):
    real = litedram._missing
    monkeypatch.setattr(litedram, "_missing",
                        lambda names: [n for n in names if n.startswith("pythondata-cpu")]
                        or real(names) if "meson" in names else real(names))
    with pytest.raises(BnnhwError, match="also needs pythondata-cpu-vexriscv"):
        litedram.generate(litedram.arty_config(), cache=tmp_path)


def test_generator_failure_leaves_nothing(tmp_path):
    bad = {**litedram.SIM_CONFIG, "sdram_module": "NO_SUCH_MODULE"}
    with pytest.raises(RuntimeError, match="litedram.gen failed"):
        litedram.generate(bad, sim=True, cache=tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_bad_cpu_name():
    with pytest.raises(ValueError, match="cpu must be 'vexriscv' or None, not 'rocket'"):
        litedram.arty_config("rocket")


def test_arty_controller_converts_with_its_pins(tmp_path):
    """The no-CPU core's component in an Arty design: every DDR3 pad on the ddr3 pins."""
    from amaranth import Elaboratable, Module
    from amaranth_boards.arty_a7 import ArtyA7_35Platform

    from rtl_gen.dram_controller import DramController, DramControllerParams

    core = litedram.generate(litedram.arty_config(cpu=None), cache=tmp_path)
    params = DramControllerParams.from_core(core, cross_domain="sync")
    assert params.kind == "bare"

    class Top(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            m.submodules.dram = DramController(params)
            return m

    plan = ArtyA7_35Platform().prepare(Top())
    text = plan.files["top.v"]
    start = text.index("litedram_core core (")
    instance = text[start:text.index(");", start)]
    for p in core.ports:
        if p.name.startswith("ddram_"):
            assert f".{p.name}(ddr3_0__" in instance, p.name
    assert "DIFF_SSTL135" in plan.files["top.xdc"]
