"""`make demo`: build inputs on this machine and run the main pipeline with kfp.local.

A fresh clone has no weights and no ../shared data, so the demo makes its own input
(synthetic road scenes with exact masks and labels) and prints where the outputs are.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from lanepaint.cli import main as lanepaint_cli
from pipelines.local import run_local


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-out", help="folder for inputs and outputs")
    parser.add_argument("--frames", type=int, default=48, help="synthetic dataset size")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    raw = out / "datasets" / "synthetic"
    if not (raw / "train.csv").exists():
        lanepaint_cli(["synth", "dataset", str(raw), "--n", str(args.frames)])
    params = {
        "input_dir": str(raw),
        "count": "single",
        "color": "white",
        "require_clear_road": True,
        "sort_by": "prompt",
    }
    run_local("filter-dataset", params, out / "pipeline-root")
    filtered = Path(f"{raw}__single_white_any_clear")
    summary = json.loads((filtered / "summary.json").read_text())
    print()
    print(f"demo finished in {time.time() - started:.0f} s")
    print(f"  input dataset:     {raw}")
    print(f"  filtered dataset:  {filtered}  ({summary['kept']} of {summary['input_rows']} rows)")
    print(f"  report:            {filtered / 'summary.md'}")
    print(f"  pipeline artifacts: {out / 'pipeline-root'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
