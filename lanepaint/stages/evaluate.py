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

import numpy as np
from tqdm import tqdm

from lanepaint.data.vocab import LaneAttributes
from lanepaint.edit.layout import EditLayout
from lanepaint.evaluate import html, metrics
from lanepaint.io import reports, storage
from lanepaint.io.images import read_rgb
from lanepaint.kit import (
    StageReport,
    StageResult,
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
        if self.max_frames < 0:
            raise ValueError("max frames must be >= 0 (0 = all)")
        if self.embed_limit_mb < 0:
            raise ValueError("embed limit must be >= 0 MB")


def _read_video(uri: str, max_frames: int) -> np.ndarray:
    from lanepaint.io.video import read_frames

    with storage.local_path(uri) as path:
        return read_frames(path, max_frames=max_frames or None)


def _read_masks(uri: str) -> np.ndarray:
    from lanepaint.data.masks import read_masks_npz

    return read_masks_npz(storage.read_bytes(uri), uri)


def evaluate_item(record: dict, config: EvaluateConfig) -> dict:
    """Objective and judge metrics of one edited video."""
    original = _read_video(record["source_video"], config.max_frames)
    edited = _read_video(record["edited"], config.max_frames)
    masks = _read_masks(record["mask_uri"])
    n = min(len(original), len(edited), len(masks))
    original, edited, masks = original[:n], edited[:n], masks[:n]
    if edited.shape[1:3] != original.shape[1:3]:
        raise ValueError(f"edited size {edited.shape[1:3]} != original {original.shape[1:3]}")
    wanted = LaneAttributes(**record["attributes"])
    ff = record.get("first_frame", {})
    attempts = ff.get("attempts", [])
    judged = any(a.get("verdict") for a in attempts)
    return {
        "video_id": record["video_id"],
        "instruction": record["instruction"],
        "frames": n,
        **metrics.background_preservation(original, edited, masks),
        **metrics.temporal_stability(original, edited, masks),
        **metrics.lane_attributes(edited, masks, wanted),
        "judged": judged,
        "attempts": len(attempts),
        "first_attempt_passed": bool(ff.get("first_attempt_passed")) if judged else None,
        "passed": bool(ff.get("passed")) if judged else None,
        "timings_s": record.get("timings_s", {}),
    }


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.mean(vals)), 4) if vals else None


def aggregate(items: list[dict]) -> dict:
    judged = [i for i in items if i["judged"]]
    stage_names = sorted({k for i in items for k in i["timings_s"]})
    return {
        "videos": len(items),
        "first_attempt_pass_rate": _mean([float(i["first_attempt_passed"]) for i in judged]),
        "mean_attempts": _mean([i["attempts"] for i in items]),
        "success_rate": _mean([float(i["passed"]) for i in judged]),
        "lane_all_correct_rate": _mean([float(i["all_correct"]) for i in items]),
        "lane_attribute_accuracy": {
            a: _mean([float(i["attribute_correct"][a]) for i in items])
            for a in LaneAttributes.FIELDS
        },
        "background_psnr_db": _mean([i["background_psnr_db"] for i in items]),
        "background_ssim": _mean([i["background_ssim"] for i in items]),
        "warp_error_ratio": _mean([i["warp_error_ratio"] for i in items]),
        "time_per_stage_s": {s: _mean([i["timings_s"].get(s) for i in items]) for s in stage_names},
        "time_per_video_s": _mean([i["timings_s"].get("total") for i in items]),
    }


def flat_metrics(agg: dict) -> dict[str, float]:
    """Scalar metrics for KFP's Metrics artifact (None dropped, nested keys joined)."""
    out = {}
    for key, value in agg.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                if v is not None:
                    out[f"{key}.{sub}"] = float(v)
        elif value is not None:
            out[key] = float(value)
    return out


def model_set_line(records: list[dict]) -> tuple[str, bool]:
    labels = sorted({r.get("model_set_label", "unknown model set") for r in records})
    smoke = any(r.get("model_set") == "smoke" for r in records)
    prefix = "Made with the SMOKE model set" if smoke else "Made with"
    return f"{prefix}: {'; '.join(labels) or 'no edits found'}", smoke


def edits_model_set(records: list[dict]) -> dict:
    """The model set(s) that made the edits, for the summary's common keys."""
    sets = sorted({r["model_set"] for r in records if r.get("model_set")})
    labels = sorted({r["model_set_label"] for r in records if r.get("model_set_label")})
    return {"model_set": ", ".join(sets) or None, "model_set_label": "; ".join(labels) or None}


def _report_item(record: dict, item: dict, config: EvaluateConfig) -> dict:
    limit = int(config.embed_limit_mb * 1e6)
    players = []
    for key, label in (("side_by_side", "original | edited"), ("edited", "edited")):
        uri = record.get(key)
        if not uri or not storage.exists(uri):
            continue
        data = storage.read_bytes(uri)
        poster = html.jpeg_uri(_read_video(uri, 1)[0], 640)
        players.append(html.video_tag(data if len(data) <= limit else None, uri, poster, label))
        break  # the side-by-side already shows both
    attempts = []
    ff = record.get("first_frame", {})
    for att in ff.get("attempts", []):
        uri = storage.join(record["item_dir"], "first_frame", f"attempt_{att['attempt']}.png")
        thumb = html.jpeg_uri(read_rgb(uri)) if storage.exists(uri) else ""
        verdict = att.get("verdict") or {}
        attempts.append(
            {
                "index": att["attempt"],
                "uri": thumb,
                "verdict": verdict.get("verdict"),
                "reasons": verdict.get("reasons"),
                "caption": att.get("prompt_2") or att["caption"],
                "best": att["attempt"] == ff.get("best_attempt"),
            }
        )
    rows = [
        (k, item[k])
        for k in (
            "frames",
            "analyzer_caption",
            "wanted_caption",
            "background_psnr_db",
            "background_ssim",
            "warp_error_edited",
            "warp_error_original",
            "attempts",
            "first_attempt_passed",
            "passed",
        )
    ]
    rows.append(("time per stage (s)", json.dumps(item["timings_s"])))
    return {
        "heading": f"{record['video_id']} — {record['instruction']}",
        "metrics": rows,
        "players": "".join(players),
        "attempts": attempts,
    }


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
    report.settings, report.settings_key = output_settings(config), settings_key(config)
    records = [r for r in EditLayout(edit_dir).records() if r.get("status") == "ok"]
    report.inputs = len(records)
    line, smoke = model_set_line(records)
    report.set_models(edits_model_set(records))
    items, report_items = evaluate_all(records, config, report)
    report.done = len(items)
    agg = aggregate(items)
    flat = flat_metrics(agg)
    report.details = {"model_set_line": line, "edit_dir": edit_dir, **agg, "items": items}
    summary = report.write()
    # summary.md's first line must say which model set made the edits.
    storage.write_text(
        storage.join(output_dir, reports.SUMMARY_MD), f"{line}\n\n{report.markdown(summary)}"
    )
    storage.write_text(storage.join(output_dir, "metrics.json"), json.dumps(flat, indent=2))
    write_html(output_dir, edit_dir, line, smoke, items, report_items, agg, flat)
    log.info("evaluated %d edits (%d failed) -> %s", len(items), len(report.failures), output_dir)
    return StageResult(output_dir, summary, {"metrics": flat})


def evaluate_all(
    records: list[dict], config: EvaluateConfig, report: StageReport
) -> tuple[list[dict], list[dict]]:
    """(metrics, report section) per edit; one unreadable video never stops the rest."""
    items, report_items = [], []
    for record in tqdm(records, desc="evaluate", unit="video"):
        try:
            with report.phase("measure"):
                item = evaluate_item(record, config)
            with report.phase("report"):
                report_items.append(_report_item(record, item, config))
            items.append(item)
        except Exception as exc:  # noqa: BLE001 - one unreadable video never stops the rest
            log.warning("evaluating %s failed: %s", record.get("video_id"), exc)
            report.fail(
                f"{record.get('video_id')}/{record.get('instruction_slug')}",
                f"{type(exc).__name__}: {exc}",
            )
    return items, report_items


def write_html(
    output_dir: str,
    edit_dir: str,
    line: str,
    smoke: bool,
    items: list[dict],
    report_items: list[dict],
    agg: dict,
    flat: dict[str, float],
) -> None:
    """report.html: the overview, four plots and one section per edit."""
    labels = [f"{i['video_id'][:14]}/{i['instruction'][5:]}" for i in items]
    plots = [
        html.bar_chart("background PSNR (dB)", labels, [i["background_psnr_db"] for i in items]),
        html.bar_chart(
            "warp error ratio (edited/original)", labels, [i["warp_error_ratio"] for i in items]
        ),
        html.bar_chart("attempts", labels, [float(i["attempts"]) for i in items]),
        html.bar_chart(
            "mean time per stage (s)",
            list(agg["time_per_stage_s"]),
            list(agg["time_per_stage_s"].values()),
            " s",
        ),
    ]
    page = html.render_report(
        f"lanepaint edit report — {edit_dir}", line, smoke, list(flat.items()), plots, report_items
    )
    storage.write_text(storage.join(output_dir, "report.html"), page)


# --- CLI ------------------------------------------------------------------------------


def register(subparsers) -> None:
    register_stage(
        subparsers,
        STAGE,
        "judge and objective metrics of edited videos, with an HTML report",
        __doc__,
        EvaluateConfig,
        _add_io,
        _run,
    )


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
