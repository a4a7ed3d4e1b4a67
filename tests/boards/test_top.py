# amaranth: UnusedElaboratable=no
"""The board-level top: the status LEDs and the power-on reset in the Amaranth simulator,
and each board's design as its platform prepares it (clock tree, PLL parameters, UART and
LED pins in the constraints), without running any tool."""

from __future__ import annotations

import re

import pytest
from amaranth import Fragment, Module, Signal
from amaranth.sim import Simulator

import boards
from bnnhw.folding import default_folding
from bnnhw.frontend import compile_model
from boards.top import BoardDesign, StatusLeds, clock_domains, pulse_cycles
from rtl_gen.board_top import BoardTop, BoardTopParams
from tests.bnn_cases import spec_model

LAYERS = [{"type": "dense", "out": 8}, {"type": "dense", "out": 4}]


@pytest.fixture(scope="module")
def graph():
    return compile_model(spec_model(LAYERS, "binary", (1, 4, 4)))


def design(graph, name: str, clock_hz: int | None = None) -> BoardDesign:
    b = boards.get(name)
    core = b.core_params(graph, default_folding(graph), clock_hz=clock_hz, max_payload=64)
    return BoardDesign(b, BoardTop(BoardTopParams(core)))


_PLANS: dict[tuple[str, int | None], dict[str, str]] = {}


def plan_files(graph, name: str, clock_hz: int | None = None) -> dict[str, str]:
    """The platform's build plan of the tiny design (made once per board and clock)."""
    if (name, clock_hz) not in _PLANS:
        b = boards.get(name)
        plan = b.platform().build(design(graph, name, clock_hz), do_build=False,
                                  emit_src=False)
        _PLANS[name, clock_hz] = {k: v if isinstance(v, str) else v.decode()
                                  for k, v in plan.files.items()}
    return _PLANS[name, clock_hz]


def test_status_leds():
    leds = StatusLeds(stretch_cycles=5, heartbeat_cycles=3)
    sim = Simulator(leds)
    sim.add_clock(1e-8)
    seen = []

    async def bench(ctx):
        for cycle in range(24):
            ctx.set(leds.busy, cycle == 2)
            ctx.set(leds.tx, 0 if cycle in (4, 5) else 1)
            ctx.set(leds.link_error, cycle == 10)
            await ctx.tick()
            seen.append((ctx.get(leds.activity), ctx.get(leds.response), ctx.get(leds.error),
                         ctx.get(leds.heartbeat)))

    sim.add_testbench(bench)
    sim.run()
    activity = [a for a, *_ in seen]
    response = [r for _, r, *_ in seen]
    error = [e for *_, e, _ in seen]
    beat = [h for *_, h in seen]
    # busy in cycle 2 only: lit for 5 cycles from then; tx low in cycles 4 and 5: lit
    # from 4 to 5 + 4; the error latched for good
    assert activity == [0, 0, 1, 1, 1, 1, 1] + [0] * 17
    assert response == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1] + [0] * 14
    assert error == [0] * 10 + [1] * 14
    assert beat[:12] == [0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0]


def test_status_led_periods():
    leds = StatusLeds.for_clock(50_000_000)
    Fragment.get(leds, None)
    assert leds.stretch_cycles == 2_500_000         # 50 ms
    assert leds.heartbeat_cycles == 25_000_000      # toggles twice a second: 1 Hz
    assert pulse_cycles(12_000_000, 20e-6) == 240
    with pytest.raises(ValueError):
        StatusLeds(0, 3)


def test_reset_waits_for_the_lock_and_then_some():
    m = Module()
    clk, locked = Signal(), Signal()
    cr = clock_domains(m, clk, locked, cycles=6)
    sim = Simulator(m)
    ready = []

    async def bench(ctx):
        for cycle in range(40):
            ctx.set(locked, 5 <= cycle < 30)
            ctx.set(clk, 1)
            await ctx.delay(5e-9)
            ctx.set(clk, 0)
            await ctx.delay(5e-9)
            ready.append(ctx.get(cr.ready))

    sim.add_testbench(bench)
    sim.run()
    first = ready.index(1)
    # lock at edge 5, two synchroniser stages, six counted cycles, the ready register
    assert 5 + 2 + 6 <= first <= 5 + 2 + 6 + 2, ready
    assert all(ready[first:30])
    assert not any(ready[31:]), ready                 # losing the lock resets at once


@pytest.mark.parametrize("name, clock_hz, primitive", [
    ("ulx3s", None, "EHXPLLL"), ("icebreaker", 18_000_000, "SB_PLL40_PAD"),
    ("arty", 50_000_000, "MMCME2_BASE")])
def test_pll_in_the_design(graph, name, clock_hz, primitive):
    b = boards.get(name)
    files = plan_files(graph, name, clock_hz)
    s = b.clock_settings(clock_hz or b.default_clock_hz)
    if b.fpga.family == "xc7":
        text = files["top.v"]
        assert re.search(rf"{primitive}\s+#\(", text)
        for k, v in s.params.items():
            assert re.search(rf"\.{k}\(({v}|{float(v)}|[^)]*{v})\)", text), (k, v, text[:0])
        assert "BUFG" in text
    else:
        text = files["top.il"]
        assert f"cell \\{primitive} " in text
        for k, v in s.params.items():
            assert f"parameter \\{k} {v}\n" in text, (k, v)
    if primitive == "SB_PLL40_PAD":       # straight from the pin, no input buffer
        assert "connect \\PACKAGEPIN \\clk12_0__io" in text


@pytest.mark.parametrize("name", ["ulx3s", "icebreaker", "arty"])
def test_pins_in_the_constraints(graph, name):
    b = boards.get(name)
    files = plan_files(graph, name)
    constraints = next(v for k, v in files.items() if k.endswith((".lpf", ".pcf", ".xdc")))
    plat = b.platform()
    uart = plat.lookup(b.uart.resource, b.uart.number)
    pins = {s.name: s.ios[0].names[0] for s in uart.ios if hasattr(s, "ios")}
    for sub in ("rx", "tx"):
        assert re.search(rf"uart_0__{sub}__io\"?\]?\s.*{pins[sub]}|{pins[sub]}.*uart_0__{sub}",
                         constraints) or f"uart_0__{sub}__io {pins[sub]}" in constraints
    for resource, number in b.leds.values():
        assert f"{resource}_{number}__io" in constraints
    if b.uart.tx_enable:
        assert "uart_tx_enable_0__io" in constraints


def test_board_clock_needs_no_pll(graph):
    files = plan_files(graph, "icebreaker")           # 12 MHz: the board clock
    assert "SB_PLL40" not in files["top.il"] and "SB_GB_IO" in files["top.il"]
    files = plan_files(graph, "arty")                 # 100 MHz
    assert "MMCME2" not in files["top.v"] and "BUFG" in files["top.v"]


def test_refusals(graph):
    b = boards.get("ulx3s")
    folds = default_folding(graph)
    other = boards.get("icebreaker").core_params(graph, folds, max_payload=64)
    with pytest.raises(ValueError, match="made for board 'icebreaker', not 'ulx3s'"):
        BoardDesign(b, BoardTop(BoardTopParams(other)))
    from rtl_gen.board_core import BoardCoreParams
    fast = BoardCoreParams(graph, folds, board="ulx3s", clock_hz=50_000_000,
                           baud=12_000_000, max_payload=64)
    with pytest.raises(ValueError, match="FT231X carries at most 3000000 baud"):
        BoardDesign(b, BoardTop(BoardTopParams(fast)))
    odd = BoardCoreParams(graph, folds, board="ulx3s", clock_hz=66_000_000, max_payload=64)
    with pytest.raises(ValueError, match="cannot make exactly 66 MHz"):
        BoardDesign(b, BoardTop(BoardTopParams(odd)))
    ok = b.core_params(graph, folds, max_payload=64)
    with pytest.raises(ValueError, match="is not the core's clock_hz"):
        BoardDesign(b, BoardTop(BoardTopParams(ok)), clock_hz=25_000_000)
