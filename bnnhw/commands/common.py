"""Argument helpers shared by the commands that run a checkpoint on images."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from ..check import random_images
from ..checkpoint import Checkpoint
from ..data import adapt, load_dataset
from ..errors import BnnhwError


def add_image_arguments(parser: argparse.ArgumentParser, default: int) -> None:
    """``--images N --random --seed S --data-dir D``."""
    parser.add_argument("--images", type=int, default=default, metavar="N",
                        help=f"number of images (default {default})")
    parser.add_argument("--random", action="store_true",
                        help="random 8-bit images of the model's input shape instead of the "
                             "checkpoint's test set")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random images")
    parser.add_argument("--data-dir", metavar="D",
                        help="data folder (default: the checkpoint's data_dir, else bundled)")


def select_images(args: argparse.Namespace, spec: dict[str, Any],
                  ckpt: Checkpoint) -> tuple[np.ndarray | Any, str]:
    """The images ``args`` ask for, ``[N, C, H, W]`` 8-bit pixels, and a phrase naming them."""
    if args.images < 1:
        raise BnnhwError(f"--images must be at least 1, not {args.images}")
    shape = spec["input"]["shape"]
    if args.random:
        return (random_images(shape, args.images, args.seed),
                f"{args.images} random images (seed {args.seed})")
    name = ckpt.meta.get("data")
    if not isinstance(name, str):
        raise BnnhwError(f"checkpoint {ckpt.path} does not say which data set it was "
                         f"trained on (no meta 'data'); use --random")
    data = load_dataset(name, args.data_dir or ckpt.meta.get("data_dir"))
    images = adapt(data.test_x[:args.images], shape)
    if len(images) < args.images:
        raise BnnhwError(f"the {name} test set holds only {len(images)} images, "
                         f"not {args.images}")
    return images, f"{len(images)} {name} test images"
