"""The `edit` pipeline: the segment step's compiled settings, and a kfp.local run of
segment → edit (shards) → evaluate on the smoke models."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from lanepaint.data.synth import SceneSpec, render_clip
from lanepaint.io.video import write_video
from pipelines import compile as pc
from pipelines.local import run_local


def test_segment_task_gets_a_gpu_on_the_a100_pool():
    docs = list(yaml.safe_load_all((pc.COMPILED / "edit.yaml").read_text()))
    executor = docs[0]["deploymentSpec"]["executors"]["exec-segment"]
    resources = executor["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert int(resources["accelerator"]["resourceCount"]) == 1
    assert "lanepaint-segment:" in executor["container"]["image"]
    k8s = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-segment"]
    assert "nvidia-tesla-a100" in json.dumps(k8s["nodeSelector"])
    assert k8s["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert k8s["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
    task = docs[0]["root"]["dag"]["tasks"]["segment"]
    assert task["retryPolicy"]["maxRetryCount"] >= 1


@pytest.mark.slow
def test_edit_pipeline_runs_locally(tmp_path):
    from lanepaint.models.smoke import build_smoke

    smoke = str(build_smoke(tmp_path / "smoke"))
    video, _ = render_clip(SceneSpec(width=96, height=64), 4, 8.0)
    clip = tmp_path / "in" / "chunk_0000" / "clip.mp4"
    clip.parent.mkdir(parents=True)
    write_video(clip, video, 8.0)
    out = tmp_path / "vp"
    params = {
        "videos": [str(clip)],
        "model_root": smoke,
        "segmenter": "classical",
        "max_frames": 2,
        "output_dir": str(out),
        "instruction": "lane single white dashed",
        "num_shards": 2,
        "max_attempts": 1,
        "steps": 2,
        "first_frame_steps": 2,
    }
    run_local("edit", params, tmp_path / "root")
    rows = list(csv.DictReader((out / "meta.csv").open()))
    assert [(r["video_id"], r["frames"]) for r in rows] == [("clip", "2")]
    pointers = [p for p in (tmp_path / "root").rglob("layout") if p.is_file()]
    assert pointers and json.loads(pointers[0].read_text())["uri"] == str(out)
    reports = [p for p in (tmp_path / "root").rglob("segment/report") if p.is_file()]
    assert reports and "classical" in reports[0].read_text()
    edits = out.parent / "vp__edits"
    record = json.loads((edits / "clip" / "single_white_dashed" / "record.json").read_text())
    assert record["frames"] == 2 and record["model_set"] == "smoke"
    assert (edits / "_evaluation" / "report.html").exists()
    merged = json.loads((edits / "summary.json").read_text())
    assert merged["details"]["shards"] == 2 and merged["done"] == 1
