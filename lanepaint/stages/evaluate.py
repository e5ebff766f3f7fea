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

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from lanepaint.data.vocab import LaneAttributes
from lanepaint.edit.layout import EditLayout
from lanepaint.evaluate import html, metrics
from lanepaint.io import reports, storage
from lanepaint.io.images import read_rgb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateConfig:
    max_frames: int = 49  # frames per video used by the pixel metrics
    embed_limit_mb: float = 8.0  # videos up to this size are embedded in the HTML


def _read_video(uri: str, max_frames: int) -> np.ndarray:
    from lanepaint.io.video import read_frames

    with storage.local_path(uri) as path:
        return read_frames(path, max_frames=max_frames)


def _read_masks(uri: str) -> np.ndarray:
    import io

    with np.load(io.BytesIO(storage.read_bytes(uri))) as data:
        return data["arr_0"]


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
            for a in ("count", "color", "pattern")
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


def evaluate(edit_dir: str, output_dir: str, config: EvaluateConfig | None = None) -> dict:
    config = config or EvaluateConfig()
    started = time.perf_counter()
    records = [r for r in EditLayout(edit_dir).records() if r.get("status") == "ok"]
    failures = reports.Failures()
    items, report_items = [], []
    for record in tqdm(records, desc="evaluate", unit="video"):
        try:
            item = evaluate_item(record, config)
            items.append(item)
            report_items.append(_report_item(record, item, config))
        except Exception as exc:  # noqa: BLE001 - one unreadable video never stops the rest
            log.warning("evaluating %s failed: %s", record.get("video_id"), exc)
            failures.add(
                f"{record.get('video_id')}/{record.get('instruction_slug')}",
                f"{type(exc).__name__}: {exc}",
            )
    line, smoke = model_set_line(records)
    agg = aggregate(items)
    summary = {
        "stage": "evaluate",
        "model_set_line": line,
        "edit_dir": edit_dir,
        "config": asdict(config),
        **agg,
        "failed": len(failures),
        "items": items,
        "eval_seconds": round(time.perf_counter() - started, 3),
        "finished_at": reports.now_iso(),
    }
    flat = flat_metrics(agg)
    reports.write_reports(output_dir, "evaluate", summary, failures)
    # summary.md's first line must say which model set made the edits.
    md = reports.render_markdown("evaluate", {k: v for k, v in summary.items() if k != "items"})
    storage.write_text(storage.join(output_dir, reports.SUMMARY_MD), f"{line}\n\n{md}")
    storage.write_text(storage.join(output_dir, "metrics.json"), json.dumps(flat, indent=2))
    overview = [(k, v) for k, v in flat.items()]
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
        f"lanepaint edit report — {edit_dir}", line, smoke, overview, plots, report_items
    )
    storage.write_text(storage.join(output_dir, "report.html"), page)
    log.info("evaluated %d edits (%d failed) -> %s", len(items), len(failures), output_dir)
    return summary


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="judge and objective metrics of edited videos, with an HTML report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--edit-dir", required=True, help="output of `lanepaint edit`")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--max-frames", type=int, default=49)
    parser.add_argument("--embed-limit-mb", type=float, default=8.0)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    summary = evaluate(
        args.edit_dir, args.output_dir, EvaluateConfig(args.max_frames, args.embed_limit_mb)
    )
    print(summary["model_set_line"])
    print(
        f"evaluated {summary['videos']} edits ({summary['failed']} failed); report: "
        f"{storage.join(args.output_dir, 'report.html')}"
    )
    return 0
