"""``bnnhw predict``: the golden model's scores and classes for images, with the model's own
real-valued outputs, written to an ``.npz`` file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import check_output
from .common import MODEL_HELP, MODEL_METAVAR, load_model, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar=MODEL_METAVAR,
                        help=f"the model: {MODEL_HELP}")
    parser.add_argument("--images", required=True, metavar="X.npz",
                        help="an .npz file holding 'images' (uint8 [N, C, H, W] raw pixels, "
                             "optional 'labels'), mnist (the bundled test split), "
                             "cifar10:DIR or a folder of PNG/JPEG images")
    parser.add_argument("-o", "--out", required=True, metavar="Y.npz",
                        help="file to write: 'scores' (int64 [N, classes], the hardware's "
                             "integer outputs), 'logits' (float, the model's own outputs) "
                             "and 'classes' (int64 [N], the hardware's classes)")
    parser.add_argument("--count", type=positive_int, metavar="N",
                        help="only the first N images")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import golden
    from ..errors import write_together
    from ..images import load_images

    out = check_output(args.out, "-o/--out", [(args.model, "the --model file"),
                                               (args.images, "the --images file")],
                       advice="give another -o")
    model = load_model(args.model)
    images, labels, what = load_images(args.images, model.input_shape, args.count)
    gold = golden.run(model.graph, images)
    scores = gold.scores.numpy().astype(np.int64)
    classes = gold.classes.numpy().astype(np.int64)
    logits = np.asarray(model.outputs(images, progress=sys.stderr.isatty()))
    arrays = {"scores": scores, "logits": logits, "classes": classes}
    write_together([(out, lambda f: np.savez(f, **arrays))])
    agree = float(np.mean(np.argmax(logits, axis=1) == classes)) if len(classes) else 1.0
    summary = {"model": str(args.model), "source": what, "out": str(out),
               "images": len(images), "classes": int(scores.shape[1]),
               "logits_from": model.reference, "class_agreement": agree}
    if labels is not None:
        summary["accuracy"] = float(np.mean(classes == labels)) if len(labels) else 1.0
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{args.model}: {what}")
    line = (f"wrote {Path(out)}: scores int64 {list(scores.shape)}, logits "
            f"{logits.dtype} {list(logits.shape)} ({model.reference}), classes int64 "
            f"[{len(classes)}]")
    print(line)
    print(f"hardware classes = the model's argmax on {agree:.2%} of the images")
    if labels is not None:
        print(f"accuracy: {summary['accuracy']:.2%}")
    return 0
