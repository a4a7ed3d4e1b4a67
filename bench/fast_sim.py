"""Speed of the C++ Verilator harnesses: sim.fast.run_stream_fast and sim.board.SimBoard.

1. Stream: the ``sfc`` network top (zoo ``sfc``, random weights as in
   ``tests/bnn_cases.py``, the default folding) free-running (no stalls) on random
   images, under the fast harness and, for the same images, the cocotb bench
   (``sim.cosim.run_stream_cosim``). Both outputs are checked against the golden model
   and against each other, cycle stamps included. Then the fast harness alone on more
   images, and with 30% stalls on both ends.
2. Board: a 1 MB round trip through the echo design of ``tests/sim/test_board.py`` on a
   ``SimBoard`` (loopback TCP), unpaced and paced like a 3 Mbaud UART at 100 MHz
   (333 cycles per byte, on a smaller transfer).

Printed per run: simulated cycles, wall and CPU seconds of the simulated run, cycles per
wall second and per CPU second (the steadier figure on a shared machine), and images
(stream) or bytes (board) per second.

Usage: ``python bench/fast_sim.py [--images N] [--fast-images N] [--quick]`` from the
repository root; builds land in the usual cache (``BNNHW_SIM_CACHE`` or
``build/sim_cache``), the first run of a design compiles it.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bnnhw import golden
from bnnhw.check import random_images
from bnnhw.folding import default_folding
from bnnhw.frontend import compile_model
from rtl_gen.network import Network, NetworkParams
from sim.board import SimBoard
from sim.cosim import run_stream_cosim
from sim.fast import run_stream_fast
from tests.bnn_cases import zoo_model
from tests.sim.test_board import Echo, expected

HEADER = (f"{'run':36s} {'cycles':>10s} {'wall s':>7s} {'cpu s':>7s} {'cycles/s':>10s} "
          f"{'cyc/cpu-s':>10s} {'per s':>12s}")


def row(label: str, cycles: int, wall: float, cpu: float, units: float, unit: str) -> None:
    cps = cycles / wall if wall else float("inf")
    ccps = cycles / cpu if cpu else float("inf")
    rate = f"{units / wall:,.0f} {unit}" if wall else "-"
    print(f"{label:36s} {cycles:10d} {wall:7.3f} {cpu:7.3f} {cps:10.3g} {ccps:10.3g} "
          f"{rate:>12s}", flush=True)


def stream_bench(images: int, fast_images: int) -> int:
    model = zoo_model("sfc", seed=0, calibration=2)
    graph = compile_model(model)
    params = NetworkParams(graph, default_folding(graph))
    shape = model.spec["input"]["shape"]
    print(f"sfc network top, default folding: {params.cycles_per_image} cycles per image "
          f"(model), {params.latency} cycles latency")
    print(HEADER)

    def check(result, imgs, label) -> bool:
        gold = golden.run(graph, imgs)
        want = [params.format.result_beat(s, c)
                for s, c in zip(gold.scores.numpy(), gold.classes.numpy(), strict=True)]
        if result.out_beats != want:
            print(f"{label}: output differs from the golden model", file=sys.stderr)
            return False
        return True

    imgs = random_images(shape, images, 7)
    beats = params.format.image_beats(imgs)
    timeout = 10 * len(imgs) * params.cycles_per_image + 100_000
    fast = run_stream_fast(Network(params), beats, len(imgs), stall_in=0, stall_out=0,
                           timeout_cycles=timeout)
    slow = run_stream_cosim(Network(params), beats, len(imgs), stall_in=0, stall_out=0,
                            timeout_cycles=timeout)
    if not (check(fast, imgs, "fast") and check(slow, imgs, "cocotb")):
        return 1
    if (fast.out_cycles, fast.in_cycles) != (slow.out_cycles, slow.in_cycles):
        print("fast and cocotb cycle stamps differ", file=sys.stderr)
        return 1
    for label, r in ((f"fast, {images} images", fast), (f"cocotb, same {images} images", slow)):
        row(label, r.cycles, r.sim_seconds, r.sim_cpu_seconds, images, "img/s")
    gain = fast.cycles_per_cpu_second / slow.cycles_per_cpu_second
    print(f"  (same outputs and cycle stamps; the fast harness does {gain:.0f}x the cocotb "
          f"bench's cycles per CPU second; processes {fast.run_seconds:.2f} s and "
          f"{slow.run_seconds:.2f} s from start to exit)")

    imgs = random_images(shape, fast_images, 8)
    beats = params.format.image_beats(imgs)
    timeout = 10 * len(imgs) * params.cycles_per_image + 100_000
    for stall in (0.0, 0.3):
        r = run_stream_fast(Network(params), beats, len(imgs), stall_in=stall,
                            stall_out=stall, seed=1, timeout_cycles=timeout)
        if not check(r, imgs, f"fast, stall {stall}"):
            return 1
        row(f"fast, {fast_images} images, stall {stall}", r.cycles, r.sim_seconds,
            r.sim_cpu_seconds, fast_images, "img/s")
    return 0


def round_trip(sock: socket.socket, data: bytes) -> bytes:
    sock.setblocking(False)
    got, sent = bytearray(), 0
    while len(got) < len(data):
        if sent < len(data):
            try:
                sent += sock.send(data[sent:sent + 65536])
            except BlockingIOError:
                pass
        try:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("the board closed the connection")
            got += chunk
        except BlockingIOError:
            time.sleep(0.0002)
    return bytes(got)


def board_bench(size: int, paced_size: int) -> int:
    print("\nSimBoard, echo design (rx -> FIFO -> tx), one round trip over loopback TCP")
    print(HEADER)
    for cpb, n in ((0, size), (333, paced_size)):
        data = bytes((i * 7 + 3) % 256 for i in range(n))
        with SimBoard(Echo(), cycles_per_byte=cpb) as board, \
                socket.create_connection(("127.0.0.1", board.port)) as sock:
            wall = time.perf_counter()
            got = round_trip(sock, data)
            wall = time.perf_counter() - wall
        stats = board.stats
        if got != expected(data, 0) or stats is None:
            print(f"board, {cpb} cycles per byte: wrong echo", file=sys.stderr)
            return 1
        row(f"board {n:,} B, {cpb} cycles/byte", stats.cycles, wall, stats.busy_seconds,
            n, "B/s")
        if cpb:
            print(f"  (a {cpb}-cycle byte at 100 MHz: {100e6 / cpb:,.0f} B/s on the simulated "
                  f"link; simulated {n * 100e6 / stats.cycles:,.0f} B/s end to end)")
    print("  (board rows: wall s is the round trip seen by the client, cpu s the server's "
          "wall time spent clocking the model, cyc/cpu-s per that time; per s counts the "
          "bytes sent, each of which also came back)")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=200,
                    help="images for the fast-vs-cocotb run (default 200)")
    ap.add_argument("--fast-images", type=int, default=2000,
                    help="images for the fast-only runs (default 2000)")
    ap.add_argument("--quick", action="store_true", help="fewer images and bytes")
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.fast_images = 20, 200
    size, paced = (1 << 18, 1 << 12) if args.quick else (1 << 20, 1 << 14)
    return stream_bench(args.images, args.fast_images) or board_bench(size, paced)


if __name__ == "__main__":
    sys.exit(main())
