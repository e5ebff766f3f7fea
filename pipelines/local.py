"""Run a pipeline on this machine with the KFP local runner (`make run-local`).

Components run as subprocesses in the current environment (the stage images are ignored
locally); resource and kfp-kubernetes settings are ignored with a warning, as documented
by kfp.local.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml
from kfp import local

from pipelines.compile import PIPELINES, load


def run_local(name: str, params: dict, pipeline_root: str | Path):
    """Run pipeline ``name`` with ``params``; returns the pipeline's outputs (if any)."""
    Path(pipeline_root).mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(Path(pipeline_root).resolve()),
        raise_on_error=True,
    )
    return load(name)(**params)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", choices=sorted(PIPELINES))
    parser.add_argument("--params", help="YAML file of pipeline arguments")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--pipeline-root", default="local-runs")
    args = parser.parse_args(argv)
    params = yaml.safe_load(Path(args.params).read_text()) if args.params else {}
    for item in args.param:
        key, _, value = item.partition("=")
        params[key] = yaml.safe_load(value)
    logging.basicConfig(level=logging.INFO)
    run_local(args.pipeline, params or {}, args.pipeline_root)
    print(f"pipeline {args.pipeline} finished; artifacts under {args.pipeline_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
