"""KFP component: evaluate."""

from kfp.dsl import HTML, Artifact, Input, Markdown, Metrics, Output

from components.settings import stage_component
from lanepaint.stages.evaluate import EvaluateConfig


@stage_component(
    "evaluate",
    EvaluateConfig,
    "Judge and objective metrics of the edits; the HTML report shows in the KFP UI.",
    extra={
        "edits": "the edit stage's output (a pointer to its folder)",
        "output_dir": "where the report goes; empty = <edit folder>/_evaluation",
    },
)
def evaluate(
    edits: Input[Artifact],
    output_dir: str,
    metrics: Output[Metrics],
    report: Output[HTML],
    summary: Output[Markdown],
    max_frames: int = 49,
    embed_limit_mb: float = 8.0,
):
    from lanepaint.io import artifacts, storage
    from lanepaint.kit.settings import from_params
    from lanepaint.stages.evaluate import EvaluateConfig
    from lanepaint.stages.evaluate import evaluate as run

    edit_dir = artifacts.resolve_pointer(edits.path)
    out = output_dir or storage.join(edit_dir, "_evaluation")
    result = run(edit_dir, out, from_params(EvaluateConfig, locals()))
    for key in ("inputs", "done", "skipped_done", "failed"):
        metrics.log_metric(key, result.summary[key])
    for key, value in result.extra["metrics"].items():
        metrics.log_metric(key, value)
    with open(report.path, "w") as f:
        f.write(storage.read_text(storage.join(out, "report.html")))
    with open(summary.path, "w") as f:
        f.write(storage.read_text(storage.join(out, "summary.md")))
    report.metadata.update({"uri": storage.join(out, "report.html")})
