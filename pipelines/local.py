"""Run a pipeline on this machine with the KFP local runner (`make run-local`).

Components run as subprocesses in the current environment (the stage images are ignored
locally); resource and kfp-kubernetes settings are ignored with a warning, as documented
by kfp.local.
"""

from __future__ import annotations

import argparse
import builtins
import logging
import sys
import tempfile
from pathlib import Path

import yaml
from kfp import components, local

from pipelines.compile import PIPELINES, compile_to


def _drop_retries(node) -> None:
    if isinstance(node, dict):
        node.pop("retryPolicy", None)
        for value in node.values():
            _drop_retries(value)
    elif isinstance(node, list):
        for value in node:
            _drop_retries(value)


def run_local(name: str, params: dict, pipeline_root: str | Path, retries: bool = False):
    """Run pipeline ``name`` with ``params``; returns the pipeline's outputs (if any).

    The compiled spec is what runs (as on the cluster). Task retries are dropped unless
    ``retries``: on the cluster they absorb preemption with minutes of backoff, while a
    local failure is a real error that should surface at once.
    """
    Path(pipeline_root).mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(Path(pipeline_root).resolve()),
        raise_on_error=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = compile_to(name, Path(tmp) / f"{name}.yaml")
        if not retries:
            docs = list(yaml.safe_load_all(path.read_text()))
            _drop_retries(docs[0])
            path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        pipeline = components.load_component_from_file(str(path))
    # kfp.local 2.17 indents output by swapping builtins.print per task; tasks of a
    # ParallelFor run on threads, so the swaps can interleave and leave print indented for
    # the rest of the process. Put the real one back whatever happened.
    real_print = builtins.print
    try:
        return pipeline(**params)
    finally:
        builtins.print = real_print


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", choices=sorted(PIPELINES))
    parser.add_argument("--params", help="YAML file of pipeline arguments")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--pipeline-root", default="local-runs")
    parser.add_argument("--retries", action="store_true", help="keep the tasks' retry policies")
    args = parser.parse_args(argv)
    params = yaml.safe_load(Path(args.params).read_text()) if args.params else {}
    for item in args.param:
        key, _, value = item.partition("=")
        params[key] = yaml.safe_load(value)
    logging.basicConfig(level=logging.INFO)
    run_local(args.pipeline, params or {}, args.pipeline_root, retries=args.retries)
    print(f"pipeline {args.pipeline} finished; artifacts under {args.pipeline_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
