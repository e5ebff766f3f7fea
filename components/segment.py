"""KFP component: segment (SAM2.1 road masks for videos, in the VideoPainter layout)."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Metrics, Output

from components.settings import image_for


@dsl.component(base_image=image_for("segment"), install_kfp_package=False)
def segment(
    videos: list,
    layout: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[Markdown],
    video_list: str = "",
    output_dir: str = "",
    model_root: str = "",
    segmenter: str = "sam2",
    max_frames: int = 150,
    fps: float = 8.0,
    points: str = "",
    dilate: int = 4,
    min_component: float = 0.002,
    max_hole: float = 0.003,
    png_masks: bool = False,
    overlay: bool = False,
    max_side: int = 1920,
):
    """Road masks for videos (files or folders, or a list file); the output artifact is a
    pointer to the VideoPainter root, which lives at ``output_dir`` (default: beside the
    artifact, run-scoped) because the media are too large to copy through the launcher."""
    from lanepaint.io import artifacts, storage
    from lanepaint.segment.prompts import DEFAULT_POINTS, parse_points
    from lanepaint.stages.segment import SegmentConfig, read_video_list, segment_videos

    config = SegmentConfig(
        segmenter=segmenter,
        max_frames=max_frames if max_frames > 0 else None,
        fps=fps if fps > 0 else None,
        points=parse_points(points) if points.strip() else DEFAULT_POINTS,
        dilate_px=dilate,
        min_component=min_component,
        max_hole=max_hole,
        png_masks=png_masks,
        overlay=overlay,
        max_side=max_side,
    )
    inputs = [str(v) for v in videos] + (read_video_list(video_list) if video_list else [])
    if not inputs:
        raise ValueError("no input videos: give videos and/or video_list")
    out = output_dir or layout.uri.rstrip("/") + "_media"
    result = segment_videos(
        [artifacts.resolve_pointer(v) for v in inputs], out, model_root or None, config
    )
    s = result.summary
    artifacts.write_pointer(
        layout.path,
        result.output_dir,
        "videopainter-layout",
        videos=s["videos_in_meta"],
        model_set=s["model_set"],
    )
    layout.metadata.update(
        {"uri": result.output_dir, "videos": s["videos_in_meta"], "model_set": s["model_set"]}
    )
    for key in ("inputs", "segmented", "skipped_complete", "failed", "no_road"):
        metrics.log_metric(key, s[key])
    if s["frames_per_second"] is not None:
        metrics.log_metric("frames_per_second", s["frames_per_second"])
    with open(report.path, "w") as f:
        f.write(storage.read_text(storage.join(result.output_dir, "summary.md")))
