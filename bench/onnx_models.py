"""QONNX/Brevitas models through bnnhw: import, golden model vs execute_onnx, RTL vs golden.

For each bnn_pynq-style model of ``tests.onnx_cases`` (TFC-shaped and CNV-shaped, binary and
8-bit input; randomised BatchNorm statistics with zero and negative gammas), exported the
four ways (default dynamo export and ``dynamo=False``, each raw and after qonnx's
cleanup): the import time, whether every export lowers to the same IR, ``bnnhw check``'s
comparison with ``execute_onnx`` on ``--images`` random images (every pixel value among
them), and ``bnnhw verify`` of the RTL under Verilator on ``--verify-images`` random
images (a second run with 20% random stalls on both ends). Then a TFC-shaped Brevitas
model trained for ``--epochs`` on the bundled MNIST: its accuracy under execute_onnx and
under the golden model, and their agreement on the 1,000 test digits. With ``--board``,
``bnnhw build --board B --model M.onnx`` for real on the small padded 8-bit model.

    python bench/onnx_models.py [--images 256] [--verify-images 64] [--epochs 3]
                                [--board ulx3s]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import torch

from bnnhw.flows.verify import verify_graph
from bnnhw.folding import default_folding
from bnnhw.onnx_check import Executor, check_onnx
from bnnhw.onnx_frontend import import_onnx
from tests.onnx_cases import Net, export, exports, random_pixels


def same_ir(graphs) -> bool:
    first = [n.replace(source=()) for n in graphs[0].nodes]
    return all(len(g.nodes) == len(first) and
               all(a == b.replace(source=()) for a, b in zip(first, g.nodes)) for g in graphs)


def models(args) -> list[dict]:
    rows = []
    for name in ("tfc", "tfc8", "cnv", "cnv8"):
        t = time.perf_counter()
        paths = exports(name)
        made = time.perf_counter() - t
        imports, seconds = {}, {}
        for style, path in paths.items():
            t = time.perf_counter()
            imports[style] = import_onnx(path)
            seconds[style] = time.perf_counter() - t
        row = {"model": name, "export_seconds": round(made, 1),
               "same_ir": same_ir([i.graph for i in imports.values()]), "styles": {}}
        for style, imp in imports.items():
            images = random_pixels(imp.input_shape, args.images, seed=11)
            t = time.perf_counter()
            rep = check_onnx(imp, images)
            row["styles"][style] = {
                "import_seconds": round(seconds[style], 2), "check_ok": rep.ok,
                "images": rep.images, "class_matches": rep.class_matches,
                "bits": rep.bits, "bit_disagreements": sum(
                    u.disagreements for u in rep.layers if u.kind == "bits"),
                "values": sum(u.compared for u in rep.layers if u.kind == "values"),
                "scores": sum(u.compared for u in rep.layers if u.kind == "scores"),
                "value_or_score_disagreements": sum(
                    u.disagreements for u in rep.layers if u.kind != "bits"),
                "ties": rep.ties, "logits_equal": f"{rep.logits_equal}/{rep.logits_compared}",
                "logits_exact": rep.logits_exact,
                "check_seconds": round(time.perf_counter() - t, 1)}
        imp = imports["dynamo"]
        images = random_pixels(imp.input_shape, args.verify_images, seed=12)
        t = time.perf_counter()
        onnx_classes = Executor(imp).logits(images).argmax(axis=1)
        rep = verify_graph(imp.graph, default_folding(imp.graph), images, stall=0.2, seed=1,
                           qat_classes=onnx_classes, engine="fast")
        row["verify"] = {"images": rep.images, "mismatches": rep.mismatches,
                         "extra_beats": rep.extra_beats, "stalled_run": rep.stalled_run,
                         "class_agreement_with_execute_onnx": rep.class_agreement,
                         "cycles_per_image": rep.cycles_per_image,
                         "model_cycles_per_image": rep.model_cycles_per_image,
                         "seconds": round(time.perf_counter() - t, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def trained(args, folder: Path) -> dict:
    """A TFC-shaped Brevitas model trained on the bundled MNIST (Adam, cross-entropy, the
    latent weights clipped to [-1, 1] like bnn_pynq's trainer)."""
    from bnnhw.data import load_dataset

    data = load_dataset("mnist", None)
    torch.manual_seed(0)
    net = Net((1, 28, 28), [], [64, 64, 64])
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    x, y = data.train_x.float() / 255, data.train_y
    t = time.perf_counter()
    net.train()
    for _ in range(args.epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
            for m in net.modules():
                if hasattr(m, "weight_quant"):
                    m.weight.data.clamp_(-1, 1)
    train_s = time.perf_counter() - t
    net.eval()
    paths = export(net, folder, "trained-tfc")
    imp = import_onnx(paths["dynamo"])
    images = data.test_x.numpy().astype(np.uint8)
    labels = data.test_y.numpy()
    t = time.perf_counter()
    rep = check_onnx(imp, images)
    logits = Executor(imp).logits(images)
    from bnnhw import golden

    gold = golden.run(imp.graph, images).classes.numpy()
    return {"model": "trained tfc", "epochs": args.epochs, "train_seconds": round(train_s, 1),
            "test_images": len(images), "check_ok": rep.ok,
            "class_matches": rep.class_matches, "ties": rep.ties, "class_ties": rep.class_ties,
            "logits_equal": f"{rep.logits_equal}/{rep.logits_compared}",
            "accuracy_execute_onnx": float((logits.argmax(1) == labels).mean()),
            "accuracy_golden": float((gold == labels).mean()),
            "check_seconds": round(time.perf_counter() - t, 1)}


def build(args, folder: Path) -> dict:
    path = exports("pad8")["dynamo"]
    out = folder / f"pad8-{args.board}"
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "bnnhw.cli", "build", "--board", args.board,
                          "--model", str(path), "--out", str(out), "--json"], cwd=ROOT,
                         check=False,
                         capture_output=True, text=True)
    if res.returncode:
        return {"build": args.board, "error": res.stderr.strip().splitlines()[-1:]}
    r = json.loads(res.stdout)
    return {"build": args.board, "model": "pad8", "fits": r["fits"],
            "fmax_mhz": r["fmax_mhz"], "clock_mhz": r["clock_mhz"],
            "ii_cycles": r["ii_cycles"], "images_per_second": r["images_per_second"],
            "lut": r["resources"]["lut"], "ff": r["resources"]["ff"],
            "bram": r["resources"]["bram36"], "seconds": round(time.perf_counter() - t)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--verify-images", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--board", help="also build the small padded model for this board")
    ap.add_argument("--out", default=str(ROOT / "build" / "bench-onnx"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    models(args)
    print(json.dumps(trained(args, folder)), flush=True)
    if args.board:
        print(json.dumps(build(args, folder)), flush=True)


if __name__ == "__main__":
    main()
