"""Road masks for single, unrelated frames (build-dataset samples frames 100 apart).

Tracking buys nothing across frames that far apart, so SAM2 runs in image mode: the same
checkpoint the segment stage uses, wrapped in sam2's image predictor, prompted with the
same positive point grid on every frame. The classical segmenter runs on each frame alone.
Both return uint8 0/1 masks (1 = road) cleaned like the segment stage's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lanepaint.segment.base import as_rgb
from lanepaint.segment.postprocess import PostprocessSettings, postprocess_mask
from lanepaint.segment.prompts import DEFAULT_POINTS, Point, to_pixels, validate_points

ImageSegmenter = Callable[[list[np.ndarray]], list[np.ndarray]]
NAMES = ("sam2", "classical")


def make_image_segmenter(
    name: str,
    model_root: str | None,
    device: str = "auto",
    points: Sequence[Point] = DEFAULT_POINTS,
    postprocess: PostprocessSettings | None = None,
    batch_size: int = 8,
) -> ImageSegmenter:
    """A function from RGB frames (any sizes) to road masks, with the model loaded once."""
    if name not in NAMES:
        raise ValueError(f"segmenter must be one of {NAMES}, got {name!r}")
    post = postprocess or PostprocessSettings()
    points = validate_points(points)
    if name == "classical":
        from lanepaint.segment.classical import ClassicalRoadSegmenter

        segmenter = ClassicalRoadSegmenter()

        def classical(frames: list[np.ndarray]) -> list[np.ndarray]:
            return [postprocess_mask(segmenter.segment([f]).masks[0], post) for f in frames]

        return classical
    if not model_root:
        raise ValueError("the sam2 segmenter needs --model-root (or use classical)")
    import torch
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from lanepaint.models.device import resolve_device
    from lanepaint.models.loaders import load_sam2_video_predictor
    from lanepaint.segment.sam2_video import autocast_context

    dev = resolve_device(device)
    model = load_sam2_video_predictor(model_root, device=dev)
    predictor = SAM2ImagePredictor(model)
    # sam2 1.1.0 hard-codes the feature sizes of a 1024-px model; the smoke set is 256 px.
    size = model.image_size
    predictor._bb_feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16,) * 2]

    def sam2(frames: list[np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        with torch.inference_mode(), autocast_context(torch.device(dev), None):
            for start in range(0, len(frames), batch_size):
                batch = [as_rgb(f) for f in frames[start : start + batch_size]]
                predictor.set_image_batch(batch)
                coords = [
                    np.asarray(to_pixels(points, f.shape[1], f.shape[0]), np.float32) for f in batch
                ]
                labels = [np.ones(len(points), np.int32)] * len(batch)
                masks, _, _ = predictor.predict_batch(coords, labels, multimask_output=False)
                out += [postprocess_mask(m[0] > 0, post) for m in masks]
        return out

    return sam2
