"""The weights-free classical road segmenter and the mask post-processing."""

from __future__ import annotations

import numpy as np
import pytest

from lanepaint.data.synth import SIDE_COMBOS, SceneSpec, render_clip
from lanepaint.io.video import iter_frames
from lanepaint.segment.base import EmptyVideoError
from lanepaint.segment.classical import ClassicalRoadSegmenter
from lanepaint.segment.postprocess import (
    PostprocessSettings,
    fill_holes,
    iou,
    postprocess_mask,
    postprocess_masks,
    remove_small_components,
)
from lanepaint.segment.road import make_image_segmenter

# Scenes the defaults were not tuned on (seeds 20+), one per hard case.
SCENES = [
    dict(seed=21),
    dict(seed=22, shadows=True),
    dict(seed=23, curve=0.004, lanes_left=1),
    dict(seed=24, night=True, right=SIDE_COMBOS[5]),
]


@pytest.mark.parametrize("scene", SCENES, ids=["day", "shadows", "curve", "night"])
def test_iou_against_exact_synthetic_road_masks(scene):
    video, road = render_clip(SceneSpec(width=320, height=192, **scene), 8, 8.0)
    out = ClassicalRoadSegmenter().segment(video)
    assert out.masks.shape == road.shape and out.masks.dtype == bool
    assert iou(out.masks, road) > 0.75
    assert iou(out.masks[-1], road[-1]) > 0.7  # the temporal smoothing does not drift


def test_real_clip_marks_the_road_ahead_not_the_sky(shared_data):
    frames = list(iter_frames(shared_data / "videos" / "udacity_p1_solidWhiteRight.mp4", 8.0, 6))
    masks = ClassicalRoadSegmenter().segment(frames).masks
    h, w = masks.shape[1:]
    assert masks[:, int(0.85 * h), int(0.5 * w)].all()  # under the car, ahead
    assert not masks[:, : int(0.5 * h)].any()  # sky, trees and hills
    assert 0.1 < masks.mean() < 0.5


def test_gray_and_empty_inputs():
    video, _ = render_clip(SceneSpec(width=96, height=64), 2, 8.0)
    gray = [f.mean(axis=2).astype(np.uint8) for f in video]
    out = ClassicalRoadSegmenter().segment(gray)
    assert out.frames[0].shape == (64, 96, 3) and out.masks.shape == (2, 64, 96)
    with pytest.raises(EmptyVideoError):
        ClassicalRoadSegmenter().segment([])


def test_postprocess_removes_specks_fills_small_holes_and_dilates():
    mask = np.zeros((100, 200), np.uint8)
    mask[50:, :] = 1
    mask[70:73, 100:104] = 0  # a lane-marking-sized hole: filled
    mask[55:75, 20:60] = 0  # a car-sized hole (4 % of the frame): kept
    mask[5:7, 5:7] = 1  # a speck: removed
    out = postprocess_mask(mask, PostprocessSettings(dilate=0, min_component=0.001))
    assert out[71, 101] == 1 and out[60, 30] == 0 and out[6, 6] == 0
    dilated = postprocess_mask(mask, PostprocessSettings(dilate=3, min_component=0.001))
    assert dilated[47, 150] == 1 and dilated[45, 150] == 0
    assert remove_small_components(mask, 5)[6, 6] == 0
    assert fill_holes(mask, 0)[71, 101] == 0
    stack = postprocess_masks(np.stack([mask, mask]), PostprocessSettings(), workers=2)
    assert stack.dtype == np.uint8 and set(np.unique(stack)) == {0, 1}
    np.testing.assert_array_equal(stack[0], stack[1])


def test_image_segmenter_for_single_frames():
    video, road = render_clip(SceneSpec(width=160, height=96, seed=5), 2, 8.0)
    masker = make_image_segmenter("classical", None)
    masks = masker([video[0], video[1][:, :120]])
    assert [m.shape for m in masks] == [(96, 160), (96, 120)]
    assert masks[0].dtype == np.uint8 and iou(masks[0], road[0]) > 0.7
    with pytest.raises(ValueError):
        make_image_segmenter("sam2", None)
