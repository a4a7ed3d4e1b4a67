"""Boards bnnhw builds for, on top of ``amaranth_boards`` platforms.

``get(name)`` gives a ``boards.board.Board`` by name or alias; ``NAMES`` are the canonical
names, ``ALIASES`` map other spellings to them:

- ``arty-a7-35`` (alias ``arty``): Digilent Arty A7-35T, Xilinx XC7A35T (``boards.arty``);
- ``arty-a7-100``: Arty A7-100T, XC7A100T;
- ``ulx3s``: Radiona ULX3S, Lattice ECP5-85F (``boards.ulx3s``);
- ``icebreaker``: 1BitSquared iCEBreaker, Lattice iCE40UP5K (``boards.icebreaker``).

``boards.top.BoardDesign`` puts a ``rtl_gen.board_top.BoardTop`` on a board's pins (clock,
PLL, reset, UART, status LEDs); ``bnnhw.flows.synth`` builds it.
"""

from __future__ import annotations

from .arty import ARTY_A7_35, ARTY_A7_100
from .board import FLOW_STAGES, LED_ROLES, Board, Budget, ClockInput, Fpga, Uart
from .icebreaker import ICEBREAKER
from .ulx3s import ULX3S_85F

__all__ = ["ALIASES", "BOARDS", "FLOW_STAGES", "LED_ROLES", "NAMES", "Board", "Budget",
           "ClockInput", "Fpga", "Uart", "get"]

BOARDS: dict[str, Board] = {b.name: b for b in (ARTY_A7_35, ARTY_A7_100, ULX3S_85F, ICEBREAKER)}
NAMES: tuple[str, ...] = tuple(BOARDS)
ALIASES: dict[str, str] = {alias: b.name for b in BOARDS.values() for alias in b.aliases}


def get(name: str) -> Board:
    """The board called ``name`` (a canonical name or an alias, any case); ``KeyError``
    listing the known names otherwise."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    try:
        return BOARDS[key]
    except KeyError:
        known = ", ".join([*NAMES, *ALIASES])
        raise KeyError(f"unknown board {name!r}; known boards: {known}") from None
