"""Argument types and helpers shared by the commands.

Light on purpose: only the standard library and ``bnnhw.errors`` at import time, so that
``bnnhw --help`` and ``bnnhw COMMAND --help`` never import torch; everything heavy is
imported inside the functions that need it.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Any

from ..errors import BnnhwError, format_bytes, memory_bytes

MAX_SEED = 2**63 - 1  # torch and numpy seeds are 64-bit
# Memory per image value when checking (the uint8 pixels and their int64 copy, with
# slack) and per pixel when verifying (a Python integer per input beat and its hex line).
CHECK_BYTES_PER_VALUE = 16
VERIFY_BYTES_PER_PIXEL = 256


# -- argument types (argparse turns their ArgumentTypeError into one line, exit 2) ----------

def _argument(text: str, parse, what: str, ok) -> Any:
    """``parse(text)`` if it succeeds and ``ok`` holds of the value, else one line
    "expected WHAT, not TEXT"."""
    try:
        value = parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, not {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, not {text!r}")
    return value


def positive_int(text: str) -> int:
    return _argument(text, int, "a positive integer", lambda v: v >= 1)


def natural_int(text: str) -> int:
    return _argument(text, int, "a non-negative integer", lambda v: v >= 0)


def seed_int(text: str) -> int:
    """A seed: an integer in 0..2**63-1."""
    return _argument(text, int, "an integer seed in 0..2**63-1", lambda v: 0 <= v <= MAX_SEED)


def cpu_count() -> int:
    return os.cpu_count() or 1


def thread_count(text: str) -> int:
    """A thread count: 1 up to the machine's CPU count."""
    cpus = cpu_count()
    return _argument(text, int, f"a number of threads in 1..{cpus} (the CPUs of this "
                     f"machine)", lambda v: 1 <= v <= cpus)


def positive_float(text: str) -> float:
    return _argument(text, float, "a positive number", lambda v: v > 0 and math.isfinite(v))


def nonnegative_float(text: str) -> float:
    return _argument(text, float, "a finite number >= 0",
                     lambda v: v >= 0 and math.isfinite(v))


def probability(text: str) -> float:
    return _argument(text, float, "a probability in [0, 1)", lambda v: 0 <= v < 1)


# -- models ---------------------------------------------------------------------------------

MODEL_METAVAR = "M.pt|M.onnx"
MODEL_HELP = "a bnnhw checkpoint, or a QONNX graph of a binary network (.onnx)"


def load_model(path: str) -> Any:
    """The ``bnnhw.model_file.ModelFile`` of ``--model``: a checkpoint or an ONNX graph,
    lowered to the IR."""
    from ..model_file import load

    return load(path)


def model_graph_folding(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(model file, folding)`` of ``args.model`` and ``args.folding`` (default: the
    default folding)."""
    from ..folding import default_folding, load_folding, matrix_layers

    model = load_model(args.model)
    graph = model.graph
    folds = load_folding(args.folding, matrix_layers(graph)) if args.folding else \
        default_folding(graph)
    return model, folds


# -- images ---------------------------------------------------------------------------------

def add_image_arguments(parser: argparse.ArgumentParser, default: int) -> None:
    """``--images N --random --seed S --data NAME --data-dir D``."""
    parser.add_argument("--images", type=positive_int, default=default, metavar="N",
                        help=f"number of images (default {default})")
    parser.add_argument("--random", action="store_true",
                        help="random 8-bit images of the model's input shape instead of a "
                             "test set")
    parser.add_argument("--seed", type=seed_int, default=0,
                        help="seed of --random images, 0..2**63-1 (default 0)")
    parser.add_argument("--data", metavar="NAME",
                        help="test set to take the images from: mnist or cifar10 (default: "
                             "the one the checkpoint was trained on; an ONNX model names "
                             "none)")
    parser.add_argument("--data-dir", metavar="D",
                        help="data folder (default: the checkpoint's data_dir, else bundled)")


def check_image_memory(count: int, shape: Any, per_value: int, per_pixel: int = 0) -> None:
    """Refuse ``--images count`` of ``shape`` [C, H, W] when holding them would take more
    than this machine's memory (``per_value`` bytes per pixel value, ``per_pixel`` more
    per pixel), before anything is allocated."""
    c, h, w = (int(s) for s in shape)
    need = count * (c * h * w * per_value + h * w * per_pixel)
    have = memory_bytes()
    if need > have:
        raise BnnhwError(f"--images {count} needs about {format_bytes(need)} of memory for "
                         f"{count:,} images of {c}x{h}x{w} pixels, more than the "
                         f"{format_bytes(have)} this machine has; ask for fewer images")


def select_images(args: argparse.Namespace, model: Any) -> tuple[Any, str]:
    """The images ``args`` ask for, ``[N, C, H, W]`` 8-bit pixels, and a phrase naming them.

    ``model`` is the ``bnnhw.model_file.ModelFile``: its input shape, and the data set
    its meta names when ``--data`` does not.
    """
    from ..check import random_images
    from ..data import NAMES, adapt, load_dataset

    if args.images < 1:
        raise BnnhwError(f"--images must be at least 1, not {args.images}")
    shape = model.input_shape
    if args.random:
        return (random_images(shape, args.images, args.seed),
                f"{args.images} random images (seed {args.seed})")
    name = getattr(args, "data", None)
    if name is not None:
        if name not in NAMES:
            raise BnnhwError(f"--data {name!r} is not a data set bnnhw knows "
                             f"({', '.join(NAMES)})")
    else:
        name = model.meta.get("data")
    if name is None:
        raise BnnhwError(f"{model.what} does not say which data set it was trained on "
                         f"(no meta 'data'); use --random or --data NAME")
    if not isinstance(name, str) or name not in NAMES:
        raise BnnhwError(f"{model.what}: its meta 'data' {name!r} is not a data set bnnhw "
                         f"knows ({', '.join(NAMES)}); use --random or --data NAME")
    data_dir = args.data_dir
    if data_dir is None and getattr(args, "data", None) is None:
        data_dir = model.meta.get("data_dir")
        if data_dir is not None and not isinstance(data_dir, str):
            raise BnnhwError(f"{model.what}: its meta 'data_dir' must be a folder name, not "
                             f"{type(data_dir).__name__} {data_dir!r}; give --data-dir or "
                             f"use --random")
    try:
        data = load_dataset(name, data_dir)
    except BnnhwError as e:
        if args.data_dir is not None or data_dir is None:
            raise
        raise BnnhwError(f"{e} (the data folder {model.what} was trained on; give "
                         f"--data-dir or use --random)") from None
    images = adapt(data.test_x[:args.images], shape)
    if len(images) < args.images:
        raise BnnhwError(f"the {name} test set holds only {len(images)} images, "
                         f"not {args.images}")
    return images, f"{len(images)} {name} test images"
