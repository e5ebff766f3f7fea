"""`make demo`: the end-to-end pipeline on this machine with kfp.local, from nothing.

A fresh clone has no weights and no ../shared data, so the demo builds the smoke model set
(tiny random-weight models of the real architectures) unless ``--model-root`` names real
weights, writes synthetic driving clips (chunked like the real source, with exact road
masks and lane labels), runs dataset-build → filter-dataset → train-lora → segment → edit →
evaluate, and prints where the report and the edited videos are.

On the smoke set the dataset and the road masks come from the weights-free classical
segmenter and the lane analyzer (``segmenter: classical``, ``captioner: analyzer``): the
smoke SAM2 runs the real code on random weights, and its masks are a random pattern that
fills most of the frame, not the road (docs/models.md); the smoke VLM would caption noise.
FluxFill, the judge and CogVideoX still run on random weights, so the edited videos prove
the wiring, not quality. With ``--model-root`` SAM2 and the VLM are used. Every output says
which models made it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from pipelines.local import run_local


def prepare_inputs(out: Path, model_root: str | None) -> tuple[str, Path, list[str]]:
    from lanepaint.data.synth import write_chunks
    from lanepaint.models.smoke import build_smoke

    if model_root is None:
        smoke = out / "models-smoke"
        if not (smoke / "SMOKE.json").exists():
            build_smoke(smoke, overwrite=True)
        model_root = str(smoke)
    source = out / "source"
    if not source.exists():
        write_chunks(
            source, chunks=2, per_chunk=3, frames=12, fps=8.0, width=320, height=192, seed=1
        )
    clips = out / "clips"
    if not clips.exists():
        write_chunks(
            clips, chunks=1, per_chunk=2, frames=12, fps=8.0, width=320, height=192, seed=2
        )
    videos = sorted(str(p) for p in clips.rglob("*.mp4"))
    return model_root, source, videos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-out", help="folder for inputs and outputs")
    parser.add_argument(
        "--model-root",
        default=os.environ.get("LANEPAINT_MODEL_ROOT") or None,
        help="real weights (default: $LANEPAINT_MODEL_ROOT, else the smoke set)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    model_root, source, videos = prepare_inputs(out, args.model_root)
    smoke = args.model_root is None
    params = {
        "source": str(source),
        "videos": videos,
        "output_root": str(out / "datasets"),
        "output_dir": str(out / "datasets" / "demo"),
        "model_root": model_root,
        "instruction": "lane single white solid || lane double yellow solid",
        "num_shards": 2,
        "frame_numbers": "0,5,10",
        "segmenter": "classical" if smoke else "sam2",
        "captioner": "analyzer" if smoke else "vlm",
        "require_clear_road": True,
        "train_rank": 4 if smoke else 128,
        "train_max_train_steps": 6 if smoke else 1000,
        "train_resolution": 64 if smoke else 1024,
        "edit_dir": str(out / "edits"),
        "segment_max_frames": 12,
        "max_attempts": 2,
        "steps": 4 if smoke else 50,
        "first_frame_steps": 4 if smoke else 50,
    }
    run_local("end-to-end", params, out / "pipeline-root")
    report = out / "edits" / "_evaluation" / "report.html"
    summary = json.loads((out / "edits" / "_evaluation" / "summary.json").read_text())
    edited = sorted((out / "edits").rglob("edited.mp4"))
    print()
    print(summary["details"]["model_set_line"])
    print(f"demo finished in {time.time() - started:.0f} s")
    print(f"  dataset:        {out / 'datasets' / 'demo'} (train.csv, stats.md)")
    print(f"  report:         {report}")
    print(f"  summary:        {report.with_name('summary.md')}")
    for path in edited:
        print(f"  edited video:   {path}")
    print(f"  pipeline files: {out / 'pipeline-root'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
