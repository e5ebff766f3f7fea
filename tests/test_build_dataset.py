"""Stage build-dataset: discovery (folders, zips, junk), per-video records, resume, merge."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lanepaint.data import fluxfill
from lanepaint.data.sources import discover_videos, safe_member, shard
from lanepaint.io import storage
from lanepaint.kit import SUMMARY_KEYS
from lanepaint.stages import build_dataset as bd

CONFIG = bd.BuildConfig(frame_numbers=(0, 5, 500), captioner="analyzer", segmenter="classical")


def build(videos, out, masker=None):
    """One part from ``videos`` with the weights-free captioner (bottom-half road masks)."""
    return bd.build_part(
        bd.VIDEOS,
        videos,
        out,
        CONFIG,
        masker=masker or bottom_half,
        captioner=bd.make_captioner(CONFIG, None),
    )


def bottom_half(frames):
    out = []
    for f in frames:
        m = np.zeros(f.shape[:2], np.uint8)
        m[f.shape[0] // 2 :] = 1
        out.append(m)
    return out


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    from lanepaint.data.synth import write_chunks

    root = tmp_path_factory.mktemp("source")
    write_chunks(root, chunks=2, per_chunk=2, frames=8, fps=8, width=96, height=64, seed=3)
    (root / "chunk_0001" / "corrupt.mp4").write_bytes(b"\x00\x00\x00 ftypisom garbage")
    zdir = root / "camera" / "front"
    zdir.mkdir(parents=True)
    with zipfile.ZipFile(zdir / "front.chunk_0002.zip", "w") as zf:
        zf.write(root / "chunk_0000" / "clip_00000.mp4", "abc-uuid.front.mp4")
        zf.writestr("readme.txt", "junk")
        zf.writestr("../evil.mp4", "escape")
    (root / "chunk_0003").mkdir()
    (root / "chunk_0003" / "broken.zip").write_bytes(b"PK not a zip")
    return root


def test_discovery_and_sharding(source):
    found = discover_videos(str(source))
    names = [v.member or Path(v.uri).name for v in found.videos]
    assert names == [
        "clip_00000.mp4",
        "clip_00001.mp4",
        "clip_00002.mp4",
        "clip_00003.mp4",
        "corrupt.mp4",
        "abc-uuid.front.mp4",
    ]
    reasons = sorted(s["reason"].split(":")[0] for s in found.skipped)
    assert reasons == ["not a video", "unreadable zip", "unsafe zip member name"]
    assert len(discover_videos(str(source), chunk_start=1, chunk_end=1).videos) == 3
    assert len(discover_videos(str(source), start_index=1, limit=2).videos) == 2
    assert len(discover_videos(str(source), start_index=1, limit=0).videos) == 5  # 0 = all
    assert [len(p) for p in shard(list(range(7)), 3)] == [3, 2, 2]
    assert sum(shard(list(range(7)), 3), []) == list(range(7))
    assert not safe_member("../x.mp4") and not safe_member("/abs.mp4") and safe_member("a/b.mp4")


def test_build_records_resume_and_merge(source, tmp_path):
    out = str(tmp_path / "ds")
    videos = discover_videos(str(source)).videos
    first = build(videos[:3], out).summary
    assert first["done"] == 3 and first["failed"] == 0
    # "Killed" after three videos; the rerun over all of them does only the rest.
    second = build(videos, out).summary
    assert second["skipped_done"] == 3 and second["failed"] == 1  # corrupt.mp4
    assert second["inputs"] == 6 and second["done"] == 2
    summary = bd.merge(out).summary
    assert set(summary) == set(SUMMARY_KEYS)
    rows, rejected = fluxfill.read_dataset(out)
    assert not rejected and len(rows) == 5 * 2  # frames 0 and 5 exist, 500 does not
    assert len({r.image for r in rows}) == len(rows)
    assert summary["details"]["items"] == 5 and summary["details"]["missing_frames"] == 5
    assert (summary["inputs"], summary["done"], summary["skipped_done"]) == (6, 2, 3)
    for row in rows:
        assert fluxfill.check_row(Path(out), row) is None
    failures = storage.read_text(storage.join(out, "failures.jsonl"))
    assert "corrupt.mp4" in failures
    assert json.loads(storage.read_text(storage.join(out, "summary.json")))["failed"] == 1
    assert "## count" in storage.read_text(storage.join(out, "stats.md"))
    # A third run changes nothing.
    third = build(videos, out).summary
    assert third["skipped_done"] == 5 and third["done"] == 0
    assert len(bd.merge(out).summary["details"]["by_caption"]) >= 1


def test_low_coverage_frames_dropped(source, tmp_path):
    def nothing(frames):
        return [np.zeros(f.shape[:2], np.uint8) for f in frames]

    videos = discover_videos(str(source), limit=1).videos
    out = str(tmp_path / "ds")
    build(videos, out, masker=nothing)
    details = bd.merge(out).summary["details"]
    assert details["rows"] == 0 and details["dropped_low_coverage"] == 2


def test_image_folder_with_synthetic_masks(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    config = bd.BuildConfig(mask_mode="synthetic", captioner="analyzer", segmenter="classical")
    out = str(tmp_path / "ds")
    summary = bd.run(out, config, images=str(folder)).summary
    rows, _ = fluxfill.read_dataset(out)
    assert summary["details"]["rows"] == len(rows) == 3
    again = bd.run(out, config, images=str(folder))
    assert again.summary["details"]["rows"] == 3 and again.skipped


@pytest.mark.gcs
def test_gcs_output_and_zip_source(source, gcs_bucket):
    src = f"gs://{gcs_bucket}/src"
    storage.upload_dir(source, src)
    found = discover_videos(src, chunk_start=2, chunk_end=2)
    assert [v.member for v in found.videos] == ["abc-uuid.front.mp4"]
    out = f"gs://{gcs_bucket}/datasets/run1"
    build(found.videos, out)
    summary = bd.merge(out).summary
    rows, _ = fluxfill.read_dataset(out)
    assert summary["details"]["rows"] == len(rows) == 2


def test_other_models_redo_the_videos_and_label_the_dataset(source, tmp_path):
    from lanepaint.models.smoke import build_smoke

    smoke = str(build_smoke(tmp_path / "smoke"))
    videos = discover_videos(str(source), limit=2).videos
    out = str(tmp_path / "ds")
    free = build(videos, out).summary
    assert free["model_set"] == "none"
    assert bd.merge(out).summary["model_set_label"].startswith("weights-free")
    vlm = bd.BuildConfig(
        frame_numbers=(0, 5),
        captioner="vlm",
        segmenter="classical",
        analyzer_check=False,
        device="cpu",
    )
    again = bd.build_part(bd.VIDEOS, videos, out, vlm, smoke, masker=bottom_half).summary
    assert again["skipped_done"] == 0 and again["model_set"] == "smoke"
    merged = bd.merge(out).summary
    assert merged["model_set"] == "smoke"
    assert merged["details"]["rows"] == 4  # no weights-free rows mixed in
    assert bd.parse_frame_numbers("1,1,2") == (1, 2)


def test_cli_builds_and_refuses_a_missing_model_root(source, tmp_path, caplog):
    from lanepaint.cli import main

    out = str(tmp_path / "ds")
    argv = ["build-dataset", "--source", str(source), "--output-dir", out]
    assert main(argv) == 2  # sam2 and the VLM need --model-root: one line, before any work
    assert "--model-root" in caplog.text and not (tmp_path / "ds").exists()
    quick = ["--segmenter", "classical", "--captioner", "analyzer", "--frame-numbers", "0"]
    assert main([*argv, *quick, "--limit", "2", "--num-shards", "2"]) == 0
    summary = json.loads(storage.read_text(storage.join(out, "summary.json")))
    assert summary["done"] == 2 and summary["details"]["parts"] == 2
    with pytest.raises(SystemExit) as bad:
        main([*argv, *quick, "--frame-numbers", "x"])
    assert bad.value.code == 2
