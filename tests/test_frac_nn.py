"""FracBNN-style training: the frac2 quantiser, the planes, the precision gate, the spec
keys, the target-rate regulariser and the two-step schedule."""

from fractions import Fraction

import numpy as np
import pytest
import torch

from bnnhw.checkpoint import load_checkpoint, save_checkpoint
from bnnhw.cli import main
from bnnhw.data import load_dataset
from bnnhw.nn import (
    BinaryConv2d,
    BinaryLinear,
    FracActivation,
    GatedConv2d,
    GatedLinear,
    SpecError,
    build_model,
    frac_planes,
    gated_layers,
    normalize_spec,
    set_quantise,
    zoo,
)
from bnnhw.nn.layers import frac_quantise
from bnnhw.train import TrainConfig, gate_loss, train

LEVELS = torch.tensor([-3.0, -1.0, 1.0, 3.0]) / 3  # the four float32 values, (2q - 3) / 3


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the quantiser -----------------------------------------------------------------------

def exact_code(y: float) -> int:
    """q of the contract, in exact rational arithmetic on the float32 value ``y``."""
    r = Fraction(y)
    return sum(r >= Fraction(k, 3) for k in (-2, 0, 2))


def quantiser_mismatches(quantise, values: np.ndarray) -> int:
    """How many float32 ``values`` ``quantise`` maps to another value than the exact rule."""
    got = quantise(torch.from_numpy(values))
    want = LEVELS[torch.tensor([exact_code(float(v)) for v in values])]
    return int((got != want).sum())


def around_thresholds() -> np.ndarray:
    """Every float32 within 50 ulps of -2/3, 0 and 2/3 (and -0.0, +-1, beyond)."""
    out = [np.float32(-0.0), np.float32(-1), np.float32(1), np.float32(-5), np.float32(5)]
    for k in (-2, 0, 2):
        centre = np.float32(k / 3)
        lo = hi = centre
        for _ in range(50):
            lo, hi = np.nextafter(lo, np.float32(-np.inf)), np.nextafter(hi, np.float32(np.inf))
            out += [lo, hi]
        out.append(centre)
    return np.array(out, dtype=np.float32)


def test_quantiser_matches_the_exact_rule_at_every_threshold():
    values = around_thresholds()
    assert quantiser_mismatches(frac_quantise, values) == 0
    assert quantiser_mismatches(FracActivation(), values) == 0


def test_quantiser_checker_catches_float32_thresholds():
    # the naive y >= float32(-2/3) puts float32(-2/3), which is below -2/3, in code 1
    def naive(y):
        q = (y >= -2 / 3).float() + (y >= 0).float() + (y >= 2 / 3).float()
        return (2 * q - 3) / 3
    assert quantiser_mismatches(naive, around_thresholds()) > 0


def test_quantiser_levels_and_ties():
    f32 = np.float32
    below_lo = f32(-2 / 3)                         # float32(-2/3) < -2/3
    at_lo = np.nextafter(below_lo, f32(0))         # least float32 >= -2/3
    at_hi = f32(2 / 3)                             # float32(2/3) > 2/3: least >= 2/3
    below_hi = np.nextafter(at_hi, f32(0))
    assert Fraction(float(below_lo)) < Fraction(-2, 3) < Fraction(float(at_lo))
    assert Fraction(float(below_hi)) < Fraction(2, 3) < Fraction(float(at_hi))
    y = torch.tensor([-1.5, below_lo, at_lo, -1e-30, -0.0, 0.0, below_hi, at_hi, 7.0])
    v = FracActivation()(y)
    assert v.dtype == torch.float32
    assert torch.equal(v, LEVELS[torch.tensor([0, 0, 1, 1, 2, 2, 2, 3, 3])])
    # the four values are exactly (2q - 3) / 3 in float32, and are the nearest levels
    for q, level in enumerate(LEVELS.tolist()):
        assert abs(Fraction(level) - Fraction(2 * q - 3, 3)) < Fraction(1, 2 ** 24)


def test_straight_through_gradient_is_the_clipped_identity():
    y = torch.tensor([-1.5, -1.0, -0.2, 0.4, 1.0, 1.01], requires_grad=True)
    FracActivation()(y).sum().backward()
    assert torch.equal(y.grad, torch.tensor([0.0, 1, 1, 1, 1, 0]))


def test_gain_and_real_mode():
    x = torch.linspace(-4, 4, 97)
    act = FracActivation(gain=0.25)
    assert torch.equal(act(x), frac_quantise(x * 0.25))
    x.requires_grad_()
    act(x).sum().backward()  # the straight-through window is |gain * x| <= 1
    assert torch.equal(x.grad, 0.25 * (x.detach().abs() <= 4).float())
    act.quantise = False
    assert torch.equal(act(x), torch.clamp(x * 0.25, -1, 1))
    with pytest.raises(ValueError, match="gain must be positive"):
        FracActivation(gain=0.0)


# --- planes ------------------------------------------------------------------------------

def test_planes_round_trip_and_contract_bits():
    m, l = frac_planes(LEVELS)
    assert torch.equal((2 * m + l) / 3, LEVELS)  # v = (2/3) m + (1/3) l, exactly
    q = torch.arange(4)
    assert torch.equal(m, torch.where((q >> 1) == 1, 1.0, -1.0))  # MSB bit q >> 1
    assert torch.equal(l, torch.where((q & 1) == 1, 1.0, -1.0))   # LSB bit q & 1
    for shift in (-0.05, 0.05):  # values a little off the levels split the same
        m2, l2 = frac_planes(LEVELS + shift * torch.tensor([0.0, 1, 1, 0]))
        assert torch.equal(m2, m) and torch.equal(l2, l)


# --- the gate ----------------------------------------------------------------------------

def integer_reference(v: torch.Tensor, wb: torch.Tensor, t: torch.Tensor) -> np.ndarray:
    """3 x the gated layer's output from the contract: popcounts of the plane bits against
    the weight bits, the gate ``pc_m >= G`` from exact rationals."""
    q = np.round((v.numpy().astype(np.float64) * 3 + 3) / 2).astype(np.int64)
    m_bits, l_bits = q >> 1, q & 1
    w_bits = (wb.numpy() > 0).astype(np.int64)
    n = w_bits.shape[1]
    pc_m = (m_bits[:, None, :] == w_bits[None]).sum(axis=2)
    pc_l = (l_bits[:, None, :] == w_bits[None]).sum(axis=2)
    msb, lsb = 2 * pc_m - n, 2 * pc_l - n
    gate = np.array([[Fraction(2, 3) * int(mm) > Fraction(float(tt))
                      for mm, tt in zip(row, t.tolist())] for row in msb])
    return 2 * msb + gate * lsb


def test_gated_linear_is_exact_against_the_integer_reference():
    gen = torch.Generator().manual_seed(3)
    layer = GatedLinear(45, 12)
    with torch.no_grad():
        layer.weight.uniform_(-1, 1, generator=gen)
    v = LEVELS[torch.randint(0, 4, (64, 45), generator=gen)]
    wb = layer.binary_weight().detach()
    msb = (frac_planes(v)[0] @ wb.T)
    # thresholds on exact ties (3 t = 2 msb of some sample) and between them
    t = torch.tensor([2 * float(msb[r % 64, r]) / 3 if r % 2 else r - 6.5 for r in range(12)],
                     dtype=torch.float32)
    with torch.no_grad():
        layer.gate_threshold.copy_(t)
    out = layer(v).detach()
    acc = integer_reference(v, wb, layer.gate_threshold.detach())
    assert np.array_equal((out * 3).round().numpy().astype(np.int64), acc)
    assert torch.equal(out, torch.from_numpy(acc).float() / 3)
    g = (2 * msb.double() > 3 * t.double()).float()
    assert layer.last_gate_rate == float(g.mean())


TIE_INPUT = torch.tensor([[1.0, 1, 1, 1, 1, 1, -1, -1 / 3, -1 / 3]])  # against 9 weights +1:
TIE_MSB, TIE_LSB = 3, 7  # m: 6 x +1, 3 x -1; l: +1 but for the -1


def test_gate_tie_is_not_gated():
    layer = GatedLinear(9, 1)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    m, l = frac_planes(TIE_INPUT)
    assert (int(m.sum()), int(l.sum())) == (TIE_MSB, TIE_LSB)
    tie = np.float32(2.0)  # (2/3) * 3 == 2 exactly: not gated (g is (2/3) msb > t)
    below = np.nextafter(tie, np.float32(-np.inf))
    above = np.nextafter(tie, np.float32(np.inf))
    for t, gated in ((tie, False), (below, True), (above, False)):
        with torch.no_grad():
            layer.gate_threshold.fill_(float(t))
        assert Fraction(float(layer.gate_threshold.detach())) == Fraction(float(t))
        acc = 2 * TIE_MSB + (TIE_LSB if gated else 0)
        assert torch.equal(layer(TIE_INPUT).detach(), torch.tensor([[float(acc)]]) / 3)
        assert layer.last_gate_rate == float(gated)


def test_gate_checker_catches_a_non_strict_gate(monkeypatch):
    """The integer reference tells ``>`` from ``>=`` on an exact tie."""
    layer = GatedLinear(9, 1)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.gate_threshold.fill_(2.0)  # (2/3) msb == 2: the tie
    v = TIE_INPUT
    wb = layer.binary_weight().detach()
    acc = integer_reference(v, wb, layer.gate_threshold.detach())
    assert np.array_equal((layer(v).detach() * 3).round().numpy(), acc)

    def wrong(self, x, w, view):  # a gate with >= in place of >
        m, l = frac_planes(x)
        msb, lsb = self.matrix(m, w), self.matrix(l, w)
        g = (2 * msb.double() >= 3 * self.gate_threshold.double().view(view)).float()
        return (2 * msb + g * lsb) / 3
    monkeypatch.setattr(GatedLinear, "gated_matrix", wrong)
    assert not np.array_equal((layer(v).detach() * 3).round().numpy(), acc)


def test_gated_conv_planes_padding_and_gradients():
    gen = torch.Generator().manual_seed(5)
    conv = GatedConv2d(3, 4, 3, padding=1, pad_value=-1, gate={"init": 1.5})
    plain = BinaryConv2d(3, 4, 3, padding=1, pad_value=-1)
    with torch.no_grad():
        conv.weight.uniform_(-1, 1, generator=gen)
        plain.weight.copy_(conv.weight)
    assert conv.gate_threshold.shape == (4,) and conv.gate_threshold.dtype == torch.float32
    assert torch.equal(conv.gate_threshold.detach(), torch.full((4,), 1.5))
    v = LEVELS[torch.randint(0, 4, (2, 3, 5, 5), generator=gen)].requires_grad_()
    out = conv(v)
    # exact: 3 * out is 2 msb + g lsb of the padded planes
    x = torch.nn.functional.pad(v.detach(), (1,) * 4, value=-1.0)
    m, l = frac_planes(x)
    wb = conv.binary_weight().detach()
    msb = torch.nn.functional.conv2d(m, wb)
    lsb = torch.nn.functional.conv2d(l, wb)
    g = (2 * msb.double() > 3 * 1.5).float()
    assert torch.equal(out.detach(), (2 * msb + g * lsb) / 3)
    grad = torch.randn(out.shape, generator=gen)
    out.backward(grad)
    assert conv.gate_threshold.grad is not None and conv.gate_threshold.grad.abs().sum() > 0
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    # the input's gradient is that of conv(x, Wb) (up to float rounding of 1.5 * 2/3)
    xv = v.detach().clone().requires_grad_()
    plain(xv).backward(grad)
    torch.testing.assert_close(v.grad, xv.grad, rtol=1e-5, atol=1e-5)


def test_real_mode_is_the_plain_matrix_layer():
    lin, plain = GatedLinear(20, 5, scale=True, bias=True), BinaryLinear(20, 5, True, True)
    with torch.no_grad():
        plain.weight.copy_(lin.weight)
        plain.bias.copy_(lin.bias)
    x = torch.rand(7, 20) * 2 - 1
    lin.quantise = False
    assert torch.equal(lin(x), plain(x))
    assert lin.soft_gate_rate is None
    lin.quantise = True
    v = frac_quantise(x)
    scale = lin.weight.abs().mean(dim=1)
    assert torch.equal(lin(v), lin.gated_matrix(v, lin.binary_weight(), (1, -1)) * scale
                       + lin.bias)


def test_zero_padding_is_refused_for_gated_convs():
    with pytest.raises(ValueError, match="pads with \\+1 or -1"):
        GatedConv2d(2, 2, 3, padding=1, pad_value=0)
    GatedConv2d(2, 2, 3, padding=0, pad_value=0)  # no padding: nothing to pad with


# --- spec --------------------------------------------------------------------------------

def _spec(*layers, shape=(1, 12, 12)):
    return {"input": {"shape": list(shape)}, "layers": list(layers)}


FRAC_CONV = {"type": "conv", "out": 4, "kernel": 3, "activation": "frac2"}


@pytest.mark.parametrize("layers,fragment", [
    ([{"type": "dense", "out": 4, "activation": "frac2"}],
     "the classifier has no activation"),
    ([{"type": "conv", "out": 4, "kernel": 3, "gate": {"target_rate": 0.2}},
      {"type": "dense", "out": 3}], "layer 0 \\(conv\\): gate options apply to a layer whose"),
    ([FRAC_CONV, {"type": "conv", "out": 4, "kernel": 3, "padding": 1},
      {"type": "dense", "out": 3}], "give pad_value 1 or -1, not 0"),
    ([FRAC_CONV, {"type": "dense", "out": 3, "gate": {"rate": 0.2}}],
     "unknown gate option 'rate'"),
    ([FRAC_CONV, {"type": "dense", "out": 3, "gate": {"target_rate": 2}}],
     "target_rate must be a fraction"),
    ([FRAC_CONV, {"type": "dense", "out": 3, "gate": {"weight": -1}}], "weight must be >= 0"),
    ([FRAC_CONV, {"type": "dense", "out": 3, "gate": 0.1}], "gate must be an object"),
    ([{"type": "conv", "out": 4, "kernel": 3, "activation": "ternary"},
      {"type": "dense", "out": 3}], "activation"),
])
def test_spec_errors(layers, fragment):
    with pytest.raises(SpecError, match=fragment):
        normalize_spec(_spec(*layers))


def test_gate_defaults_and_module_order():
    spec = normalize_spec(_spec(
        FRAC_CONV, {"type": "maxpool", "kernel": 2, "before_bn": True},
        {"type": "conv", "out": 5, "kernel": 3, "padding": 1, "pad_value": 1,
         "activation": "frac2", "gate": {"target_rate": 0.3}},
        {"type": "maxpool", "kernel": 2},
        {"type": "dense", "out": 6, "gate": None},
        {"type": "dense", "out": 3, "gate": {}}))
    assert normalize_spec(spec) == spec
    gates = [lay.get("gate", "pool") for lay in spec["layers"]]
    assert gates == [None, "pool", {"target_rate": 0.3, "weight": 1.0, "init": 0.0}, "pool",
                     {"target_rate": 0.1, "weight": 1.0, "init": 0.0}, None]
    model = build_model(spec)
    kinds = [type(m).__name__ for m in model.layers]
    assert kinds == ["BinaryConv2d", "MaxPool2d", "BatchNorm2d", "FracActivation",
                     "GatedConv2d", "BatchNorm2d", "FracActivation", "MaxPool2d", "Flatten",
                     "GatedLinear", "BatchNorm1d", "BinaryActivation", "BinaryLinear",
                     "Scores"]
    assert list(gated_layers(model)) == ["layers.4", "layers.9"]
    assert model.layers[4].gate_options["target_rate"] == 0.3
    assert model.layers[4].pad_value == 1
    out = model.eval()(torch.randint(0, 256, (3, 1, 12, 12)).float())
    assert out.shape == (3, 3)
    assert all(0 <= m.last_gate_rate <= 1 for m in gated_layers(model).values())


def test_no_batchnorm_frac_layers_get_a_gain():
    spec = _spec({**FRAC_CONV, "batchnorm": False, "bias": True}, {"type": "dense", "out": 3})
    act = build_model(spec).layers[1]
    assert type(act) is FracActivation and act.gain == pytest.approx(9 ** -0.5)


@pytest.mark.parametrize("name", ["tfc", "sfc", "cnv", "vgg", "tiny"])
def test_old_zoo_models_unchanged(name):
    spec = zoo.get_spec(name)
    assert all(lay.get("activation", "binary") == "binary" and lay.get("gate") is None
               for lay in spec["layers"])
    with torch.device("meta"):
        model = build_model(spec)
    assert {type(m) for m in model.modules()}.isdisjoint({FracActivation, GatedConv2d,
                                                          GatedLinear})
    # the spec without the new keys (as old checkpoints store it) is the same model
    old = {**spec, "layers": [{k: v for k, v in lay.items() if k not in ("activation", "gate")}
                              for lay in spec["layers"]]}
    assert normalize_spec(old) == spec


def test_old_checkpoint_without_the_new_keys_loads(tmp_path):
    spec = zoo.get_spec("tiny")
    model = build_model(spec)
    path = save_checkpoint(tmp_path / "t.pt", model, "tiny", {})
    payload = torch.load(path, weights_only=True)
    for lay in payload["config"]["layers"]:
        lay.pop("activation", None)
        lay.pop("gate", None)
    torch.save(payload, path)
    ckpt = load_checkpoint(path)
    assert ckpt.spec == spec
    assert set(ckpt.state_dict) == set(model.state_dict())


def test_frac_zoo_models():
    tiny = zoo.get_spec("tiny-frac")
    assert tiny["input"]["encoding"] == "thermometer"
    assert [lay["activation"] for lay in tiny["layers"] if lay["type"] != "maxpool"] == \
        ["frac2", "frac2", "binary"]
    assert list(gated_layers(build_model(tiny))) == ["layers.5", "layers.8"]
    cnv = zoo.get_spec("cnv-frac")
    with torch.device("meta"):
        model = build_model(cnv)
    base = zoo.get_spec("cnv")
    assert [(lay["type"], lay.get("out"), lay.get("kernel")) for lay in cnv["layers"]] == \
        [(lay["type"], lay.get("out"), lay.get("kernel")) for lay in base["layers"]]
    matrix = [m for m in model.layers if isinstance(m, (BinaryConv2d, BinaryLinear))]
    assert [type(m) for m in matrix[1:]] == \
        [GatedConv2d] * 5 + [GatedLinear] * 3 and type(matrix[0]) is BinaryConv2d


# --- training ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


def test_tiny_frac_trains_and_records_gate_rates(mnist):
    config = TrainConfig(epochs=2, limit=600, seed=1)
    result = train(zoo.get_spec("tiny-frac"), mnist, config)
    assert result.test_accuracy > 0.4  # chance is 0.1
    for h in result.history:
        assert set(h["gate_rates"]) == {"layers.5", "layers.8"}
        assert all(0 <= r <= 1 for r in h["gate_rates"].values())
        assert h["frac_quantised"] is True
    assert all(m.quantise for m in result.model.modules() if hasattr(m, "quantise"))


def _gate_rate(mnist, weight):
    spec = zoo.get_spec("tiny-frac")
    for lay in spec["layers"]:
        if lay.get("gate") is not None:
            lay["gate"] = {"target_rate": 0.0, "weight": weight}
    result = train(spec, mnist, TrainConfig(epochs=1, limit=640, seed=2))
    return float(np.mean(list(result.history[-1]["gate_rates"].values())))


def test_regulariser_lowers_the_gate_rate(mnist):
    free, pushed = _gate_rate(mnist, 0.0), _gate_rate(mnist, 100.0)
    assert pushed < free - 0.15, (free, pushed)


def test_gate_loss_is_the_target_rate_penalty():
    model = build_model(zoo.get_spec("tiny-frac")).train()
    model(torch.randint(0, 256, (4, 1, 28, 28)).float())
    layers = list(gated_layers(model).values())
    want = sum(m.gate_options["weight"] * (float(m.soft_gate_rate.detach()) - 0.1) ** 2 for m in layers)
    assert float(gate_loss(model)) == pytest.approx(want, rel=1e-6)
    set_quantise(model, False)
    model(torch.randint(0, 256, (4, 1, 28, 28)).float())
    assert gate_loss(model) is None


def test_two_step_schedule(mnist):
    result = train(zoo.get_spec("tiny-frac"), mnist,
                   TrainConfig(epochs=2, limit=200, frac_warmup=1))
    assert [h["frac_quantised"] for h in result.history] == [False, True]
    assert all("gate_rates" in h for h in result.history)
    assert all(m.quantise for m in result.model.modules()
               if isinstance(m, (FracActivation, GatedConv2d, GatedLinear)))
    with pytest.raises(ValueError, match="frac warmup must be a number of epochs in 0..1"):
        TrainConfig(epochs=2, frac_warmup=2)


def test_frac_warmup_needs_frac_layers(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status = main(["train", "--model", "tiny", "--frac-warmup", "1", "--epochs", "2",
                   "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and "this model has none" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
    status = main(["train", "--model", "tiny-frac", "--method", "dfa", "--quiet"])
    assert status == 2 and "--method ste only" in capsys.readouterr().err
