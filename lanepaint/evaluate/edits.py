"""One finished edit, read back from its record: its measures and its report section.

The edit stage's record names the source video, the edited video, the mask and the first
frame's attempts; everything here reads those and nothing else. The source is the true
source (the layout's own video, at its size) for edits made at the source's resolution,
and ``original.mp4`` (the source at the model's size) for older edits: both are measured
at the edit's own size.
"""

from __future__ import annotations

import json

import numpy as np

from lanepaint.data.vocab import LaneAttributes
from lanepaint.evaluate import html, metrics
from lanepaint.io import storage
from lanepaint.io.images import read_rgb

#: The measures shown per edit in report.html, in this order.
REPORT_METRICS = (
    "frames",
    "analyzer_caption",
    "wanted_caption",
    "background_psnr_db",
    "background_ssim",
    "warp_error_edited",
    "warp_error_original",
    "size",
    "sharpness_ratio_edited",
    "sharpness_ratio_original",
    "softness",
    "attempts",
    "first_attempt_passed",
    "passed",
)


def read_video(uri: str, max_frames: int) -> np.ndarray:
    """The first ``max_frames`` frames (0 = all) of a local or gs:// video."""
    from lanepaint.io.video import read_frames

    with storage.local_path(uri) as path:
        return read_frames(path, max_frames=max_frames or None)


def read_masks(uri: str) -> np.ndarray:
    from lanepaint.data.masks import read_masks_npz

    return read_masks_npz(storage.read_bytes(uri), uri)


def evaluate_item(record: dict, max_frames: int) -> dict:
    """Objective and judge metrics of one edited video (over its first ``max_frames``)."""
    original = read_video(record["source_video"], max_frames)
    edited = read_video(record["edited"], max_frames)
    masks = read_masks(record["mask_uri"])
    n = min(len(original), len(edited), len(masks))
    original, edited, masks = original[:n], edited[:n], masks[:n]
    h, w = edited.shape[1:3]
    if original.shape[1:3] == (h + h % 2, w + w % 2):  # an odd source padded to even
        original = original[:, :h, :w]
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
        "size": [h, w],
        **metrics.background_preservation(original, edited, masks),
        **metrics.temporal_stability(original, edited, masks),
        **metrics.sharpness(original, edited, masks),
        **metrics.lane_attributes(edited, masks, wanted),
        "judged": judged,
        "attempts": len(attempts),
        "first_attempt_passed": bool(ff.get("first_attempt_passed")) if judged else None,
        "passed": bool(ff.get("passed")) if judged else None,
        "timings_s": record.get("timings_s", {}),
    }


def report_item(record: dict, item: dict, embed_limit_mb: float) -> dict:
    """One edit's section of report.html: its measures, a player (embedded up to
    ``embed_limit_mb``, else linked) and the first-frame attempts as thumbnails."""
    limit = int(embed_limit_mb * 1e6)
    players = []
    for key, label in (("side_by_side", "original | edited"), ("edited", "edited")):
        uri = record.get(key)
        if not uri or not storage.exists(uri):
            continue
        data = storage.read_bytes(uri)
        poster = html.jpeg_uri(read_video(uri, 1)[0], 640)
        players.append(html.video_tag(data if len(data) <= limit else None, uri, poster, label))
        break  # the side-by-side already shows both
    rows = [(k, item[k]) for k in REPORT_METRICS]
    rows.append(("time per stage (s)", json.dumps(item["timings_s"])))
    return {
        "heading": f"{record['video_id']} — {record['instruction']}",
        "metrics": rows,
        "players": "".join(players),
        "attempts": attempt_thumbnails(record),
    }


def attempt_thumbnails(record: dict) -> list[dict]:
    """The first frame's attempts: thumbnail, the judge's verdict and reasons, caption."""
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
    return attempts


def model_set_line(records: list[dict]) -> tuple[str, bool]:
    """The sentence naming the model set(s) and speed preset(s) that made the edits, and
    whether any is smoke (records written before presets existed were exact)."""
    labels = sorted({r.get("model_set_label", "unknown model set") for r in records})
    smoke = any(r.get("model_set") == "smoke" for r in records)
    prefix = "Made with the SMOKE model set" if smoke else "Made with"
    presets = sorted({r.get("speed_preset", "exact") for r in records})
    speed = f" (speed preset: {', '.join(presets)})" if presets else ""
    return f"{prefix}: {'; '.join(labels) or 'no edits found'}{speed}", smoke


def edits_model_set(records: list[dict]) -> dict:
    """The model set(s) that made the edits, for the summary's common keys."""
    sets = sorted({r["model_set"] for r in records if r.get("model_set")})
    labels = sorted({r["model_set_label"] for r in records if r.get("model_set_label")})
    return {"model_set": ", ".join(sets) or None, "model_set_label": "; ".join(labels) or None}
