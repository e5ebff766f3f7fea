"""The FluxFill CSV reader and row checks against every kind of bad input."""

from pathlib import Path

import numpy as np
import pytest
from lp_testdata import make_dataset
from PIL import Image

from lanepaint.data import fluxfill
from lanepaint.data.fluxfill import DatasetFormatError, FluxFillRow, parse_csv, safe_relpath

CAP = "road with single white solid lane markings"


def test_parse_plain_bom_and_quoted_commas():
    text = (
        "\ufeffimage,mask,prompt,prompt_2\n"
        f'images/a.png,masks/a.png,{CAP},"a road, with commas"\n'
        "\n"
        f"images/b.png,masks/b.png,{CAP},\n"
    )
    rows, rejected = parse_csv(text)
    assert rejected == []
    assert [r.image for r in rows] == ["images/a.png", "images/b.png"]
    assert rows[0].prompt_2 == "a road, with commas"
    assert rows[0].line == 2 and rows[1].line == 4


def test_prompt_2_column_optional():
    rows, _ = parse_csv(f"image,mask,prompt\nimages/a.png,masks/a.png,{CAP}\n")
    assert rows[0].prompt_2 == ""


@pytest.mark.parametrize(
    "text,match",
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("image,prompt\nx,y\n", "missing column"),
    ],
)
def test_whole_file_errors(text, match):
    with pytest.raises(DatasetFormatError, match=match):
        parse_csv(text)


def test_extra_columns_are_ignored_not_merged(caplog):
    rows, rejected = parse_csv(f"image,mask,prompt,prompt_2,score\ni.png,m.png,{CAP},,0.9\n")
    assert rows[0].prompt_2 == "" and not rejected
    assert "score" in caplog.text


@pytest.mark.parametrize(
    "line,reason",
    [
        (f"/etc/passwd,masks/a.png,{CAP},", "absolute"),
        (f"../outside.png,masks/a.png,{CAP},", "escapes"),
        (f"images/../../x.png,masks/a.png,{CAP},", "escapes"),
        (f"C:\\x.png,masks/a.png,{CAP},", "absolute"),
        (f"gs://b/x.png,masks/a.png,{CAP},", "absolute"),
        (f"images/a.png,masks/a.png,{CAP}", "field count"),
        (f"images/a.png,masks/a.png,{CAP},p2,extra", "field count"),
        ("images/a.png,masks/a.png,,", "empty prompt"),
        (f",masks/a.png,{CAP},", "empty path"),
    ],
)
def test_bad_rows_are_rejected_with_reason(line, reason):
    rows, rejected = parse_csv(f"image,mask,prompt,prompt_2\n{line}\nimages/ok.png,m.png,{CAP},\n")
    assert [r.image for r in rows] == ["images/ok.png"]
    assert len(rejected) == 1 and reason in rejected[0].reason and rejected[0].line == 2


def test_safe_relpath_normalizes():
    assert safe_relpath("images/./a.png") == "images/a.png"
    assert safe_relpath("images\\a.png") == "images/a.png"


def _row(name="frame_000"):
    return FluxFillRow(f"images/{name}.png", f"masks/{name}.png", CAP)


def test_check_row_problems(tmp_path: Path):
    root = Path(make_dataset(str(tmp_path / "ds"), n=1))
    row = _row()
    assert fluxfill.check_row(root, row) is None
    bad_caption = FluxFillRow(row.image, row.mask, "a nice road")
    assert "malformed caption" in fluxfill.check_row(root, bad_caption)
    missing = FluxFillRow("images/nope.png", row.mask, CAP)
    assert "missing image" in fluxfill.check_row(root, missing)
    (root / "images" / "broken.png").write_bytes(b"\x89PNG not really")
    assert "undecodable image" in fluxfill.check_row(
        root, FluxFillRow("images/broken.png", row.mask, CAP)
    )
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "masks" / "small.png")
    assert "size mismatch" in fluxfill.check_row(
        root, FluxFillRow(row.image, "masks/small.png", CAP)
    )
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(root / "masks" / "empty.png")
    assert "empty mask" in fluxfill.check_row(root, FluxFillRow(row.image, "masks/empty.png", CAP))


def test_writer_publishes_whole_or_nothing(tmp_path: Path):
    target = tmp_path / "ds"
    with pytest.raises(RuntimeError):
        with fluxfill.DatasetWriter(str(target)) as writer:
            writer.add("a", np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), np.uint8), CAP)
            raise RuntimeError("boom")
    assert not target.exists()
    make_dataset(str(target), n=3)
    rows, rejected = fluxfill.read_dataset(str(target))
    assert len(rows) == 3 and not rejected
    assert sorted(p.name for p in target.iterdir()) == [
        ".lanepaint.json",  # the marker: who made this folder (lanepaint.kit.guard)
        "images",
        "masks",
        "train.csv",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name != "ds"], "temp folders left behind"


def test_read_dataset_without_csv(tmp_path: Path):
    with pytest.raises(DatasetFormatError, match="no train.csv"):
        fluxfill.read_dataset(str(tmp_path))
