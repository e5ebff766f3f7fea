"""Stage evaluate: how good were the edits, by the judge and by objective measures.

Reads the edit stage's records (``<edit_dir>/<video>/<instruction>/record.json``) and for
each edited video measures, without any VLM: lane attributes of the edited region against
the instruction (weights-free analyzer), background preservation outside the mask (PSNR,
SSIM), temporal stability inside it (flow-warped frame difference, relative to the
original). With the judge's records: first-attempt pass rate, mean attempts, success.
Writes summary.json / summary.md (first line: which model set made the edits), metrics.json
(flat, for KFP Metrics) and report.html.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from tqdm import tqdm

from lanepaint.edit.layout import EditLayout
from lanepaint.evaluate import edits, html, metrics
from lanepaint.io import reports, storage
from lanepaint.kit import (
    StageReport,
    StageResult,
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

STAGE = "evaluate"
REPORT_DIR = "_evaluation"


@dataclass(frozen=True)
class EvaluateConfig:
    max_frames: int = setting(49, help="frames per video used by the pixel metrics (0 = all)")
    embed_limit_mb: float = setting(
        8.0, help="videos up to this size (MB) are embedded in report.html; larger ones linked"
    )

    def __post_init__(self) -> None:
        check_finite(self)  # nan/inf, however the Config is built
        if self.max_frames < 0:
            raise ValueError("max frames must be >= 0 (0 = all)")
        if self.embed_limit_mb < 0:
            raise ValueError("embed limit must be >= 0 MB")


def evaluate(edit_dir: str, output_dir: str, config: EvaluateConfig | None = None) -> StageResult:
    """Measure every finished edit under ``edit_dir``; see the module doc. The result's
    ``extra["metrics"]`` holds the flat metrics (also ``metrics.json``) for KFP."""
    config = config or EvaluateConfig()
    require_input(edit_dir, "edit output (--edit-dir)")
    inside = [default_output_dir(edit_dir)]
    with guard_output(STAGE, output_dir, inputs=[edit_dir], inside_ok=inside):
        return _evaluate(edit_dir, output_dir, config)


def default_output_dir(edit_dir: str) -> str:
    """Where the report goes by default: a folder the edit layout keeps for it."""
    return storage.join(edit_dir, REPORT_DIR)


def _evaluate(edit_dir: str, output_dir: str, config: EvaluateConfig) -> StageResult:
    """The run itself, with the output locked and claimed (see :func:`evaluate`)."""
    report = StageReport(STAGE, output_dir)
    unreadable: list[tuple[str, str]] = []
    records = [r for r in EditLayout(edit_dir).records(unreadable) if r.get("status") == "ok"]
    # The edits measured are part of the key: a rerun over the same edits does nothing.
    edited = sorted(
        (r.get("video_id"), r.get("instruction_slug"), r.get("settings_key"), r.get("finished_at"))
        for r in records
    )
    report.settings, report.settings_key = (
        output_settings(config),
        settings_key(config, edits=edited, **_unreadable_key(unreadable)),
    )
    previous = _finished(output_dir, report.settings_key)
    if previous is not None:
        log.info("%s already evaluates these edits with these settings", output_dir)
        return previous
    report.inputs = len(records) + len(unreadable)
    for uri, why in unreadable:  # a record that does not decode is a failure, not a skip
        log.warning("unreadable edit record %s: %s", uri, why)
        report.fail(_item_of(edit_dir, uri), f"unreadable record: {why}")
    line, smoke = edits.model_set_line(records)
    report.set_models(edits.edits_model_set(records))
    items, report_items = evaluate_all(records, config, report)
    report.done = len(items)
    agg = metrics.aggregate(items)
    flat = metrics.flat_metrics(agg)
    report.details = {"model_set_line": line, "edit_dir": edit_dir, **agg, "items": items}
    storage.write_text(storage.join(output_dir, "metrics.json"), json.dumps(flat, indent=2))
    page = html.edit_report(edit_dir, line, smoke, items, report_items, agg, flat)
    storage.write_text(storage.join(output_dir, "report.html"), page)
    # summary.json is the commit point (_finished trusts it): written after the report, so
    # a run killed in between never pairs a new summary with an older report.html.
    summary = report.write()
    # summary.md's first line must say which model set made the edits.
    storage.write_text(
        storage.join(output_dir, reports.SUMMARY_MD), f"{line}\n\n{report.markdown(summary)}"
    )
    log.info("evaluated %d edits (%d failed) -> %s", len(items), len(report.failures), output_dir)
    return StageResult(output_dir, summary, {"metrics": flat})


def _unreadable_key(unreadable: list[tuple[str, str]]) -> dict:
    """Unreadable records enter the key only when there are some (earlier keys stay)."""
    return {"unreadable": sorted(u for u, _ in unreadable)} if unreadable else {}


def _item_of(edit_dir: str, record_uri: str) -> str:
    """``<video_id>/<slug>`` of a record.json under the edit folder."""
    rel = (
        record_uri[len(edit_dir.rstrip("/")) + 1 :]
        if record_uri.startswith(edit_dir)
        else record_uri
    )
    return rel.removesuffix("/record.json")


def _finished(output_dir: str, key: str) -> StageResult | None:
    """The earlier run's result when it measured the same edits with the same settings."""
    try:
        summary = json.loads(storage.read_text(storage.join(output_dir, reports.SUMMARY_JSON)))
        flat = json.loads(storage.read_text(storage.join(output_dir, "metrics.json")))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if summary.get("settings_key") != key or not storage.exists(
        storage.join(output_dir, "report.html")
    ):
        return None
    skipped = {**summary, "done": 0, "failed": 0, "skipped_done": summary["done"]}
    return StageResult(output_dir, skipped, {"metrics": flat})


def evaluate_all(
    records: list[dict], config: EvaluateConfig, report: StageReport
) -> tuple[list[dict], list[dict]]:
    """(metrics, report section) per edit; one unreadable video never stops the rest."""
    items, report_items = [], []
    for record in tqdm(records, desc="evaluate", unit="video"):
        try:
            with report.phase("measure"):
                item = edits.evaluate_item(record, config.max_frames)
            with report.phase("report"):
                report_items.append(edits.report_item(record, item, config.embed_limit_mb))
            items.append(item)
        except Exception as exc:  # noqa: BLE001 - one unreadable video never stops the rest
            log.warning("evaluating %s failed: %s", record.get("video_id"), exc)
            report.fail(
                f"{record.get('video_id')}/{record.get('instruction_slug')}",
                f"{type(exc).__name__}: {exc}",
            )
    return items, report_items


# --- CLI ------------------------------------------------------------------------------


def register(subparsers) -> None:
    register_stage(subparsers, STAGE, __doc__, EvaluateConfig, _add_io, _run)


def _add_io(parser) -> None:
    parser.add_argument("--edit-dir", required=True, help="output of `lanepaint edit`")
    parser.add_argument("--output-dir", required=True, help="where the report goes")


def _run(args) -> int:
    result = evaluate(args.edit_dir, args.output_dir, from_args(EvaluateConfig, args))
    s = result.summary
    print(s["details"]["model_set_line"])
    print(
        f"evaluated {s['done']} edits ({s['failed']} failed); report: "
        f"{storage.join(args.output_dir, 'report.html')}"
    )
    return result.exit_code
