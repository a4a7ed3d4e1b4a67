"""``bnnhw boards``: the boards bnnhw builds for, with their budgets and flows."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..flows.boards import table

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
