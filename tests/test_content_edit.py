"""Content checks of stage edit on the smoke models: what the written videos and first frames
hold, not only that they exist.

* edited.mp4 differs from the source inside the repainted mask and equals it outside
  (within H.264 coding error);
* side_by_side.mp4 is source | edited;
* a LoRA given with ``edit --lora DIR`` changes FluxFill's first frame, and
  ``--lora-scale 0`` paints exactly what no LoRA paints.

Thresholds are mean absolute differences in 8-bit levels (0-255), averaged over RGB;
measured values on the smoke set are in the comments (the limits leave a wide margin).
"""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_edit import FAST, add_video

from lanepaint.cli import main as cli
from lanepaint.io.images import read_rgb
from lanepaint.io.video import read_frames
from lanepaint.stages.edit import edit_videos, load_models

pytestmark = pytest.mark.slow  # the smoke set is built once per module (~6 s)

CONFIG = replace(FAST, instructions="lane single white solid", judge=False)
SLUG = "single_white_solid"
FRAMES = 5

# Mean |edited - source| per pixel: inside the repainted mask the smoke models paint noise
# (measured ~50 overall, >= 45 per frame); outside, pixels are pasted back from the source
# and only coding error is left (measured ~2.1 overall, <= 2.7 per frame; a mask edge cuts
# through 2x2 chroma blocks of yuv420p, hence more than a plain re-encode).
CHANGED_MIN = 20.0
KEPT_MAX = 5.0
# The same video re-encoded (measured ~1.2 for the left half, ~2.4 for the right one).
SAME_MAX = 6.0
# First frame with the LoRA below vs without, inside the repainted mask (measured ~9.8; an
# unloaded or ignored LoRA gives exactly 0) and outside it (measured ~0.004: the feathered
# rim's Gaussian tail).
LORA_CHANGED_MIN = 3.0
LORA_KEPT_MAX = 0.5


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    from lanepaint.models.smoke import build_smoke

    return str(build_smoke(tmp_path_factory.mktemp("smoke") / "root"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vp")
    add_video(root, "clip", FRAMES)
    return root


@pytest.fixture(scope="module")
def edited(smoke_root, data, tmp_path_factory) -> dict:
    """One edit of the clip; its record, and the decoded edited/source/side-by-side videos
    and repainted masks."""
    out = tmp_path_factory.mktemp("edit")
    models = load_models(smoke_root, CONFIG)
    edit_videos(str(data), str(out), smoke_root, CONFIG, models=models)
    record = json.loads((out / "clip" / SLUG / "record.json").read_text())
    assert record["status"] == "ok"
    with np.load(record["mask_uri"]) as npz:
        masks = npz["arr_0"] > 0
    return {
        "record": record,
        "edited": read_frames(record["edited"]).astype(np.float64),
        "source": read_frames(record["source_video"]).astype(np.float64),
        "side": read_frames(record["side_by_side"]).astype(np.float64),
        "masks": masks,
    }


def _source(data: Path) -> tuple[np.ndarray, np.ndarray]:
    """The clip and its road masks from the VideoPainter layout, at their own size
    (independent of what the stage wrote)."""
    from lanepaint.data.videopainter import VideoPainterLayout

    layout = VideoPainterLayout(str(data))
    (record,) = layout.read_meta()
    frames = read_frames(layout.video_for(record))
    return frames.astype(np.float64), layout.read_masks(record.mask_id) > 0


def _mad(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """Mean absolute difference (RGB averaged) over the pixels in ``where`` ([T, H, W])."""
    diff = np.abs(a - b).mean(axis=-1)
    return float(diff.mean() if where is None else diff[where].mean())


def test_edited_video_changes_the_mask_and_keeps_the_rest(edited, data):
    video, source, masks = edited["edited"], edited["source"], edited["masks"]
    assert video.shape == source.shape and masks.shape == video.shape[:3]
    assert len(video) == FRAMES
    # The record's source is the layout's own clip (96x64, while the smoke models work at
    # 48x32): the edit has its size, and its mask holds at least the road.
    assert edited["record"]["source_video"].endswith("clip.0.mp4")
    clip, road = _source(data)
    assert video.shape == clip.shape and np.array_equal(source, clip)
    assert road.any() and not (road & ~masks).any()
    for k in range(FRAMES):
        inside, outside = masks[k], ~masks[k]
        assert 0.2 < inside.mean() < 0.8, f"frame {k}: mask covers {inside.mean():.0%}"
        changed = _mad(video[k], source[k], inside)
        kept = _mad(video[k], source[k], outside)
        assert changed > CHANGED_MIN, f"frame {k}: the mask was not repainted ({changed:.2f})"
        assert kept < KEPT_MAX, f"frame {k}: the background changed ({kept:.2f})"


def test_side_by_side_is_source_then_edited(edited):
    side, video, source, masks = edited["side"], edited["edited"], edited["source"], edited["masks"]
    width = video.shape[2]
    assert side.shape == (*video.shape[:2], 2 * width, 3)
    left, right = side[:, :, :width], side[:, :, width:]
    assert _mad(left, source) < SAME_MAX
    assert _mad(right, video) < SAME_MAX
    # Not both halves from the source: the right half is repainted inside the mask.
    assert _mad(right, source, masks) > CHANGED_MIN
    assert _mad(left, source, masks) < SAME_MAX


# --------------------------------------------------------------------------- LoRA


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory) -> str:
    """A LoRA on the smoke FluxFill transformer, written like train-lora writes it, with
    random (non-zero) up-projections so that it changes what FluxFill paints."""
    import torch

    from lanepaint.models.smoke import tiny_flux_fill
    from lanepaint.training.config import TrainConfig
    from lanepaint.training.lora import add_lora, save_lora

    transformer = tiny_flux_fill(seed=0).transformer
    add_lora(transformer, TrainConfig(rank=4, alpha=8.0, mixed_precision="no"))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in transformer.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.5)
    folder = tmp_path_factory.mktemp("lora")
    save_lora(folder, transformer)
    return str(folder)


def _edit_first_frame(smoke_root, data, out: Path, *extra: str) -> tuple[np.ndarray, np.ndarray]:
    """``lanepaint edit`` (the CLI, which loads the models and any --lora itself) at smoke
    size on the clip's first frame; returns the chosen first frame and its repainted mask."""
    argv = [
        "edit",
        "--data-dir",
        str(data),
        "--instruction",
        "lane single white solid",
        "--output-dir",
        str(out),
        "--model-root",
        smoke_root,
        "--no-judge",
        "--first-frame-size",
        "32",
        "--first-frame-steps",
        "2",
        "--steps",
        "2",
        "--overlap",
        "1",
        "--max-frames",
        "1",
        *extra,
    ]
    assert cli(argv) == 0
    item = out / "clip" / SLUG
    record = json.loads((item / "record.json").read_text())
    assert record["first_frame"]["best_attempt"] == 0
    with np.load(record["mask_uri"]) as npz:
        mask = npz["arr_0"][0] > 0
    return read_rgb(str(item / "first_frame" / "best.png")).astype(np.float64), mask


def test_lora_changes_the_first_frame_and_scale_zero_is_no_lora(
    smoke_root, data, lora_dir, tmp_path
):
    plain, mask = _edit_first_frame(smoke_root, data, tmp_path / "plain")
    with_lora, _ = _edit_first_frame(smoke_root, data, tmp_path / "lora", "--lora", lora_dir)
    zero, _ = _edit_first_frame(
        smoke_root, data, tmp_path / "zero", "--lora", lora_dir, "--lora-scale", "0"
    )
    # After a scale-0 call the adapter is back at full strength (diffusers scales the LoRA
    # layers for one call and restores them afterwards): the same LoRA paints the same.
    again, _ = _edit_first_frame(smoke_root, data, tmp_path / "again", "--lora", lora_dir)
    assert plain.shape == with_lora.shape and mask.shape == plain.shape[:2]
    assert _mad(with_lora, plain, mask) > LORA_CHANGED_MIN
    assert _mad(with_lora, plain, ~mask) < LORA_KEPT_MAX
    assert np.array_equal(zero, plain), f"scale 0 != no LoRA by {np.abs(zero - plain).max()}"
    assert np.array_equal(again, with_lora), "the LoRA is weaker after a scale-0 call"
