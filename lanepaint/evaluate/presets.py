"""`lanepaint compare-presets`: decide on a speed preset with real weights, in one command.

Random weights (bench.presets) say how long a preset takes and how far it moves the numbers,
not whether the edits still look right. This edits the same videos once per preset, each into
its own folder (``<output>/<preset>``, a preset being part of the edit's settings key), runs
the evaluate stage on each, and writes ``comparison.md`` / ``comparison.json``: per preset the
seconds per edit and every metric of evaluate's summary beside exact's. Reruns resume: edits
and evaluations already done with the same settings are skipped.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from lanepaint.io import storage
from lanepaint.models.presets import PRESETS, check_supported

STAGE = "compare-presets"
TIMINGS = ("first_frame", "propagate", "total")


def folder(preset: str) -> str:
    """A preset's folder name (``fp8+cache`` -> ``fp8_cache``)."""
    return preset.replace("+", "_")


def compare_presets(
    data_dir: str,
    output_dir: str,
    model_root: str,
    names: list[str],
    config=None,
    lora: str = "",
) -> dict:
    """Edit and evaluate once per preset (see the module doc); returns the comparison."""
    from lanepaint.kit import guard_output
    from lanepaint.stages.edit import EditConfig, edit_videos
    from lanepaint.stages.evaluate import evaluate

    for name in names:
        check_supported(name)  # every preset is runnable here, before anything loads
    config = config or EditConfig()
    rows: dict[str, dict] = {}
    with guard_output(STAGE, output_dir, inputs=[data_dir, model_root, lora]):
        for name in names:
            edits = storage.join(output_dir, folder(name))
            edit_videos(data_dir, edits, model_root, replace(config, preset=name), lora=lora)
            result = evaluate(edits, storage.join(edits, "_evaluation"))
            rows[name] = {
                "edits": edits,
                "seconds_per_edit": _mean_timings(edits),
                "metrics": result.extra["metrics"],
            }
        comparison = {"presets": names, "rows": rows}
        storage.write_text(
            storage.join(output_dir, "comparison.json"), json.dumps(comparison, indent=2) + "\n"
        )
        storage.write_text(storage.join(output_dir, "comparison.md"), markdown(comparison))
    return comparison


def _mean_timings(edit_dir: str) -> dict[str, float]:
    from lanepaint.edit.layout import EditLayout

    records = [r for r in EditLayout(edit_dir).records() if r.get("status") == "ok"]
    out = {}
    for key in TIMINGS:
        values = [r["timings_s"][key] for r in records if key in r.get("timings_s", {})]
        if values:
            out[key] = round(sum(values) / len(values), 2)
    return out


def markdown(comparison: dict) -> str:
    """One column per preset, one row per timing and metric (exact's first)."""
    names, rows = comparison["presets"], comparison["rows"]
    keys = sorted({k for r in rows.values() for k in r["metrics"]})
    lines = [
        "# Speed presets on these videos",
        "",
        "| | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for key in TIMINGS:
        cells = [str(rows[n]["seconds_per_edit"].get(key, "-")) for n in names]
        lines.append(f"| seconds per edit: {key} | " + " | ".join(cells) + " |")
    for key in keys:
        cells = [_cell(rows[n]["metrics"].get(key)) for n in names]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _run(args: argparse.Namespace) -> int:
    from lanepaint.kit.settings import from_args
    from lanepaint.stages.edit import EditConfig

    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if unknown or not names:
        raise ValueError(f"--presets takes names from {', '.join(PRESETS)}, not {unknown}")
    config = from_args(EditConfig, args)
    comparison = compare_presets(
        args.data_dir, args.output_dir, args.model_root, names, config, args.lora
    )
    print(markdown(comparison))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """The edit settings come from EditConfig (the one place they are declared); the
    preset is what the comparison varies."""
    from lanepaint.kit.cli import guarded
    from lanepaint.kit.settings import add_arguments
    from lanepaint.stages.edit import EditConfig

    parser = subparsers.add_parser(
        STAGE,
        help=__doc__.splitlines()[0].split(": ", 1)[1],
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", required=True, help="VideoPainter layout (from segment)")
    parser.add_argument("--output-dir", required=True, help="one folder per preset goes here")
    parser.add_argument("--model-root", required=True, help="model root (path or gs://)")
    parser.add_argument("--lora", default="", help="FluxFill LoRA folder (optional)")
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets")
    add_arguments(parser, EditConfig, exclude=("preset",))
    parser.set_defaults(func=lambda args: guarded(_run, args))
