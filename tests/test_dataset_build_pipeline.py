"""The dataset-build pipeline under kfp.local on synthetic chunks with the smoke models."""

import json
import zipfile
from pathlib import Path

import pytest

from lanepaint.data import fluxfill
from pipelines.local import run_local


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    from lanepaint.models.smoke import build_smoke

    return str(build_smoke(tmp_path_factory.mktemp("smoke") / "root"))


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    from lanepaint.data.synth import write_chunks

    root = tmp_path_factory.mktemp("source")
    write_chunks(root, chunks=2, per_chunk=2, frames=6, fps=8, width=96, height=64, seed=5)
    (root / "chunk_0001" / "corrupt.mp4").write_bytes(b"not a video at all")
    zdir = root / "camera" / "front"
    zdir.mkdir(parents=True)
    with zipfile.ZipFile(zdir / "front.chunk_0002.zip", "w") as zf:
        zf.write(root / "chunk_0000" / "clip_00000.mp4", "0f1e-uuid.front.mp4")
        zf.writestr("notes.txt", "junk member")
    return root


@pytest.mark.slow
def test_dataset_build_pipeline_runs_and_reruns_without_duplicates(smoke_root, source, tmp_path):
    out = tmp_path / "datasets" / "run1"
    params = {
        "source": str(source),
        "output_root": str(tmp_path / "datasets"),
        "output_dir": str(out),
        "model_root": smoke_root,
        "num_shards": 2,
        "frame_numbers": "0,3",
        "min_coverage": 0.0,
        "segmenter": "sam2",
        "captioner": "vlm",
        "require_clear_road": False,
    }
    run_local("dataset-build", params, tmp_path / "root")
    rows, rejected = fluxfill.read_dataset(str(out))
    summary = json.loads((out / "summary.json").read_text())
    # 4 clips + the zip member; failed: the corrupt video and the zip's junk member
    assert summary["details"]["items"] == 5 and summary["failed"] == 2
    assert summary["inputs"] == 7 and summary["done"] == 5  # 6 videos + the junk member
    assert summary["model_set"] == "smoke" and not rejected
    assert len(rows) == 10 and len({r.image for r in rows}) == 10
    failures = (out / "failures.jsonl").read_text()
    assert "corrupt.mp4" in failures and "notes.txt" in failures
    filtered = Path(str(out) + "__all")
    assert (filtered / "train.csv").exists()

    # A second run over the same folder (as after a crash) redoes nothing and adds nothing.
    run_local("dataset-build", params, tmp_path / "root2")
    again, _ = fluxfill.read_dataset(str(out))
    assert [r.image for r in again] == [r.image for r in rows]
    parts = [json.loads(p.read_text()) for p in out.glob("parts/*/summary.json")]
    assert sum(p["skipped_done"] for p in parts) == 5
    merged = json.loads((out / "summary.json").read_text())
    assert (merged["done"], merged["skipped_done"], merged["failed"]) == (0, 5, 2)
