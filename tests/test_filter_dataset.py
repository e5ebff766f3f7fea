"""Stage filter-dataset: options, rejections, link modes, resume, local vs gs://."""

import json
import os
from pathlib import Path

import pytest
from lp_testdata import make_dataset

from lanepaint.cli import main as cli
from lanepaint.data import fluxfill
from lanepaint.io import storage
from lanepaint.stages.filter_dataset import FilterConfig, default_output_dir, filter_dataset


@pytest.fixture
def dataset(tmp_path: Path) -> str:
    return make_dataset(str(tmp_path / "raw"), n=10)


def _summary(out: str) -> dict:
    return json.loads(storage.read_text(storage.join(out, "summary.json")))


def test_select_by_attributes_and_default_name(dataset):
    config = FilterConfig(count="single", color="white")
    result = filter_dataset(dataset, config=config)
    assert result.output == dataset + "__single_white_any"
    rows, _ = fluxfill.read_dataset(result.output)
    assert {r.prompt for r in rows} == {
        "road with single white solid lane markings",
        "road with single white dashed lane markings",
        "road with single white unknown lane markings",
    }
    s = result.summary
    assert (s["inputs"], s["done"], s["details"]["not_selected"], s["failed"]) == (10, 6, 4, 0)
    for row in rows:
        assert fluxfill.check_row(Path(result.output), row) is None


def test_require_clear_road_records_rejections(dataset):
    result = filter_dataset(dataset, config=FilterConfig(require_clear_road=True))
    assert result.output.endswith("__all_clear")
    assert result.summary["done"] == 8
    assert result.summary["failures_by_reason"] == {"unclear road": 2}
    failures = storage.read_text(storage.join(result.output, "failures.jsonl")).splitlines()
    assert len(failures) == 2 and "unclear road" in json.loads(failures[0])["reason"]


def test_sort_limit_and_suffix(dataset, tmp_path):
    config = FilterConfig(sort_by="prompt", limit=3, suffix="top3")
    result = filter_dataset(dataset, config=config)
    assert result.output.endswith("__top3")
    rows, _ = fluxfill.read_dataset(result.output)
    assert [r.prompt for r in rows] == sorted(r.prompt for r in rows)
    assert len(rows) == 3 and result.summary["details"]["beyond_limit"] == 7


def test_broken_rows_rejected_and_counted(dataset):
    root = Path(dataset)
    (root / "images" / "frame_000.png").write_bytes(b"garbage")
    (root / "masks" / "frame_005.png").unlink()
    csv = (root / "train.csv").read_text()
    csv += "../escape.png,masks/frame_001.png,road with single white solid lane markings,\n"
    csv += "images/frame_001.png,masks/frame_001.png,not a caption,\n"
    (root / "train.csv").write_text(csv)
    result = filter_dataset(dataset, str(root.parent / "out"))
    s = result.summary
    assert s["inputs"] == 12
    assert s["done"] == 8
    assert s["failures_by_reason"] == {
        "undecodable image": 1,
        "missing mask file": 1,
        "unsafe path": 1,
        "malformed caption": 1,
    }
    assert s["done"] + s["failed"] + s["details"]["not_selected"] == s["inputs"]


@pytest.mark.parametrize("mode", ["hardlink", "symlink"])
def test_link_modes(dataset, tmp_path, mode):
    result = filter_dataset(dataset, str(tmp_path / mode), FilterConfig(link_mode=mode))
    image = tmp_path / mode / "images" / "frame_001.png"
    src = Path(dataset) / "images" / "frame_001.png"
    if mode == "hardlink":
        assert os.stat(image).st_ino == os.stat(src).st_ino
    else:
        assert image.is_symlink() and image.resolve() == src.resolve()
    assert result.summary["done"] == 10


def test_rerun_with_same_settings_is_a_no_op(dataset):
    first = filter_dataset(dataset, config=FilterConfig(color="white"))
    again = filter_dataset(dataset, config=FilterConfig(color="white"))
    assert again.skipped and again.summary["skipped_done"] == first.summary["done"]
    changed = filter_dataset(dataset, config=FilterConfig(color="white", limit=1))
    assert not changed.skipped and changed.summary["done"] == 1


def test_bad_config_and_input(tmp_path, dataset):
    with pytest.raises(ValueError, match="--count"):
        FilterConfig(count="triple")
    with pytest.raises(fluxfill.DatasetFormatError):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "train.csv").write_text("")
        filter_dataset(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="local"):
        filter_dataset(dataset, "gs://bucket/x", FilterConfig(link_mode="symlink"))


def test_cli_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        cli(["filter-dataset", "--help"])
    text = capsys.readouterr().out
    for opt in [
        "--input-dir",
        "--output-dir",
        "--count",
        "--color",
        "--pattern",
        "--require-clear-road",
        "--link-mode",
        "--suffix",
        "--sort-by",
        "--limit",
    ]:
        assert opt in text


def test_cli_runs(dataset, capsys):
    assert cli(["filter-dataset", "--input-dir", dataset, "--pattern", "solid"]) == 0
    assert "kept 4, rejected 0, not selected 6" in capsys.readouterr().out
    assert cli(["filter-dataset", "--input-dir", dataset + "-missing"]) == 2


@pytest.mark.gcs
def test_gcs_round_trip_matches_local(dataset, gcs_bucket, tmp_path):
    src = f"gs://{gcs_bucket}/datasets/raw"
    storage.upload_dir(dataset, src)
    config = FilterConfig(color="white", sort_by="image")
    remote = filter_dataset(src, config=config)
    assert remote.output == default_output_dir(src, config)
    local = filter_dataset(dataset, str(tmp_path / "local_out"), config)
    back = tmp_path / "back"
    storage.download_dir(remote.output, back)
    local_files = sorted(
        p.relative_to(local.output).as_posix() for p in Path(local.output).rglob("*") if p.is_file()
    )
    remote_files = sorted(p.relative_to(back).as_posix() for p in back.rglob("*") if p.is_file())
    assert local_files == remote_files
    for rel in local_files:
        if rel in ("summary.json", "summary.md", ".lanepaint.json"):
            continue  # name the input/output, timings, the marker's creation time
        assert (back / rel).read_bytes() == (Path(local.output) / rel).read_bytes(), rel
    assert _summary(remote.output)["done"] == local.summary["done"]
