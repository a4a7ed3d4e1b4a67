"""The board registry: names and aliases, the devices and their budgets, clocks, UARTs,
LEDs and the flow stages each board has here."""

from __future__ import annotations

import pytest

import boards
from boards.board import FLOW_STAGES, LED_ROLES


def test_names_and_aliases():
    assert boards.NAMES == ("arty-a7-35", "arty-a7-100", "ulx3s", "icebreaker")
    assert boards.get("arty") is boards.get("arty-a7-35") is boards.get(" Arty-A7-35 ")
    assert boards.get("ulx3s-85f") is boards.get("ulx3s")
    assert set(boards.ALIASES) >= {"arty", "ulx3s-85f"}
    with pytest.raises(KeyError, match="unknown board 'de10'.*arty-a7-35.*icebreaker"):
        boards.get("de10")


@pytest.mark.parametrize("name, family, device, package, speed, platform", [
    ("arty", "xc7", "XC7A35T", "CSG324", "1L", "ArtyA7_35Platform"),
    ("arty-a7-100", "xc7", "XC7A100T", "CSG324", "1L", "ArtyA7_100Platform"),
    ("ulx3s", "ecp5", "LFE5U-85F", "CABGA381", "6", "ULX3S_85F_Platform"),
    ("icebreaker", "ice40", "iCE40UP5K", "SG48", "", "ICEBreakerPlatform"),
])
def test_devices_match_their_platforms(name, family, device, package, speed, platform):
    b = boards.get(name)
    assert (b.fpga.family, b.fpga.device, b.fpga.package, b.fpga.speed) == \
        (family, device, package, speed)
    assert b.platform_class.__name__ == platform
    plat = b.platform()
    assert plat.device.upper().startswith(device.upper()) or \
        device.upper() in plat.device.upper()
    assert plat.package.upper().removeprefix("BG") in package.upper()   # BG381: CABGA381
    # the clock is the platform's, at the stated frequency
    assert plat.default_clk == b.clock.resource
    assert plat.lookup(b.clock.resource, b.clock.number).clock.frequency == b.clock.hz


def test_budgets():
    a35, a100 = boards.get("arty-a7-35").budget, boards.get("arty-a7-100").budget
    assert (a35.lut, a35.lut_inputs, a35.ff, a35.bram, a35.bram_kind, a35.dsp) == \
        (20_800, 6, 41_600, 50, "RAMB36", 90)
    assert a35.bram_total_bits == 50 * 36 * 1024          # = 100 RAMB18
    assert (a100.lut, a100.ff, a100.bram, a100.dsp) == (63_400, 126_800, 135, 240)
    ecp5 = boards.get("ulx3s").budget
    assert (ecp5.lut, ecp5.lut_inputs, ecp5.ff, ecp5.bram, ecp5.bram_kind, ecp5.bram_bits) \
        == (83_640, 4, 83_640, 208, "DP16KD", 18 * 1024)
    assert (ecp5.dsp, ecp5.dsp_kind) == (156, "MULT18X18D")
    up5k = boards.get("icebreaker").budget
    assert (up5k.lut, up5k.ff, up5k.bram, up5k.bram_bits, up5k.spram, up5k.spram_bits) == \
        (5_280, 5_280, 30, 4096, 4, 256 * 1024)
    assert up5k.bram_total_bits == 120 * 1024 and up5k.spram_total_bits == 1 << 20
    assert up5k.as_dict() == {"lut": 5280, "ff": 5280, "bram": 30, "dsp": 8, "spram": 4}


@pytest.mark.parametrize("name", boards.NAMES)
def test_uart_and_led_resources_exist(name):
    b = boards.get(name)
    plat = b.platform()
    uart = plat.lookup(b.uart.resource, b.uart.number)
    assert {s.name for s in uart.ios} >= {"rx", "tx"}
    if b.uart.tx_enable:
        plat.lookup(*b.uart.tx_enable)
    assert set(b.leds) == set(LED_ROLES)
    assert len(set(b.leds.values())) == len(LED_ROLES)     # one LED each
    for resource, number in b.leds.values():
        plat.lookup(resource, number)


def test_uarts_and_default_bauds():
    assert boards.get("ulx3s").uart.tx_enable == ("uart_tx_enable", 0)
    assert boards.get("arty").default_baud() == 12_000_000       # 100 MHz, FT2232H
    assert boards.get("ulx3s").default_baud() == 3_000_000       # FT231X: 3 Mbaud at most
    ice = boards.get("icebreaker")
    assert ice.default_baud() == 3_000_000                      # 12 MHz: 4 cycles a bit
    assert ice.default_baud(48_000_000) == 12_000_000
    assert ice.default_baud(47_000_000) == 3_000_000
    with pytest.raises(ValueError, match="cannot sample 3 Mbaud"):
        ice.default_baud(11_000_000)
    with pytest.raises(ValueError, match="FT231X carries at most 3000000 baud"):
        boards.get("ulx3s").check_baud(12_000_000)


def test_default_clocks():
    assert boards.get("arty").default_clock_hz == 100_000_000          # the board clock
    assert boards.get("arty").clock_settings(100_000_000) is None
    assert boards.get("icebreaker").clock_settings(12_000_000) is None
    s = boards.get("ulx3s").clock_settings(boards.get("ulx3s").default_clock_hz)
    assert s.exact and s.output_hz == 100_000_000 and s.primitive == "EHXPLLL"


def test_flow_stages(monkeypatch):
    for name in ("ulx3s", "icebreaker"):
        stages = boards.get(name).stages()
        assert tuple(stages) == FLOW_STAGES and all(stages.values())
    assert "nextpnr-ecp5" in boards.get("ulx3s").stages()["place_and_route"]
    assert "icepack" in boards.get("icebreaker").stages()["bitstream"]
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("VIVADO", raising=False)
    assert not boards.board.vivado_present()
    stages = boards.get("arty").stages()
    assert "synth_xilinx" in stages["synthesis"]
    assert stages["place_and_route"] is stages["bitstream"] is stages["timing"] is None


def test_flow_stages_with_vivado(tmp_path, monkeypatch):
    fake = tmp_path / "vivado"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert boards.board.vivado_present()
    assert boards.get("arty-a7-100").stages() == dict.fromkeys(FLOW_STAGES, "vivado")


def test_core_params_carry_the_board():
    from bnnhw.folding import default_folding
    from bnnhw.frontend import compile_model
    from tests.bnn_cases import spec_model

    graph = compile_model(spec_model([{"type": "dense", "out": 4}], "binary", (1, 4, 4)))
    core = boards.get("ulx3s").core_params(graph, default_folding(graph), max_payload=64)
    assert (core.board, core.clock_hz, core.baud, core.max_payload) == \
        ("ulx3s", 100_000_000, 3_000_000, 64)
    assert core.identity.board == "ulx3s"
    with pytest.raises(ValueError, match="cannot make exactly 66 MHz"):
        boards.get("ulx3s").core_params(graph, default_folding(graph), clock_hz=66_000_000)


def test_describe():
    text = boards.get("icebreaker").describe()
    assert "iCE40UP5K" in text and "30 EBR" in text and "4 SPRAM" in text


def test_one_budget_class():
    """The boards' budgets are ``bnnhw.resources.Budget`` (the optimiser's), with the same
    figures as ``bnnhw.resources.BUDGETS``."""
    from bnnhw import resources as rs

    assert boards.Budget is rs.Budget
    for board, part in (("arty-a7-35", "xc7a35t"), ("arty-a7-100", "xc7a100t"),
                        ("ulx3s", "ecp5-85f"), ("icebreaker", "ice40up5k")):
        b = boards.get(board).budget
        assert isinstance(b, rs.Budget) and b == rs.BUDGETS[part]
        assert b.family == boards.get(board).fpga.family
