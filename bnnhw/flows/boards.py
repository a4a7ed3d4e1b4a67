"""The boards of ``boards`` as the commands see them: found by name with one clear
sentence when unknown, and listed with their budgets and flows."""

from __future__ import annotations

from typing import Any

from ..errors import BnnhwError

__all__ = ["get", "table"]


def get(name: str):
    """The ``boards.board.Board`` called ``name`` (or an alias); ``BnnhwError`` naming the
    known boards otherwise."""
    import boards

    try:
        return boards.get(name)
    except KeyError as e:
        raise BnnhwError(f"{e.args[0]} (bnnhw boards lists them)") from None


def table() -> list[dict[str, Any]]:
    """One entry per board: name, aliases, title, device, clocks, link, budget, flow."""
    import boards

    out = []
    for b in boards.BOARDS.values():
        out.append({
            "name": b.name, "aliases": list(b.aliases), "title": b.title,
            "family": b.fpga.family, "device": b.fpga.describe(),
            "board_clock_hz": b.clock.hz, "default_clock_hz": b.default_clock_hz,
            "pll": b.pll.primitive, "uart": f"{b.uart.bridge}, up to {b.uart.max_baud:,} baud",
            "budget": {**b.budget.as_dict(), "lut_inputs": b.budget.lut_inputs,
                       "bram_kind": b.budget.bram_kind, "bram_bits": b.budget.bram_bits,
                       "dsp_kind": b.budget.dsp_kind},
            "flow": b.stages()})
    return out
