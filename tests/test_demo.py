"""`make demo`'s DAG, run once under kfp.local on the smoke set, then run again.

The first run must produce content, not only files: a captioned dataset, a LoRA, road
masks, edits that change the road and keep the rest, and the report. The second run of the
same DAG must redo nothing: every stage finds its work finished with the same settings.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from lanepaint.io.video import read_frames
from pipelines import demo

pytestmark = pytest.mark.slow

CHANGED_MIN = 20.0  # mean |edited - source| inside the repainted mask (smoke paints noise)
KEPT_MAX = 5.0  # ... and outside it (coding error only)


def summaries(out: Path) -> dict[str, dict]:
    """Every stage summary the DAG leaves outside the pipeline root, by its folder."""
    found = {}
    for path in sorted(out.rglob("summary.json")):
        if "pipeline-root" in path.parts or "_shards" in path.parts:
            continue
        found[str(path.parent.relative_to(out))] = json.loads(path.read_text())
    return found


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    times = []
    first = {}
    for run in range(2):
        t0 = time.perf_counter()
        assert demo.main(["--out", str(out)]) == 0
        times.append(time.perf_counter() - t0)
        if run == 0:
            first = summaries(out)
    print(f"demo runs: first {times[0]:.1f} s, rerun {times[1]:.1f} s")
    return out, first, summaries(out), times


def test_first_run_makes_a_dataset_a_lora_masks_and_edits(demo_runs):
    out, first, _, _ = demo_runs
    stages = {s["stage"] for s in first.values()}
    assert {"build-dataset", "filter-dataset", "train-lora", "segment", "edit", "evaluate"} <= (
        stages
    )
    for where, s in first.items():
        # the only rows left out are those the filter rejects on purpose (require_clear_road)
        assert set(s["failures_by_reason"]) <= {"unclear road"}, (where, s["failures_by_reason"])
        assert s["model_set"] in ("smoke", "none", "classical", None), (where, s["model_set"])
    train_csv = (out / "datasets" / "demo" / "train.csv").read_text().splitlines()
    assert len(train_csv) > 1 and train_csv[0].startswith("image,mask,prompt")
    loras = list((out / "datasets" / "loras").rglob("pytorch_lora_weights.safetensors"))
    assert len(loras) == 1 and loras[0].stat().st_size > 0
    masks = list((out / "datasets" / "segments").rglob("all_masks.npz"))
    assert len(masks) == 2
    for npz in masks:
        road = np.load(npz, allow_pickle=False)["arr_0"]
        assert 0.05 < road.mean() < 0.95  # the classical segmenter finds the road


def test_edits_change_the_road_and_keep_the_rest(demo_runs):
    out = demo_runs[0]
    records = list((out / "edits").rglob("record.json"))
    assert len(records) == 4  # 2 videos x 2 instructions
    for path in records:
        record = json.loads(path.read_text())
        edited = read_frames(record["edited"]).astype(np.float32)
        source = read_frames(record["source_video"]).astype(np.float32)
        mask = np.load(record["mask_uri"], allow_pickle=False)["arr_0"].astype(bool)
        diff = np.abs(edited - source).mean(axis=-1)
        assert diff[mask].mean() > CHANGED_MIN, path
        assert diff[~mask].mean() < KEPT_MAX, path
    assert (out / "edits" / "_evaluation" / "report.html").is_file()


def task_counts(run_dir: Path) -> dict[str, dict]:
    """What each task of one run did, from its KFP metrics (done / skipped_done / failed)."""
    counts = {}
    for path in sorted(run_dir.rglob("executor_output.json")):
        for artifacts in json.loads(path.read_text()).get("artifacts", {}).values():
            for artifact in artifacts.get("artifacts", []):
                if "done" in artifact.get("metadata", {}):
                    counts[path.parent.name] = artifact["metadata"]
    return counts


def test_rerun_redoes_nothing(demo_runs):
    out, _, _, times = demo_runs
    first_run, rerun = sorted((out / "pipeline-root").iterdir())
    before, after = task_counts(first_run), task_counts(rerun)
    assert (
        set(after)
        == set(before)
        >= {"merge-dataset", "filter-dataset", "train-lora"}
        | {
            "segment",
            "merge-edits",
            "evaluate",
        }
    )
    for task, counts in after.items():
        assert counts["done"] == 0 and counts["failed"] == 0, (task, counts)
        assert counts["skipped_done"] == before[task]["done"] > 0, (task, counts)
    assert times[1] < times[0]
