"""Stage edit on the smoke models: outputs, records, resume, failure isolation, shards."""

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lanepaint.data.synth import SceneSpec, render_clip
from lanepaint.data.videopainter import VideoPainterLayout, VideoRecord
from lanepaint.data.vocab import LaneAttributes
from lanepaint.io.video import probe, write_video
from lanepaint.models.smoke import SMOKE_EDIT_SETTINGS
from lanepaint.stages.edit import EditConfig, edit_videos, load_models, merge_edits

FAST = EditConfig(
    instructions="lane single white solid || lane double yellow dashed",
    max_attempts=2,
    **SMOKE_EDIT_SETTINGS,
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
    s = edit_videos(str(data), str(out), smoke_root, FAST, models=models).summary
    assert s["inputs"] == 8 and s["done"] == 4 and s["failed"] == 4
    assert set(s["failures_by_reason"]) == {"first frame"}
    failures = (out / "failures.jsonl").read_text()
    assert "empty mask" in failures and "covers" in failures
    for vid, frames in (("good", 12), ("short", 3)):
        for slug in ("single_white_solid", "double_yellow_dashed"):
            item = out / vid / slug
            rec = json.loads((item / "record.json").read_text())
            assert rec["model_set"] == "smoke" and rec["frames"] == frames
            assert rec["propagation"] == "reference"  # the default mode, as the record says
            info = probe(item / "edited.mp4")
            assert info.frames == frames and (info.height, info.width) == (64, 96)  # the source's
            assert probe(item / "side_by_side.mp4").width == 192
            assert (item / "first_frame" / "attempt_0.png").exists()
            judge = json.loads((item / "judge.json").read_text())
            assert 1 <= len(judge["attempts"]) <= 2
    manifest = (out / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 4
    again = edit_videos(str(data), str(out), smoke_root, FAST, models=models)
    assert again.summary["skipped_done"] == 4 and again.summary["done"] == 0
    # Speed switches are no part of the settings key: a rerun with them changed skips too.
    fast = replace(FAST, compile=False, attention="math")
    assert (
        edit_videos(str(data), str(out), smoke_root, fast, models=models).summary["skipped_done"]
        == 4
    )
    changed = edit_videos(str(data), str(out), smoke_root, replace(FAST, steps=3), models=models)
    assert changed.summary["done"] == 4  # other settings: redone, never mixed with the old ones


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
    merged = merge_edits(str(out), num_shards=2).summary
    assert merged["details"]["shards"] == 2 and merged["done"] == 2 and merged["failed"] == 2
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_failed_output_write_is_recorded_and_the_rest_goes_on(
    smoke_root, models, data, tmp_path, monkeypatch
):
    """Outputs are written on a thread while the next item propagates; a write that fails
    loses only that item, recorded as a failure, and a rerun redoes just that item."""
    import lanepaint.edit.outputs as outputs

    real = outputs.write_local_video
    broken = {"good": True}

    def flaky(uri, frames, fps, write_video, **options):
        if broken["good"] and "/good/" in uri.replace("\\", "/") and "single_white_solid" in uri:
            raise OSError("disk full (simulated)")
        return real(uri, frames, fps, write_video, **options)

    monkeypatch.setattr(outputs, "write_local_video", flaky)
    config = replace(FAST, video_ids=("good",))
    out = tmp_path / "edit"
    s = edit_videos(str(data), str(out), smoke_root, config, models=models).summary
    assert s["inputs"] == 2 and s["done"] == 1 and s["failed"] == 1
    assert set(s["failures_by_reason"]) == {"writing outputs"}
    assert "disk full" in (out / "failures.jsonl").read_text()
    broken["good"] = False
    again = edit_videos(str(data), str(out), smoke_root, config, models=models).summary
    assert again["done"] == 1 and again["failed"] == 0 and again["skipped_done"] == 1


def _adapter(folder: Path, content: bytes) -> Path:
    from lanepaint.edit.models import LORA_FILE

    folder.mkdir(parents=True, exist_ok=True)
    (folder / LORA_FILE).write_bytes(content)
    return folder


@pytest.mark.slow
def test_lora_is_identified_by_its_content_not_its_path(smoke_root, models, data, tmp_path):
    """The same adapter copied elsewhere skips; an adapter retrained in place redoes."""
    from lanepaint.edit.inputs import check_inputs
    from lanepaint.edit.models import fetch_lora
    from lanepaint.stages.edit import plan_run

    first = _adapter(tmp_path / "lora", b"adapter, first training")
    copy = tmp_path / "elsewhere" / "lora"
    shutil.copytree(first, copy)
    config = replace(
        FAST, instructions="lane single white solid", judge=False, video_ids=("short",)
    )
    out = tmp_path / "edit"
    # Models stand-in that claims the adapter (the key and the records are what is tested).
    with_first = replace(models, lora=fetch_lora(str(first)))
    s = edit_videos(str(data), str(out), smoke_root, config, lora=str(first), models=with_first)
    assert s.summary["done"] == 1 and s.summary["details"]["lora_sha256"]
    record = json.loads((out / "short" / "single_white_solid" / "record.json").read_text())
    assert record["lora_sha256"] == s.summary["details"]["lora_sha256"]
    again = edit_videos(str(data), str(out), smoke_root, config, lora=str(copy))
    assert again.skipped and again.summary["skipped_done"] == 1
    assert plan_run(check_inputs(str(data), smoke_root), str(out), config).todo  # no LoRA: redone
    _adapter(first, b"adapter, retrained")
    retrained = check_inputs(str(data), smoke_root, str(first))
    assert len(plan_run(retrained, str(out), config).todo) == 1
    with pytest.raises(ValueError, match="another LoRA"):  # models must hold the run's LoRA
        edit_videos(str(data), str(out), smoke_root, config, lora=str(first), models=with_first)
    with pytest.raises(FileNotFoundError):
        check_inputs(str(data), smoke_root, str(tmp_path / "missing"))


def test_first_frame_settings_mirror_the_painter_config():
    """Flat first-frame settings: one declaration (FirstFrameConfig), one flag each."""
    from lanepaint.edit.first_frame import FirstFrameConfig
    from lanepaint.kit.settings import default_of, help_of
    from lanepaint.stages.edit import FIRST_FRAME_FIELDS

    for name, ff_name in FIRST_FRAME_FIELDS.items():
        assert default_of(EditConfig, name) == default_of(FirstFrameConfig, ff_name)
        assert help_of(EditConfig, name) == help_of(FirstFrameConfig, ff_name)
    ff = EditConfig(first_frame_size=32, max_attempts=2, lora_scale=0.5, seed=7).first_frame
    assert (ff.size, ff.max_attempts, ff.lora_scale, ff.seed) == (32, 2, 0.5, 7)
    assert EditConfig().max_frames == 0  # 0 = every frame
    bad_values = (
        dict(max_attempts=0),
        dict(max_frames=-1),
        dict(instructions="lane triple"),
        dict(geometry="squash"),
        dict(mask_feather=-1),
    )
    for bad in bad_values:
        with pytest.raises(ValueError):
            EditConfig(**bad)


def test_cli_flags_and_user_errors(tmp_path, capsys, caplog):
    from lanepaint.cli import main

    with pytest.raises(SystemExit):
        main(["edit", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--instruction",
        "--no-judge",
        "--first-frame-size",
        "--first-frame-steps",
        "--max-attempts",
        "--lora-scale",
        "--lora",
        "--max-frames",
        "--no-id-resample",
        "--video-ids",
        "--compile",
        "--no-compile",
        "--attention",
        "--geometry",
        "--mask-feather",
    ):
        assert flag in text, flag
    VideoPainterLayout(str(tmp_path / "vp")).write_meta([])  # a layout without videos
    io = [
        "--data-dir",
        str(tmp_path / "vp"),
        "--output-dir",
        str(tmp_path / "out"),
        "--model-root",
        str(tmp_path / "no-models"),
    ]
    assert main(["edit", *io, "--instruction", "lane triple white solid"]) == 2
    assert main(["edit", *io, "--max-frames", "-1"]) == 2
    assert main(["edit", *io, "--lora", str(tmp_path / "no-lora")]) == 2
    with pytest.raises(SystemExit) as refused:  # not one of fit, crop, stretch
        main(["edit", *io, "--geometry", "squash"])
    assert refused.value.code == 2
    assert "no pytorch_lora_weights.safetensors" in caplog.text


@pytest.mark.parametrize(("done", "failed", "code"), [(1, 1, 0), (0, 2, 1), (0, 0, 0)])
def test_edit_cli_exit_code_is_the_kits(tmp_path: Path, monkeypatch, done, failed, code) -> None:
    """One bad item does not fail the run (exit 1 only when every item failed), as in the
    other stages: a KFP task or CI job is not failed by one corrupt video."""
    from lanepaint.cli import main
    from lanepaint.kit.report import StageResult
    from lanepaint.stages import edit

    summary = {"inputs": done + failed, "done": done, "skipped_done": 0, "failed": failed}
    monkeypatch.setattr(edit, "edit_videos", lambda *a, **k: StageResult(str(tmp_path), summary))
    io = ["--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "o"), "--model-root", "m"]
    assert main(["edit", *io]) == code


# --------------------------------------------------------------------------- parallel items

PARALLEL = replace(FAST, instructions="lane single white solid", video_ids=("good", "short"))


def _item_outputs(out: Path) -> dict[str, object]:
    """Every item's decoded videos, masks, first-frame images, verdicts and record (paths
    relative to the output, clocks left out): what must not depend on the worker count."""
    from lanepaint.io.images import read_rgb
    from lanepaint.io.video import read_frames

    found: dict[str, object] = {}
    for record_file in sorted(out.glob("*/*/record.json")):
        item = record_file.parent
        name = str(item.relative_to(out))
        record = json.loads(record_file.read_text().replace(str(out), "OUT"))
        for clock in ("timings_s", "finished_at"):
            record.pop(clock)
        judge = json.loads((item / "judge.json").read_text())
        for attempt in judge["attempts"] + record["first_frame"]["attempts"]:
            attempt.pop("seconds")
        found[f"{name}/record"], found[f"{name}/judge"] = record, judge
        for video in ("edited.mp4", "side_by_side.mp4"):
            found[f"{name}/{video}"] = read_frames(item / video)
        found[f"{name}/masks"] = np.load(item / "repainted_masks.npz")["arr_0"]
        for png in sorted((item / "first_frame").glob("*.png")):
            found[f"{name}/{png.name}"] = read_rgb(str(png))
    return found


def _assert_same_outputs(a: dict, b: dict) -> None:
    """Bit-equal, except the videos, compared decoded: PyAV's x264 does not encode the
    same frames the same way twice. The side-by-side frames of this test (12 at 192x64,
    crf 18) written 24 times in one process, one encoder thread or several, gave 10
    different files, decoded up to 0.92 levels apart on average (each 2.2 from the input);
    the edited half alone, 9 files up to 0.50 apart; a one-process run and a two-worker run
    once differed by 1.17. Twice that spread is allowed; on these frames the source written
    back as the edit differs by 12.5 to 25, frames off by one by 8.0."""
    assert a.keys() == b.keys()
    for key in a:
        if key.endswith(".mp4"):
            diff = np.abs(a[key].astype(np.int16) - b[key].astype(np.int16))
            assert diff.mean() < 2.0, (key, diff.mean())
        elif isinstance(a[key], np.ndarray):
            assert np.array_equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.mark.slow
def test_two_workers_edit_what_one_process_edits(smoke_root, data, tmp_path):
    """parallel_items=2 on the CPU: two worker processes, one video each, give the same
    edited videos (up to the encoder's own spread), bit-equal masks and first frames and
    the same records as one process, in the same layout (the workers' own summary folders
    are merged and removed)."""
    import subprocess
    import sys

    from lanepaint.kit import to_argv

    one, two = tmp_path / "one", tmp_path / "two"
    # The one-process run in a fresh process too: this test process built the smoke models,
    # and an x264 encode of a few pixels' difference is the only thing that would tell.
    io = ["--data-dir", str(data), "--output-dir", str(one), "--model-root", smoke_root]
    cmd = [sys.executable, "-m", "lanepaint.cli", "edit", *io, *to_argv(PARALLEL)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = json.loads((one / "summary.json").read_text())
    double = edit_videos(str(data), str(two), smoke_root, replace(PARALLEL, parallel_items=2))
    s = double.summary
    assert single["done"] == s["done"] == 2 and s["failed"] == 0 and s["inputs"] == 2
    assert [w["videos"] for w in s["details"]["workers"]] == [1, 1]
    assert {w["exit_code"] for w in s["details"]["workers"]} == {0}
    assert s["settings_key"] == single["settings_key"]
    assert any(line.startswith("worker 1 (cpu): ") for line in s["details"]["placement"])
    _assert_same_outputs(_item_outputs(one), _item_outputs(two))
    listing = sorted(p.name for p in two.iterdir())
    assert listing == sorted(p.name for p in one.iterdir()) and "_workers" not in listing
    manifest = (two / "manifest.jsonl").read_text().replace(str(two), str(one))
    assert manifest == (one / "manifest.jsonl").read_text()
    again = edit_videos(str(data), str(two), smoke_root, replace(PARALLEL, parallel_items=2))
    assert again.skipped and again.summary["skipped_done"] == 2


@pytest.mark.slow
def test_a_killed_worker_loses_only_its_items_and_a_rerun_resumes(
    smoke_root, data, tmp_path, monkeypatch
):
    """Worker 1 is killed (SIGKILL as it starts): worker 0's video is finished and recorded,
    worker 1's items fail naming the worker and the signal, and a rerun edits only those."""
    from lanepaint.edit import workers

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    real_env = workers.worker_env

    def env(worker):
        out = real_env(worker)
        if worker.index == 1:
            out["PYTHONPATH"] = os.pathsep.join([str(hook), out.get("PYTHONPATH", "")])
        return out

    monkeypatch.setattr(workers, "worker_env", env)
    out = tmp_path / "edit"
    s = edit_videos(str(data), str(out), smoke_root, replace(PARALLEL, parallel_items=2)).summary
    assert s["done"] == 1 and s["failed"] == 1
    failure = json.loads((out / "failures.jsonl").read_text())
    assert failure["item"] == "short/single_white_solid"
    assert failure["reason"] == "worker: worker 1 (cpu) was killed by SIGKILL"
    assert (out / "good" / "single_white_solid" / "record.json").is_file()
    assert [w["exit_code"] for w in s["details"]["workers"]] == [0, -9]
    monkeypatch.setattr(workers, "worker_env", real_env)
    again = edit_videos(str(data), str(out), smoke_root, replace(PARALLEL, parallel_items=2))
    assert again.summary["skipped_done"] == 1 and again.summary["done"] == 1
    assert again.summary["failed"] == 0


def test_worker_count_and_shares():
    from lanepaint.edit import workers
    from lanepaint.edit.inputs import make_items
    from lanepaint.edit.instructions import parse_instructions

    assert workers.worker_count(0, 0, 5) == 1  # no GPU: this process
    assert workers.worker_count(0, 2, 5) == 2 and workers.worker_count(2, 0, 5) == 2
    assert workers.worker_count(2, 2, 1) == 1  # never more workers than videos
    with pytest.raises(ValueError, match="2 visible GPU"):
        workers.worker_count(3, 2, 5)
    with pytest.raises(ValueError):
        EditConfig(parallel_items=-1)
    records = [VideoRecord(v, f"{v}.mp4", v, 8.0, 3, 96, 64, 0, 2) for v in "cab"]
    texts = "lane single white solid || lane double yellow dashed"
    items, _ = make_items(records, parse_instructions(texts))
    crew = workers.plan_workers(items, 2, 2, "/out")
    assert [w.video_ids for w in crew] == [("a", "b"), ("c",)]
    assert [len(w.items) for w in crew] == [4, 2]
    assert [(w.device, w.visible) for w in crew] == [("cuda:0", "0"), ("cuda:1", "1")]
    assert crew[1].summary_dir == "/out/_workers/worker_1"
