"""``lanepaint models build-smoke DIR``, ``check ROOT`` and ``import ROOT``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models", help="build the smoke model set, check a model root, import real weights"
    )
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
    check.add_argument(
        "--stage",
        default=None,
        help="check only the models this stage reads (segment, caption, build-dataset, "
        "train-lora, edit); default: every slot",
    )
    check.set_defaults(func=_check)
    _register_import(sub)


def _register_import(sub: argparse._SubParsersAction) -> None:
    from lanepaint.models.importer import SOURCES

    imp = sub.add_parser(
        "import",
        help="assemble a model root from Hugging Face downloads (links, no copies), then check",
        description="Lay out the downloaded public repositories (docs/models.md) as a model "
        "root: weight files are symlinked (or hardlinked) from the downloads, never copied "
        "unless --copy; a T5 tokenizer.json is added where only spiece.model ships; the "
        "SAM2 checkpoint is verified to load with weights_only=True; then the root is "
        "checked like `lanepaint models check`. Models already in ROOT are kept unless "
        "--overwrite. Exit 0 when the check passes, 1 when it does not, 2 on a missing "
        "download or another input error.",
    )
    imp.add_argument("root", type=Path, help="the model root to create or complete (a folder)")
    imp.add_argument(
        "--hf-cache",
        type=Path,
        default=None,
        help="hub cache to import from (default: $HF_HUB_CACHE, else $HF_HOME/hub, else "
        "~/.cache/huggingface/hub)",
    )
    imp.add_argument(
        "--local-dir",
        type=Path,
        default=None,
        help="folder of `hf download REPO --local-dir DIR/<repo name>` downloads, looked in "
        "before the hub cache",
    )
    imp.add_argument(
        "--only",
        default="",
        help=f"comma-separated subset of {','.join(SOURCES)} (default: all; qwen_vl_72b "
        "only if downloaded); a named model must be downloaded",
    )
    mode = imp.add_mutually_exclusive_group()
    mode.add_argument(
        "--hardlink",
        dest="mode",
        action="store_const",
        const="hardlink",
        help="hardlink instead of symlink (root and downloads on one filesystem)",
    )
    mode.add_argument(
        "--copy", dest="mode", action="store_const", const="copy", help="copy the files"
    )
    imp.add_argument(
        "--overwrite", action="store_true", help="replace models that are already in ROOT"
    )
    imp.add_argument(
        "--files-only",
        action="store_true",
        help="the final check validates files without loading any model",
    )
    imp.set_defaults(func=_import, mode="symlink")


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
    from lanepaint.models.registry import specs_for_stage
    from lanepaint.models.root import ModelError, ModelRoot

    transformers_logging.disable_progress_bar()  # one bar per loaded model drowns the table

    try:
        specs = specs_for_stage(args.stage) if args.stage else None
        root = ModelRoot.open(args.root, cache_root=args.cache_dir)
    except (ModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = check_root(root, load=not args.files_only, specs=specs)
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


def _import(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    from lanepaint.models.check import check_root, format_report
    from lanepaint.models.importer import format_slots, import_models
    from lanepaint.models.registry import MODEL_SPECS
    from lanepaint.models.root import ModelError, ModelRoot

    try:
        report = import_models(
            args.root,
            cache=args.hf_cache,
            local_dir=args.local_dir,
            only=args.only.split(",") if args.only else (),
            mode=args.mode,
            overwrite=args.overwrite,
        )
    except (ModelError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_slots(report, args.mode), end="\n\n")
    transformers_logging.disable_progress_bar()
    root = ModelRoot.open(args.root)
    specs = [MODEL_SPECS[name] for name in report.specs] or None
    results = check_root(root, load=not args.files_only, specs=specs)
    print(format_report(root, results))
    return 0 if all(r.ok for r in results) else 1
