"""A model file as the commands see it: a bnnhw checkpoint or a QONNX graph (``.onnx``).

``load(path)`` reads either and lowers it to the IR once; every command (compile, check,
verify, build, infer, sim-board, predict) takes its ``--model`` through here. A
``ModelFile`` holds the lowered graph, the image shape ``(C, H, W)``, the data set the
file names (a checkpoint's meta; an ONNX graph names none), and the model's own
real-valued outputs and check: the QAT model's for a checkpoint (``bnnhw.check``), QONNX's
``execute_onnx`` for an ONNX graph (``bnnhw.onnx_check``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import ir
from .errors import BnnhwError

__all__ = ["ModelFile", "is_onnx", "load"]


def is_onnx(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names an ONNX file (by its suffix)."""
    return Path(path).suffix.lower() == ".onnx"


def _naming(path: Path, error: BnnhwError) -> BnnhwError:
    text = str(error)
    return error if str(path) in text else BnnhwError(f"checkpoint {path}: {text}")


@dataclass
class ModelFile:
    """One loaded model (module docstring). ``kind`` is ``checkpoint`` or ``onnx``;
    ``arch`` the checkpoint's zoo model (or ``spec``), ``onnx`` for a graph."""

    path: Path
    kind: str
    graph: ir.Graph
    input_shape: tuple[int, int, int]
    arch: str
    meta: dict[str, Any] = field(default_factory=dict)
    model: Any = None

    @property
    def what(self) -> str:
        """How messages name the file: ``checkpoint X`` or ``ONNX model X``."""
        return f"{'ONNX model' if self.kind == 'onnx' else 'checkpoint'} {self.path}"

    @property
    def reference(self) -> str:
        """What the golden model is checked against."""
        return "QONNX's execute_onnx" if self.kind == "onnx" else "the QAT model"

    def outputs(self, images: Any, progress: bool = False) -> np.ndarray:
        """The model's own real-valued outputs ``[N, classes]`` for 8-bit ``images``: the
        QAT model's float32 logits, or what ``execute_onnx`` returns for the pixels fed as
        ``k / 255``."""
        if self.kind == "onnx":
            from .onnx_check import Executor

            return Executor(self.model).logits(images, progress)
        import torch

        with torch.no_grad():
            x = torch.as_tensor(np.asarray(images)).to(torch.float32)
            return self.model(x).numpy()

    def classes(self, images: Any) -> np.ndarray:
        """The model's own predictions (the first index of its largest output)."""
        return np.argmax(self.outputs(images), axis=1)

    def check(self, images: Any, eps: float, progress: bool = False) -> Any:
        """The golden model against the model itself (a ``bnnhw.check.CheckReport``)."""
        if self.kind == "onnx":
            from .onnx_check import check_onnx

            return check_onnx(self.model, images, eps=eps, progress=progress)
        from .check import check_model

        return check_model(self.model, images, self.graph, eps=eps, progress=progress)


def load(path: str | os.PathLike[str], with_meta: bool = False) -> ModelFile:
    """Read and lower the model at ``path`` (``BnnhwError`` naming it when it cannot);
    ``with_meta`` gives the graph the provenance ``bnnhw compile`` records."""
    path = Path(path)
    if is_onnx(path):
        from .onnx_frontend import import_onnx

        imported = import_onnx(path)
        return ModelFile(path, "onnx", imported.graph, imported.input_shape, "onnx",
                         {}, imported)
    from .checkpoint import load_model
    from .frontend import compile_model

    model, ckpt = load_model(path)
    meta = {"arch": ckpt.arch, "checkpoint": str(path), "checkpoint_meta": ckpt.meta} \
        if with_meta else None
    try:
        graph = compile_model(model, meta)
    except BnnhwError as e:
        raise _naming(path, e) from None
    c, h, w = model.spec["input"]["shape"]
    from .gate_density import attach_for_checkpoint

    graph = attach_for_checkpoint(graph, dict(ckpt.meta), (c, h, w))
    return ModelFile(path, "checkpoint", graph, (c, h, w), ckpt.arch, dict(ckpt.meta), model)
