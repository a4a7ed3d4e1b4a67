"""Beat formats: packing, unpacking and the ports built from them agree bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from bnnhw.beats import BeatLayout, Field, TopFormat, element_beats, elements_layout
from rtl_gen.block import struct_layout


def amaranth_const(layout: BeatLayout, **values) -> int:
    """The same beat through Amaranth's own ``Layout.const`` of the port layout."""
    init = {k: list(v) if np.ndim(v) else v for k, v in values.items()}
    return struct_layout(layout).const(init).as_bits()


LAYOUTS = [
    (BeatLayout(Field("data", 8, 3), Field("first", 1), Field("last", 1)),
     {"data": [1, 200, 255], "first": 1, "last": 0}),
    (BeatLayout(Field("scores", 10, 4, signed=True), Field("argmax", 2)),
     {"scores": [-512, 511, 0, -1], "argmax": 3}),
    (BeatLayout(Field("argmax", 2), Field("scores", 10, 4, signed=True)),
     {"scores": [-512, 511, 0, -1], "argmax": 3}),
    (elements_layout(1, 1), {"data": 1}),
]


@pytest.mark.parametrize("layout,values", LAYOUTS)
def test_const_matches_amaranth_and_round_trips(layout, values):
    beat = layout.const(**values)
    assert beat == amaranth_const(layout, **values)
    back = layout.from_bits(beat)
    for k, v in values.items():
        assert np.array_equal(np.atleast_1d(back[k]), np.atleast_1d(v))
    assert struct_layout(layout).size == layout.size


def test_reordering_fields_changes_both_sides_alike():
    a, b = LAYOUTS[1][0], LAYOUTS[2][0]
    v = LAYOUTS[1][1]
    assert a.const(**v) != b.const(**v)
    assert b.const(**v) == amaranth_const(b, **v)


def test_values_that_do_not_fit_are_refused():
    layout = LAYOUTS[1][0]
    with pytest.raises(ValueError, match="'scores': 512 does not fit 10 signed bits"):
        layout.const(scores=[512, 0, 0, 0])
    with pytest.raises(ValueError, match="holds 4 elements, not 3"):
        layout.const(scores=[1, 2, 3])
    with pytest.raises(ValueError, match="no field 'score'"):
        layout.const(score=1)


def test_top_format_images_and_results():
    fmt = TopFormat(2, 3, 2, 10, 9)
    images = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3)
    beats = fmt.image_beats(images)
    assert len(beats) == 12
    first = fmt.in_layout.from_bits(beats[0])
    assert list(first["data"]) == [images[0, 0, 0, 0], images[0, 1, 0, 0]]
    assert (first["first"], first["last"]) == (1, 0)
    assert fmt.in_layout.from_bits(beats[5])["last"] == 1
    scores = np.array([-256, 255, 3, 0, -1, 7, 8, 9, 10, 11])
    assert np.array_equal(fmt.decode_result(fmt.result_beat(scores, 9))[0], scores)
    assert fmt.decode_result(fmt.result_beat(scores, 9))[1] == 9
    with pytest.raises(ValueError, match="do not match the model input"):
        fmt.image_beats(images[:, :1])


def test_element_beats():
    acts = np.array([[1, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1]])
    assert element_beats(acts, 3, 1) == [0b101, 0b001, 0b110, 0b111]
    with pytest.raises(ValueError, match="6 elements do not split into beats of 4"):
        element_beats(acts, 4, 1)


def test_top_format_several_pixels_per_beat():
    """``k`` pixels per beat: ``k * C`` channels in HWC order, ``first``/``last`` on an
    image's first and last beat; the layout is the port's (Amaranth's ``Layout.const``)."""
    fmt = TopFormat(2, 3, 2, 10, 9, pixels_per_beat=3)
    images = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3)
    beats = fmt.image_beats(images)
    assert fmt.beats_per_image == 2 and len(beats) == 4
    hwc = np.moveaxis(images, 1, -1).reshape(2, 2, 6)
    for i, beat in enumerate(beats):
        fields = fmt.in_layout.from_bits(beat)
        assert list(fields["data"]) == list(hwc[i // 2, i % 2])
        assert (fields["first"], fields["last"]) == (int(i % 2 == 0), int(i % 2 == 1))
        assert beat == amaranth_const(fmt.in_layout, data=list(hwc[i // 2, i % 2]),
                                      first=int(i % 2 == 0), last=int(i % 2 == 1))
    assert fmt.in_layout.size == 8 * 6 + 2
    whole = TopFormat(2, 3, 2, 10, 9, pixels_per_beat=6)
    assert [whole.in_layout.from_bits(b)["last"] for b in whole.image_beats(images)] == [1, 1]


def test_pixels_per_beat_must_divide_the_image():
    with pytest.raises(ValueError, match="top format: pixels_per_beat must divide the 6 "
                                         "pixels of an image, not 4"):
        TopFormat(2, 3, 2, 10, 9, pixels_per_beat=4)
    with pytest.raises(ValueError, match="pixels_per_beat must be a positive integer, not 0"):
        TopFormat(2, 3, 2, 10, 9, pixels_per_beat=0)
