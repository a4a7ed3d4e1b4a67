"""The LiteDRAM controller generated from the installed packages (``boards.litedram``):
the simulation and the Arty cores (without a CPU and with its VexRiscv), their files,
ports and CSRs, the cache, and the sentences for a missing extra, a missing cross
compiler or ninja and a failing generator."""

from __future__ import annotations

import dataclasses
import importlib.util
import re

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


# -- the core with its VexRiscv -----------------------------------------------------------

_READMEMH = re.compile(r'\$readmemh\("([^"]+)"')


def _unresolved(core) -> list[str]:
    """What a build of ``core.files`` would miss: ROM images its Verilog reads and CPU
    modules it instantiates (``VexRiscv``) that are not among its files."""
    names = {f.name for f in core.files}
    text = "\n".join(p.read_text() for p in core.verilog)
    missing = sorted(set(_READMEMH.findall(text)) - names)
    if core.cpu is not None and not re.search(r"^module\s+VexRiscv\b", text, re.MULTILINE):
        missing.append("module VexRiscv")
    return missing


@pytest.fixture(scope="module")
def cpu_core():
    """The Arty core with its VexRiscv, from the shared cache (``build/dram_cache/``):
    cold, generating it compiles the BIOS and its libc (30 to 80 s on two cores)."""
    if litedram._missing(litedram.CPU_PACKAGES):
        pytest.skip(f"the CPU core needs {', '.join(litedram._missing(litedram.CPU_PACKAGES))}"
                    f" (pip install 'bnnhw[dram]')")
    if litedram.riscv_triple() is None:
        pytest.skip("no RISC-V cross compiler on PATH to build the CPU core's BIOS "
                    "(apt-get install gcc-riscv64-unknown-elf)")
    return litedram.generate(litedram.arty_config())


def test_cpu_core_files(cpu_core):
    core = cpu_core
    assert core.cpu == "vexriscv" and not core.sim
    assert [f.name for f in core.files] == ["litedram_core.v", "VexRiscv.v",
                                            "litedram_core_rom.init", "litedram_core_sram.init"]
    assert core.files == core.verilog + core.data_files
    assert all(f.parent == core.directory / "gateware" and f.is_file() for f in core.files)
    assert _unresolved(core) == []
    # the ROM holds the BIOS: as many words as the Verilog declares for it
    top = core.verilog[0].read_text()
    depth = int(re.search(r"reg \[31:0\] rom\[0:(\d+)\];", top).group(1)) + 1
    assert len(core.data_files[0].read_text().split()) == depth
    # LiteX's Vivado script reads the copies beside it, not the package's files
    tcl = (core.directory / "gateware" / "litedram_core.tcl").read_text()
    assert "read_verilog {VexRiscv.v}" in tcl and "site-packages" not in tcl
    assert not (core.directory / "software" / "libc").exists()      # the BIOS tree, pruned
    lines = core.constraints.splitlines()
    assert len(lines) == 3 and all(ln.startswith(("set_false_path", "set_max_delay"))
                                   for ln in lines)


def test_unresolved_catches_a_missing_file(cpu_core):
    """The check above, on the core with its CPU's Verilog and ROM images left out."""
    short = dataclasses.replace(cpu_core, verilog=cpu_core.verilog[:1], data_files=())
    assert _unresolved(short) == ["litedram_core_rom.init", "litedram_core_sram.init",
                                  "module VexRiscv"]


def test_cpu_core_ports(cpu_core):
    from rtl_gen.dram_controller import DramControllerParams

    core = cpu_core
    w = {p.name: (p.direction, p.width) for p in core.ports}
    assert (core.data_width, core.address_width) == (128, 24)
    assert w["clk"] == w["rst"] == w["uart_rx"] == ("input", 1)
    for name in ("user_clk", "user_rst", "init_done", "init_error", "pll_locked", "uart_tx"):
        assert w[name] == ("output", 1), name                  # uart_tx: an "output reg"
    assert not any(name.startswith("wb_ctrl_") for name in w)   # the CPU owns the CSRs
    assert {"ddrctrl_init_done", "ddrctrl_init_error", "ctrl_reset", "uart_rxtx"} <= \
        set(core.csr)
    assert DramControllerParams.from_core(core).kind == "cpu"
    assert litedram.generate(litedram.arty_config()).cached


def test_parse_ports_reads_reg_outputs_and_refuses_others():
    head = "module litedram_core (\n    input  wire [3:0] a,\n    output reg    b\n);\n"
    assert litedram.parse_ports(head) == (litedram.Port("a", "input", 4),
                                          litedram.Port("b", "output", 1))
    with pytest.raises(RuntimeError, match="cannot read the port declaration 'output logic b'"):
        litedram.parse_ports(head.replace("output reg    b", "output logic b"))


def test_riscv_triple(monkeypatch):
    found = {"riscv32-elf-gcc", "my-riscv-gcc"}
    monkeypatch.setattr(litedram.shutil, "which", lambda name, path=None:
                        f"/usr/bin/{name}" if name in found else None)
    monkeypatch.delenv(litedram.TRIPLE_ENV, raising=False)
    assert litedram.riscv_triple() == "riscv32-elf"
    monkeypatch.setenv(litedram.TRIPLE_ENV, "my-riscv")
    assert litedram.riscv_triple() == "my-riscv"
    monkeypatch.setenv(litedram.TRIPLE_ENV, "absent")           # not on PATH: LiteX's list
    assert litedram.riscv_triple() == "riscv32-elf"


def test_cpu_key_follows_the_compiler(monkeypatch):
    monkeypatch.setattr(litedram, "riscv_triple", lambda: "riscv64-unknown-elf")
    keys = set()
    for version in ("gcc 12.2.0", "gcc 13.1.0"):
        monkeypatch.setattr(litedram, "_compiler_version", lambda t, v=version: v)
        keys.add(litedram.config_key(litedram.arty_config(), False))
    assert len(keys) == 2
    bare = {litedram.config_key(litedram.arty_config(None), False) for _ in range(2)}
    assert len(bare) == 1


def test_cpu_needs_ninja(monkeypatch, tmp_path):
    monkeypatch.setattr(litedram, "_missing", lambda names: [])
    monkeypatch.setattr(litedram, "riscv_triple", lambda: "riscv64-unknown-elf")
    monkeypatch.setattr(litedram, "_which", lambda name: None)
    with pytest.raises(BnnhwError, match="ninja is not on PATH: install Debian's ninja-build"):
        litedram.generate(litedram.arty_config(), cache=tmp_path)


def test_cpu_controller_converts(cpu_core):
    """The CPU core's component in an Arty design: the board clock and its reset on ``clk``
    and ``rst``, the console's ``uart_rx`` idle (high), no control bus."""
    from amaranth import Elaboratable, Module
    from amaranth_boards.arty_a7 import ArtyA7_35Platform

    from rtl_gen.dram_controller import DramController, DramControllerParams

    params = DramControllerParams.from_core(cpu_core, cross_domain="sync")
    dram = DramController(params)
    assert "ctrl" not in dram.signature.members

    class Top(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            m.submodules.dram = dram
            return m

    text = ArtyA7_35Platform().prepare(Top()).files["top.v"]
    start = text.index("litedram_core core (")
    instance = text[start:text.index(");", start)]
    assert ".uart_rx(1'h1)" in instance and ".init_done(" in instance
    assert ".ddram_dq(ddr3_0__dq__io)" in instance
