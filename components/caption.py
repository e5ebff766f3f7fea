"""KFP component: caption."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Metrics, Output

from components.settings import image_for


@dsl.component(base_image=image_for("caption"), install_kfp_package=False)
def caption(
    images: list,
    model_root: str,
    captions: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[Markdown],
    vlm_size: str = "7B",
    batch_size: int = 32,
    analyzer_check: bool = True,
):
    """Lane attributes of road images (files or folders); the JSONL is the output artifact."""
    from lanepaint.io import storage
    from lanepaint.stages.caption import CaptionConfig, caption_images

    config = CaptionConfig(vlm_size=vlm_size, batch_size=batch_size, analyzer_check=analyzer_check)
    out = captions.path  # the JSONL itself is the artifact; summaries sit beside it
    summary = caption_images(images, out, model_root, config)
    captions.metadata.update({"uri": captions.uri, "model_set": summary["model_set"]})
    for key in ("images", "captioned", "failed", "unknown_any", "disagreements"):
        metrics.log_metric(key, summary[key])
    with open(report.path, "w") as f:
        f.write(storage.read_text(out + ".summary.md"))
