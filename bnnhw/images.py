"""Images to run a model on, from wherever a user keeps them.

``load_images(source, shape)`` returns 8-bit images ``[N, C, H, W]`` (numpy) fitted to a
model's input ``shape`` (``bnnhw.data.adapt``: smaller images are zero-padded, one channel
repeated), their labels when known, and a phrase naming them:

- ``mnist``: the bundled MNIST test split (the 1,000 images ``bnnhw train`` holds out);
- ``cifar10:DIR``, ``mnist:DIR``: a data set's test split from a local folder;
- a ``.npz`` file: ``images`` (``[N, C, H, W]``, or ``[N, H, W]`` for one channel, 8-bit)
  and optionally ``labels`` (``[N]``);
- a folder of PNG or JPEG files (read with Pillow, converted to grey or RGB to match the
  model's channels); when they sit in subfolders named ``0``, ``1``, ... those are the
  labels.

Anything else, or images whose size does not fit the model, is one ``BnnhwError``
sentence naming both shapes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import BnnhwError

__all__ = ["IMAGE_SUFFIXES", "load_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _fit(images: np.ndarray, shape: tuple[int, int, int], what: str) -> np.ndarray:
    import torch

    from .data import adapt

    c, h, w = shape
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise BnnhwError(f"{what} holds an array of shape {list(images.shape)}; images are "
                         f"[N, C, H, W] (or [N, H, W]) for this model's [{c}, {h}, {w}]")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.integer) or images.size and (
                images.min() < 0 or images.max() > 255):
            raise BnnhwError(f"{what} must hold 8-bit pixel values 0..255, not "
                             f"{images.dtype} values")
        images = images.astype(np.uint8)
    try:
        return adapt(torch.from_numpy(np.ascontiguousarray(images)), shape).numpy()
    except BnnhwError as e:
        raise BnnhwError(f"{what}: {e}") from None


def _npz(path: Path, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z.files:
                raise BnnhwError(f"{path} has no 'images' array (it has "
                                 f"{', '.join(z.files) or 'none'})")
            images = z["images"]
            labels = z["labels"] if "labels" in z.files else None
    except (OSError, ValueError) as e:
        raise BnnhwError(f"{path} cannot be read as an .npz file ({e})") from None
    images = _fit(images, shape, f"{path}")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if len(labels) != len(images):
            raise BnnhwError(f"{path} holds {len(images)} images but {len(labels)} labels")
    return images, labels


def _folder(path: Path, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BnnhwError(f"folder {path} holds no PNG or JPEG images")
    c = shape[0]
    mode = "L" if c == 1 else "RGB"
    arrays, labels = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                a = np.asarray(im.convert(mode), dtype=np.uint8)
        except (OSError, UnidentifiedImageError) as e:
            raise BnnhwError(f"{f} cannot be read as an image ({e})") from None
        a = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
        if arrays and a.shape != arrays[0].shape:
            raise BnnhwError(f"{f} is {a.shape[2]}x{a.shape[1]} but {files[0]} is "
                             f"{arrays[0].shape[2]}x{arrays[0].shape[1]}: give images of "
                             f"one size")
        arrays.append(a)
        parent = f.parent.name if f.parent != path else ""
        labels.append(int(parent) if parent.isdigit() else -1)
    images = _fit(np.stack(arrays), shape, f"the images of {path}")
    known = np.array(labels) >= 0
    return images, (np.array(labels, np.int64) if known.all() else None)


def load_images(source: str | os.PathLike[str], shape: tuple[int, int, int] | list[int],
                count: int | None = None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``(images uint8 [N, C, H, W], labels int64 [N] or None, description)`` of
    ``source`` (module docstring) for a model input ``shape``, the first ``count``."""
    shape = tuple(int(s) for s in shape)
    text = str(source)
    name, _, folder = text.partition(":")
    if name in ("mnist", "cifar10") and (folder or name == "mnist") and not Path(text).exists():
        from .data import load_dataset

        data = load_dataset(name, folder or None)
        images = _fit(data.test_x.numpy(), shape, f"the {name} test split")
        labels = data.test_y.numpy()
        what = f"{name} test images" + (f" from {folder}" if folder else "")
    else:
        path = Path(source)
        if not path.exists():
            raise BnnhwError(f"--images {path} does not exist; give mnist, an .npz file or "
                             f"a folder of PNG/JPEG images")
        if path.is_dir():
            images, labels = _folder(path, shape)
            what = f"images of {path}"
        elif path.suffix.lower() == ".npz":
            images, labels = _npz(path, shape)
            what = f"images of {path}"
        else:
            raise BnnhwError(f"--images {path} is neither an .npz file nor a folder; give "
                             f"mnist, an .npz file or a folder of PNG/JPEG images")
    if count is not None:
        if count > len(images):
            raise BnnhwError(f"{what} are only {len(images)}, not {count}")
        images, labels = images[:count], None if labels is None else labels[:count]
    return images, labels, f"{len(images)} {what}"
