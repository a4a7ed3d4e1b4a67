"""The host link against the model board: images/s, link efficiency, and a fault run.

A model board (``tests/model_board.py``, in its own process so it does not share the
host's interpreter lock) serves a tfc design over a loopback TCP socket; the host loads
other weights of that topology over the link and runs random MNIST-sized images (binary
input: 98 bytes an image on the wire) at several batch sizes (images per ``INFER``
frame) and windows (frames in flight). Every run is compared with the golden model.

Printed per run: images/s against the model board, bytes an image host to board and
board to host (frame overhead included), link efficiency (image bytes / bytes written),
and the images/s a 3 Mbaud and a 12 Mbaud UART would allow for those byte counts (10
bits a byte on the wire, both directions at once: the busier one limits). Then the fault
run: 2,000 inferences through ``host.faults.FaultProxy`` with 1% of the bytes given a
flipped bit and 0.5% dropped, both directions, weights loaded through the same faults.

    .venv/bin/python bench/link.py [--images 2000] [--fault-images 2000] [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bnnhw import frontend, golden
from bnnhw.ir import save_graph
from bnnhw.protocol import Op
from host import Accelerator, Transport
from host.faults import FaultProxy, Faults
from tests.bnn_cases import zoo_model

UARTS = (3_000_000, 12_000_000)


def start_board(ir_path: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "model_board.py"),
                             "--ir", str(ir_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    url = proc.stdout.readline().strip()
    if not url.startswith("socket://"):
        proc.kill()
        raise SystemExit(f"the model board did not start (said {url!r})")
    return proc, url


def wrong_rows(got, want) -> int:
    return int(((got[0] != want[0]).any(axis=1) | (got[1] != want[1])).sum())


def header() -> str:
    uarts = " ".join(f"{f'{b // 1_000_000} Mbaud/s':>12}" for b in UARTS)
    return (f"{'batch':>5} {'window':>6} {'images':>7} {'images/s':>9} {'up B/img':>9} "
            f"{'down B/img':>10} {'efficiency':>10} {uarts} {'wrong':>5}")


def run(url: str, graph, images, want, batch: int | None, window: int) -> str:
    with Accelerator(Transport(url), batch=batch, window=window, timeout_s=1.0) as acc:
        acc.load(graph)
        acc.reset_stats()
        got = acc.infer(images)
        s = acc.stats
    n = len(images)
    up, down = s.bytes_written / n, s.bytes_read / n
    uarts = " ".join(f"{b / 10 / max(up, down):>12.0f}" for b in UARTS)
    per = batch or acc.manifest.images_per_frame
    return (f"{per:>5} {window:>6} {n:>7} {s.images_per_s:>9.0f} {up:>9.2f} {down:>10.2f} "
            f"{100 * s.link_efficiency:>9.2f}% {uarts} {wrong_rows(got, want):>5}")


def fault_run(url: str, graph, images, want) -> None:
    faults = Faults(2024, flip=0.01, drop=0.005)
    with FaultProxy(url, faults) as proxy, Accelerator(
            Transport(proxy.url, timeout=0.02), window=32, timeout_s=0.05,
            max_retries=500) as acc:
        t = time.perf_counter()
        acc.load(graph)
        load_s, load = time.perf_counter() - t, acc.stats
        acc.reset_stats()
        up0, down0 = faults.counts("up").faults, faults.counts("down").faults
        got = acc.infer(images)
        s = acc.stats
    n = len(images)
    print(f"\nfault run: {n} images, 1% bytes flipped + 0.5% dropped both ways "
          f"(seed 2024), window 32, timeout 0.05 s")
    print(f"  load: {load_s:.1f} s, {load.bytes_written} bytes written, {load.retries} "
          f"retries")
    print(f"  infer: {s.summary()}")
    print(f"  faults during infer: up {faults.counts('up').faults - up0}, down "
          f"{faults.counts('down').faults - down0}; frames per image "
          f"{s.frames_sent / n:.2f}, final images/frame {acc._size.get(Op.INFER)}")
    print(f"  results: {n} delivered, {wrong_rows(got, want)} wrong (lost, duplicated or "
          f"reordered results would show as wrong rows or an error)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="images per clean run")
    parser.add_argument("--fault-images", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="200 images a run")
    args = parser.parse_args()
    n = 200 if args.quick else args.images
    nf = 200 if args.quick else args.fault_images
    torch.set_num_threads(1)
    built = frontend.compile_model(zoo_model("tfc", seed=0, calibration=2))
    graph = frontend.compile_model(zoo_model("tfc", seed=1, calibration=2))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (max(n, nf), 1, 28, 28), dtype=np.uint8)
    res = golden.run(graph, images)
    want = res.scores.numpy(), res.classes.numpy()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_board(save_graph(built, Path(tmp) / "tfc.ir"))
        try:
            print(f"tfc against the model board at {url} (separate process), "
                  f"{n} random images a run")
            print(header())
            for batch, window in ((1, 1), (1, 4), (1, 16), (2, 16), (4, 16), (8, 16),
                                  (16, 16), (None, 16)):
                sub = (images[:n], (want[0][:n], want[1][:n]))
                print(run(url, graph, sub[0], sub[1], batch, window), flush=True)
            fault_run(url, graph, images[:nf], (want[0][:nf], want[1][:nf]))
        finally:
            proc.stdin.close()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
