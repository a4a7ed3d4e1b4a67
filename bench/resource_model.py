"""The resource model against whole-network Yosys synthesis.

    .venv/bin/python bench/resource_model.py [--family xc7 ...] [--design NAME ...]
        [--plant NAME:FACTOR] [--json out.json]

For every network design of ``bench/calibrate_resources.py`` (``DESIGNS``: zoo tfc, sfc,
cnv, tiny and the test models, at default, fast, target and optimised foldings, with
memory styles, several pixels per beat, run-time writable, and board designs with the
link) synthesised for a family, prints the model's estimate (``bnnhw.resources``, from
the graph and folding alone) beside the synthesised figures stored in
``bnnhw/resource_calibration.json`` (flattened Yosys synthesis; the calibration script
runs it, networks are held out of the fit): LUT (logic LUTs), LUT RAM sites, FF, block
RAM (the family's blocks), DSP, and the LUT error. The check the resource model must
pass: LUTs within 15 % and block RAM exact for every design. Exit status 1 when one
misses.

``--plant NAME:FACTOR`` multiplies design NAME's LUT estimate by FACTOR: the planted
fault that shows the check fails when the estimate is off.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import calibrate_resources as cr

from bnnhw import resources as rs

LUT_TOLERANCE = 0.15


def rows(families, designs, plant):
    cal = rs.calibration()
    out = []
    for name, entry in sorted(cal.get("designs", {}).items()):
        if designs and name not in designs:
            continue
        for family, meas in sorted(entry["measured"].items()):
            if family not in families:
                continue
            spec = entry.get("resolved", {}).get(family) or cr.DESIGNS.get(name, entry["spec"])
            est = cr.design_estimate(spec, family)
            t = est.total
            lut = t.lut * plant.get(name, 1.0)
            err = (lut - meas["lut"]) / meas["lut"] if meas["lut"] else 0.0
            ok = abs(err) <= LUT_TOLERANCE and t.bram == meas["bram"]
            out.append({"design": name, "family": family,
                        "model": {"lut": round(lut), "lutram": round(t.lutram),
                                  "ff": round(t.ff), "bram": t.bram, "dsp": round(t.dsp)},
                        "yosys": {k: meas.get(k, 0) for k in ("lut", "lutram", "ff", "bram",
                                                               "dsp")},
                        "lut_error": err, "ok": ok})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", nargs="+", default=list(rs.FAMILIES), choices=rs.FAMILIES)
    ap.add_argument("--design", nargs="*", default=None)
    ap.add_argument("--plant", action="append", default=[],
                    help="NAME:FACTOR: scale a design's LUT estimate (a planted fault)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    plant = {}
    for p in args.plant:
        name, factor = p.rsplit(":", 1)
        plant[name] = float(factor)
    table = rows(args.family, args.design, plant)
    head = (f"{'design':<22} {'fam':<5} {'LUT model':>9} {'LUT yosys':>9} {'err':>7} "
            f"{'LUTRAM m/y':>11} {'FF model':>9} {'FF yosys':>9} {'BRAM m/y':>10} "
            f"{'DSP m/y':>7}  ok")
    print(head)
    print("-" * len(head))
    for r in table:
        m, y = r["model"], r["yosys"]
        print(f"{r['design']:<22} {r['family']:<5} {m['lut']:>9,} {y['lut']:>9,} "
              f"{r['lut_error']:>+7.1%} {m['lutram']:>5,}/{y['lutram']:<5,} {m['ff']:>9,} "
              f"{y['ff']:>9,} {m['bram']:>4g}/{y['bram']:<5g} {m['dsp']:>3}/{y['dsp']:<3} "
              f"{'yes' if r['ok'] else 'NO'}")
    bad = [r for r in table if not r["ok"]]
    print(f"\n{len(table)} designs, {len(bad)} outside LUT +-{LUT_TOLERANCE:.0%} or with a "
          f"different block RAM count" + "".join(f"\n  {r['design']} ({r['family']})"
                                                for r in bad))
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1) + "\n")
    return 1 if bad or not table else 0


if __name__ == "__main__":
    sys.exit(main())
