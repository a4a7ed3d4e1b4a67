"""Binary quantisation-aware training building blocks and declarative model specs."""

from . import zoo
from .binarize import binarize_activation, binarize_weight, sign
from .layers import (
    BinaryActivation,
    BinaryConv2d,
    BinaryLinear,
    FracActivation,
    GatedConv2d,
    GatedLinear,
    InputEncoder,
    Scores,
    clip_latent_weights,
    frac_planes,
    gated_layers,
    set_quantise,
    thermometer_thresholds,
)
from .spec import (
    BNN,
    SpecError,
    binary_weight_count,
    build_model,
    has_frac,
    layer_shapes,
    normalize_spec,
    uses_batchnorm,
    without_batchnorm,
)

__all__ = [
    "BNN", "BinaryActivation", "BinaryConv2d", "BinaryLinear", "FracActivation",
    "GatedConv2d", "GatedLinear", "InputEncoder", "Scores", "SpecError",
    "binarize_activation", "binarize_weight", "binary_weight_count", "build_model",
    "clip_latent_weights", "frac_planes", "gated_layers", "has_frac", "layer_shapes",
    "normalize_spec", "set_quantise", "sign", "thermometer_thresholds", "uses_batchnorm",
    "without_batchnorm", "zoo",
]
