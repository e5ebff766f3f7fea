"""KFP component: evaluate."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Metrics, Output

from components.settings import image_for


@dsl.component(base_image=image_for("evaluate"), install_kfp_package=False)
def evaluate(
    edits: Input[Artifact],
    output_dir: str,
    metrics: Output[Metrics],
    report: Output[HTML],
    summary: Output[Markdown],
    max_frames: int = 49,
):
    """Judge and objective metrics of the edits; the HTML report shows in the KFP UI."""
    from lanepaint.io import artifacts, storage
    from lanepaint.stages.evaluate import EvaluateConfig
    from lanepaint.stages.evaluate import evaluate as run

    edit_dir = artifacts.resolve_pointer(edits.path)
    out = output_dir or storage.join(edit_dir, "_evaluation")
    result = run(edit_dir, out, EvaluateConfig(max_frames=max_frames))
    for key, value in result.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics.log_metric(key, value)
    with open(report.path, "w") as f:
        f.write(storage.read_text(storage.join(out, "report.html")))
    with open(summary.path, "w") as f:
        f.write(storage.read_text(storage.join(out, "summary.md")))
    report.metadata.update({"uri": storage.join(out, "report.html")})
