"""Objective quality of an edited video, measured without any learned model.

- background preservation: PSNR and SSIM between edited and original frames, outside the
  (dilated) edit mask; paste-back should make this near-lossless (video coding aside);
- temporal stability inside the mask: the mean absolute difference between each frame and
  the next one warped back by optical flow (Farneback), on the edited video and, for
  reference, on the original; flicker raises it;
- sharpness of the repainted region: the mean squared Laplacian inside the mask over the
  same in a ring of background around it, on the edited video and, for reference, on the
  original (roads are smoother than their surroundings); their quotient, the softness, says
  how much detail the repainted region lost (1 = as sharp as the source there; a region
  upsampled from the model's view is below 1);
- lane attributes inside the mask: the weights-free lane analyzer over the edited frames,
  compared attribute by attribute with the instruction.
"""

from __future__ import annotations

import cv2
import numpy as np

from lanepaint.data.vocab import LaneAttributes


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float | None:
    """PSNR (dB) over the pixels selected by ``where``; None when none are selected."""
    if not where.any():
        return None
    diff = a[where].astype(np.float64) - b[where].astype(np.float64)
    mse = float(np.mean(diff**2))
    return 100.0 if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of two RGB frames (gray, Gaussian window σ=1.5, the usual constants)."""
    x, y = _gray(a), _gray(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(img):
        return cv2.GaussianBlur(img, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))


def background_preservation(original: np.ndarray, edited: np.ndarray, masks: np.ndarray) -> dict:
    """Mean PSNR/SSIM outside the masks over frames [T,H,W,3] (masks [T,H,W], 1 = edit)."""
    psnrs, ssims = [], []
    for o, e, m in zip(original, edited, masks, strict=False):
        keep = m == 0
        value = psnr(o, e, keep)
        if value is None:
            continue
        psnrs.append(value)
        ssims.append(float(ssim_map(o, e)[keep].mean()))
    return {
        "background_psnr_db": round(float(np.mean(psnrs)), 3) if psnrs else None,
        "background_ssim": round(float(np.mean(ssims)), 5) if ssims else None,
        "background_frames": len(psnrs),
    }


def warp_error(frames: np.ndarray, masks: np.ndarray) -> float | None:
    """Mean |frame_t − warp(frame_{t+1} → t)| inside the masks (0–255 scale)."""
    errors = []
    for t in range(len(frames) - 1):
        a, b = _gray(frames[t]), _gray(frames[t + 1])
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        h, w = a.shape
        grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        warped = cv2.remap(
            b,
            grid_x + flow[..., 0],
            grid_y + flow[..., 1],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        region = masks[t] > 0
        if region.any():
            errors.append(float(np.abs(a - warped)[region].mean()))
    return round(float(np.mean(errors)), 4) if errors else None


def _edited_vs_original(measure, original, edited, masks, names: tuple[str, str, str]) -> dict:
    """``measure`` of the edit and of the original, and their quotient (None where either
    is missing or the original's is 0)."""
    edited_value = measure(edited, masks)
    original_value = measure(original, masks)
    quotient = None
    if edited_value is not None and original_value:
        quotient = round(edited_value / original_value, 4)
    return dict(zip(names, (edited_value, original_value, quotient), strict=True))


def temporal_stability(original: np.ndarray, edited: np.ndarray, masks: np.ndarray) -> dict:
    names = ("warp_error_edited", "warp_error_original", "warp_error_ratio")
    return _edited_vs_original(warp_error, original, edited, masks, names)


RING_ROWS = 16  # width of the background ring, pixels at 480 rows


def _detail(frame: np.ndarray) -> np.ndarray:
    """Squared Laplacian of the gray frame: local high-frequency energy."""
    return cv2.Laplacian(_gray(frame), cv2.CV_32F) ** 2


def sharpness_ratio(frames: np.ndarray, masks: np.ndarray) -> float | None:
    """Mean squared Laplacian inside the masks (their edge left out) over the same in a
    ring of background around them (``RING_ROWS`` at 480 rows, scaled with the height)."""
    from lanepaint.data.masks import dilate

    width = max(2, round(RING_ROWS * frames.shape[1] / 480))
    inner_sum = ring_sum = 0.0
    inner_n = ring_n = 0
    for frame, mask in zip(frames, masks, strict=False):
        binary = (mask > 0).astype(np.uint8)
        inner = cv2.erode(binary, np.ones((3, 3), np.uint8)) > 0
        ring = (dilate(binary, width) > 0) & ~(dilate(binary, 1) > 0)
        if not inner.any() or not ring.any():
            continue
        detail = _detail(frame)
        inner_sum, inner_n = inner_sum + float(detail[inner].sum()), inner_n + int(inner.sum())
        ring_sum, ring_n = ring_sum + float(detail[ring].sum()), ring_n + int(ring.sum())
    if not inner_n or not ring_n or ring_sum == 0:
        return None
    return round((inner_sum / inner_n) / (ring_sum / ring_n), 4)


def sharpness(original: np.ndarray, edited: np.ndarray, masks: np.ndarray) -> dict:
    """How sharp the repainted region is against the background around it, in the edit and
    in the original, and their quotient (softness: 1 = as sharp as the source there)."""
    names = ("sharpness_ratio_edited", "sharpness_ratio_original", "softness")
    return _edited_vs_original(sharpness_ratio, original, edited, masks, names)


def lane_attributes(
    edited: np.ndarray, masks: np.ndarray, wanted: LaneAttributes, max_frames: int = 24
) -> dict:
    """The analyzer's reading of the edited region against the instruction."""
    from lanepaint.lanes.analyze import analyze_video, trusted_attributes

    analysis = analyze_video(edited, max_frames=max_frames, road_masks=masks)
    # Only attributes the analyzer is confident of count; an abstention (unknown or low
    # confidence) is not counted as correct, and is listed as such.
    found = trusted_attributes(analysis.as_dict())
    agreement = found.agreement(wanted)
    correct = {a: agree is True for a, agree in agreement.items()}
    return {
        "analyzer_caption": found.caption,
        "analyzer_abstained": [a for a, agree in agreement.items() if agree is None],
        "wanted_caption": wanted.caption,
        "attribute_correct": correct,
        "all_correct": all(correct.values()),
    }


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.mean(vals)), 4) if vals else None


def aggregate(items: list[dict]) -> dict:
    """The means over every edit's measures (judge rates over the judged edits only)."""
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
        "sharpness_ratio_edited": _mean([i.get("sharpness_ratio_edited") for i in items]),
        "softness": _mean([i.get("softness") for i in items]),
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
