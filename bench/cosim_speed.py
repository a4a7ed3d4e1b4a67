"""Speed of the Verilator stream co-simulation (sim.cosim.run_stream_cosim).

Prints, for a few designs, payload widths and stall settings: simulated cycles, beats,
wall time of the simulated run, cycles/s and beats/s, and the build time (cold, then
cached). Two kinds of design:

- ``reg``: a one-register stream buffer moving up to one beat per cycle. The testbench
  acts on every beat, so this is the Python-bound worst case (one transfer each side
  every cycle).
- ``mvtu``: rtl_gen's matrix-vector-threshold unit as a mid-size conv layer (32 x 288
  binary weights on 8 PE x 32 SIMD, 14 x 14 output pixels, 7056 cycles per image, a
  beat in about every 4th cycle). Its outputs are checked against bnnhw.reference.

Usage: ``python bench/cosim_speed.py [--quick]``; builds land in the usual cache
(``BNNHW_SIM_CACHE`` or ``build/sim_cache``), so the second run shows cached builds.
"""

from __future__ import annotations

import argparse
import random
import sys

import numpy as np
from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bnnhw.packing import beats, unpack
from bnnhw.reference import popcount_matvec, threshold
from rtl_gen.mvtu import MVTU, MVTUParams
from sim.cosim import run_stream_cosim


class Register(wiring.Component):
    """One-register stream buffer (full throughput: one beat per cycle)."""

    def __init__(self, width):
        super().__init__({"i_stream": In(stream.Signature(width)),
                          "o_stream": Out(stream.Signature(width))})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i_stream, self.o_stream
        m.d.comb += i.ready.eq(~o.valid | o.ready)
        with m.If(o.valid & o.ready):
            m.d.sync += o.valid.eq(0)
        with m.If(i.valid & i.ready):
            m.d.sync += [o.payload.eq(i.payload), o.valid.eq(1)]
        return m


def mvtu_case(images: int):
    rng = np.random.default_rng(0)
    rows, cols, pixels = 32, 3 * 3 * 32, 14 * 14
    w = rng.integers(0, 2, size=(rows, cols))
    t = rng.integers(130, 160, size=(1, 1, rows))
    params = MVTUParams(name="conv", rows=rows, cols=cols, pe=8, simd=32, weights=w,
                        pixels=pixels, thresholds=t)
    x = rng.integers(0, 2, size=(images, pixels, cols))
    in_beats = [b for image in x for pixel in image for b in beats(pixel, params.simd)]
    acc = popcount_matvec(x.reshape(-1, cols), w)
    want = threshold(acc, t[0, 0]).numpy().reshape(images, pixels, rows)
    return params, in_beats, want


def report(label: str, result, n_in: int, n_out: int, build_s: float | None) -> None:
    cpu = result.sim_cpu_seconds
    build = "" if build_s is None else f"{build_s:6.1f}{' cached' if result.build_cached else ''}"
    print(f"{label:30s} {result.cycles:8d} {n_in + n_out:7d} {result.sim_seconds:6.2f} "
          f"{cpu:6.2f} {result.cycles_per_second:9.0f} {result.cycles_per_cpu_second:9.0f} "
          f"{(n_in + n_out) / cpu:8.0f} {result.run_seconds:6.2f} {build}", flush=True)


HEADER = (f"{'design / stall_in, stall_out':30s} {'cycles':>8s} {'beats':>7s} {'wall':>6s} "
          f"{'cpu':>6s} {'cyc/s':>9s} {'cyc/cpu-s':>9s} {'beats/cs':>8s} {'run s':>6s} build s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer beats and cases")
    args = ap.parse_args(argv)
    n = 5_000 if args.quick else 20_000
    stalls = [(0.0, 0.0), (0.3, 0.3)] if args.quick else [(0.0, 0.0), (0.3, 0.3), (0.0, 0.9)]
    widths = [8, 256] if args.quick else [8, 64, 256]
    images = 2 if args.quick else 8

    print("wall/cpu: seconds of the simulated run; cyc/s per wall second, cyc/cpu-s and "
          "beats/cs per CPU second of the simulator process; run s: the whole simulator "
          "process; build s: Verilator build (first case of each design)")
    print(HEADER)
    for width in widths:
        rng = random.Random(width)
        data = [rng.getrandbits(width) for _ in range(n)]
        for k, (si, so) in enumerate(stalls):
            r = run_stream_cosim(Register(width), data, n, seed=k, stall_in=si, stall_out=so)
            build_s = r.build.seconds if k == 0 else None
            if r.out_beats != data:
                print(f"reg{width}: output differs from input", file=sys.stderr)
                return 1
            report(f"reg{width} / {si}, {so}", r, n, n, build_s)

    params, in_beats, want = mvtu_case(images)
    n_out = want.size // params.pe
    for k, (si, so) in enumerate(stalls[:2]):
        r = run_stream_cosim(MVTU(params), in_beats, n_out, seed=k, stall_in=si, stall_out=so)
        got = np.concatenate([unpack(b, params.pe) for b in r.out_beats])
        if not np.array_equal(got.reshape(want.shape), want):
            print("mvtu: output differs from bnnhw.reference", file=sys.stderr)
            return 1
        report(f"mvtu {images} images / {si}, {so}", r, len(in_beats), n_out,
               r.build.seconds if k == 0 else None)
    print(f"(mvtu: {params.cycles_per_image} cycles per image by the cycle model; "
          "outputs equal bnnhw.reference)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
