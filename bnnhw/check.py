"""QAT model (eval mode) against the golden model on its IR: classes and every activation bit.

Two comparisons (docs/architecture.md, "Verification ladder", step 1):

- end to end: the golden model's class (``bnnhw.golden.run``: the integer argmax the
  hardware computes) against the QAT model's argmax, per image;
- layer by layer, teacher-forced: the graph's nodes are grouped into units, each the
  smallest run of consecutive nodes that implements a contiguous run of model modules
  (``node.source``), e.g. a conv with its BatchNorm and activation, or a conv and the
  max-pool that pooled it before BatchNorm. Each unit is fed the QAT model's own input to
  those modules and its output compared with the QAT model's output of the last one:
  binary maps bit by bit, the input encoder's pixels or bits value by value, and the
  classifier's integer dot products with the exact dot products of the model's binarised
  weights (computed in float64, which is exact for these integers).

Channels the frontend removed from the hardware (pruned, ``ir.Conv.channels``) are
compared by what remains: each unit sees and is compared on the model's kept channels
only, and the classifier's dot products are those over its kept inputs (the removed
constants live in its class offsets, which the class comparison checks end to end).

A disagreeing bit is a *tie* when the exact pre-activation ``y = BN(alpha * dot + b)``,
evaluated in float64 on the exact integer ``dot``, is within ``eps`` of zero relative to
the magnitude of the terms that cancel in it (``|s| * (|alpha * dot| + |b| + |mean|) +
|beta|``): the float32 QAT model can round such a value to either side of zero. Every
other disagreement is a bug and is reported as one.

A disagreeing class is a tie the same way (``class_tie``): the float64 logits ``y = scale
* dot + bias`` of the two classes are within ``eps`` of each other relative to their
terms, or, when the classifier's integer map is not exact (``ir.Dense.class_exact``),
within the bound its rounding can reorder (``bnnhw.frontend.class_map``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import golden, ir
from .errors import BnnhwError
from .frontend import compile_model
from .nn.layers import (
    BinaryActivation,
    BinaryConv2d,
    BinaryLinear,
    FracActivation,
    GatedConv2d,
    GatedLinear,
    Scores,
    _xnor_scale,
    frac_planes,
)

TIE_EPS = 1e-5  # float32 rounding is ~1e-7 relative per operation


@dataclass
class UnitAgreement:
    """Agreement of one unit (see the module docstring) over all checked images."""

    name: str
    nodes: tuple[str, ...]
    modules: tuple[str, ...]
    kind: str  # "bits", "codes" (frac2 maps, counted as two plane bits per code), "values"
    # (uint8 pixels) or "scores" (classifier dot products)
    compared: int = 0
    disagreements: int = 0
    ties: int = 0

    @property
    def bugs(self) -> int:
        """Disagreements that are not float ties."""
        return self.disagreements - self.ties

    @property
    def agreement(self) -> float:
        return 1.0 - self.disagreements / self.compared if self.compared else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "nodes": list(self.nodes), "modules": list(self.modules),
                "kind": self.kind, "compared": self.compared,
                "disagreements": self.disagreements, "ties": self.ties, "bugs": self.bugs,
                "agreement": self.agreement}


@dataclass
class CheckReport:
    """Outcome of ``check_model``; ``ok`` iff every class agrees and every bit disagreement
    is a counted tie."""

    images: int
    class_matches: int
    layers: list[UnitAgreement]
    eps: float = TIE_EPS
    mismatched_images: list[int] = field(default_factory=list)
    class_ties: int = 0
    reference: str = "the QAT model"

    @property
    def class_agreement(self) -> float:
        return self.class_matches / self.images if self.images else 1.0

    @property
    def bits(self) -> int:
        return sum(u.compared for u in self.layers if u.kind in ("bits", "codes"))

    @property
    def bit_agreement(self) -> float:
        bits = self.bits
        bad = sum(u.disagreements for u in self.layers if u.kind in ("bits", "codes"))
        return 1.0 - bad / bits if bits else 1.0

    @property
    def ties(self) -> int:
        return sum(u.ties for u in self.layers)

    @property
    def bugs(self) -> int:
        return sum(u.bugs for u in self.layers)

    @property
    def class_bugs(self) -> int:
        """Class disagreements that are not ties."""
        return self.images - self.class_matches - self.class_ties

    @property
    def ok(self) -> bool:
        return self.class_bugs == 0 and self.bugs == 0

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "images": self.images, "class_agreement": self.class_agreement,
                "class_mismatches": self.images - self.class_matches,
                "class_ties": self.class_ties, "class_bugs": self.class_bugs,
                "mismatched_images": self.mismatched_images[:100],
                "bit_agreement": self.bit_agreement, "bits": self.bits, "ties": self.ties,
                "bugs": self.bugs, "tie_eps": self.eps,
                "layers": [u.to_dict() for u in self.layers]}

    def format(self) -> str:
        """A human-readable table."""
        lines = [(f"classes: {self.class_matches}/{self.images} agree "
                 f"({100 * self.class_agreement:.2f}%); {self.class_ties} ties, "
                 f"{self.class_bugs} unexplained"),
                 (f"{'layer':<24} {'kind':<7} {'compared':>11} {'agree':>9} {'ties':>6} "
                 f"{'bugs':>6}")]
        for u in self.layers:
            lines.append(f"{u.name:<24} {u.kind:<7} {u.compared:>11} "
                         f"{100 * u.agreement:>8.3f}% {u.ties:>6} {u.bugs:>6}")
        lines.append(f"activation bits: {100 * self.bit_agreement:.4f}% of {self.bits} agree; "
                     f"{self.ties} float ties (|y| <= {self.eps:g} relative), {self.bugs} "
                     f"unexplained disagreements")
        lines.append(f"OK: the golden model matches {self.reference}" if self.ok else
                     f"FAIL: the golden model disagrees with {self.reference} beyond float "
                     f"ties")
        return "\n".join(lines)


# --- grouping the graph into units ------------------------------------------------------------

@dataclass(frozen=True)
class _Unit:
    nodes: tuple[ir.Node, ...]
    first: int  # module index range (-1 = the encoder)
    last: int


def _module_index(name: str) -> int:
    if name == "encoder":
        return -1
    m = re.fullmatch(r"layers\.(\d+)", name)
    if not m:
        raise BnnhwError(f"the graph names a module {name!r} the model does not have; "
                         f"compile the graph from this model")
    return int(m.group(1))


def units(graph: ir.Graph, index: Callable[[str], int] = _module_index,
          start: int = -1) -> list[_Unit]:
    """The graph's nodes grouped into units (module docstring); ``index`` numbers a source
    module (an ONNX model's nodes by their place in its chain), ``start`` is the first."""
    out: list[_Unit] = []
    pending: list[ir.Node] = []
    covered: set[int] = set()
    for node in graph.nodes:
        pending.append(node)
        covered |= {index(s) for s in node.source}
        if covered and covered == set(range(start, max(covered) + 1)):
            out.append(_Unit(tuple(pending), start, max(covered)))
            start, pending, covered = max(covered) + 1, [], set()
    if pending:
        raise BnnhwError(f"nodes {', '.join(n.name for n in pending)} do not cover a "
                         f"contiguous run of model modules; compile the graph from this model")
    return out


# --- the float64 shadow: exact dots and pre-activation margins --------------------------------

def _shadow(mods: list[nn.Module], x: torch.Tensor
            ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Run ``mods`` in float64 on ``x``: ``(y, mag, dot)`` with ``y`` the pre-activation of
    the last BinaryActivation (``mag`` its cancelling-term magnitude) and ``dot`` the
    exact integer dot product of the last conv/linear (``None`` when absent)."""
    z = x.to(torch.float64)
    mag = torch.zeros_like(z)
    pre = pre_mag = dot = None
    for m in mods:
        t = type(m)
        if t in (GatedConv2d, GatedLinear):
            z, mag, dot = _gated_shadow(m, z)
        elif t in (BinaryConv2d, BinaryLinear):
            wb = torch.where(m.weight >= 0, 1.0, -1.0).to(torch.float64).detach()
            if m.pruned:
                wb = wb * m.keep.to(torch.float64).view(-1, *([1] * (wb.dim() - 1)))
            if t is BinaryConv2d:
                if m.pad_amount:
                    z = F.pad(z, (m.pad_amount,) * 4, value=float(m.pad_value))
                dot = F.conv2d(z, wb, stride=m.stride).round()
                view = (1, -1, 1, 1)
            else:
                dot = F.linear(z, wb).round()
                view = (1, -1)
            alpha = (_xnor_scale(m.weight).detach().to(torch.float64).view(view) if m.scale
                     else torch.ones((), dtype=torch.float64))
            b = (m.bias.detach().to(torch.float64).view(view) if m.bias is not None
                 else torch.zeros((), dtype=torch.float64))
            z = alpha * dot + b
            mag = (alpha * dot).abs() + b.abs()
        elif t is nn.MaxPool2d:
            z, idx = F.max_pool2d(z, m.kernel_size, m.stride, return_indices=True)
            mag = mag.flatten(2).gather(2, idx.flatten(2)).view_as(z)
        elif t in (nn.BatchNorm1d, nn.BatchNorm2d):
            view = (1, -1, 1, 1) if t is nn.BatchNorm2d else (1, -1)
            n = m.num_features
            gamma = m.weight if m.weight is not None else torch.ones(n)
            beta = m.bias if m.bias is not None else torch.zeros(n)
            mu = m.running_mean.to(torch.float64).view(view)
            s = (gamma.detach().to(torch.float64)
                 / torch.sqrt(m.running_var.to(torch.float64) + m.eps)).view(view)
            beta = beta.detach().to(torch.float64).view(view)
            z = s * (z - mu) + beta
            mag = s.abs() * (mag + mu.abs()) + beta.abs()
        elif t is BinaryActivation:
            pre, pre_mag = z, mag
            z = torch.where(z >= 0, 1.0, -1.0).to(torch.float64)
            mag = torch.zeros_like(z)
        elif t is FracActivation:
            gain = float(getattr(m, "gain", 1.0))
            y, ymag = gain * z, gain * mag
            code = sum((y >= b).to(torch.float64) for b in _BOUNDARIES)
            near = torch.stack([y - b for b in _BOUNDARIES]).abs().min(dim=0).values
            pre, pre_mag = near, ymag + 1.0  # the boundaries' own size, 2/3, bounded by 1
            z = (2 * code - 3) / 3
            mag = torch.zeros_like(z)
        elif t is nn.Flatten:
            z, mag = z.flatten(1), mag.flatten(1)
        elif t is Scores:
            z = z * m.scale.detach().to(torch.float64) + m.bias.detach().to(torch.float64)
        else:
            raise BnnhwError(f"the check does not know the module type {t.__name__}")
    return pre, pre_mag, dot


_BOUNDARIES = (-2 / 3, 0.0, 2 / 3)  # the frac2 quantiser's, as float64 (ties need a margin)


def _gated_shadow(m: nn.Module, z: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A precision-gated layer in float64 on fractional values ``z``: its real output
    ``alpha * acc / 3 + b``, that output's term magnitude, and the exact integer ``acc = 2 msb
    + g lsb`` (``bnnhw.ir``), the gate computed as the model does, ``2 msb > 3 t``."""
    wb = torch.where(m.weight >= 0, 1.0, -1.0).to(torch.float64).detach()
    if m.pruned:
        wb = wb * m.keep.to(torch.float64).view(-1, *([1] * (wb.dim() - 1)))
    conv = isinstance(m, BinaryConv2d)
    if conv and m.pad_amount:
        z = F.pad(z, (m.pad_amount,) * 4, value=float(m.pad_value))
    hi, lo = (p.to(torch.float64) for p in frac_planes(z.to(torch.float32)))
    view = (1, -1, 1, 1) if conv else (1, -1)

    def mat(v: torch.Tensor) -> torch.Tensor:
        return (F.conv2d(v, wb, stride=m.stride) if conv else F.linear(v, wb)).round()

    msb, lsb = mat(hi), mat(lo)
    t = m.gate_threshold.detach().to(torch.float64).view(view)
    acc = 2 * msb + (2 * msb > 3 * t).to(torch.float64) * lsb
    alpha = (_xnor_scale(m.weight).detach().to(torch.float64).view(view) if m.scale
             else torch.ones((), dtype=torch.float64))
    b = (m.bias.detach().to(torch.float64).view(view) if m.bias is not None
         else torch.zeros((), dtype=torch.float64))
    out = alpha * acc / 3
    return out + b, out.abs() + b.abs(), acc


def _logit_signs(mods: list[nn.Module]) -> torch.Tensor:
    """Per class, the sign (+1 for 0) of the coefficient of the classifier's dot product in
    the model's logits: ``Scores.scale`` times the XNOR scale ``alpha`` (``>= 0``)."""
    linear = next(m for m in reversed(mods) if isinstance(m, BinaryLinear))  # or GatedLinear
    scores = next(m for m in reversed(mods) if isinstance(m, Scores))
    coef = scores.scale.detach().to(torch.float64)
    if linear.scale:
        coef = coef * _xnor_scale(linear.weight).detach().to(torch.float64)
    return torch.where(coef < 0, -1, 1).to(torch.int64)


def _hwc(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 1) if t.dim() == 4 else t


def _to_ir(t: torch.Tensor, kind: str) -> torch.Tensor:
    """A QAT tensor (NCHW or NF floats) as IR values: bits for +-1 maps, codes ``0..3`` for
    frac2 maps (``(2q - 3) / 3``), else integers."""
    t = _hwc(t)
    if kind == "binary":
        return (t > 0).to(torch.int64)
    if kind == "frac2":
        return ((3 * t.to(torch.float64) + 3) / 2).round().to(torch.int64)
    return t.round().to(torch.int64)


def _kinds(graph: ir.Graph) -> dict[str, tuple[str, str]]:
    """Per node, the kinds of its input and its output."""
    out, kind = {}, "uint8"
    for node in graph.nodes:
        after = ir.out_kind(node, kind)
        out[node.name] = (kind, after)
        kind = after
    return out


# --- the check ----------------------------------------------------------------------------

def check_model(model: nn.Module, images: Any, graph: ir.Graph | None = None,
                eps: float = TIE_EPS, batch_size: int = 32,
                progress: bool = False) -> CheckReport:
    """Compare ``model`` (put in eval mode) with the golden model of ``graph`` (compiled
    from the model when None) on ``images`` (8-bit pixels ``[N, C, H, W]``).

    ``progress`` shows a bar (images checked) on stderr.
    """
    model.eval()
    if graph is None:
        graph = compile_model(model)
    graph.check_lowered()
    pixels = golden.check_images(graph, images)
    groups = units(graph)
    mods = list(model.layers)
    if groups[-1].last != len(mods) - 1:
        raise BnnhwError(f"the graph covers {groups[-1].last + 1} model modules but the model "
                         f"has {len(mods)}; compile the graph from this model")
    kinds = _kinds(graph)
    stats = unit_agreements(groups, kinds)
    chans = _unit_channels(groups)
    matches, mismatched, ties = 0, [], 0
    bar = tqdm(total=int(pixels.shape[0]), unit="img", desc="check", disable=not progress,
               leave=False)
    with torch.no_grad(), bar:
        for start in range(0, pixels.shape[0], batch_size):
            px = pixels[start:start + batch_size]
            outs = {-1: model.encoder(px.to(torch.float32))}
            x = outs[-1]
            for j, m in enumerate(mods):
                x = m(x)
                outs[j] = x
            qat_classes = x.argmax(dim=1)
            gold = golden.run(graph, px, batch_size=batch_size)
            same = gold.classes == qat_classes
            matches += int(same.sum())
            for i in torch.nonzero(~same).flatten().tolist():
                mismatched.append(start + i)
                ties += class_tie(graph.nodes[-1], gold.scores[i].numpy(),
                                  int(gold.classes[i]), int(qat_classes[i]), eps)
            for g, st, (cin, cout) in zip(groups, stats, chans):
                _compare_unit(g, st, px, outs, mods, eps, cin, cout,
                              kinds[g.nodes[0].name][0])
            bar.update(int(px.shape[0]))
    return CheckReport(int(pixels.shape[0]), matches, stats, eps, mismatched, ties)


def unit_agreements(groups: list[_Unit], kinds: dict[str, tuple[str, str]] | None = None
                    ) -> list[UnitAgreement]:
    """An empty tally per unit: its name, nodes, model modules and what it outputs
    (``scores`` of the classifier, 8-bit ``values`` of an encoder, frac2 ``codes`` (by
    ``kinds``, ``_kinds``), or ``bits``)."""
    stats = []
    for g in groups:
        names = tuple(n.name for n in g.nodes)
        last = g.nodes[-1]
        if isinstance(last, ir.Dense) and not last.thresholded:
            kind = "scores"
        elif isinstance(last, ir.InputEncoder) and last.out_kind == "uint8":
            kind = "values"
        elif kinds is not None and kinds[last.name][1] == "frac2":
            kind = "codes"
        else:
            kind = "bits"
        stats.append(UnitAgreement("+".join(names), names,
                                   tuple(s for n in g.nodes for s in n.source), kind))
    return stats


def _unit_channels(groups: list[_Unit]
                   ) -> list[tuple[np.ndarray | None, np.ndarray | None]]:
    """Per unit, the model channels its input and output keep (None: all of them)."""
    out, current = [], None
    for g in groups:
        cin = current
        for node in g.nodes:
            if isinstance(node, (ir.Conv, ir.Dense)):
                current = node.channels
        out.append((cin, current))
    return out


def _select(t: torch.Tensor, chans: np.ndarray | None) -> torch.Tensor:
    """The channels ``chans`` of an IR-layout tensor (channels last)."""
    return t if chans is None else t[..., torch.from_numpy(chans.copy())]


def class_tie(node: ir.Dense, dots: Any, a: int, b: int, eps: float = TIE_EPS) -> bool:
    """Whether classes ``a`` and ``b`` are a tie on the classifier's dot products ``dots``:
    their float64 logits are within ``eps`` of each other relative to the terms (float32
    rounding in the QAT model), plus, for an inexact integer class map, the margin within
    which its rounding can reorder them (module docstring)."""
    d = np.asarray(dots, dtype=np.float64)
    scale = node.scale / node.dot_divisor
    y = scale * d + node.bias
    mag = abs(scale[a] * d[a]) + abs(node.bias[a]) + abs(scale[b] * d[b]) + abs(node.bias[b])
    slack = 0.0 if node.class_exact else (abs(d[a]) + abs(d[b]) + 2) / (2 * node.class_gain)
    return bool(abs(y[a] - y[b]) <= eps * mag + slack)


def _compare_unit(g: _Unit, st: UnitAgreement, px: torch.Tensor,
                  outs: dict[int, torch.Tensor], mods: list[nn.Module], eps: float,
                  cin: np.ndarray | None = None, cout: np.ndarray | None = None,
                  in_kind: str = "binary") -> None:
    first = g.nodes[0]
    if isinstance(first, ir.InputEncoder):
        x = px.permute(0, 2, 3, 1)
    else:
        x = _select(_to_ir(outs[g.first - 1], in_kind), cin)
    kind = in_kind
    for node in g.nodes:
        x, kind = golden.run_node(node, x, kind), ir.out_kind(node, kind)
    qat_in = px.to(torch.float32) if g.first == -1 else outs[g.first - 1]
    unit_mods = mods[max(g.first, 0):g.last + 1] if g.first >= 0 else []
    if st.kind == "scores":
        if cin is not None:  # the dot over the kept inputs: removed channels count 0
            kept = torch.zeros(qat_in.shape[1], dtype=qat_in.dtype)
            kept[torch.from_numpy(cin.copy())] = 1
            qat_in = qat_in * kept.view(1, -1, *([1] * (qat_in.dim() - 2)))
        _, _, dot = _shadow(unit_mods, qat_in)
        assert dot is not None
        # the IR's classifier rows of negative logit scale hold inverted weights (their dot
        # is negated, bnnhw.frontend.lower_class_map)
        want = dot.to(torch.int64) * _logit_signs(unit_mods)
        st.compared += want.numel()
        st.disagreements += int((x != want).sum())
        return
    out_kind = {"bits": "binary", "codes": "frac2"}.get(st.kind, "uint8")
    want = _select(_to_ir(outs[g.last], out_kind), cout)
    assert want.shape == x.shape, (st.name, want.shape, x.shape)
    if st.kind == "codes":  # two plane bits per code
        flips = x ^ want
        wrong_bits = (flips & 1) + (flips >> 1)
    else:
        wrong_bits = (x != want).to(torch.int64)
    st.compared += want.numel() * (2 if st.kind == "codes" else 1)
    n_wrong = int(wrong_bits.sum())
    st.disagreements += n_wrong
    if n_wrong and unit_mods:
        y, mag, _ = _shadow(unit_mods, qat_in)
        if y is not None and y.shape[0] == want.shape[0]:
            y, mag = _select(_hwc(y), cout), _select(_hwc(mag), cout)
            if y.shape == want.shape:
                tie = y.abs() <= eps * mag
                st.ties += int((wrong_bits * tie).sum())


def random_images(shape: tuple[int, int, int] | list[int], count: int,
                  seed: int = 0) -> torch.Tensor:
    """``count`` uniformly random 8-bit images ``[count, C, H, W]`` (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, *shape), generator=gen, dtype=torch.uint8)


def randomize_batchnorm(model: nn.Module, seed: int, calibration: int = 8) -> nn.Module:
    """Give every BatchNorm of ``model`` statistics that stress the frontend; eval mode.

    For checking an untrained model: the running statistics are first measured on
    ``calibration`` random images (so each channel's threshold lands where its
    pre-activations are), then perturbed: mean moved by up to a standard deviation,
    variance scaled 0.25..4x, gamma normal with about one channel in eight exactly zero
    (constant channels) and half negative (flipped channels, AND pools), beta normal.
    """
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    with torch.no_grad():
        model(random_images(model.spec["input"]["shape"], calibration, seed).float())
        for bn in bns:
            perturb_batchnorm(bn, gen)
    model.eval()
    return model


def perturb_batchnorm(bn: nn.Module, gen: torch.Generator) -> None:
    """Perturb measured BatchNorm statistics (see ``randomize_batchnorm``), in place."""
    n = bn.num_features
    with torch.no_grad():
        std = bn.running_var.sqrt()
        bn.running_mean += torch.randn(n, generator=gen) * 0.5 * std
        bn.running_var *= torch.empty(n).uniform_(0.25, 4.0, generator=gen)
        gamma = torch.randn(n, generator=gen)
        gamma[torch.rand(n, generator=gen) < 0.125] = 0.0
        bn.weight.copy_(gamma)
        bn.bias.copy_(torch.randn(n, generator=gen) * 0.5)
