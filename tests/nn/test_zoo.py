"""The zoo: published binary weight counts and specs that build and run."""

from itertools import pairwise

import pytest
import torch

from bnnhw.nn import SpecError, binary_weight_count, build_model, normalize_spec, zoo

# Published topologies (FINN BNN-PYNQ): binary weights of conv + FC layers, BN excluded.
PUBLISHED = {"tfc": 59_008, "sfc": 334_336, "lfc": 2_910_208, "cnv": 1_542_848}


def meta_model(name, **kwargs):
    with torch.device("meta"):
        return build_model(zoo.get_spec(name, **kwargs))


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_weight_counts(name):
    assert binary_weight_count(meta_model(name)) == PUBLISHED[name]


def vgg_weights(width=1.0):
    """BinaryConnect VGG from its description: pairs of 3x3 'same' convolutions of 128,
    256 and 512 channels on a 32x32x3 image, each pair followed by a 2x2 max-pool (so the
    classifier sees 4x4 maps), then FC 1024, FC 1024, FC 10."""
    def ch(n):
        return max(1, round(n * width))
    chans = [3, ch(128), ch(128), ch(256), ch(256), ch(512), ch(512)]
    conv = sum(9 * a * b for a, b in pairwise(chans))
    fc = [chans[-1] * 4 * 4, ch(1024), ch(1024), 10]
    return conv + sum(a * b for a, b in pairwise(fc))


@pytest.mark.parametrize("width", [1.0, 0.5, 0.25])
def test_vgg_weight_count(width):
    assert binary_weight_count(meta_model("vgg", width=width)) == vgg_weights(width)


def test_tiny_weight_count():
    # conv 1->8 k3 s2 on 28x28 -> 13x13, pool 2 -> 6x6, FC 288 -> 32 -> 10
    assert binary_weight_count(meta_model("tiny")) == 8 * 9 + 8 * 6 * 6 * 32 + 32 * 10


def test_count_checkers_catch_planted_faults():
    model = meta_model("tfc")
    everything = sum(p.numel() for p in model.parameters())  # BatchNorm and scores too
    assert everything != PUBLISHED["tfc"]
    # The VGG formula tells widths apart, and a VGG without its last pool (8x8 maps into
    # the classifier) would not match it either.
    assert binary_weight_count(meta_model("vgg", width=0.5)) != vgg_weights(1.0)
    spec = zoo.get_spec("vgg")
    del spec["layers"][8]
    with torch.device("meta"):
        assert binary_weight_count(build_model(spec)) != vgg_weights(1.0)


@pytest.mark.parametrize("name", zoo.NAMES)
def test_zoo_specs_are_normalised_and_named(name):
    spec = zoo.get_spec(name)
    assert spec["name"] == name
    assert normalize_spec(spec) == spec


def test_input_encodings_of_the_zoo():
    assert {zoo.get_spec(n)["input"]["encoding"] for n in ("tfc", "sfc", "lfc", "tiny")} == \
        {"binary"}
    assert zoo.get_spec("cnv")["input"] == {"shape": [3, 32, 32], "encoding": "uint8",
                                            "threshold": 128, "levels": 8}


@pytest.mark.parametrize("name,shape", [("tfc", (1, 28, 28)), ("tiny", (1, 28, 28)),
                                        ("cnv", (3, 32, 32))])
def test_zoo_models_run(name, shape):
    model = build_model(zoo.get_spec(name)).eval()
    out = model(torch.randint(0, 256, (2, *shape)).float())
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_unknown_zoo_name():
    with pytest.raises(SpecError, match="unknown model 'resnet'"):
        zoo.get_spec("resnet")
