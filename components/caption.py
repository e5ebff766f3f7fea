"""KFP component: caption."""

from kfp.dsl import Dataset, Markdown, Metrics, Output

from components.settings import stage_component
from lanepaint.stages.caption import CaptionConfig


@stage_component(
    "caption",
    CaptionConfig,
    "Lane attributes of road images (files or folders); the JSONL is the output artifact.",
    extra={
        "images": "image files or folders/prefixes (paths or gs:// URIs)",
        "model_root": "model root holding Qwen2.5-VL (folder or gs://)",
    },
)
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
    from lanepaint.io import storage
    from lanepaint.kit.settings import from_params
    from lanepaint.stages.caption import CaptionConfig, caption_images
    from lanepaint.vlm.caption import output_stem

    config = from_params(CaptionConfig, locals())
    out = captions.path  # the JSONL itself is the artifact; summaries sit beside it
    result = caption_images(images, out, model_root, config)
    s = result.summary
    captions.metadata.update({"uri": captions.uri, "model_set": s["model_set"]})
    for key in ("inputs", "done", "skipped_done", "failed"):
        metrics.log_metric(key, s[key])
    for key in ("captioned", "unknown_any", "disagreements"):
        metrics.log_metric(key, s["details"][key])
    folder, stem = output_stem(out)
    with open(report.path, "w") as f:
        f.write(storage.read_text(storage.join(folder, f"{stem}.summary.md")))
