"""What the segment stage's SAM2 masks contain: not empty, not full, and exactly the masks
of the stock sam2 path on the same pixels and prompts.

The smoke SAM2 (``lanepaint.models.smoke.tiny_sam2``: random weights, its object-score head
set to "object present") gives the random mask decoder's own logits > 0, so its masks are
neither empty nor full and change with the frames and the prompts; before that head was
set, every mask was empty and any comparison held trivially.

Reference: what a sam2 user writes, with nothing of lanepaint but the clean-up the stage
applies afterwards: ``build_sam2_video_predictor`` on the model root's config and
checkpoint, ``init_state`` on a JPEG folder, ``add_new_points_or_box`` with the stage's
points (normalized x,y times width,height) on frame 0, ``propagate_in_video``, logits > 0,
``postprocess_masks`` with the run's settings. Same pixels: the stage gets the decoded
JPEGs as a lossless video (FFV1), so a difference can only come from the stage (decode,
resize, batched encoder, inference state, prompts, tracking, clean-up, npz), not a codec.
On the CPU in fp32 the two agree exactly.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from lanepaint.data.synth import SceneSpec, render_clip
from lanepaint.data.videopainter import VideoPainterLayout
from lanepaint.io.video import read_frames
from lanepaint.models.root import SAM2_CHECKPOINT, SAM2_SIDECAR, SMOKE_MARKER
from lanepaint.models.smoke import write_smoke_sam2
from lanepaint.segment.postprocess import postprocess_masks
from lanepaint.stages import segment as seg
from lanepaint.stages.segment import LoadedSegmenter, SegmentConfig, segment_videos

pytestmark = pytest.mark.filterwarnings("ignore:cannot import name '_C' from 'sam2'")

FPS = 8.0
# No clean-up (dilate 0, no components dropped, no holes filled): the masks as SAM2 gives
# them. The default clean-up fills the smoke model's fine-grained masks almost completely
# at 320x192; it is checked on the 1280x720 real clip.
RAW = {"dilate": 0, "min_component": 0.0, "max_hole": 0.0}


@pytest.fixture(scope="module")
def sam2_root(tmp_path_factory) -> Path:
    """A smoke model root holding only SAM2 (what the segment stage needs)."""
    root = tmp_path_factory.mktemp("models")
    write_smoke_sam2(root, seed=0)
    (root / SMOKE_MARKER).write_text(json.dumps({"smoke": True}))
    return root


@pytest.fixture(scope="module")
def loaded(sam2_root) -> LoadedSegmenter:
    return seg.load_segmenter(SegmentConfig(device="cpu"), str(sam2_root))


@pytest.fixture(scope="module")
def stock(sam2_root):
    """sam2's own builder on the root's files (sam2 loads the checkpoint itself)."""
    from sam2.build_sam import build_sam2_video_predictor

    sidecar = json.loads((sam2_root / SAM2_SIDECAR).read_text())
    return build_sam2_video_predictor(
        sidecar["config"],
        str(sam2_root / SAM2_CHECKPOINT),
        device="cpu",
        hydra_overrides_extra=sidecar["hydra_overrides"],
    )


def same_pixels(frames: np.ndarray, folder: Path) -> tuple[Path, Path]:
    """(JPEG folder for the stock path, lossless video of the decoded JPEGs for the stage)."""
    jpegs = folder / "jpg"
    jpegs.mkdir(parents=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(jpegs / f"{i:05d}.jpg", quality=95)
    video = folder / "clip.mkv"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("ffv1", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        for path in sorted(jpegs.glob("*.jpg")):
            rgb = np.asarray(Image.open(path).convert("RGB"))  # as sam2's loader reads it
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return jpegs, video


def stock_masks(predictor, jpegs: Path, config: SegmentConfig) -> np.ndarray:
    with torch.inference_mode():
        state = predictor.init_state(str(jpegs))
        h, w = state["video_height"], state["video_width"]
        points = np.array([[x * w, y * h] for x, y in config.points], np.float32)
        labels = np.ones(len(points), np.int32)
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=points, labels=labels)
        raw = np.zeros((state["num_frames"], h, w), bool)
        for frame_idx, obj_ids, logits in predictor.propagate_in_video(state):
            assert list(obj_ids) == [1]
            raw[frame_idx] = (logits[0, 0] > 0).numpy()
    return postprocess_masks(raw, config.postprocess)


def stage_masks(video: Path, out: Path, root: Path, loaded, config: SegmentConfig) -> np.ndarray:
    result = segment_videos([str(video)], str(out), str(root), config, loaded=loaded)
    assert (result.summary["done"], result.summary["failed"]) == (1, 0)
    assert result.summary["model_set"] == "smoke"
    layout = VideoPainterLayout(str(out))
    (record,) = layout.read_meta()
    return layout.read_masks(record.mask_id)


def check_content(masks: np.ndarray, expected: np.ndarray, frames: int) -> None:
    assert masks.dtype == np.uint8 and masks.shape == expected.shape and len(masks) == frames
    per_frame = masks.reshape(frames, -1).mean(axis=1)
    assert (per_frame > 0.05).all(), f"(nearly) empty masks: road fraction {per_frame}"
    assert (per_frame < 0.95).all(), f"(nearly) full masks: road fraction {per_frame}"
    iou = np.logical_and(masks, expected).sum() / np.logical_or(masks, expected).sum()
    mismatch = int((masks != expected).sum())
    assert mismatch == 0, f"{mismatch} pixels differ from the stock path (IoU {iou:.4f})"


def test_sam2_masks_on_a_synthetic_clip_equal_the_stock_predictor(
    tmp_path, sam2_root, loaded, stock
):
    frames, _ = render_clip(SceneSpec(width=320, height=192, seed=1), 4, FPS)
    jpegs, video = same_pixels(frames, tmp_path / "in")
    config = SegmentConfig(max_frames=4, fps=FPS, device="cpu", **RAW)
    masks = stage_masks(video, tmp_path / "out", sam2_root, loaded, config)
    expected = stock_masks(stock, jpegs, config)
    check_content(masks, expected, 4)
    # The masks follow the frames: the tracked frames differ from the prompted one.
    assert all((masks[0] != m).mean() > 0.01 for m in masks[1:])


def test_sam2_masks_on_a_real_clip_equal_the_stock_predictor(
    tmp_path, shared_data, sam2_root, loaded, stock
):
    src = shared_data / "videos" / "udacity_vd_test_video.mp4"
    frames = read_frames(src, fps=FPS, max_frames=3)
    jpegs, video = same_pixels(frames, tmp_path / "in")
    config = SegmentConfig(max_frames=3, fps=FPS, device="cpu")  # default clean-up
    masks = stage_masks(video, tmp_path / "out", sam2_root, loaded, config)
    assert masks.shape == (3, 720, 1280)
    check_content(masks, stock_masks(stock, jpegs, config), 3)
