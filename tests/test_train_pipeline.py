"""The `train` pipeline (filter-dataset -> train-lora) compiled and run with kfp.local."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_train_lora import build_flux_root, make_train_dataset

from pipelines import compile as pc
from pipelines.local import run_local


def test_train_pipeline_compiles_with_gpu_placement_and_retries(tmp_path):
    docs = list(yaml.safe_load_all(pc.compile_to("train", tmp_path / "t.yaml").read_text()))
    tasks = docs[0]["root"]["dag"]["tasks"]
    assert set(tasks) == {"filter-dataset", "train-lora"}
    train = tasks["train-lora"]
    assert train["inputs"]["artifacts"]["train_data"]["taskOutputArtifact"] == {
        "outputArtifactKey": "dataset",
        "producerTask": "filter-dataset",
    }
    assert train["retryPolicy"]["maxRetryCount"] >= 1
    executor = docs[0]["deploymentSpec"]["executors"]["exec-train-lora"]["container"]
    assert executor["resources"]["accelerator"]["resourceCount"] not in (None, "0")
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-lora"]
    assert "nodeSelector" in platform and platform["tolerations"]
    assert "activeDeadlineSeconds" in platform


@pytest.mark.slow
def test_train_pipeline_runs_locally_on_the_smoke_model(tmp_path):
    raw = make_train_dataset(str(tmp_path / "raw"), n=5)
    models = build_flux_root(tmp_path / "models")
    out = str(tmp_path / "lora-run")
    run_local(
        "train",
        {
            "input_dir": raw,
            "model_root": str(models),
            "output_dir": out,
            "color": "white",
            "rank": 4,
            "alpha": 4.0,
            "max_train_steps": 2,
            "warmup_steps": 1,
            "resolution": 48,
            "mixed_precision": "no",
            "checkpointing_steps": 1,
        },
        tmp_path / "root",
    )
    summary = json.loads(Path(out, "summary.json").read_text())
    assert summary["details"]["status"] == "complete" and summary["model_set"] == "smoke"
    assert summary["details"]["train_data"].startswith(raw + "__")  # filtered, via pointer
    pointer = json.loads(next((tmp_path / "root").rglob("lora")).read_text())
    assert pointer["uri"] == str(Path(out, "lora")) and pointer["model_set"] == "smoke"
    assert Path(pointer["uri"], "pytorch_lora_weights.safetensors").is_file()
    report = next((tmp_path / "root").rglob("report*"), None)
    assert report is not None
