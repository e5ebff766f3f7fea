"""Content checks of filter-dataset reruns: a rerun after the input train.csv changed must
publish what the new CSV selects (not skip and keep the stale dataset); an unchanged rerun
is skipped and leaves the output untouched."""

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
from lp_testdata import make_dataset

from lanepaint.data import fluxfill
from lanepaint.data.vocab import parse_caption
from lanepaint.stages.filter_dataset import FilterConfig, filter_dataset

CONFIG = FilterConfig(color="white")


@pytest.fixture
def dataset(tmp_path: Path) -> str:
    return make_dataset(str(tmp_path / "raw"), n=10)


def _rows(root: str) -> list[fluxfill.FluxFillRow]:
    rows, rejections = fluxfill.read_dataset(root)
    assert not rejections
    return rows


def _rewrite_csv(root: str, rows: list[fluxfill.FluxFillRow]) -> str:
    """Write ``rows`` as the dataset's train.csv; returns the new CSV's SHA-256."""
    text = fluxfill.format_csv(rows)
    Path(root, fluxfill.CSV_NAME).write_text(text, encoding="utf-8")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _white(rows: list[fluxfill.FluxFillRow]) -> list[tuple[str, str, str, str]]:
    """What CONFIG must keep, in CSV order, computed here from the captions themselves."""
    return [tuple(r.as_csv()) for r in rows if parse_caption(r.prompt).color == "white"]


def _published(root: str) -> list[tuple[str, str, str, str]]:
    return [tuple(r.as_csv()) for r in _rows(root)]


def test_rerun_after_the_input_csv_changed_publishes_the_new_selection(dataset):
    first = filter_dataset(dataset, config=CONFIG)
    out = first.output
    assert not first.skipped
    assert _published(out) == _white(_rows(dataset))
    assert (Path(out) / "images" / "frame_000.png").is_file()

    by_image = {Path(r.image).stem: r for r in _rows(dataset)}
    edited = []
    for stem, row in by_image.items():
        if stem == "frame_005":
            continue  # a white row dropped from the input
        if stem == "frame_000":  # white -> yellow: no longer selected
            row = replace(row, prompt="road with double yellow solid lane markings")
        elif stem == "frame_002":  # yellow -> white: newly selected
            row = replace(row, prompt="road with single white dashed lane markings")
        elif stem == "frame_001":  # still selected, only its T5 prompt changed
            row = replace(row, prompt_2="a freshly repainted lane")
        edited.append(row)
    new_sha = _rewrite_csv(dataset, edited)

    again = filter_dataset(dataset, config=CONFIG)
    assert not again.skipped, "the input CSV changed: the rerun must not be skipped"
    assert again.summary["details"]["input_csv_sha256"] == new_sha
    published = _published(out)
    assert published == _white(_rows(dataset))
    stems = {Path(image).stem for image, *_ in published}
    assert "frame_000" not in stems and "frame_005" not in stems and "frame_002" in stems
    assert dict((Path(r[0]).stem, r[3]) for r in published)["frame_001"] == (
        "a freshly repainted lane"
    )
    # Published whole: the files of rows no longer kept are gone too.
    assert not (Path(out) / "images" / "frame_000.png").exists()
    assert not (Path(out) / "images" / "frame_005.png").exists()
    assert (Path(out) / "images" / "frame_002.png").is_file()
    s = again.summary
    assert (s["inputs"], s["done"]) == (9, len(published))


def test_caption_edit_that_keeps_every_count_is_not_skipped(dataset):
    """A change the summary's counts cannot show (same rows kept, one caption reworded)."""
    first = filter_dataset(dataset, config=CONFIG)
    before = _published(first.output)
    rows = _rows(dataset)
    target = next(i for i, r in enumerate(rows) if r.prompt.endswith("white solid lane markings"))
    rows[target] = replace(rows[target], prompt="road with single white dashed lane markings")
    _rewrite_csv(dataset, rows)

    again = filter_dataset(dataset, config=CONFIG)
    assert not again.skipped
    assert again.summary["done"] == first.summary["done"]
    after = _published(again.output)
    assert after == _white(rows) and after != before
    assert tuple(rows[target].as_csv()) in after


def test_unchanged_rerun_is_skipped_and_leaves_the_output_alone(dataset):
    first = filter_dataset(dataset, config=CONFIG)
    csv = Path(first.output) / fluxfill.CSV_NAME
    before = (csv.read_bytes(), csv.stat().st_mtime_ns)
    # The same bytes written again (a newer mtime): the content decides, not the file time.
    source = Path(dataset) / fluxfill.CSV_NAME
    source.write_bytes(source.read_bytes())
    again = filter_dataset(dataset, config=CONFIG)
    assert again.skipped and again.summary["skipped_done"] == first.summary["done"]
    assert (csv.read_bytes(), csv.stat().st_mtime_ns) == before
