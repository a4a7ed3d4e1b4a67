"""Brevitas models in the style of its ``bnn_pynq`` examples (its ``CommonWeightQuant``,
``CommonActQuant`` and ``TensorNorm``), built small at test time with randomised
BatchNorm statistics, and their QONNX exports in every style bnnhw reads.

``export(model, folder, name)`` writes four files: the default (dynamo) export and the
TorchScript one (``dynamo=False``), each raw and after ``qonnx.util.cleanup``. Exports
are cached on disk per model description and seed (``exports``), so each model is built
and exported once.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import inspect
import io
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bnnhw.check import perturb_batchnorm

STYLES = ("dynamo", "dynamo-clean", "torchscript", "torchscript-clean")


def _layers():
    from brevitas.core.restrict_val import RestrictValueType
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
    from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant
    from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm

    return (QuantConv2d, QuantIdentity, QuantLinear, CommonActQuant, CommonWeightQuant,
            TensorNorm, RestrictValueType)


class Net(nn.Module):
    """``bnn_pynq``'s CNV and FC, generalised: ``convs`` is a list of ``(out, pool,
    padding)``, ``dense`` the hidden widths; ``in_bits`` 1 (a binary input) or 8 (Q1.7
    input like CNV's, or FC's narrow 8-bit input with ``fc_input``)."""

    def __init__(self, in_shape, convs, dense, classes=10, in_bits=1, fc_input=False):
        super().__init__()
        (QuantConv2d, QuantIdentity, QuantLinear, ActQ, WeightQ, TensorNorm,
         RestrictValueType) = _layers()
        c, h, w = in_shape
        if in_bits == 8 and not fc_input:
            first = QuantIdentity(act_quant=ActQ, bit_width=8, min_val=-1.0,
                                  max_val=1.0 - 2.0 ** (-7), narrow_range=False,
                                  restrict_scaling_type=RestrictValueType.POWER_OF_TWO)
        else:
            first = QuantIdentity(act_quant=ActQ, bit_width=in_bits)
        self.features = nn.ModuleList([first])
        for out, pool, pad in convs:
            self.features.append(QuantConv2d(c, out, 3, padding=pad, bias=False,
                                             weight_quant=WeightQ, weight_bit_width=1))
            self.features.append(nn.BatchNorm2d(out, eps=1e-4))
            self.features.append(QuantIdentity(act_quant=ActQ, bit_width=1))
            h, w, c = h + 2 * pad - 2, w + 2 * pad - 2, out
            if pool:
                self.features.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        self.flat = c * h * w
        self.classifier = nn.ModuleList()
        f = self.flat
        for out in dense:
            self.classifier.append(QuantLinear(f, out, bias=False, weight_quant=WeightQ,
                                               weight_bit_width=1))
            self.classifier.append(nn.BatchNorm1d(out, eps=1e-4))
            self.classifier.append(QuantIdentity(act_quant=ActQ, bit_width=1))
            f = out
        self.classifier.append(QuantLinear(f, classes, bias=False, weight_quant=WeightQ,
                                           weight_bit_width=1))
        self.classifier.append(TensorNorm())
        for m in self.modules():
            if isinstance(m, (QuantConv2d, QuantLinear)):
                nn.init.uniform_(m.weight.data, -1, 1)
        self.in_shape = tuple(in_shape)

    def forward(self, x):
        x = 2.0 * x - torch.tensor([1.0], device=x.device)
        for m in self.features:
            x = m(x)
        x = x.reshape(x.shape[0], -1)
        for m in self.classifier:
            x = m(x)
        return x


def randomise(model: Net, seed: int, negative_norm: bool = False) -> Net:
    """BatchNorm statistics measured on random images, then perturbed (means moved, variances
    scaled, gammas normal with about one in eight exactly zero and half negative, betas
    normal); TensorNorm too (its weight negative with ``negative_norm``)."""
    from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm

    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(16, *model.in_shape, generator=gen))
        for bn in bns:
            perturb_batchnorm(bn, gen)
        for tn in model.modules():
            if isinstance(tn, TensorNorm):
                tn.running_mean.fill_(float(torch.randn(1, generator=gen)))
                tn.running_var.fill_(float(torch.rand(1, generator=gen)) + 0.5)
                tn.weight.fill_(float(torch.rand(1, generator=gen)) + 0.5)
                if negative_norm:
                    tn.weight.neg_()
                tn.bias.fill_(float(torch.randn(1, generator=gen)))
    return model.eval()


MODELS = {
    # TFC: 784 - 64 - 64 - 64 - 10 (bnn_pynq's FC, binary or narrow 8-bit input)
    "tfc": {"in_shape": (1, 28, 28), "convs": [], "dense": [64, 64, 64]},
    "tfc8": {"in_shape": (1, 28, 28), "convs": [], "dense": [64, 64, 64], "in_bits": 8,
             "fc_input": True},
    # CNV-shaped, small: 8C3-8C3-MP2-16C3-16C3-MP2-FC32-FC32-FC10 on 3x20x20
    "cnv": {"in_shape": (3, 20, 20), "dense": [32, 32],
            "convs": [(8, False, 0), (8, True, 0), (16, False, 0), (16, True, 0)]},
    "cnv8": {"in_shape": (3, 20, 20), "dense": [32, 32], "in_bits": 8,
             "convs": [(8, False, 0), (8, True, 0), (16, False, 0), (16, True, 0)]},
    # padded convolutions: the 8-bit input padded with its code of 0, a binary map
    # zero-padded
    "pad8": {"in_shape": (3, 8, 8), "convs": [(6, False, 1), (5, True, 1)], "dense": [12],
             "in_bits": 8},
}


def build(name: str, seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return randomise(Net(**MODELS[name]), seed, negative_norm=name.endswith("8"))


def export(model: Net, folder: Path, name: str) -> dict[str, Path]:
    """The four exports of ``model`` (module docstring) as ``{style: path}``."""
    from brevitas.export import export_qonnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    folder.mkdir(parents=True, exist_ok=True)
    x = torch.rand(1, *model.in_shape)
    out = {}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # and the exporter's progress lines go
        for dynamo in (True, False):
            style = "dynamo" if dynamo else "torchscript"
            path = folder / f"{name}-{style}.onnx"
            export_qonnx(model, x, str(path), dynamo=dynamo)
            out[style] = path
            clean = folder / f"{name}-{style}-clean.onnx"
            cleanup_model(ModelWrapper(str(path))).save(str(clean))
            out[f"{style}-clean"] = clean
    return out


ROOT = Path(__file__).resolve().parents[1]


def _cache_key(name: str, seed: int) -> str:
    from importlib.metadata import version

    parts = [repr(MODELS[name]), str(seed)]
    parts += [inspect.getsource(f) for f in (Net, randomise, build, export)]
    parts += [version(p) for p in ("torch", "brevitas", "qonnx", "onnx")]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


@functools.cache
def exports(name: str, seed: int = 0) -> dict[str, Path]:
    """The exports of ``build(name, seed)``, made once and kept under
    ``build/onnx_cases/`` (keyed by the model, the seed, the code that builds and exports it
    and the package versions; a lock lets one test worker make them while the others
    wait)."""
    root = ROOT / "build" / "onnx_cases"
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"{name}-{seed}-{_cache_key(name, seed)}"
    paths = {style: folder / f"{name}-{style}.onnx" for style in STYLES}
    with open(root / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not folder.is_dir():
            scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
            try:
                export(build(name, seed), scratch, name)
                os.replace(scratch, folder)
            except BaseException:
                shutil.rmtree(scratch, ignore_errors=True)
                raise
    return paths


def random_pixels(shape, count: int, seed: int) -> np.ndarray:
    """Random 8-bit images ``[count, C, H, W]`` that also hold every pixel value once."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (count, *shape)).astype(np.uint8)
    flat = x.reshape(-1)
    flat[:256] = np.arange(256)
    return x



# --- hand-made graphs: FINN's streamlined ops and what bnnhw refuses ------------------------

QONNX = "qonnx.custom_op.general"


class Builder:
    """A chain of ONNX nodes from the image input ``x`` ``[1, *in_shape]``: each ``op``
    takes the last tensor first, then its constants (arrays become initializers, strings
    are tensor names such as a ``quantised`` weight)."""

    def __init__(self, in_shape):
        self.in_shape = tuple(in_shape)
        self.nodes, self.inits, self.last, self.count = [], [], "x", 0

    def const(self, value) -> str:
        import onnx

        self.count += 1
        name = f"c{self.count}"
        self.inits.append(onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op_type, inputs, domain="", name=None, **attrs) -> str:
        import onnx

        self.count += 1
        out = f"t{self.count}"
        names = [i if isinstance(i, str) else self.const(i) for i in inputs]
        self.nodes.append(onnx.helper.make_node(op_type, names, [out], name=name or
                                                f"{op_type}_{self.count}", domain=domain,
                                                **attrs))
        return out

    def op(self, op_type, *consts, domain="", name=None, first=False, **attrs) -> Builder:
        inputs = [*consts, self.last] if first else [self.last, *consts]
        self.last = self.node(op_type, inputs, domain=domain, name=name, **attrs)
        return self

    def quantised(self, weights, scale=1.0) -> str:
        """A weight through its own ``BipolarQuant`` node."""
        return self.node("BipolarQuant", [np.asarray(weights, np.float32),
                                          np.asarray([scale], np.float32)], domain=QONNX)

    def save(self, path: Path) -> Path:
        import onnx

        graph = onnx.helper.make_graph(
            self.nodes, "g", [onnx.helper.make_tensor_value_info(
                "x", onnx.TensorProto.FLOAT, [1, *self.in_shape])],
            [onnx.helper.make_tensor_value_info(self.last, onnx.TensorProto.FLOAT, None)],
            self.inits)
        model = onnx.helper.make_model(graph, opset_imports=[
            onnx.helper.make_opsetid("", 13), onnx.helper.make_opsetid(QONNX, 1)])
        model.ir_version = 8
        onnx.save(model, str(path))
        return path


def bipolar(rng, *shape) -> np.ndarray:
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


def batchnorm(rng, n) -> list[np.ndarray]:
    """BatchNorm parameters (gamma with a zero and negatives, beta, mean, var)."""
    gamma = rng.normal(size=n)
    gamma[0] = 0.0
    return [a.astype(np.float32) for a in (gamma, rng.normal(size=n) * 0.5,
                                           rng.normal(size=n) * 2, rng.uniform(0.5, 4, n))]


def tiny(folder: Path, name: str = "tiny", **change) -> Path:
    """A small binary FC network as Brevitas exports it: ``2x - 1``, BipolarQuant, Gemm,
    BatchNorm, BipolarQuant, Gemm, TensorNorm-like Sub/Div/Mul/Add. ``change`` replaces
    one step: ``act`` (the hidden quantiser node), ``weight`` (the first weight tensor
    name), ``extra`` (a node inserted after the hidden BatchNorm)."""
    rng = np.random.default_rng(4)
    b = Builder((1, 4, 4))
    b.op("Mul", np.float32(2.0)).op("Sub", np.array([1.0], np.float32))
    b.op("BipolarQuant", np.array([1.0], np.float32), domain=QONNX, name="in_quant")
    b.op("Reshape", np.array([1, -1], np.int64))
    w1 = change.get("weight") or b.quantised(rng.uniform(-1, 1, (8, 16)))
    b.op("Gemm", w1 if isinstance(w1, str) else w1(b), name="fc1", transB=1)
    b.op("BatchNormalization", *batchnorm(rng, 8), name="bn1", epsilon=1e-4)
    if "extra" in change:
        change["extra"](b)
    if "act" in change:
        change["act"](b)
    else:
        b.op("BipolarQuant", np.array([1.0], np.float32), domain=QONNX, name="act1")
    b.op("Gemm", b.quantised(rng.uniform(-1, 1, (3, 8))), name="fc2", transB=1)
    b.op("Sub", np.array([0.3], np.float32)).op("Div", np.array([1.5], np.float32))
    b.op("Mul", np.array([0.75], np.float32)).op("Add", np.array([0.1], np.float32))
    folder.mkdir(parents=True, exist_ok=True)
    return b.save(folder / f"{name}.onnx")
