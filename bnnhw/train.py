"""Quantisation-aware training of a spec'd BNN on a ``Dataset``.

``train`` builds the model from its spec under a seed and trains it with Adam or SGD
(momentum 0.9) on cross-entropy, with a cosine (or step) learning-rate schedule applied
per batch and the latent weights clipped to [-1, 1] after every step; training images may
be shifted by a few pixels at random (augmentation). Everything random (initial weights,
the training subset, the batch order, the shifts) comes from ``seed``: the same seed with
the same torch version and thread count gives identical weights (float sums depend on
how work is split between threads). The test accuracy is measured after every epoch in
eval mode; the reported figure is the last epoch's (never the best one, so the test split
is not used for model selection).

``method`` picks how the gradients are found (``bnnhw.methods``): ``ste`` (backpropagation
with straight-through estimators), ``self-binarizing``, ``dfa`` or ``drtp``; any of them
can add kernel-sparsity pruning (``prune_lambda > 0``). ``init`` starts from a trained
model's parameters instead of the seed's (fine-tuning, class specialisation).

Models with FracBNN-style fractional (frac2) activations train with ``ste``. Their gated
layers add FracBNN's target-rate regulariser to the objective: the sum over gated layers
of ``weight * (soft_rate - target_rate) ** 2`` (each layer's ``gate`` options), where
``soft_rate`` is the batch mean of the gate's sigmoid surrogate; it moves the gate
thresholds until the LSB plane is used about ``target_rate`` of the time. The gate
thresholds learn at ``lr * tau`` (Adam) or ``lr * tau ** 2`` (SGD), ``tau =
sqrt(fan-in)`` being the surrogate's temperature: they live in units of the MSB plane's
dot product. ``frac_warmup`` epochs first train with real activations (every
``FracActivation`` returns ``clamp(y, -1, 1)`` and gated layers take them whole; binary
activations stay binary), then quantised, FracBNN's two-step schedule; the model
returned is always quantised. Each epoch's record holds ``gate_rates``, the fraction of
hard LSB gates per gated layer (by module path), measured on the test set in eval mode
on the quantised network.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import methods as mt
from .checkpoint import check_model_fits
from .data import Dataset, adapt
from .errors import BnnhwError, format_bytes, memory_bytes, read_json_text, write_together
from .nn import (
    BNN,
    BinaryActivation,
    BinaryConv2d,
    BinaryLinear,
    FracActivation,
    SpecError,
    build_model,
    clip_latent_weights,
    gated_layers,
    has_frac,
    normalize_spec,
    set_quantise,
    zoo,
)

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "step")
# Measured on sfc with the bundled MNIST (4,000 training images, 10 epochs): Adam at 0.1
# reaches 93% where 1e-2 stops near 89%; the latent weights live in [-1, 1], so a large
# step is what lets signs flip within a short schedule.
# SGD (with Glorot-scaled rates for the latent weights, see _sgd_groups) is slower: 78%
# after 10 epochs and 87% after 30 at its best rate, 0.03.
DEFAULT_LR = {"adam": 0.1, "sgd": 0.03}
# Without BatchNorm a weight flip moves a layer's dot products unnormalised: on sfc without
# BatchNorm (bundled MNIST, 10 epochs) Adam at 0.1 leaves every hidden bit constant (10%),
# at 0.01 it reaches 90%.
NO_BN_ADAM_LR = 0.01
MAX_SEED = 2**63 - 1  # torch seeds are 64-bit
# Training memory per float: weight, gradient and two Adam moments per parameter; per
# activation value of a batch image, its output and its gradient with some slack.
TRAIN_BYTES_PER_PARAMETER = 16
TRAIN_BYTES_PER_ACTIVATION = 24


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; ``lr=None`` picks the optimiser's default (``DEFAULT_LR``).

    ``limit`` trains on that many training images drawn at random (seeded) instead of all.
    ``shift`` augments the training images: each batch image moves by a random offset of
    up to ``shift`` pixels in each direction, the uncovered border filled with pixel 0.
    ``frac_warmup`` epochs (fewer than ``epochs``) train a frac2 model with real
    activations first (module docstring).
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float | None = None
    optimizer: str = "adam"
    schedule: str = "cosine"
    seed: int = 0
    limit: int | None = None
    shift: int = 1
    method: str = "ste"
    slope_start: float = mt.DEFAULT_SLOPE_START
    slope_final: float | None = None
    slope_growth: float | None = None
    prune_lambda: float = 0.0
    prune_t: float = mt.DEFAULT_PRUNE_T
    prune_multiple: int = mt.DEFAULT_PRUNE_MULTIPLE
    frac_warmup: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, not {self.epochs!r}")
        if (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                or self.batch_size < 2):
            raise ValueError(f"batch size must be an integer >= 2 (BatchNorm needs two "
                             f"samples), not {self.batch_size!r}")
        if self.lr is not None and (isinstance(self.lr, bool)
                                    or not isinstance(self.lr, (int, float))
                                    or not math.isfinite(self.lr) or self.lr <= 0):
            raise ValueError(f"learning rate must be a positive number, not {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, "
                             f"not {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, "
                             f"not {self.schedule!r}")
        if (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                or not 0 <= self.seed <= MAX_SEED):
            raise ValueError(f"seed must be an integer in 0..2**63-1, not {self.seed!r}")
        if self.limit is not None and (isinstance(self.limit, bool)
                                       or not isinstance(self.limit, int) or self.limit < 2):
            raise ValueError(f"limit must be an integer >= 2, not {self.limit!r}")
        if isinstance(self.shift, bool) or not isinstance(self.shift, int) or self.shift < 0:
            raise ValueError(f"shift must be a non-negative integer, not {self.shift!r}")
        if self.method not in mt.METHODS:
            raise ValueError(f"method must be one of {', '.join(mt.METHODS)}, "
                             f"not {self.method!r}")
        for name in ("slope_start", "slope_final", "slope_growth"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not math.isfinite(v) or v <= 0):
                raise ValueError(f"{name.replace('_', ' ')} must be a positive number, "
                                 f"not {v!r}")
        if self.slope_final is not None and self.slope_growth is not None:
            raise ValueError("give either a final slope or a slope growth, not both")
        if self.method != "self-binarizing" and (self.slope_final is not None
                                                 or self.slope_growth is not None
                                                 or self.slope_start != mt.DEFAULT_SLOPE_START):
            raise ValueError(f"slope options apply to the self-binarizing method only, not "
                             f"{self.method}")
        if (isinstance(self.prune_lambda, bool) or not isinstance(self.prune_lambda, (int, float))
                or not math.isfinite(self.prune_lambda) or self.prune_lambda < 0):
            raise ValueError(f"prune lambda must be a number >= 0, not {self.prune_lambda!r}")
        if (isinstance(self.prune_t, bool) or not isinstance(self.prune_t, (int, float))
                or not 0 <= self.prune_t < 1):
            raise ValueError(f"prune t must be a fraction in [0, 1), not {self.prune_t!r}")
        if (isinstance(self.prune_multiple, bool) or not isinstance(self.prune_multiple, int)
                or self.prune_multiple < 1):
            raise ValueError(f"prune multiple must be a positive integer, not "
                             f"{self.prune_multiple!r}")
        if (isinstance(self.frac_warmup, bool) or not isinstance(self.frac_warmup, int)
                or not 0 <= self.frac_warmup < self.epochs):
            raise ValueError(f"frac warmup must be a number of epochs in 0..{self.epochs - 1}, "
                             f"below the {self.epochs} trained so that the last ones train "
                             f"quantised, not {self.frac_warmup!r}")

    @property
    def pruning(self) -> bool:
        """Whether kernel-sparsity pruning is on."""
        return self.prune_lambda > 0

    @property
    def learning_rate(self) -> float:
        """The initial learning rate actually used."""
        return float(self.lr) if self.lr is not None else DEFAULT_LR[self.optimizer]


@dataclass(frozen=True)
class TrainResult:
    """A trained model (eval mode) with its last-epoch test accuracy and per-epoch history.

    ``history`` has one dict per epoch: ``epoch``, ``loss`` (mean training loss),
    ``train_accuracy`` (on the batches as trained: augmented, train mode),
    ``test_accuracy``, ``lr`` (the base learning rate at the end of the epoch) and
    ``time_s`` (since training started); with frac2 activations also ``gate_rates``
    (module path -> fraction of hard LSB gates on the test set) and ``frac_quantised``
    (false in the warm-up epochs, whose test accuracy is the real-activation network's).
    """

    model: BNN
    test_accuracy: float
    train_time_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    float_test_accuracy: float | None = None  # self-binarizing: the last smooth network


MAX_SPEC_BYTES = 1 << 20  # a spec is a few hundred bytes; a larger file is something else


def default_lr(spec: dict[str, Any], optimizer: str) -> float:
    """The initial learning rate used unless one is given (``DEFAULT_LR``, or
    ``NO_BN_ADAM_LR`` for Adam on a model without BatchNorm)."""
    from .nn import uses_batchnorm

    if optimizer == "adam" and not uses_batchnorm(spec):
        return NO_BN_ADAM_LR
    return DEFAULT_LR[optimizer]


def resolve_model(model: str, width: float | None = None) -> tuple[str, dict[str, Any]]:
    """``(arch, spec)`` for a zoo name or the path of a spec JSON file (``arch`` "spec");
    ``width`` scales the channels of the zoo's ``vgg`` (refused for any other model)."""
    if width is not None and model != "vgg":
        raise BnnhwError(f"--width scales the zoo's vgg only, not {model}")
    if model in zoo.NAMES:
        return model, zoo.get_spec(model, **({"width": width} if width is not None else {}))
    path = Path(model)
    if path.suffix.lower() != ".json" and not path.exists():
        raise BnnhwError(f"unknown model {model!r}: choose one of {', '.join(zoo.NAMES)} "
                         f"or give a spec JSON file")
    if path.is_dir():
        raise BnnhwError(f"model spec file {path} is a folder; give a spec JSON file or one "
                         f"of {', '.join(zoo.NAMES)}")
    if not path.exists():
        raise BnnhwError(f"model spec file {path} does not exist")
    if path.suffix.lower() == ".pt":
        raise BnnhwError(f"{path} looks like a checkpoint; --model takes a zoo model "
                         f"({', '.join(zoo.NAMES)}) or a model spec JSON file")
    if not path.is_file():
        raise BnnhwError(f"model spec file {path} is not a regular file")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise BnnhwError(f"model spec file {path} holds {path.stat().st_size:,} bytes; a "
                         f"spec is a small JSON file (at most {MAX_SPEC_BYTES:,} bytes)")
    text = read_json_text(path, f"model spec file {path}", "give a spec JSON file",
                          encoding="utf-8-sig")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise BnnhwError(f"model spec file {path} is not valid JSON: {e.msg} at line "
                         f"{e.lineno} column {e.colno}") from None
    try:
        return "spec", normalize_spec(raw)
    except SpecError as e:
        raise BnnhwError(f"model spec file {path}: {e}") from None


def classifier_outputs(spec: dict[str, Any]) -> int:
    """Number of classes the spec's classifier emits."""
    return int(normalize_spec(spec)["layers"][-1]["out"])


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 500) -> float:
    """Fraction of images ``x`` (uint8 or float pixels, NCHW) classified as ``y``, eval mode.

    The model's mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        out = model(x[i:i + batch_size].to(torch.float32))
        correct += int((out.argmax(dim=1) == y[i:i + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(x))


def check_frac_options(spec: dict[str, Any], config: TrainConfig) -> None:
    """Refuse (``BnnhwError``) training options that do not fit the model's activations:
    a frac2 warm-up without frac2 activations, a frac2 model with a method other than
    ``ste`` (the smooth and feedback methods know binary activations only)."""
    frac = has_frac(spec)
    if config.frac_warmup and not frac:
        raise BnnhwError("--frac-warmup trains frac2 activations unquantised first, but "
                         "this model has none (every activation is binary); give a model "
                         "with \"activation\": \"frac2\" layers (such as tiny-frac) or "
                         "leave --frac-warmup out")
    if frac and config.method != "ste":
        raise BnnhwError(f"a model with frac2 activations trains with --method ste only, "
                         f"not {config.method}")


def gate_loss(model: torch.nn.Module) -> torch.Tensor | None:
    """FracBNN's target-rate regulariser: the sum over gated layers of ``weight *
    (soft_rate - target_rate) ** 2`` from their last forward pass; None when no gated
    layer ran quantised."""
    terms = [m.gate_options["weight"] * (m.soft_gate_rate - m.gate_options["target_rate"]) ** 2
             for m in gated_layers(model).values() if m.soft_gate_rate is not None]
    return torch.stack(terms).sum() if terms else None


@torch.no_grad()
def gate_rates(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 500
               ) -> dict[str, float]:
    """Per gated layer (module path), the fraction of hard LSB gates over images ``x``
    (every output and pixel), in eval mode on the quantised network. The model's mode
    and quantisation are restored afterwards."""
    layers = gated_layers(model)
    if not layers or len(x) == 0:
        return {}
    was_training = model.training
    quantised = {name: m.quantise for name, m in layers.items()}
    model.eval()
    set_quantise(model, True)
    sums = dict.fromkeys(layers, 0.0)
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            model(xb.to(torch.float32))
            for name, m in layers.items():
                sums[name] += m.last_gate_rate * len(xb)  # same items per image
    finally:
        model.train(was_training)
        set_quantise(model, all(quantised.values()))
    return {name: v / len(x) for name, v in sums.items()}


def format_gate_rates(rates: dict[str, float]) -> str:
    """``layers.5 12.3%, layers.8 40.0%``."""
    return ", ".join(f"{name} {r:.1%}" for name, r in rates.items())


def random_shift(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Move each image of ``x`` [N, C, H, W] by its own random (dy, dx) in -shift..shift.

    Pixels moved in from outside the image are 0; the output has the input's shape.
    """
    if shift == 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (shift,) * 4)
    dy, dx = (torch.randint(0, 2 * shift + 1, (2, n), generator=gen))
    rows = (torch.arange(h).view(1, h) + dy.view(n, 1)).view(n, 1, h, 1)
    cols = (torch.arange(w).view(1, w) + dx.view(n, 1)).view(n, 1, 1, w)
    return padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(c).view(1, c, 1, 1), rows,
                  cols]


def _gate_groups(model: BNN, lr: float, power: int) -> list[dict[str, Any]]:
    """A parameter group per gated layer: its gate thresholds at ``lr * tau ** power``."""
    return [{"params": [m.gate_threshold], "lr": lr * m.tau ** power}
            for m in gated_layers(model).values()]


def _adam_groups(model: BNN, lr: float) -> list[dict[str, Any]]:
    """Adam parameter groups: the bias of a layer without BatchNorm is in units of its dot
    product, which moves by up to its fan-in when weights flip, so it learns at
    ``lr * sqrt(fan_in)``; so do gate thresholds (``lr * tau``); everything else at
    ``lr``."""
    mods = list(model.layers)
    fast = [m for i, m in enumerate(mods[:-1])
            if isinstance(m, (BinaryConv2d, BinaryLinear)) and m.bias is not None
            and isinstance(mods[i + 1], (BinaryActivation, FracActivation))]
    gates = _gate_groups(model, lr, 1)
    ids = {id(m.bias) for m in fast} | {id(g["params"][0]) for g in gates}
    groups: list[dict[str, Any]] = [
        {"params": [m.bias], "lr": lr * math.sqrt(m.weight[0].numel())} for m in fast]
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": rest, "lr": lr}, *groups, *gates]


def _sgd_groups(model: BNN, lr: float) -> list[dict[str, Any]]:
    """SGD parameter groups: each binary layer's latent weights get BinaryConnect's
    Glorot-scaled rate ``lr * sqrt((fan_in + fan_out) / 1.5)``, everything else ``lr``.

    Latent weight gradients are orders of magnitude smaller than the [-1, 1] range the
    weights must cross to flip, so one plain rate cannot suit them and BatchNorm at once.
    """
    groups: list[dict[str, Any]] = _gate_groups(model, lr, 2)
    binary: set[int] = {id(g["params"][0]) for g in groups}
    for m in model.modules():
        if isinstance(m, (BinaryConv2d, BinaryLinear)):
            w = m.weight
            fan_in = w[0].numel()
            fan_out = w.shape[0] * (w[0, 0].numel() if w.dim() > 2 else 1)
            groups.append({"params": [w], "lr": lr * math.sqrt((fan_in + fan_out) / 1.5)})
            binary.add(id(w))
    groups.append({"params": [p for p in model.parameters() if id(p) not in binary]})
    return groups


def _lr_factor(schedule: str, step: int, total: int) -> float:
    progress = step / max(1, total)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))


def check_trainable(spec: dict[str, Any], batch_size: int, what: str = "the model") -> None:
    """Refuse (``BnnhwError``) a spec whose training would not fit in this machine's
    memory, before building it (``bnnhw.checkpoint.check_model_fits``)."""
    check_model_fits(spec, what, batch_size, TRAIN_BYTES_PER_PARAMETER,
                     TRAIN_BYTES_PER_ACTIVATION, "for training")


class Diverged(BnnhwError):
    """Training produced a non-finite loss or weight; nothing should be written."""


def _non_finite(model: BNN) -> str | None:
    """The name of the first parameter or buffer of ``model`` holding NaN/inf, or None."""
    for name, t in (*model.named_parameters(), *model.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def train(spec: dict[str, Any], data: Dataset, config: TrainConfig, progress: bool = False,
          desc: str = "train", what: str = "the model",
          init: dict[str, torch.Tensor] | None = None,
          on_epoch: Callable[[int, BNN, dict[str, float]], None] | None = None
          ) -> TrainResult:
    """Build ``spec`` under ``config.seed`` and train it on ``data``; see the module doc.

    Images are fitted to the model's input with ``adapt``. Raises ``BnnhwError`` when the
    data cannot feed the model (shape, class count, no test image), for a shift as large
    as the model's input, when the model (``what`` names it) or the fitted images would
    not fit in memory (checked before anything is allocated), and ``Diverged`` (a
    ``BnnhwError``) at the first step whose loss, weights or BatchNorm statistics are
    not finite. ``progress`` shows a tqdm bar on stderr. The global torch RNG is left as
    it was. ``init`` is a state_dict to start from (a model of this spec); ``on_epoch``
    is called after every epoch with the epoch, the model (eval mode, binary) and that
    epoch's history record. With pruning, ``history`` records per epoch the fraction of
    hidden filters pruned (``pruned_fraction``); with self-binarizing, the slope and the
    smooth network's test accuracy (``float_test_accuracy``).
    """
    spec = normalize_spec(spec)
    check_frac_options(spec, config)
    classes = classifier_outputs(spec)
    if classes != len(data.classes):
        raise BnnhwError(f"the model emits {classes} class scores but data set {data.name} "
                         f"has {len(data.classes)} classes")
    if len(data.test_y) == 0:
        raise BnnhwError(f"data set {data.name} has no test images; training needs at least "
                         f"one to measure its accuracy")
    shape = tuple(spec["input"]["shape"])
    if config.shift >= max(shape[1:]):
        raise BnnhwError(f"a shift of {config.shift} pixels moves every image out of the "
                         f"model's {shape[1]}x{shape[2]} input; give a shift below "
                         f"{max(shape[1:])}")
    n_train = len(data.train_y) if config.limit is None else min(config.limit,
                                                                  len(data.train_y))
    check_trainable(spec, max(1, min(config.batch_size, n_train)), what)
    pixels = (len(data.train_y) + len(data.test_y)) * math.prod(shape)
    if pixels > memory_bytes():
        raise BnnhwError(f"the {len(data.train_y) + len(data.test_y):,} images of data set "
                         f"{data.name}, fitted to the model's input "
                         f"{'x'.join(map(str, shape))}, need {format_bytes(pixels)} of "
                         f"memory, more than the {format_bytes(memory_bytes())} this machine "
                         f"has")
    train_x, test_x = adapt(data.train_x, shape), adapt(data.test_x, shape)
    train_y, test_y = data.train_y, data.test_y

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(spec)
    if init is not None:
        model.load_state_dict(init)
    else:
        mt.centre_biases(model, train_x[:256])
    feedback = (mt.FeedbackAlignment(config.method, classes, config.seed)
                if config.method in mt.FEEDBACK_METHODS else None)
    smooth = config.method == "self-binarizing"
    gen = torch.Generator().manual_seed(config.seed)
    if config.limit is not None and config.limit < len(train_x):
        keep = torch.randperm(len(train_x), generator=gen)[:config.limit]
        train_x, train_y = train_x[keep], train_y[keep]
    n = len(train_x)
    if n < 2:
        raise BnnhwError(f"data set {data.name} has {n} training image(s); training needs "
                         f"at least 2")
    bs = min(config.batch_size, n)
    # A last batch of one image would break BatchNorm: drop it (a different one each epoch).
    usable = n - 1 if n % bs == 1 else n
    steps = math.ceil(usable / bs)
    total = steps * config.epochs

    lr = config.learning_rate
    if config.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(_adam_groups(model, lr), lr=lr)
    else:
        opt = torch.optim.SGD(_sgd_groups(model, lr), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: _lr_factor(config.schedule, s, total))

    history: list[dict[str, float]] = []
    start = time.perf_counter()
    bar = tqdm(total=total, desc=desc, unit="batch", file=sys.stderr, disable=not progress,
               dynamic_ncols=True, leave=False)
    slope = None
    gated = gated_layers(model)
    try:
        for epoch in range(1, config.epochs + 1):
            quantised = epoch > config.frac_warmup
            set_quantise(model, quantised)
            if smooth:
                slope = mt.slope_at(epoch, config.epochs, config.slope_start,
                                    config.slope_final, config.slope_growth)
                mt.set_slope(model, slope)
            model.train()
            order = torch.randperm(n, generator=gen)[:usable]
            loss_sum, correct = 0.0, 0
            for batch, i in enumerate(range(0, usable, bs), 1):
                idx = order[i:i + bs]
                xb = random_shift(train_x[idx], config.shift, gen).to(torch.float32)
                yb = train_y[idx]
                if feedback is not None:
                    out, taps = feedback.forward(model, xb)
                else:
                    out = model(xb)
                loss = F.cross_entropy(out, yb)
                objective = loss
                if config.pruning:
                    objective = loss + config.prune_lambda * mt.sparsity_loss(model)
                gates = gate_loss(model)
                if gates is not None:
                    objective = objective + gates
                where = f"epoch {epoch}, batch {batch}"
                if not math.isfinite(loss.item()):
                    raise Diverged(f"training diverged at {where}: the loss is "
                                   f"{loss.item()}; nothing was written; train with a "
                                   f"smaller --lr")
                opt.zero_grad(set_to_none=True)
                if feedback is not None:
                    feedback.backward(objective, out, taps, yb)
                else:
                    objective.backward()
                try:
                    opt.step()
                except RuntimeError as e:
                    if "overflow" not in str(e):
                        raise
                    raise Diverged(f"training diverged at {where}: the optimizer step "
                                   f"overflowed (learning rate {lr:g}); nothing was "
                                   f"written; train with a smaller --lr") from None
                clip_latent_weights(model)
                if config.pruning:
                    mt.zero_pruned(model)
                bad = _non_finite(model)
                if bad is not None:
                    raise Diverged(f"training diverged at {where}: {bad} holds NaN or "
                                   f"infinite values; nothing was written; train with a "
                                   f"smaller --lr")
                sched.step()
                loss_sum += loss.item() * len(idx)
                correct += int((out.argmax(dim=1) == yb).sum())
                bar.update(1)
                rates = "".join(f" {m.last_gate_rate:.0%}" for m in gated.values()
                                if quantised)
                bar.set_postfix_str(f"epoch {epoch}/{config.epochs} loss {loss.item():.3f}"
                                    + (f" gates{rates}" if rates else ""), refresh=False)
            record: dict[str, float] = {}
            if config.pruning:
                mt.prune_filters(model, config.prune_t, config.prune_multiple)
                record["pruned_fraction"] = mt.pruning_figures(model)["pruned_fraction"]
            if smooth:
                record["slope"] = float(slope)  # type: ignore[arg-type]
                record["float_test_accuracy"] = evaluate(model, test_x, test_y)
                mt.set_slope(model, None)
                if epoch == config.epochs:
                    mt.recalibrate_batchnorm(model, train_x)
            test_acc = evaluate(model, test_x, test_y)
            if gated:
                record["gate_rates"] = gate_rates(model, test_x)  # type: ignore[assignment]
            if has_frac(spec):
                record["frac_quantised"] = quantised
            history.append({
                "epoch": epoch,
                "loss": loss_sum / usable,
                "train_accuracy": correct / usable,
                "test_accuracy": test_acc,
                "lr": lr * _lr_factor(config.schedule, epoch * steps, total),
                "time_s": time.perf_counter() - start,
                **record,
            })
            if progress:
                h = history[-1]
                extra = "".join(
                    [f"  smooth {h['float_test_accuracy']:.2%} (slope {h['slope']:.3g})"
                     if smooth else "",
                     f"  pruned {h['pruned_fraction']:.1%}" if config.pruning else "",
                     "  (real activations)" if not quantised else "",
                     f"  gates {format_gate_rates(h['gate_rates'])}" if gated else ""])
                bar.write(f"epoch {epoch}/{config.epochs}: loss {h['loss']:.4f}  train "
                          f"{h['train_accuracy']:.2%}  test {test_acc:.2%}{extra}",
                          file=sys.stderr)
            model.eval()
            if on_epoch is not None:
                on_epoch(epoch, model, history[-1])
    finally:
        bar.close()
    set_quantise(model, True)
    model.eval()
    return TrainResult(model=model, test_accuracy=history[-1]["test_accuracy"],
                       train_time_s=time.perf_counter() - start, history=history,
                       float_test_accuracy=history[-1].get("float_test_accuracy"))


def curve_path(out: str | os.PathLike[str]) -> Path:
    """Where the training curve of checkpoint ``out`` goes: ``<out without .pt>.curve.png``."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix == ".pt" else out
    return stem.with_name(stem.name + ".curve.png")


def plot_curve(history: list[dict[str, float]], path: str | os.PathLike[str],
               title: str = "") -> Path:
    """Draw loss and train/test accuracy per epoch to a PNG file, written atomically."""
    path = Path(path)
    write_together([(path, lambda f: render_curve(history, f, title))])
    return path


def render_curve(history: list[dict[str, float]], f: BinaryIO, title: str = "") -> None:
    """Draw loss and train/test accuracy per epoch as PNG bytes into the binary file ``f``
    (matplotlib's Agg backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [h["loss"] for h in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_acc.plot(epochs, [100 * h["train_accuracy"] for h in history], marker="o",
                label="train")
    ax_acc.plot(epochs, [100 * h["test_accuracy"] for h in history], marker="o",
                label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if len(epochs) < 20:
            ax.set_xticks(epochs)
    if title:
        fig.suptitle(title)
    FigureCanvasAgg(fig)
    fig.savefig(f, format="png", dpi=100)
