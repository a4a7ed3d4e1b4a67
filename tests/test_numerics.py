"""Shape arithmetic and the shared validators."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from amaranth import Shape

from bnnhw import numerics as nx
from bnnhw import validate as v


@pytest.mark.parametrize("lo,hi", [(0, 1), (0, 784), (-5, 5), (-255 * 27, 255 * 27),
                                   (-256, 256), (0, 785), (-1, 0), (-8, 7), (-9, 8)])
def test_range_bits_match_amaranth(lo, hi):
    s = Shape.cast(range(lo, hi + 1))
    assert nx.range_bits(lo, hi) == (s.width, s.signed)


@pytest.mark.parametrize("size,k,s,p", [(28, 3, 1, 0), (32, 3, 1, 1), (7, 3, 2, 1), (5, 5, 1, 2),
                                        (9, 2, 2, 0), (10, 3, 3, 0)])
def test_conv_out_size_matches_torch(size, k, s, p):
    x = torch.zeros(1, 1, size, size)
    y = torch.nn.functional.conv2d(x, torch.zeros(1, 1, k, k), stride=s, padding=p)
    assert nx.conv_out_size(size, k, s, p) == y.shape[-1]
    if p == 0:
        assert nx.conv_out_size(size, k, s) == torch.nn.functional.max_pool2d(x, k, s).shape[-1]


def test_ranges_and_encodings():
    assert nx.acc_range("binary", 9) == (0, 9) and nx.acc_range("uint8", 2) == (-510, 510)
    assert nx.dot_range("binary", 9) == (-9, 9) and nx.threshold_range("binary", 9) == (0, 10)
    assert [nx.acc_to_dot("binary", 9, a) for a in (0, 9)] == [-9, 9]
    assert nx.encoded_channels(3, "thermometer", 4) == 12
    assert nx.encoded_channels(3, "uint8", 4) == 3
    assert nx.thermometer_thresholds(3) == [64, 128, 192]
    assert nx.thermometer_thresholds(255) == list(range(1, 256))


def test_validators_name_where_what_and_the_value():
    assert v.integer("layer 1", "kernel", np.int64(3), 1) == 3
    for bad in (0, True, 2.0, "3"):
        with pytest.raises(v.ParameterError, match="layer 1: kernel must be a positive"):
            v.integer("layer 1", "kernel", bad, 1)
    with pytest.raises(v.ParameterError, match="must be an integer in 1..255, not 256"):
        v.integer("input", "levels", 256, 1, 255)
    with pytest.raises(v.ParameterError, match="x: n must be an integer, not"):
        v.integer("x", "n", np.int64(3), plain=True)
    with pytest.raises(v.ParameterError, match="conv1: pe must divide the 6 output channels"):
        v.divides("conv1", "pe", 4, 6, "output channels")
    with pytest.raises(v.ParameterError, match="must be one of 0, 1, -1, not True"):
        v.choice("c", "pad_value", True, (0, 1, -1))
    with pytest.raises(v.ParameterError, match="w must hold bits 0/1, found 0..2"):
        v.bit_array("m", "w", [0, 2])
    with pytest.raises(v.ParameterError, match="t must have shape \\[2\\], not \\[3\\]"):
        v.int_array("m", "t", [1, 2, 3], shape=(2,))
    a = v.int_array("m", "t", [1, 2])
    assert not a.flags.writeable
