"""``bnnhw boards``: the boards bnnhw builds for, with their budgets and flows."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def table() -> list[dict]:
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


def run(args: argparse.Namespace) -> int:
    rows = table()
    if args.json:
        print(json.dumps({"boards": rows}))
        return 0
    for r in rows:
        alias = f" (alias {', '.join(r['aliases'])})" if r["aliases"] else ""
        bud = r["budget"]
        spram = f", {bud['spram']} SPRAM" if bud.get("spram") else ""
        print(f"{r['name']}{alias}: {r['title']}, {r['device']}")
        print(f"  budget: {bud['lut']:,} LUT{bud['lut_inputs']}, {bud['ff']:,} FF, "
              f"{bud['bram']} {bud['bram_kind']} ({bud['bram_bits'] // 1024} Kbit){spram}, "
              f"{bud['dsp']} {bud['dsp_kind']}")
        print(f"  clock: {r['board_clock_hz'] / 1e6:g} MHz board clock, {r['pll']}, design "
              f"clock {r['default_clock_hz'] / 1e6:g} MHz by default; link: {r['uart']}")
        for stage, tool in r["flow"].items():
            print(f"  {stage.replace('_', ' ')}: {tool or 'not available here'}")
    return 0
