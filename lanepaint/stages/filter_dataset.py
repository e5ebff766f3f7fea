"""Stage filter-dataset: select FluxFill rows by lane attributes and publish them as a dataset.

Rows are selected on the caption's count / color / pattern (each may be ``any``), sorted,
validated one by one (files exist and decode, sizes match, mask not empty, caption well
formed) until ``limit`` valid rows are kept, and written as a new dataset next to the
input (``{input}__{suffix}``) unless an output is given. Every row that is not kept is
accounted for: rejected with a reason (``failures.jsonl``) or not selected by the filters.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from lanepaint.data import fluxfill
from lanepaint.data.fluxfill import FluxFillRow, Rejection
from lanepaint.data.vocab import ANY, CaptionError, parse_caption, validate_filter_value
from lanepaint.io import reports, storage

log = logging.getLogger(__name__)

SORT_KEYS = ("prompt", "image")


@dataclass(frozen=True)
class FilterConfig:
    count: str = ANY
    color: str = ANY
    pattern: str = ANY
    require_clear_road: bool = False
    link_mode: str = "copy"
    suffix: str | None = None
    sort_by: str | None = None
    limit: int | None = None
    workers: int = 8

    def __post_init__(self) -> None:
        for name in ("count", "color", "pattern"):
            object.__setattr__(self, name, validate_filter_value(name, getattr(self, name)))
        if self.link_mode not in fluxfill.LINK_MODES:
            raise ValueError(f"link mode must be one of {fluxfill.LINK_MODES}")
        if self.sort_by not in (None, *SORT_KEYS):
            raise ValueError(f"sort-by must be one of {SORT_KEYS}")
        if self.limit is not None and self.limit < 0:
            raise ValueError("limit must be >= 0")
        if self.suffix is not None and ("/" in self.suffix or not self.suffix.strip()):
            raise ValueError(f"suffix must be a non-empty name without '/': {self.suffix!r}")

    @property
    def derived_suffix(self) -> str:
        """``single_white_any_clear`` style: the filters that shaped this dataset."""
        if self.suffix:
            return self.suffix
        parts = [self.count, self.color, self.pattern]
        name = "_".join(parts) if any(p != ANY for p in parts) else "all"
        if self.require_clear_road:
            name += "_clear"
        if self.limit is not None:
            name += f"_n{self.limit}"
        return name

    def fingerprint(self) -> dict:
        """The settings that change the output (for resume checks)."""
        d = asdict(self)
        d.pop("workers")
        return d


@dataclass
class FilterResult:
    output_dir: str
    summary: dict
    skipped: bool = False


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
    input_dir: str, output_dir: str | None = None, config: FilterConfig | None = None
) -> FilterResult:
    """Filter the FluxFill dataset at ``input_dir`` into a new dataset; see module doc."""
    config = config or FilterConfig()
    output_dir = output_dir or default_output_dir(input_dir, config)
    if storage.is_gcs(input_dir) or storage.is_gcs(output_dir):
        if config.link_mode != "copy":
            raise ValueError(
                f"--link-mode {config.link_mode} needs a local input and output; "
                "use copy with gs:// URIs"
            )
    if output_dir.rstrip("/") == input_dir.rstrip("/"):
        raise ValueError("output dir must differ from the input dir")
    timings = reports.Timings()
    started = time.perf_counter()

    with timings.phase("read_csv"):
        csv_text = storage.read_text(storage.join(input_dir, fluxfill.CSV_NAME))
        input_sha = hashlib.sha256(csv_text.encode("utf-8")).hexdigest()
        rows, parse_rejections = fluxfill.parse_csv(
            csv_text, storage.join(input_dir, fluxfill.CSV_NAME)
        )

    previous = _previous_summary(output_dir)
    if (
        previous
        and previous.get("input_csv_sha256") == input_sha
        and previous.get("config") == config.fingerprint()
    ):
        log.info("%s is already filtered with these settings; nothing to do", output_dir)
        return FilterResult(output_dir, previous, skipped=True)

    selected, caption_rejections, not_selected = select_rows(rows, config)

    tmp_root = None
    try:
        remote = storage.is_gcs(input_dir)
        if remote:
            tmp_root = Path(tempfile.mkdtemp(prefix="lanepaint-filter-in-"))
        local_root = tmp_root if remote else Path(input_dir)

        kept: list[FluxFillRow] = []
        invalid: list[Rejection] = []
        bar = tqdm(total=len(selected), desc="validate", unit="row")
        # In batches, so that --limit N on gs:// fetches about N rows' files, not all of them.
        batch = max(64, 2 * (config.limit or 0))
        for start in range(0, len(selected), batch):
            if config.limit is not None and len(kept) >= config.limit:
                break
            chunk = selected[start : start + batch]
            if remote:
                with timings.phase("download"):
                    _fetch_files(input_dir, chunk, tmp_root, config.workers)
            with timings.phase("validate"):
                for row in chunk:
                    if config.limit is not None and len(kept) >= config.limit:
                        break
                    problem = fluxfill.check_row(local_root, row)
                    if problem:
                        invalid.append(Rejection(row.line, problem, row.image))
                    else:
                        kept.append(row)
                    bar.update()
        bar.close()

        failures = reports.Failures()
        for rej in sorted(parse_rejections + caption_rejections + invalid, key=lambda r: r.line):
            failures.add(rej.image or f"line {rej.line}", rej.reason, line=rej.line)
        attrs = Counter(parse_caption(r.prompt).caption for r in kept)
        summary = {
            "stage": "filter-dataset",
            "input": input_dir,
            "output": output_dir,
            "config": config.fingerprint(),
            "input_csv_sha256": input_sha,
            "input_rows": len(rows) + len(parse_rejections),
            "selected": len(selected),
            "not_selected": not_selected,
            "kept": len(kept),
            "rejected": len(failures),
            "beyond_limit": len(selected) - len(kept) - len(invalid),
            "rejected_by_reason": failures.by_reason(),
            "kept_by_caption": dict(sorted(attrs.items())),
            "finished_at": reports.now_iso(),
        }
        with timings.phase("write"), fluxfill.DatasetWriter(output_dir) as writer:
            for row in kept:
                writer.add_existing(row, local_root, config.link_mode)
            summary["timings_s"] = {
                **timings.as_dict(),
                "total": round(time.perf_counter() - started, 4),
            }
            writer.write_text(reports.SUMMARY_JSON, json.dumps(summary, indent=2) + "\n")
            writer.write_text(
                reports.SUMMARY_MD,
                reports.render_markdown(f"filter-dataset: {output_dir}", summary),
            )
            writer.write_text(reports.FAILURES, failures.to_jsonl())
    finally:
        if tmp_root is not None:
            shutil.rmtree(tmp_root, ignore_errors=True)
    log.info(
        "kept %d of %d rows (%d rejected, %d not selected) -> %s",
        summary["kept"],
        summary["input_rows"],
        summary["rejected"],
        not_selected,
        output_dir,
    )
    return FilterResult(output_dir, summary)


def _previous_summary(output_dir: str) -> dict | None:
    try:
        if not storage.exists(storage.join(output_dir, fluxfill.CSV_NAME)):
            return None
        return json.loads(storage.read_text(storage.join(output_dir, reports.SUMMARY_JSON)))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# --- CLI ------------------------------------------------------------------------------


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", default=ANY, help="single|double|unknown|any (default any)")
    parser.add_argument("--color", default=ANY, help="white|yellow|mixed|unknown|any")
    parser.add_argument("--pattern", default=ANY, help="solid|dashed|mixed|unknown|any")
    parser.add_argument(
        "--require-clear-road",
        action="store_true",
        help="reject rows whose caption has any 'unknown' attribute",
    )
    parser.add_argument(
        "--link-mode",
        choices=fluxfill.LINK_MODES,
        default="copy",
        help="how kept files reach the output (hardlink/symlink: local paths only)",
    )
    parser.add_argument(
        "--suffix",
        default=None,
        help="output folder suffix, {input}__{suffix}; derived from the filters if omitted",
    )
    parser.add_argument(
        "--sort-by", choices=SORT_KEYS, default=None, help="order of rows (default: CSV order)"
    )
    parser.add_argument("--limit", type=int, default=None, help="keep at most N valid rows")
    parser.add_argument("--workers", type=int, default=8, help="parallel downloads from gs://")


def config_from_args(args: argparse.Namespace) -> FilterConfig:
    return FilterConfig(
        count=args.count,
        color=args.color,
        pattern=args.pattern,
        require_clear_road=args.require_clear_road,
        link_mode=args.link_mode,
        suffix=args.suffix,
        sort_by=args.sort_by,
        limit=args.limit,
        workers=args.workers,
    )


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "filter-dataset",
        help="select FluxFill rows by lane attributes into a new dataset",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--input-dir", required=True, help="FluxFill dataset (path or gs://)")
    parser.add_argument(
        "--output-dir", default=None, help="where to write (default {input}__{suffix})"
    )
    add_filter_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        result = filter_dataset(args.input_dir, args.output_dir, config)
    except (ValueError, fluxfill.DatasetFormatError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    s = result.summary
    print(
        f"{'unchanged' if result.skipped else 'wrote'} {result.output_dir}: kept {s['kept']}, "
        f"rejected {s['rejected']}, not selected {s['not_selected']}"
    )
    return 0
