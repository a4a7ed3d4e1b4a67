"""Read bandwidth and read latency of the DDR3 controller (``rtl_gen.dram_controller``) on
LiteDRAM's simulation core (its controller over the DFI-level DRAM model of the Arty's
MT41K128M16 at 100 MHz, 1:4), under Verilator through ``sim.dram_sim``.

Prints, per read pattern (``words`` reads at addresses ``i * stride``, in 128-bit words,
commands back to back, read data always taken): cycles, bytes per cycle and the share of
the port's 128 bits per cycle; then the cycles from a read command taken to its word
valid on an idle controller (several reads, each 64 cycles after the last), and a
sequential write run. Cycles are the controller's (``user_clk``) cycles.

    .venv/bin/python bench/dram_bandwidth.py [--words N] [--latency-reads N]

LiteDRAM maps addresses row-bank-column: a row of the x16 chip is 2 KB (128 words), so
a stride of 128 words reads each time in the next of the 8 banks and a stride of 1024
in the next row of the same bank; both open a new row for every read.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from sim import dram_sim
from sim.verilator import run_cocotb

WORD_BYTES = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=65536,
                        help="reads of the sequential pattern (65536 = 1 MiB)")
    parser.add_argument("--latency-reads", type=int, default=8)
    args = parser.parse_args()
    n, k = args.words, max(args.words // 4, 1)
    patterns = [["sequential", n, 1], ["stride 2 (32 B)", k, 2], ["stride 8 (128 B)", k, 8],
                ["stride 128 (2 KB)", k, 128], ["stride 1024 (16 KB)", k, 1024]]
    start = time.perf_counter()
    build = dram_sim.build(None)
    print(f"Verilator build: {time.perf_counter() - start:.1f} s"
          f"{' (cached)' if build.cached else ''}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        conf = {"test": "bandwidth", "seed": 0, "patterns": patterns,
                "latency_reads": args.latency_reads, "out_file": str(out)}
        start = time.perf_counter()
        run_cocotb(build, "sim.dram_sim", run_dir=Path(tmp) / "run",
                   env={dram_sim.CONF_ENV: json.dumps(conf)})
        seconds = time.perf_counter() - start
        result = json.loads(out.read_text())
    print(f"simulation: {seconds:.1f} s of wall time")
    print(f"{'reads':<24} {'words':>7} {'cycles':>8} {'bytes/cycle':>12} {'% of 128 b/c':>13}")
    for name, r in result["reads"].items():
        bpc = r["words"] * WORD_BYTES / r["cycles"]
        print(f"{name:<24} {r['words']:>7} {r['cycles']:>8} {bpc:>12.2f} "
              f"{100 * bpc / WORD_BYTES:>12.1f}%")
    w = result["writes"]
    bpc = w["words"] * WORD_BYTES / w["cycles"]
    print(f"{'writes, sequential':<24} {w['words']:>7} {w['cycles']:>8} {bpc:>12.2f} "
          f"{100 * bpc / WORD_BYTES:>12.1f}%")
    lat = result["latency"]
    print(f"read latency, idle controller: {min(lat)}..{max(lat)} cycles "
          f"(each read: {', '.join(map(str, lat))})")


if __name__ == "__main__":
    main()
