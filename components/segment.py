"""KFP component: segment (SAM2.1 road masks for videos, in the VideoPainter layout)."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Metrics, Output

from components.settings import image_for
from lanepaint.kit.settings import component_doc
from lanepaint.stages.segment import SegmentConfig


@dsl.component(base_image=image_for("segment"), install_kfp_package=False)
@component_doc(
    SegmentConfig,
    "Road masks for videos (files or folders, or a list file); the output artifact is a "
    "pointer to the VideoPainter root, which lives at ``output_dir`` (default: beside the "
    "artifact, run-scoped) because the media are too large to copy through the launcher.",
    extra={
        "videos": "video files or folders/prefixes (paths, gs:// URIs or upstream pointers)",
        "video_list": "a file with one video URI a line (# comments), added to videos",
        "output_dir": "VideoPainter root to write; empty = beside the artifact, run-scoped",
        "model_root": "model root (path or gs://); needed by the sam2 segmenter",
    },
)
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
    points: str = (
        "0.45,0.68;0.5,0.68;0.55,0.68;0.4,0.75;0.5,0.75;0.6,0.75;0.35,0.85;0.5,0.85;0.65,0.85"
    ),
    dilate: int = 4,
    min_component: float = 0.002,
    max_hole: float = 0.003,
    png_masks: bool = False,
    overlay: bool = False,
    max_side: int = 1920,
    crf: int = 18,
    min_side: int = 16,
    device: str = "auto",
    vos: bool = False,
    compile_tracking: str = "",
    encoder_batch: int = 8,
    workers: int = 4,
    overwrite: bool = False,
):
    from lanepaint.io import artifacts
    from lanepaint.kit.settings import from_params
    from lanepaint.segment.inputs import read_video_list
    from lanepaint.stages.segment import SegmentConfig, segment_videos

    config = from_params(SegmentConfig, locals())
    inputs = [str(v) for v in videos] + (read_video_list(video_list) if video_list else [])
    if not inputs:
        raise ValueError("no input videos: give videos and/or video_list")
    out = output_dir or layout.uri.rstrip("/") + "_media"
    sources = [artifacts.resolve_pointer(v) for v in inputs]
    result = segment_videos(sources, out, model_root, config)
    artifacts.publish_stage(result, layout, metrics, report, "videopainter-layout")
