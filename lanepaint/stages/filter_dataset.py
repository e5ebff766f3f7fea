"""Stage filter-dataset: select FluxFill rows by lane attributes and publish them as a dataset.

Rows are selected on the caption's count / color / pattern (each may be ``any``), sorted,
validated one by one (files exist and decode, sizes match, mask not empty, caption well
formed) until ``limit`` valid rows are kept, and written as a new dataset next to the
input (``{input}__{suffix}``) unless an output is given. Every row that is not kept is
accounted for: rejected with a reason (``failures.jsonl``) or not selected by the filters.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from lanepaint.data import fluxfill
from lanepaint.data.fluxfill import FluxFillRow, Rejection
from lanepaint.data.vocab import (
    ANY,
    CaptionError,
    LaneAttributes,
    parse_caption,
    validate_filter_value,
)
from lanepaint.io import reports, storage
from lanepaint.kit import (
    StageReport,
    StageResult,
    check_apart,
    check_finite,
    from_args,
    guard_output,
    output_settings,
    require_input,
    setting,
    settings_key,
)
from lanepaint.kit.cli import register_stage

log = logging.getLogger(__name__)

STAGE = "filter-dataset"
SORT_KEYS = ("prompt", "image")


@dataclass(frozen=True)
class FilterConfig:
    count: str = setting(ANY, help="lane count: single|double|unknown|any")
    color: str = setting(ANY, help="lane color: white|yellow|mixed|unknown|any")
    pattern: str = setting(ANY, help="lane pattern: solid|dashed|mixed|unknown|any")
    require_clear_road: bool = setting(
        False, help="reject rows whose caption has any 'unknown' attribute"
    )
    link_mode: str = setting(
        "copy",
        help="how kept files reach the output (hardlink/symlink: local paths only)",
        choices=fluxfill.LINK_MODES,
    )
    suffix: str = setting(
        "", help="output folder suffix, {input}__{suffix}; empty = derived from the filters"
    )
    sort_by: str = setting(
        "", help="order of the rows: prompt|image; empty = CSV order", choices=("", *SORT_KEYS)
    )
    limit: int = setting(0, help="keep at most N valid rows (0 = no limit)")
    workers: int = setting(8, help="parallel downloads from gs://", output=False)

    def __post_init__(self) -> None:
        check_finite(self)  # nan/inf, however the Config is built
        for name in LaneAttributes.FIELDS:
            object.__setattr__(self, name, validate_filter_value(name, getattr(self, name)))
        if self.link_mode not in fluxfill.LINK_MODES:
            raise ValueError(f"link mode must be one of {fluxfill.LINK_MODES}")
        if self.sort_by not in ("", *SORT_KEYS):
            raise ValueError(f"sort-by must be one of {SORT_KEYS}")
        if self.limit < 0:
            raise ValueError("limit must be >= 0 (0 = no limit)")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.suffix and ("/" in self.suffix or self.suffix.strip(". ") == ""):
            raise ValueError(f"suffix must be a folder name without '/': {self.suffix!r}")

    @property
    def derived_suffix(self) -> str:
        """``single_white_any_clear`` style: the filters that shaped this dataset."""
        if self.suffix:
            return self.suffix
        parts = [self.count, self.color, self.pattern]
        name = "_".join(parts) if any(p != ANY for p in parts) else "all"
        if self.require_clear_road:
            name += "_clear"
        if self.limit:
            name += f"_n{self.limit}"
        return name


def default_output_dir(input_dir: str, config: FilterConfig) -> str:
    return input_dir.rstrip("/") + "__" + config.derived_suffix


def select_rows(
    rows: list[FluxFillRow], config: FilterConfig
) -> tuple[list[FluxFillRow], list[Rejection], int]:
    """Rows matching the filters (sorted), rejections for bad captions, count not selected."""
    selected, rejected, not_selected = [], [], 0
    for row in rows:
        try:
            attrs = parse_caption(row.prompt)
        except CaptionError as exc:
            rejected.append(Rejection(row.line, f"malformed caption: {exc}", row.image))
            continue
        if config.require_clear_road and not attrs.is_clear:
            rejected.append(Rejection(row.line, f"unclear road: {attrs.caption}", row.image))
            continue
        if attrs.matches(config.count, config.color, config.pattern):
            selected.append(row)
        else:
            not_selected += 1
    if config.sort_by:
        selected.sort(key=lambda r: (getattr(r, config.sort_by), r.image, r.line))
    return selected, rejected, not_selected


def _fetch_files(input_dir: str, rows: list[FluxFillRow], dest: Path, workers: int) -> None:
    """Download the files of ``rows`` from gs:// into ``dest`` (missing ones stay missing)."""
    wanted = sorted({rel for row in rows for rel in (row.image, row.mask)})

    def fetch(rel: str) -> None:
        try:
            storage.download_file(storage.join(input_dir, rel), dest / rel)
        except FileNotFoundError:
            pass  # reported as a missing file by check_row

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(fetch, wanted))


def filter_dataset(
    input_dir: str, output_dir: str = "", config: FilterConfig | None = None
) -> StageResult:
    """Filter the FluxFill dataset at ``input_dir`` into a new dataset; see module doc."""
    config = config or FilterConfig()
    output_dir = output_dir or default_output_dir(input_dir, config)
    check_locations(input_dir, output_dir, config)
    with guard_output(STAGE, output_dir, inputs=[input_dir]):
        return _filter(input_dir, output_dir, config)


def _filter(input_dir: str, output_dir: str, config: FilterConfig) -> StageResult:
    """The stage's work, with the output locked and claimed."""
    report = StageReport(STAGE, output_dir)
    with report.phase("read_csv"):
        csv_text = storage.read_text(storage.join(input_dir, fluxfill.CSV_NAME))
        rows, parse_rejections = fluxfill.parse_csv(
            csv_text, storage.join(input_dir, fluxfill.CSV_NAME)
        )
    input_sha = hashlib.sha256(csv_text.encode("utf-8")).hexdigest()
    report.settings_key = settings_key(config, input_csv_sha256=input_sha)
    report.settings = output_settings(config)

    previous = _previous_summary(output_dir)
    if previous and previous.get("settings_key") == report.settings_key:
        log.info("%s is already filtered with these settings; nothing to do", output_dir)
        return StageResult(output_dir, _as_skipped(previous))

    selected, caption_rejections, not_selected = select_rows(rows, config)
    with _local_input(input_dir) as local_root:
        kept, invalid = validate_rows(input_dir, local_root, selected, config, report)
        for rej in sorted(parse_rejections + caption_rejections + invalid, key=lambda r: r.line):
            report.fail(rej.image or f"line {rej.line}", rej.reason, line=rej.line)
        report.inputs = len(rows) + len(parse_rejections)
        report.done = len(kept)
        report.details = {
            "input": input_dir,
            "input_csv_sha256": input_sha,
            "selected": len(selected),
            "not_selected": not_selected,
            "beyond_limit": len(selected) - len(kept) - len(invalid),
            "kept_by_caption": dict(
                sorted(Counter(parse_caption(r.prompt).caption for r in kept).items())
            ),
        }
        marker = _link_marker(input_dir, output_dir, config)
        with report.phase("write"), fluxfill.DatasetWriter(output_dir, STAGE, marker) as writer:
            for row in kept:
                writer.add_existing(row, local_root, config.link_mode)
            summary = report.summary()
            writer.write_text(reports.SUMMARY_JSON, json.dumps(summary, indent=2) + "\n")
            writer.write_text(reports.SUMMARY_MD, report.markdown(summary))
            writer.write_text(reports.FAILURES, report.failures.to_jsonl())
    log.info(
        "kept %d of %d rows (%d rejected, %d not selected) -> %s",
        report.done,
        report.inputs,
        len(report.failures),
        not_selected,
        output_dir,
    )
    return StageResult(output_dir, summary)


def check_locations(input_dir: str, output_dir: str, config: FilterConfig) -> None:
    """Refuse what cannot work before reading anything: link modes off local disks, an
    output that is, holds or lies inside the input, an input without train.csv."""
    if storage.is_gcs(input_dir) or storage.is_gcs(output_dir):
        if config.link_mode != "copy":
            raise ValueError(
                f"--link-mode {config.link_mode} needs a local input and output; "
                "use copy with gs:// URIs"
            )
    check_apart([input_dir], [output_dir])
    require_input(storage.join(input_dir, fluxfill.CSV_NAME), "FluxFill dataset (train.csv)")


def _link_marker(input_dir: str, output_dir: str, config: FilterConfig) -> dict:
    """What the output's marker says about symlinks: the folders they may lead into (the
    input and whatever the input itself links into), relative to the output."""
    if config.link_mode != "symlink":
        return {}
    src, out = Path(input_dir).resolve(), Path(output_dir).resolve()
    return {"links_into": sorted({os.path.relpath(r, out) for r in fluxfill.link_roots(src)})}


@contextmanager
def _local_input(input_dir: str) -> Iterator[Path]:
    """The input's local folder, or a scratch folder that fetched files go into (gs://)."""
    if not storage.is_gcs(input_dir):
        yield Path(input_dir)
        return
    tmp = Path(tempfile.mkdtemp(prefix="lanepaint-filter-in-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def validate_rows(
    input_dir: str,
    local_root: Path,
    selected: list[FluxFillRow],
    config: FilterConfig,
    report: StageReport,
) -> tuple[list[FluxFillRow], list[Rejection]]:
    """Check selected rows in order until ``limit`` are kept; (kept, rejected)."""
    kept: list[FluxFillRow] = []
    invalid: list[Rejection] = []
    limit = config.limit or len(selected)
    bar = tqdm(total=len(selected), desc="validate", unit="row")
    roots = fluxfill.link_roots(local_root)
    # In batches, so that --limit N on gs:// fetches about N rows' files, not all of them.
    batch = max(64, 2 * config.limit)
    for start in range(0, len(selected), batch):
        chunk = selected[start : start + batch][: limit - len(kept)]
        if not chunk:
            break
        if storage.is_gcs(input_dir):
            with report.phase("download"):
                _fetch_files(input_dir, chunk, local_root, config.workers)
        with report.phase("validate"):
            for row in chunk:
                if len(kept) >= limit:
                    break
                problem = fluxfill.check_row(local_root, row, roots)
                if problem:
                    invalid.append(Rejection(row.line, problem, row.image))
                else:
                    kept.append(row)
                bar.update()
    bar.close()
    return kept, invalid


def _as_skipped(previous: dict) -> dict:
    """The earlier run's summary, counted as this run's: everything already done."""
    return {**previous, "skipped_done": previous["done"], "done": 0, "failed": 0}


def _previous_summary(output_dir: str) -> dict | None:
    try:
        if not storage.exists(storage.join(output_dir, fluxfill.CSV_NAME)):
            return None
        return json.loads(storage.read_text(storage.join(output_dir, reports.SUMMARY_JSON)))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# --- CLI ------------------------------------------------------------------------------


def register(subparsers) -> None:
    register_stage(subparsers, STAGE, __doc__, FilterConfig, _add_io, _run)


def _add_io(parser) -> None:
    parser.add_argument("--input-dir", required=True, help="FluxFill dataset (path or gs://)")
    parser.add_argument(
        "--output-dir", default="", help="where to write (default {input}__{suffix})"
    )


def _run(args) -> int:
    result = filter_dataset(args.input_dir, args.output_dir, from_args(FilterConfig, args))
    s, d = result.summary, result.summary["details"]
    print(
        f"{'unchanged' if result.skipped else 'wrote'} {result.output}: kept "
        f"{s['done'] or s['skipped_done']}, rejected {s['failed']}, "
        f"not selected {d['not_selected']}"
    )
    return 0
