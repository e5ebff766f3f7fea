"""Stage edit on the smoke models: outputs, records, resume, failure isolation, shards."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lanepaint.data.synth import SceneSpec, render_clip
from lanepaint.data.videopainter import VideoPainterLayout, VideoRecord
from lanepaint.data.vocab import LaneAttributes
from lanepaint.edit.first_frame import FirstFrameConfig
from lanepaint.io.video import probe, write_video
from lanepaint.stages.edit import EditConfig, edit_videos, load_models, merge_edits

FAST = EditConfig(
    instructions="lane single white solid || lane double yellow dashed",
    first_frame=FirstFrameConfig(
        size=32, steps=2, max_attempts=2, dilation=2, feather=1, backoff_s=0
    ),
    steps=2,
    mask_dilation=2,
    overlap=1,
    judge_max_new_tokens=8,
    judge_visual_tokens=64,
)


def add_video(root: Path, video_id: str, frames: int, mask_fn=None, seed: int = 0) -> None:
    spec = SceneSpec(
        left=LaneAttributes("single", "yellow", "solid"),
        right=LaneAttributes("single", "white", "dashed"),
        width=96,
        height=64,
        seed=seed,
    )
    video, road = render_clip(spec, frames, 8.0)
    if mask_fn:
        road = mask_fn(road)
    layout = VideoPainterLayout(str(root))
    rel = layout.raw_video_rel("chunk_0000", video_id)
    Path(layout.raw_video("chunk_0000", video_id)).parent.mkdir(parents=True, exist_ok=True)
    write_video(layout.raw_video("chunk_0000", video_id), video, 8.0)
    layout.write_masks(video_id, road)
    records = [r for r in layout.read_meta() if r.video_id != video_id]
    records.append(VideoRecord(video_id, rel, video_id, 8.0, frames, 96, 64, 0, frames - 1))
    layout.write_meta(records)


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    from lanepaint.models.smoke import build_smoke

    return str(build_smoke(tmp_path_factory.mktemp("smoke") / "root"))


@pytest.fixture(scope="module")
def models(smoke_root):
    return load_models(smoke_root, FAST)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vp")
    add_video(root, "good", 12)
    add_video(root, "short", 3, seed=1)
    add_video(root, "nomask", 6, mask_fn=np.zeros_like, seed=2)
    add_video(root, "allmask", 6, mask_fn=np.ones_like, seed=3)
    return root


@pytest.mark.slow
def test_edit_outputs_resume_and_failures(smoke_root, models, data, tmp_path):
    out = tmp_path / "edit"
    s = edit_videos(str(data), str(out), smoke_root, FAST, models=models)
    assert s["items"] == 8 and s["edited"] == 4 and s["failed"] == 4
    assert set(s["failed_by_reason"]) == {"first frame"}
    failures = (out / "failures.jsonl").read_text()
    assert "empty mask" in failures and "covers" in failures
    for vid, frames in (("good", 12), ("short", 3)):
        for slug in ("single_white_solid", "double_yellow_dashed"):
            item = out / vid / slug
            rec = json.loads((item / "record.json").read_text())
            assert rec["model_set"] == "smoke" and rec["frames"] == frames
            info = probe(item / "edited.mp4")
            assert info.frames == frames and (info.height, info.width) == (32, 48)
            assert probe(item / "side_by_side.mp4").width == 96
            assert (item / "first_frame" / "attempt_0.png").exists()
            judge = json.loads((item / "judge.json").read_text())
            assert 1 <= len(judge["attempts"]) <= 2
    manifest = (out / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 4
    again = edit_videos(str(data), str(out), smoke_root, FAST, models=models)
    assert again["skipped_done"] == 4 and again["edited"] == 0
    changed = edit_videos(str(data), str(out), smoke_root, replace(FAST, steps=3), models=models)
    assert changed["edited"] == 4  # other settings: redone, never mixed with the old ones


@pytest.mark.slow
def test_shards_then_merge(smoke_root, models, data, tmp_path):
    out = tmp_path / "edit"
    cfg = replace(FAST, instructions="lane single white solid", judge=False)
    for k in range(2):
        edit_videos(
            str(data),
            str(out),
            smoke_root,
            replace(cfg, num_shards=2, shard_index=k),
            models=models,
            summary_dir=str(out / "_shards" / f"shard_{k:04d}"),
        )
    stale = out / "_shards" / "shard_0007"  # left by an earlier run with more shards
    stale.mkdir()
    (stale / "summary.json").write_text(
        (out / "_shards" / "shard_0000" / "summary.json").read_text()
    )
    merged = merge_edits(str(out), num_shards=2)
    assert merged["shards"] == 2 and merged["edited"] == 2 and merged["failed"] == 2
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_failed_output_write_is_recorded_and_the_rest_goes_on(
    smoke_root, models, data, tmp_path, monkeypatch
):
    """Outputs are written on a thread while the next item propagates; a write that fails
    loses only that item, recorded as a failure, and a rerun redoes just that item."""
    import lanepaint.stages.edit as stage

    real = stage.write_local_video
    broken = {"good": True}

    def flaky(uri, frames, fps, write_video):
        if broken["good"] and "/good/" in uri.replace("\\", "/") and "single_white_solid" in uri:
            raise OSError("disk full (simulated)")
        return real(uri, frames, fps, write_video)

    monkeypatch.setattr(stage, "write_local_video", flaky)
    config = replace(FAST, video_ids=("good",))
    out = tmp_path / "edit"
    s = edit_videos(str(data), str(out), smoke_root, config, models=models)
    assert s["items"] == 2 and s["edited"] == 1 and s["failed"] == 1
    assert set(s["failed_by_reason"]) == {"writing outputs"}
    assert "disk full" in (out / "failures.jsonl").read_text()
    broken["good"] = False
    again = edit_videos(str(data), str(out), smoke_root, config, models=models)
    assert again["edited"] == 1 and again["failed"] == 0
