"""Checkpoints: a trained model with the spec that rebuilds it, in one ``.pt`` file.

A checkpoint is the dict ::

    {"format": "bnnhw-checkpoint", "version": 1,
     "arch": "<zoo model name>" or "spec",
     "config": <the full normalised model spec, bnnhw.nn.normalize_spec>,
     "state_dict": {<parameter and buffer name>: tensor, ...},
     "meta": {<plain JSON-like values: how it was trained, test accuracy, ...>}}

written by ``torch.save`` and read back with ``torch.load(..., weights_only=True)``, so a
file from elsewhere is never unpickled as code. ``config`` alone rebuilds the model;
``arch`` only records where it came from. Writing is atomic (a temporary file in the same
folder, then a rename): a failed save leaves any previous file untouched and nothing
half-written. Every way a file can be wrong is reported as one ``BnnhwError`` sentence.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import BnnhwError
from .nn import BNN, SpecError, build_model, normalize_spec
from .nn.zoo import NAMES as ZOO_NAMES

FORMAT = "bnnhw-checkpoint"
VERSION = 1
SPEC_ARCH = "spec"
_KEYS = ("format", "version", "arch", "config", "state_dict", "meta")


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as read from disk, already validated.

    ``spec`` is the normalised model spec (the file's ``config``); ``state_dict`` matches
    the model ``build_model(spec)`` key for key, shape for shape and dtype for dtype.
    """

    arch: str
    spec: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any]
    path: Path | None = None


def _check_plain(value: Any, where: str) -> None:
    """Meta values must survive ``weights_only`` loading and JSON: plain containers only."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"checkpoint {where} must be a finite number, not {value!r}")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"checkpoint {where} keys must be strings, not {k!r}")
            _check_plain(v, f"{where}.{k}")
        return
    raise TypeError(f"checkpoint {where} must be a plain value (str, number, bool, None, "
                    f"list or dict), not {type(value).__name__}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(path: str | os.PathLike[str], model: BNN, arch: str,
                    meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (a ``BNN`` built from a spec) to ``path`` atomically; return the path.

    ``arch`` is the zoo name the model came from, or ``"spec"`` for a user spec. ``meta``
    holds plain values only (``TypeError`` otherwise, ``ValueError`` for NaN/inf). Parent folders are created.
    """
    if not isinstance(model, BNN):
        raise TypeError(f"save_checkpoint needs a bnnhw BNN model, not {type(model).__name__}")
    if arch != SPEC_ARCH and arch not in ZOO_NAMES:
        raise ValueError(f"checkpoint arch must be one of {', '.join(ZOO_NAMES)} or "
                         f"{SPEC_ARCH!r}, not {arch!r}")
    meta = dict(meta or {})
    _check_plain(meta, "meta")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "config": normalize_spec(model.spec),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    path = Path(path)
    if path.is_dir():
        raise BnnhwError(f"cannot write the checkpoint to {path}: it is a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _torch_load(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``; every failure becomes one clear sentence."""
    if not path.exists():
        raise BnnhwError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise BnnhwError(f"checkpoint {path} is not a file")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise BnnhwError(f"checkpoint {path} is empty")
    is_zip = head == b"PK\x03\x04"
    is_pickle = head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5
    if not (is_zip or is_pickle):
        raise BnnhwError(f"{path} is not a torch checkpoint file (it is neither a torch zip "
                         f"archive nor a pickle)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types; all mean "bad file"
        text = str(e)
        if "Weights only load failed" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" ({found.group(1)})" if found else ""
            raise BnnhwError(
                f"checkpoint {path} holds Python objects other than tensors and plain "
                f"values{what}; bnnhw refuses to unpickle them because that could run "
                f"code") from None
        if is_zip:
            raise BnnhwError(f"checkpoint {path} is truncated or corrupted (its zip archive "
                             f"cannot be read)") from None
        if isinstance(e, EOFError) or "EOF" in text:
            raise BnnhwError(f"checkpoint {path} is truncated or corrupted (it ends before "
                             f"its data does)") from None
        first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        raise BnnhwError(f"checkpoint {path} cannot be read as a torch file ({first})") from None


def _check_state_dict(path: Path, spec: dict[str, Any], state: Any) -> dict[str, torch.Tensor]:
    """Compare ``state`` with the parameters and buffers ``build_model(spec)`` would have."""
    if not isinstance(state, Mapping):
        raise BnnhwError(f"checkpoint {path}: 'state_dict' must be a dict of tensors, not "
                         f"{type(state).__name__}")
    with torch.device("meta"):
        expected = build_model(spec).state_dict()
    for key, value in state.items():
        if key not in expected:
            raise BnnhwError(f"checkpoint {path}: state_dict entry {key!r} does not belong to "
                             f"the model its config describes")
        if not isinstance(value, torch.Tensor):
            raise BnnhwError(f"checkpoint {path}: state_dict entry {key!r} is a "
                             f"{type(value).__name__}, not a tensor")
        want = expected[key]
        if tuple(value.shape) != tuple(want.shape):
            raise BnnhwError(f"checkpoint {path}: state_dict entry {key!r} has shape "
                             f"{list(value.shape)} but its config needs {list(want.shape)}")
        if value.dtype != want.dtype:
            raise BnnhwError(f"checkpoint {path}: state_dict entry {key!r} has dtype "
                             f"{value.dtype} but its config needs {want.dtype}")
    missing = [k for k in expected if k not in state]
    if missing:
        raise BnnhwError(f"checkpoint {path}: state_dict lacks {missing[0]!r}"
                         f"{f' and {len(missing) - 1} more entries' if len(missing) > 1 else ''}"
                         f" that its config needs")
    return dict(state)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and validate a checkpoint (no code in the file ever runs).

    Raises ``BnnhwError`` with one sentence for a missing, empty, truncated or foreign
    file, a pickle holding Python objects, a wrong format or version, an invalid spec,
    or a state_dict that does not fit the spec.
    """
    path = Path(path)
    obj = _torch_load(path)
    if not isinstance(obj, Mapping) or obj.get("format") != FORMAT:
        hint = ""
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor)
                                                    for v in obj.values()):
            hint = " (it looks like a bare state_dict, which lacks the model spec)"
        raise BnnhwError(f"{path} is not a bnnhw checkpoint: it has no 'format': {FORMAT!r} "
                         f"entry{hint}")
    version = obj.get("version")
    if version != VERSION:
        raise BnnhwError(f"checkpoint {path} has format version {version!r}; this bnnhw reads "
                         f"version {VERSION} only")
    for key in _KEYS:
        if key not in obj:
            raise BnnhwError(f"checkpoint {path} lacks its {key!r} entry")
    arch = obj["arch"]
    if arch != SPEC_ARCH and arch not in ZOO_NAMES:
        raise BnnhwError(f"checkpoint {path}: arch {arch!r} is neither a zoo model "
                         f"({', '.join(ZOO_NAMES)}) nor {SPEC_ARCH!r}")
    try:
        spec = normalize_spec(obj["config"])
    except SpecError as e:
        raise BnnhwError(f"checkpoint {path} has an invalid model config: {e}") from None
    meta = obj["meta"]
    if not isinstance(meta, Mapping):
        raise BnnhwError(f"checkpoint {path}: 'meta' must be a dict, not {type(meta).__name__}")
    state = _check_state_dict(path, spec, obj["state_dict"])
    return Checkpoint(arch=arch, spec=spec, state_dict=state, meta=dict(meta), path=path)


def load_model(path: str | os.PathLike[str]) -> tuple[BNN, Checkpoint]:
    """Rebuild the checkpoint's model in eval mode with its weights loaded (strictly)."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt.spec)
    model.load_state_dict(ckpt.state_dict, strict=True)
    model.eval()
    return model, ckpt
