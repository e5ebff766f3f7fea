"""Stage caption on the smoke VLM: batched generation, parsing, analyzer check, resume."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lanepaint.cli import main as cli
from lanepaint.data.vocab import LaneAttributes
from lanepaint.io import storage
from lanepaint.stages.caption import CaptionConfig, caption_images


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory) -> str:
    from lanepaint.models.smoke import build_smoke

    root = tmp_path_factory.mktemp("smoke")
    build_smoke(root)
    return str(root)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 255, (8, 8, 4), dtype=np.uint8)).save(folder / "tiny.png")
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def test_caption_stage_on_smoke_vlm(smoke_root, images, tmp_path):
    out = str(tmp_path / "captions.jsonl")
    config = CaptionConfig(batch_size=2, max_new_tokens=6, device="cpu")
    summary = caption_images([str(images)], out, smoke_root, config).summary
    records = [json.loads(line) for line in open(out)]
    assert len(records) == 4 and summary["details"]["captioned"] == 4
    assert summary["inputs"] == 4 and summary["done"] == 3
    assert summary["failed"] == 1 and summary["model_set"] == "smoke"
    for r in records:
        assert r["caption"].startswith("road with ")
        if "error" not in r:
            assert "analyzer" in r and set(r["agree"]) == {"count", "color", "pattern"}
    failures = storage.read_text(str(tmp_path / "captions.failures.jsonl"))
    assert "broken.png" in failures
    # Resume: nothing new to do, same rows, no duplicates.
    again = caption_images([str(images)], out, smoke_root, config)
    assert again.skipped and again.summary["skipped_done"] == 4
    assert len(open(out).read().splitlines()) == 4
    assert json.loads((tmp_path / "captions.summary.json").read_text())["done"] == 0


def test_rerun_keeps_earlier_failures_and_captions_each_image_once(smoke_root, images, tmp_path):
    out = str(tmp_path / "c.jsonl")
    config = CaptionConfig(batch_size=2, max_new_tokens=4, device="cpu", analyzer_check=False)
    # a.png is named directly, through "./" and inside its folder (listed twice): once.
    named = [str(images), str(images / "a.png"), str(images) + "/", f"{images}/./a.png"]
    first = caption_images(named, out, smoke_root, config).summary
    records = [json.loads(line) for line in open(out)]
    assert first["inputs"] == 4 and len(records) == len({r["image"] for r in records}) == 4
    again = caption_images([str(images)], out, smoke_root, config)
    assert again.skipped and again.summary["details"]["earlier_failures"] == 1
    failures = [json.loads(x) for x in open(tmp_path / "c.failures.jsonl")]
    assert [(Path(f["item"]).name, f.get("earlier")) for f in failures] == [("broken.png", True)]


def test_agreement_ignores_unknown():
    a = LaneAttributes("single", "white", "unknown")
    b = LaneAttributes("double", "white", "solid")
    assert a.agreement(b) == {"count": False, "color": True, "pattern": None}
    assert a.agreeing(b) == 1 and b.agreeing(b) == 3


def test_cli(smoke_root, images, tmp_path, capsys):
    out = str(tmp_path / "c.jsonl")
    code = cli(
        [
            "caption",
            "--images",
            str(images / "a.png"),
            "--output",
            out,
            "--model-root",
            smoke_root,
            "--max-new-tokens",
            "4",
            "--device",
            "cpu",
            "--no-analyzer-check",
        ]
    )
    assert code == 0 and "captioned 1 images" in capsys.readouterr().out


def test_caption_component_runs_under_kfp_local(smoke_root, images, tmp_path):
    from kfp import compiler, local

    from components.caption import caption

    compiler.Compiler().compile(caption, str(tmp_path / "caption.yaml"))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    task = caption(
        images=[str(images / "a.png"), str(images / "broken.png")],
        model_root=smoke_root,
        batch_size=2,
    )
    lines = open(task.outputs["captions"].path).read().splitlines()
    assert len(lines) == 2
    assert "captioned" in open(task.outputs["report"].path).read()
