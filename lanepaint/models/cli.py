"""``lanepaint models build-smoke DIR`` and ``lanepaint models check ROOT``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="build the smoke model set, check a model root")
    sub = parser.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    build = sub.add_parser("build-smoke", help="write tiny random-weight models (CPU, seconds)")
    build.add_argument("dir", type=Path, help="destination folder (a new model root)")
    build.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    build.add_argument(
        "--overwrite", action="store_true", help="replace an existing smoke set at DIR"
    )
    build.set_defaults(func=_build_smoke)

    check = sub.add_parser("check", help="is each model present, how big, does it load")
    check.add_argument("root", help="model root: a local folder or a gs:// prefix")
    check.add_argument("--json", action="store_true", help="print the results as JSON")
    check.add_argument(
        "--files-only",
        action="store_true",
        help="validate files (configs, safetensors headers) without loading any model",
    )
    check.add_argument("--cache-dir", type=Path, default=None, help="local cache for a gs:// root")
    check.set_defaults(func=_check)


def _build_smoke(args: argparse.Namespace) -> int:
    from lanepaint.models.root import ModelError
    from lanepaint.models.smoke import build_smoke

    try:
        dest = build_smoke(args.dir, seed=args.seed, overwrite=args.overwrite)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"smoke model set written to {dest}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    from lanepaint.models.check import check_root, format_report
    from lanepaint.models.root import ModelError, ModelRoot

    transformers_logging.disable_progress_bar()  # one bar per loaded model drowns the table

    try:
        root = ModelRoot.open(args.root, cache_root=args.cache_dir)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = check_root(root, load=not args.files_only)
    ok = all(r.ok for r in results)
    if args.json:
        report = {
            **root.metadata(),
            "ok": ok,
            "models": [r.as_dict() for r in results],
        }
        print(json.dumps(report, indent=2))
    else:
        print(format_report(root, results))
    return 0 if ok else 1
