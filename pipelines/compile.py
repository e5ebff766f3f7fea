"""Compile every pipeline into ``pipelines/compiled/<name>.yaml``; ``--check`` fails on drift.

The compiled YAML is committed so that users and CI submit exactly what was reviewed;
compiling is deterministic, so any difference means the YAML is stale.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
import tempfile
from pathlib import Path

from kfp import compiler

COMPILED = Path(__file__).with_name("compiled")

# pipeline name -> "module:function"
PIPELINES = {
    "filter-dataset": "pipelines.filter:filter_pipeline",
    "dataset-build": "pipelines.dataset_build:dataset_build_pipeline",
    "end-to-end": "pipelines.end_to_end:end_to_end_pipeline",
    "edit": "pipelines.edit:edit_pipeline",
    "train": "pipelines.train:train_pipeline",
}


def load(name: str):
    module, func = PIPELINES[name].split(":")
    return getattr(importlib.import_module(module), func)


def compile_to(name: str, path: Path) -> Path:
    compiler.Compiler().compile(load(name), str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if compiled YAML is stale")
    parser.add_argument("names", nargs="*", default=list(PIPELINES))
    args = parser.parse_args(argv)
    stale = []
    for name in args.names:
        target = COMPILED / f"{name}.yaml"
        if not args.check:
            COMPILED.mkdir(exist_ok=True)
            compile_to(name, target)
            print(f"compiled {target}")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            fresh = compile_to(name, Path(tmp) / "p.yaml").read_text()
        old = target.read_text() if target.exists() else ""
        if fresh != old:
            stale.append(name)
            diff = difflib.unified_diff(
                old.splitlines(), fresh.splitlines(), str(target), "fresh", lineterm="", n=1
            )
            print("\n".join(list(diff)[:40]))
    if stale:
        print(f"stale compiled pipelines: {', '.join(stale)}; run `make compile`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
