"""Synthetic road scenes: determinism, geometry of masks and markings, and the CLI outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lanepaint.cli import main
from lanepaint.data.synth import (
    LEFT_LINE,
    OTHER_LINE,
    RIGHT_LINE,
    SIDE_COMBOS,
    SceneSpec,
    attribute_pairs,
    render_clip,
    render_frame,
)
from lanepaint.data.vocab import LaneAttributes, parse_caption

YELLOW_SOLID = LaneAttributes("single", "yellow", "solid")
WHITE_DASHED = LaneAttributes("single", "white", "dashed")


def _runs(rows: np.ndarray) -> list[np.ndarray]:
    """Consecutive runs of row indices."""
    if len(rows) == 0:
        return []
    return np.split(rows, np.nonzero(np.diff(rows) > 1)[0] + 1)


def test_same_seed_same_frames_other_seed_other_frames():
    spec = SceneSpec(shadows=True, curve=0.004, seed=5)
    a = render_frame(spec, 1.25)
    b = render_frame(SceneSpec(shadows=True, curve=0.004, seed=5), 1.25)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    other = render_frame(SceneSpec(shadows=True, curve=0.004, seed=6), 1.25)[0]
    assert np.abs(other.astype(int) - a[0].astype(int)).mean() > 1.0


def test_road_mask_covers_the_road_not_the_sky():
    spec = SceneSpec()
    rgb, road, lane = render_frame(spec, 0.5)
    h, w = spec.height, spec.width
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8
    assert road.shape == (h, w) and road.dtype == np.uint8
    assert set(np.unique(road)) <= {0, 1}
    horizon = int(spec.horizon * h)
    assert road[:horizon].sum() == 0  # nothing above the horizon
    assert road[-1, w // 2] == 1 and road[-h // 6 :, w // 3 : 2 * w // 3].all()
    assert 0.15 < road.mean() < 0.6
    # markings lie on the road, the left ego line left of the right one
    assert set(np.unique(lane)) <= {0, LEFT_LINE, RIGHT_LINE, OTHER_LINE}
    assert (road[lane > 0] == 1).mean() > 0.95
    bottom = lane[-10:]
    left_x = np.nonzero(bottom == LEFT_LINE)[1]
    right_x = np.nonzero(bottom == RIGHT_LINE)[1]
    if len(left_x) and len(right_x):
        assert left_x.mean() < w / 2 < right_x.mean()


def test_road_is_dark_asphalt_sky_is_bright_and_blue():
    rgb, road, lane = render_frame(SceneSpec(), 0.0)
    asphalt = rgb[(road == 1) & (lane == 0)].astype(float)
    sky = rgb[:10].reshape(-1, 3).astype(float)
    assert 50 < asphalt.mean() < 130
    assert sky[:, 2].mean() > sky[:, 0].mean() + 30  # blue sky
    assert asphalt.std() > 3  # textured, not flat


def test_dashes_are_several_and_move_toward_the_camera():
    spec = SceneSpec(left=YELLOW_SOLID, right=WHITE_DASHED, speed=14.0)
    _, _, lane0 = render_frame(spec, 0.0)
    _, _, lane1 = render_frame(spec, 0.05)
    dashes0 = _runs(np.nonzero((lane0 == RIGHT_LINE).any(axis=1))[0])
    dashes1 = _runs(np.nonzero((lane1 == RIGHT_LINE).any(axis=1))[0])
    assert len(dashes0) >= 3
    # the far end of the nearest fully visible dash comes down the image
    far_end0 = [int(d[0]) for d in dashes0 if d[-1] < spec.height - 1]
    far_end1 = [int(d[0]) for d in dashes1 if d[-1] < spec.height - 1]
    assert max(far_end1) > max(far_end0)
    # the solid left line is one unbroken run from the bottom to near the horizon
    solid = _runs(np.nonzero((lane0 == LEFT_LINE).any(axis=1))[0])
    assert len(solid) == 1 and solid[0][-1] == spec.height - 1


def test_double_yellow_line_shows_two_yellow_stripes():
    spec = SceneSpec(left=LaneAttributes("double", "yellow", "solid"), width=640, height=384)
    rgb, _, lane = render_frame(spec, 0.0)
    row = lane[-30] == LEFT_LINE
    stripes = _runs(np.nonzero(row)[0])
    assert len(stripes) == 2
    paint = rgb[lane == LEFT_LINE].astype(float)
    assert (paint[:, 0] - paint[:, 2]).mean() > 80  # yellow: much more red than blue
    white = rgb[lane == RIGHT_LINE].astype(float)
    assert abs((white[:, 0] - white[:, 2]).mean()) < 30


def test_curve_bends_the_far_lines_and_night_is_dark():
    straight = render_frame(SceneSpec(), 0.0)
    curved = render_frame(SceneSpec(curve=0.006), 0.0)
    h = SceneSpec().height
    for name, (_, _, lane) in (("straight", straight), ("curved", curved)):
        assert (lane[-5:] == LEFT_LINE).any(), name

    # near the car the lines agree; far away the curve has moved them to the right
    def left_x(lane, row):
        return np.nonzero(lane[row] == LEFT_LINE)[0].mean()

    near, far = h - 3, int(SceneSpec().horizon * h) + 8
    assert abs(left_x(straight[2], near) - left_x(curved[2], near)) < 6
    assert left_x(curved[2], far) - left_x(straight[2], far) > 3
    night = render_frame(SceneSpec(night=True), 0.0)[0]
    assert night.mean() < straight[0].mean() / 2.5
    # headlights: the road near the car is lit, the far road is not
    assert night[-20:].mean() > 2 * night[int(0.45 * h) : int(0.5 * h)].mean()


def test_shadows_darken_bands_of_the_road():
    plain = render_frame(SceneSpec(seed=3), 0.0)
    shaded = render_frame(SceneSpec(seed=3, shadows=True), 0.0)
    road = (plain[1] == 1) & (plain[2] == 0)
    diff = plain[0].astype(float).mean(axis=2) - shaded[0].astype(float).mean(axis=2)
    rows = [diff[r][road[r]].mean() for r in range(plain[1].shape[0]) if road[r].sum() > 20]
    assert max(rows) > 25  # a band in shadow
    assert min(rows) < 5  # and a band in sun


def test_scene_spec_rejects_vague_attributes_and_tiny_sizes():
    with pytest.raises(ValueError):
        SceneSpec(left=LaneAttributes("single", "mixed", "solid"))
    with pytest.raises(ValueError):
        SceneSpec(right=LaneAttributes("unknown", "white", "solid"))
    with pytest.raises(ValueError):
        SceneSpec(width=8, height=8)
    with pytest.raises(ValueError):
        render_clip(SceneSpec(), 0, 8)


def test_attribute_pairs_cover_all_combinations():
    pairs = attribute_pairs(0)
    assert len(pairs) == 64 and len(set(pairs)) == 64
    assert {p[0] for p in pairs} == set(SIDE_COMBOS)
    assert attribute_pairs(0) == pairs and attribute_pairs(1) != pairs


def test_clip_cli_writes_video_masks_and_labels(tmp_path):
    from lanepaint.io.video import probe, read_frames

    out = tmp_path / "clips" / "drive.mp4"
    argv = ["synth", "clip", str(out), "--count", "single", "--color", "white"]
    argv += ["--pattern", "dashed", "--left-color", "yellow", "--left-pattern", "solid"]
    argv += ["--frames", "6", "--fps", "4", "--size", "160x96", "--seed", "9"]
    assert main(argv) == 0
    info = probe(out)
    assert (info.frames, info.width, info.height) == (6, 160, 96)
    assert info.fps == pytest.approx(4.0)
    with np.load(tmp_path / "clips" / "drive.masks.npz") as data:
        masks = data["arr_0"]
    assert masks.shape == (6, 96, 160) and masks.dtype == np.uint8
    assert set(np.unique(masks)) == {0, 1}
    labels = json.loads((tmp_path / "clips" / "drive.labels.json").read_text())
    assert labels["left"] == YELLOW_SOLID.as_dict()
    assert labels["right"] == WHITE_DASHED.as_dict()
    assert parse_caption(labels["summary"]) == LaneAttributes("single", "mixed", "mixed")
    assert (labels["frames"], labels["fps"], labels["seed"]) == (6, 4.0, 9)
    # the encoded frames are the rendered ones (H.264 at crf 18: close, not equal)
    spec = SceneSpec(left=YELLOW_SOLID, right=WHITE_DASHED, width=160, height=96, seed=9)
    video, ref_masks = render_clip(spec, 6, 4.0)
    np.testing.assert_array_equal(ref_masks, masks)
    decoded = read_frames(out)
    mse = ((decoded.astype(float) - video.astype(float)) ** 2).mean()
    assert 10 * np.log10(255**2 / mse) > 28
    # odd sizes cannot be encoded without padding away from the masks: refused
    odd = tmp_path / "odd.mp4"
    assert main(["synth", "clip", str(odd), "--size", "161x96", "--frames", "2"]) == 2
    assert not odd.exists()


def test_dataset_cli_writes_a_valid_fluxfill_dataset(tmp_path):
    from lanepaint.data.fluxfill import check_row, read_dataset

    root = tmp_path / "ds"
    assert main(["synth", "dataset", str(root), "--n", "6", "--size", "128x80"]) == 0
    rows, rejections = read_dataset(str(root))
    assert len(rows) == 6 and rejections == []
    for row in rows:
        assert check_row(root, row) is None
        assert row.prompt_2 and row.prompt_2 != row.prompt
    labels = [json.loads(line) for line in (root / "labels.jsonl").read_text().splitlines()]
    assert [lab["image"] for lab in labels] == [row.image for row in rows]
    for lab, row in zip(labels, rows, strict=True):
        left, right = LaneAttributes(**lab["left"]), LaneAttributes(**lab["right"])
        assert lab["summary"] == row.prompt == LaneAttributes.combine(left, right).caption
        for attrs in (left, right):
            assert attrs.pattern in row.prompt_2 and attrs.color in row.prompt_2
    assert len({row.prompt for row in rows}) >= 2  # combinations vary


def test_chunks_cli_lays_out_chunk_folders(tmp_path):
    argv = ["synth", "chunks", str(tmp_path), "--chunks", "2", "--per-chunk", "1"]
    assert main([*argv, "--frames", "3", "--size", "96x64"]) == 0
    videos = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.mp4"))
    assert videos == ["chunk_0000/clip_00000.mp4", "chunk_0001/clip_00001.mp4"]
    for video in videos:
        stem = (tmp_path / video).with_suffix("")
        assert (stem.parent / f"{stem.name}.masks.npz").is_file()
        assert json.loads((stem.parent / f"{stem.name}.labels.json").read_text())["frames"] == 3


def test_hard_scenes_hide_and_remove_lines_as_labelled():
    from lanepaint.data.synth_hard import HARD_CONDITIONS

    assert len(HARD_CONDITIONS) == 8
    # snow over the right line: no right ego-line pixels, and the road there is white
    snow = SceneSpec(left=YELLOW_SOLID, right=WHITE_DASHED, snow=True, absent=("right",), seed=3)
    rgb, _, lane = render_frame(snow, 1.0)
    assert (lane == LEFT_LINE).any() and not (lane == RIGHT_LINE).any()
    assert snow.labels()["absent"] == ["right"]
    assert rgb[-20:, -40:].mean() > 180  # snow beside the ego lane, near the camera
    # cars ahead straddling the lines: their pixels are neither road nor line
    plain = SceneSpec(left=YELLOW_SOLID, right=YELLOW_SOLID, seed=4)
    busy = SceneSpec(left=YELLOW_SOLID, right=YELLOW_SOLID, traffic=4, seed=4)
    _, road0, lane0 = render_frame(plain, 0.5)
    _, road1, lane1 = render_frame(busy, 0.5)
    assert road1.sum() < road0.sum() and (lane1 > 0).sum() <= (lane0 > 0).sum()
    # rain and glare are deterministic too
    wet = SceneSpec(rain=True, night=True, glare=True, oncoming=2, seed=5)
    np.testing.assert_array_equal(render_frame(wet, 1.0)[0], render_frame(wet, 1.0)[0])
    with pytest.raises(ValueError, match="absent"):
        SceneSpec(absent=("middle",))
