"""Stage evaluate on hand-made edit outputs, and its HTML report in a real headless browser."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lanepaint.data.synth import SceneSpec, render_clip
from lanepaint.data.vocab import LaneAttributes
from lanepaint.edit.layout import EditLayout
from lanepaint.evaluate import metrics
from lanepaint.io.video import write_video
from lanepaint.stages.evaluate import evaluate

WANT = LaneAttributes("single", "white", "solid")


def make_edit(root: Path, video_id: str, shift: int, passed_at: int | None) -> dict:
    """An 'edit' whose inside-mask pixels are brightened; record like the edit stage's."""
    spec = SceneSpec(left=WANT, right=WANT, width=160, height=96, seed=shift)
    frames, road = render_clip(spec, 9, 8.0)
    edited = frames.copy()
    inside = road > 0
    edited[inside] = np.clip(edited[inside].astype(int) + 40 + shift, 0, 255)
    layout = EditLayout(str(root / "edit"))
    slug = "single_white_solid"
    item = Path(layout.item(video_id, slug))
    (item / "first_frame").mkdir(parents=True)
    src = root / "vp" / f"{video_id}.0.mp4"
    src.parent.mkdir(parents=True, exist_ok=True)
    write_video(src, frames, 8)
    np.savez_compressed(root / "vp" / f"{video_id}.npz", arr_0=road)
    write_video(item / "edited.mp4", edited, 8)
    write_video(item / "side_by_side.mp4", np.concatenate([frames, edited], axis=2), 8)
    attempts = []
    n = 3 if passed_at is None else passed_at + 1
    for k in range(n):
        Image.fromarray(edited[0]).save(item / "first_frame" / f"attempt_{k}.png")
        verdict = "PASS" if k == passed_at else "FAIL"
        attempts.append(
            {
                "attempt": k,
                "caption": WANT.caption,
                "prompt_2": "",
                "seed": k,
                "verdict": {
                    "verdict": verdict,
                    "reasons": [f"r{k}"],
                    "revised_caption": None,
                    "parsed": True,
                },
                "analyzer_caption": WANT.caption,
                "analyzer_matches": 3,
            }
        )
    record = {
        "video_id": video_id,
        "instruction": "lane single white solid",
        "instruction_slug": slug,
        "attributes": WANT.as_dict(),
        "status": "ok",
        "model_set": "smoke",
        "model_set_label": "smoke (random tiny weights)",
        "source_video": str(src),
        "mask_uri": str(root / "vp" / f"{video_id}.npz"),
        "item_dir": str(item),
        "edited": str(item / "edited.mp4"),
        "side_by_side": str(item / "side_by_side.mp4"),
        "first_frame": {
            "attempts": attempts,
            "best_attempt": passed_at or 0,
            "passed": passed_at is not None,
            "first_attempt_passed": passed_at == 0,
        },
        "timings_s": {"first_frame": 1.0 + shift, "propagate": 2.0, "total": 3.5 + shift},
    }
    (item / "record.json").write_text(json.dumps(record))
    return record


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    make_edit(root, "vid_a", 0, passed_at=0)
    make_edit(root, "vid_b", 5, passed_at=2)
    make_edit(root, "vid_c", 9, passed_at=None)
    broken = make_edit(root, "vid_d", 1, passed_at=0)
    Path(broken["edited"]).write_bytes(b"broken")
    result = evaluate(str(root / "edit"), str(root / "out"))
    return root / "out", result


def test_aggregates(report):
    out, result = report
    s = result.summary["details"]
    assert result.summary["done"] == s["videos"] == 3 and result.summary["failed"] == 1
    assert result.summary["inputs"] == 4 and result.summary["model_set"] == "smoke"
    assert s["first_attempt_pass_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert s["success_rate"] == pytest.approx(2 / 3, abs=1e-3)
    assert s["mean_attempts"] == pytest.approx((1 + 3 + 3) / 3, abs=1e-3)
    assert s["background_psnr_db"] > 30  # only the mask was changed
    assert s["time_per_stage_s"]["propagate"] == 2.0
    assert (
        (out / "summary.md").read_text().splitlines()[0].startswith("Made with the SMOKE model set")
    )
    flat = json.loads((out / "metrics.json").read_text())
    assert all(isinstance(v, float) for v in flat.values())
    assert flat == result.extra["metrics"] and flat["lane_attribute_accuracy.count"] == 1.0
    assert "vid_d" in (out / "failures.jsonl").read_text()


def test_cli(report, tmp_path, capsys):
    from lanepaint.cli import main

    out, _ = report
    argv = ["evaluate", "--edit-dir", str(out.parent / "edit"), "--output-dir", str(tmp_path)]
    assert main([*argv, "--max-frames", "3", "--embed-limit-mb", "0"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Made with the SMOKE model set") and "evaluated 3 edits" in printed
    assert json.loads((tmp_path / "summary.json").read_text())["settings"]["max_frames"] == 3
    assert main([*argv, "--max-frames", "-1"]) == 2  # a user error: one line, exit 2


def test_metrics_respond_to_damage():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    masks = np.zeros((4, 32, 32), np.uint8)
    masks[:, 16:] = 1
    same = metrics.background_preservation(a, a, masks)
    assert same["background_psnr_db"] == 100.0 and same["background_ssim"] == pytest.approx(1)
    damaged = a.copy()
    damaged[:, :8] = 0
    worse = metrics.background_preservation(a, damaged, masks)
    assert worse["background_psnr_db"] < 20 and worse["background_ssim"] < 0.9
    flicker = a.copy()
    flicker[1::2, 16:] = 255 - flicker[1::2, 16:]
    assert metrics.warp_error(flicker, masks) > metrics.warp_error(a[[0, 0, 0, 0]], masks)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (make install)")
def test_report_in_headless_chromium(report, tmp_path):
    out, _ = report
    page = out / "report.html"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    shot = tmp_path / "report.png"
    run = subprocess.run(
        [CHROMIUM, *flags, "--window-size=1200,2400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), run.stderr[-2000:]
    console_errors = [
        line
        for line in run.stderr.splitlines()
        if "CONSOLE" in line and ("ERROR" in line or "Uncaught" in line)
    ]
    assert not console_errors, console_errors
    img = np.asarray(Image.open(shot).convert("RGB"))
    # The page is not blank: plots (blue bars) and video posters (dark road) are painted.
    blue = (img[..., 2] > 150) & (img[..., 0] < 100) & (img[..., 1] > 90) & (img[..., 1] < 150)
    assert blue.sum() > 2000, "no plot bars rendered"
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert dom.count("<video") == 3 and dom.count("<svg") == 4
    assert "Made with the SMOKE model set" in dom.split("<h1>")[0]


def test_rerun_over_the_same_edits_is_skipped(tmp_path):
    """A rerun measures nothing again; a changed edit record is measured anew."""
    make_edit(tmp_path, "vid_a", 0, passed_at=0)
    edit_dir = tmp_path / "edit"
    first = evaluate(str(edit_dir), str(tmp_path / "eval"))
    again = evaluate(str(edit_dir), str(tmp_path / "eval"))
    assert first.summary["done"] > 0
    assert again.skipped and again.summary["skipped_done"] == first.summary["done"]
    assert again.extra["metrics"] == first.extra["metrics"]
    record = next(edit_dir.rglob("record.json"))
    content = json.loads(record.read_text())
    record.write_text(json.dumps({**content, "finished_at": "2030-01-01T00:00:00+00:00"}))
    third = evaluate(str(edit_dir), str(tmp_path / "eval"))
    assert third.summary["done"] == first.summary["done"] and not third.skipped


def test_sharpness_says_how_soft_the_repainted_region_is():
    """An edit whose region is the source blurred (as an upsampled view is) is softer than
    the source there; an edit that keeps the region's detail is not."""
    import cv2

    rng = np.random.default_rng(2)
    frames = rng.integers(0, 255, (3, 96, 160, 3), dtype=np.uint8)
    masks = np.zeros((3, 96, 160), np.uint8)
    masks[:, 40:, 30:130] = 1
    same = metrics.sharpness(frames, frames, masks)
    assert same["softness"] == pytest.approx(1.0)
    assert same["sharpness_ratio_edited"] == same["sharpness_ratio_original"]
    soft = frames.copy()
    for t in range(3):  # the region down by 2.67 and back up, as 1080p through a 405-row view
        small = cv2.resize(frames[t], (60, 36), interpolation=cv2.INTER_AREA)
        up = cv2.resize(small, (160, 96), interpolation=cv2.INTER_LANCZOS4)
        soft[t][masks[t] > 0] = up[masks[t] > 0]
    blurred = metrics.sharpness(frames, soft, masks)
    assert blurred["softness"] < 0.5 and blurred["sharpness_ratio_edited"] < 0.5
    assert metrics.sharpness(frames, frames, np.zeros_like(masks))["softness"] is None
