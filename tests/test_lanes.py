"""Weights-free lane analysis: accuracy on synthetic and real frames, robustness, CLI.

Accuracy thresholds sit a little below what bench/lanes_accuracy.py measured (see
docs/quality.md): synthetic ≥ 99 % per attribute, real images 94-100 %.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lanepaint.cli import main
from lanepaint.data.synth import SceneSpec, render_clip, render_frame
from lanepaint.data.vocab import LaneAttributes
from lanepaint.lanes import classify
from lanepaint.lanes.accuracy import (
    CONDITIONS,
    run_labels,
    run_synthetic_images,
    run_tusimple,
    synthetic_specs,
    tally,
)
from lanepaint.lanes.analyze import (
    SideResult,
    _vote,
    analyze_image,
    analyze_path,
    analyze_video,
)

UNKNOWN = LaneAttributes()
YELLOW_SOLID = LaneAttributes("single", "yellow", "solid")
WHITE_DASHED = LaneAttributes("single", "white", "dashed")


def test_synthetic_accuracy_every_combination_and_condition():
    # 8 pairs per condition: each of the 8 line combinations on each side, 4 conditions
    cases = run_synthetic_images(synthetic_specs(8, CONDITIONS, ((320, 192),), seed=11))
    assert len(cases) == 32
    t = tally(cases)
    for name in ("count", "color", "pattern"):
        assert t.side_accuracy(name) >= 0.95, (name, t.failures)
    assert t.caption_accuracy >= 0.9, t.failures
    for condition in CONDITIONS:
        sub = tally([c for c in cases if c.group == condition])
        assert sub.caption_accuracy >= 0.75, (condition, sub.failures)


@pytest.mark.parametrize(
    ("left", "right", "extra"),
    [
        (YELLOW_SOLID, WHITE_DASHED, {"shadows": True}),
        (
            LaneAttributes("double", "white", "dashed"),
            LaneAttributes("double", "yellow", "solid"),
            {"night": True, "curve": -0.004},
        ),
    ],
)
def test_video_votes_over_frames(left, right, extra):
    spec = SceneSpec(left=left, right=right, seed=21, **extra)
    video, masks = render_clip(spec, 10, 8.0)
    result = analyze_video(video, max_frames=5, road_masks=masks)
    assert result.frames == 5
    assert result.left.attributes == left and result.right.attributes == right
    assert result.caption == LaneAttributes.combine(left, right).caption
    assert all(v > 0.5 for side in (result.left, result.right) for v in side.confidence.values())


def test_road_mask_is_used_and_checked():
    spec = SceneSpec(left=YELLOW_SOLID, right=WHITE_DASHED, seed=4)
    rgb, road, _ = render_frame(spec, 1.0)
    with_mask = analyze_image(rgb, road)
    assert (with_mask.left.attributes, with_mask.right.attributes) == (YELLOW_SOLID, WHITE_DASHED)
    empty = analyze_image(rgb, np.zeros_like(road))
    assert empty.summary == UNKNOWN and "road mask" in empty.notes[0]
    wrong_shape = analyze_image(rgb, road[:50])
    assert wrong_shape.left.attributes == YELLOW_SOLID
    assert any("does not match" in note for note in wrong_shape.notes)
    # a video takes one mask per frame, or one [H,W] mask for all frames
    video, masks = render_clip(spec, 3, 8.0)
    for given in (masks, masks[0]):
        result = analyze_video(video, road_masks=given)
        assert not any("does not match" in note for note in result.notes)
        assert result.left.attributes == YELLOW_SOLID
    assert analyze_video(video, road_masks=np.zeros_like(masks)).summary == UNKNOWN


def test_caption_mixes_sides_and_dict_has_the_cli_keys():
    rgb, _, _ = render_frame(SceneSpec(left=YELLOW_SOLID, right=WHITE_DASHED, seed=2), 0.5)
    result = analyze_image(rgb)
    assert result.caption == "road with single mixed mixed lane markings"
    d = result.as_dict()
    assert {"left", "right", "caption"} <= set(d)
    for side in ("left", "right"):
        assert set(d[side]) == {"presence", "count", "color", "pattern", "confidence"}
        assert set(d[side]["confidence"]) == {"presence", "count", "color", "pattern"}
        assert d[side]["presence"] == "present"
        assert all(0.0 <= v <= 1.0 for v in d[side]["confidence"].values())
    json.dumps(d)


def _noise(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


BAD_INPUTS = {
    "tiny": np.zeros((8, 8, 3), np.uint8),
    "black": np.zeros((192, 320, 3), np.uint8),
    "white": np.full((192, 320, 3), 255, np.uint8),
    "gray2d": _noise((192, 320)),
    "rgba": _noise((192, 320, 4)),
    "noise": _noise((192, 320, 3)),
    "float-noise": _noise((360, 640, 3)).astype(np.float32) / 255.0,
    "nan": np.full((64, 64, 3), np.nan, np.float32),
    "empty": np.zeros((0, 0, 3), np.uint8),
    "none": None,
    "str": "not an image",
    "pitch-dark": (render_frame(SceneSpec(night=True), 0.0)[0] * 0.15).astype(np.uint8),
}


@pytest.mark.parametrize("image", list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_bad_input_is_a_recorded_unknown(image):
    result = analyze_image(image)
    assert result.left.attributes == UNKNOWN and result.right.attributes == UNKNOWN
    assert result.caption == "road with unknown unknown unknown lane markings"
    assert result.notes  # the reason is recorded


def test_bad_video_is_a_recorded_unknown(tmp_path):
    frames = np.stack([_noise((96, 128, 3), seed=i) for i in range(4)])
    assert analyze_video(frames).summary == UNKNOWN
    assert analyze_video([]).summary == UNKNOWN
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    result = analyze_video(broken)
    assert result.summary == UNKNOWN and "decode" in result.notes[0]
    with pytest.raises(FileNotFoundError):
        analyze_video(tmp_path / "missing.mp4")


def test_vote_prefers_the_confident_majority_and_needs_enough_votes():
    dashed = SideResult("single", "white", "dashed", {"count": 0.9, "color": 0.9, "pattern": 0.9})
    solid = SideResult("single", "white", "solid", {"count": 0.9, "color": 0.9, "pattern": 0.6})
    voted = _vote([dashed, dashed, solid, SideResult()], min_votes=1)
    assert voted.attributes == WHITE_DASHED
    assert 0.5 < voted.confidence["pattern"] < 0.9
    assert _vote([dashed, SideResult(), SideResult()], min_votes=2).attributes == UNKNOWN


def test_pattern_decision_follows_coverage_and_gaps():
    def evidence(coverage, gaps, span=4.0):
        # long gaps are dash-long: the longest (and the mean) at least a dash gap
        longest = 1.5 if gaps else 0.0
        return classify.LineEvidence(
            -1.5, 250, coverage, gaps, span, 0.0, 1, 0.0, 1.0, longest_gap=longest, mean_gap=longest
        )

    assert classify.decide_pattern(evidence(0.98, 0)).value == "solid"
    assert classify.decide_pattern(evidence(0.3, 3)).value == "dashed"
    assert classify.decide_pattern(evidence(0.3, 3, span=0.5)).value == "unknown"
    assert classify.decide_color(evidence(0.9, 0)).value == "white"
    yellow = classify.LineEvidence(-1.5, 250, 1.0, 0, 4.0, 0.3, 1, 0.0, 1.0)
    assert classify.decide_color(yellow).value == "yellow"
    assert math.isnan(classify.LineEvidence(0, 0, 0, 0, 0, float("nan"), 0, 0, 1).chroma_delta)


def test_cli_json_for_image_and_video(tmp_path, capsys):
    from PIL import Image

    spec = SceneSpec(left=YELLOW_SOLID, right=WHITE_DASHED, seed=8)
    rgb, road, _ = render_frame(spec, 0.0)
    image = tmp_path / "road.png"
    Image.fromarray(rgb).save(image)
    Image.fromarray(road * 255).save(tmp_path / "road_mask.png")
    argv = ["lanes", "analyze", str(image), "--mask", str(tmp_path / "road_mask.png"), "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"left", "right", "caption"} <= set(out)
    assert out["left"]["color"] == "yellow" and out["right"]["pattern"] == "dashed"
    assert out["caption"] == "road with single mixed mixed lane markings"

    clip = tmp_path / "drive.mp4"
    assert main(["synth", "clip", str(clip), "--frames", "6", "--seed", "8"]) == 0
    capsys.readouterr()
    argv = ["lanes", "analyze", str(clip), "--mask", str(tmp_path / "drive.masks.npz")]
    assert main([*argv, "--json", "--max-frames", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["frames"] == 3
    assert out["caption"] == "road with single white dashed lane markings"

    assert main(["lanes", "analyze", str(tmp_path / "missing.png")]) == 2
    grey = tmp_path / "grey.png"
    Image.fromarray(rgb.mean(axis=2).astype(np.uint8)).save(grey)
    assert analyze_path(grey).summary == UNKNOWN  # grey files are not guessed as white


def test_real_labelled_frames(shared_data):
    cases = run_labels(shared_data, max_frames=12)
    assert len(cases) == 17
    t = tally(cases)
    # measured: count 100 %, color 97 %, pattern 94 % per line (one disputed label)
    for name in ("count", "color", "pattern"):
        assert t.side_accuracy(name) >= 0.9, (name, t.failures)
    assert t.caption_accuracy >= 0.85, t.failures
    videos = [c for c in cases if c.group == "video"]
    assert all(c.result.summary == c.summary for c in videos), [c.name for c in videos]


def test_real_tusimple_ego_lines_are_the_labelled_ones(shared_data):
    rows = run_tusimple(shared_data)
    assert len(rows) == 12
    assert all(r.found for r in rows)
    assert max(r.median_error_px for r in rows) < 25  # measured at most 16 px
