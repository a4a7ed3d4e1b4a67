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
folder, then a rename, together with any companion file such as the training curve): a
failed save leaves any previous file untouched and nothing half-written. Every way a
file can be wrong is reported as one ``BnnhwError`` sentence.
"""

from __future__ import annotations

import math
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .errors import (
    MAX_DEPTH,
    BnnhwError,
    check_value_depth,
    format_bytes,
    memory_bytes,
    value_depth,
    write_together,
)
from .nn import BNN, SpecError, build_model, layer_shapes, normalize_spec
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


# -- sizes --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSize:
    """What a spec's model holds: ``parameters`` (floats, BatchNorm statistics included)
    and ``activations``, the float elements one image produces on its way through (the
    pixels, their encoding, every padded input and every layer's outputs)."""

    parameters: int
    activations: int

    def bytes(self, batch: int, per_parameter: int, per_activation: int) -> int:
        return self.parameters * per_parameter + batch * self.activations * per_activation


def model_size(spec: dict[str, Any]) -> ModelSize:
    """Count the parameters and activation elements of ``spec``'s model without building
    it (exact Python integers, however large the spec's numbers)."""
    spec = normalize_spec(spec)
    inp = spec["input"]
    c, h, w = inp["shape"]
    acts = c * h * w
    if inp["encoding"] == "thermometer":
        c *= inp["levels"]
    acts += c * h * w
    params = 0
    features = None
    for lay, shape in zip(spec["layers"], layer_shapes(spec)):
        if lay["type"] == "conv":
            k, p, out = lay["kernel"], lay["padding"], lay["out"]
            if p:
                acts += c * (h + 2 * p) * (w + 2 * p)
            params += out * c * k * k + 6 * out  # weights, scale/bias, BatchNorm
            c, h, w = shape
            acts += 3 * c * h * w  # conv, BatchNorm and sign outputs
        elif lay["type"] == "maxpool":
            c, h, w = shape
            acts += c * h * w
        else:
            if features is None:
                features = c * h * w
            out = lay["out"]
            params += out * features + 6 * out
            acts += 3 * out
            features = out
    return ModelSize(params, acts)


def check_model_fits(spec: dict[str, Any], what: str, batch: int, per_parameter: int,
                     per_activation: int, doing: str,
                     advice: str = "make the model smaller") -> ModelSize:
    """Refuse (``BnnhwError``) a model whose estimated memory ``doing`` something (``"for
    training"``) on batches of ``batch`` images exceeds this machine's memory; return
    its size. ``what`` names the model (``model spec file s.json``).

    The estimate is ``parameters * per_parameter + batch * activations *
    per_activation`` bytes (``model_size``), counted before anything is allocated.
    """
    size = model_size(spec)
    need = size.bytes(batch, per_parameter, per_activation)
    have = memory_bytes()
    if need > have:
        raise BnnhwError(
            f"{what} needs about {format_bytes(need)} of memory {doing} "
            f"({size.parameters:,} parameters, {size.activations:,} activation values per "
            f"image, {batch} image{'s' if batch > 1 else ''} at a time), more than the "
            f"{format_bytes(have)} this machine has; {advice}")
    return size


# -- writing ------------------------------------------------------------------------------

def _payload(model: BNN, arch: str, meta: Mapping[str, Any] | None) -> dict[str, Any]:
    if not isinstance(model, BNN):
        raise TypeError(f"save_checkpoint needs a bnnhw BNN model, not {type(model).__name__}")
    if arch != SPEC_ARCH and arch not in ZOO_NAMES:
        raise ValueError(f"checkpoint arch must be one of {', '.join(ZOO_NAMES)} or "
                         f"{SPEC_ARCH!r}, not {arch!r}")
    meta = dict(meta or {})
    if value_depth(meta) > MAX_DEPTH:
        raise ValueError(f"checkpoint meta must not nest more than {MAX_DEPTH} levels deep")
    _check_plain(meta, "meta")
    return {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "config": normalize_spec(model.spec),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": meta,
    }


def save_checkpoint(path: str | os.PathLike[str], model: BNN, arch: str,
                    meta: Mapping[str, Any] | None = None,
                    companions: Sequence[tuple[str | os.PathLike[str],
                                               Callable[[BinaryIO], None]]] = ()) -> Path:
    """Write ``model`` (a ``BNN`` built from a spec) to ``path`` atomically; return the path.

    ``arch`` is the zoo name the model came from, or ``"spec"`` for a user spec. ``meta``
    holds plain values only (``TypeError`` otherwise, ``ValueError`` for NaN/inf).
    Parent folders are created. ``companions`` are ``(path, writer)`` pairs of files
    written together with the checkpoint (``bnnhw.errors.write_together``): all of them
    are in place afterwards, or none (a failure leaves any previous files untouched
    unless a rename already happened). Only a regular file is ever replaced
    (``BnnhwError`` for a folder, a device, ...).
    """
    payload = _payload(model, arch, meta)
    path = Path(path)
    if path.is_dir():
        raise BnnhwError(f"cannot write the checkpoint to {path}: it is a folder")

    def write(f: BinaryIO) -> None:
        torch.save(payload, f)

    write_together([(path, write), *companions])
    return path


# -- reading ------------------------------------------------------------------------------

def _zip_problem(path: Path) -> str | None:
    """Why the zip archive ``path`` cannot be a torch checkpoint, or None if it can."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return (f"checkpoint {path} is truncated or corrupted (its zip archive cannot be "
                f"read)")
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return None
    if names and all(n.endswith(".npy") for n in names):
        return (f"{path} is a numpy .npz archive, not a torch checkpoint (bnnhw compile "
                f"writes such arrays beside its .ir file; give the .pt file bnnhw train "
                f"wrote)")
    return (f"{path} is a zip archive but not a torch checkpoint (it holds no data.pkl); "
            f"give the .pt file bnnhw train wrote")


def _torch_load(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``; every failure becomes one clear sentence."""
    if not path.exists():
        raise BnnhwError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise BnnhwError(f"checkpoint {path} is a folder, not a file")
    if not path.is_file():
        raise BnnhwError(f"checkpoint {path} is not a file")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise BnnhwError(f"checkpoint {path} cannot be read ({e.strerror})") from None
    if not head:
        raise BnnhwError(f"checkpoint {path} is empty")
    is_zip = head == b"PK\x03\x04"
    is_pickle = head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5
    if not (is_zip or is_pickle):
        raise BnnhwError(f"{path} is not a torch checkpoint file (it is neither a torch zip "
                         f"archive nor a pickle)")
    if is_zip:
        problem = _zip_problem(path)
        if problem:
            raise BnnhwError(problem)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types; all mean "bad file"
        text = str(e)
        if "Weights only load failed" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            if found:
                raise BnnhwError(
                    f"checkpoint {path} holds Python objects other than tensors and plain "
                    f"values ({found.group(1)}); bnnhw refuses to unpickle them because "
                    f"that could run code") from None
            detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*$", text, re.MULTILINE)
            why = f" ({detail.group(1)})" if detail else ""
            raise BnnhwError(f"checkpoint {path} is corrupt: its pickled data is not valid"
                             f"{why}") from None
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
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise BnnhwError(f"checkpoint {path}: state_dict entry {key!r} holds NaN or "
                             f"infinite values (the training diverged); train it again, "
                             f"for example with a smaller --lr")
    missing = [k for k in expected if k not in state]
    if missing:
        raise BnnhwError(f"checkpoint {path}: state_dict lacks {missing[0]!r}"
                         f"{f' and {len(missing) - 1} more entries' if len(missing) > 1 else ''}"
                         f" that its config needs")
    return dict(state)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and validate a checkpoint (no code in the file ever runs).

    Raises ``BnnhwError`` with one sentence for a missing, empty, truncated or foreign
    file (a plain zip or ``.npz`` included), a pickle holding Python objects, a wrong
    format or version (an integer, not ``true``), ``config`` or ``meta`` nested deeper
    than ``bnnhw.errors.MAX_DEPTH`` (checked without recursion), an invalid spec, a
    model too large for this machine's memory (counted before building it), or a
    state_dict that does not fit the spec or holds NaN/inf values.
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
    if type(version) is not int or version != VERSION:
        raise BnnhwError(f"checkpoint {path} has format version {version!r}; this bnnhw reads "
                         f"version {VERSION} only")
    for key in _KEYS:
        if key not in obj:
            raise BnnhwError(f"checkpoint {path} lacks its {key!r} entry")
    arch = obj["arch"]
    if not isinstance(arch, str) or (arch != SPEC_ARCH and arch not in ZOO_NAMES):
        raise BnnhwError(f"checkpoint {path}: arch {arch!r} is neither a zoo model "
                         f"({', '.join(ZOO_NAMES)}) nor {SPEC_ARCH!r}")
    for key in ("config", "meta"):
        check_value_depth(obj[key], f"checkpoint {path}: its {key!r} entry")
    try:
        spec = normalize_spec(obj["config"])
    except SpecError as e:
        raise BnnhwError(f"checkpoint {path} has an invalid model config: {e}") from None
    meta = obj["meta"]
    if not isinstance(meta, Mapping):
        raise BnnhwError(f"checkpoint {path}: 'meta' must be a dict, not {type(meta).__name__}")
    try:
        _check_plain(meta, "meta")
    except (TypeError, ValueError) as e:
        raise BnnhwError(f"{str(e).replace('checkpoint ', f'checkpoint {path}: ', 1)}") from None
    check_model_fits(spec, f"the model of checkpoint {path}", batch=1, per_parameter=8,
                     per_activation=32, doing="to run",
                     advice="it needs a machine with more memory")
    state = _check_state_dict(path, spec, obj["state_dict"])
    return Checkpoint(arch=arch, spec=spec, state_dict=state, meta=dict(meta), path=path)


def load_model(path: str | os.PathLike[str]) -> tuple[BNN, Checkpoint]:
    """Rebuild the checkpoint's model in eval mode with its weights loaded (strictly)."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt.spec)
    model.load_state_dict(ckpt.state_dict, strict=True)
    model.eval()
    return model, ckpt
