"""`lanepaint <command> ...`: one subcommand per stage plus tools.

Each module listed in COMMANDS defines ``register(subparsers)``, which adds its parser and
sets ``func`` (called with the parsed args, returning an exit code). Modules keep heavy
imports (torch, diffusers) inside functions so that `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = [
    "lanepaint.stages.segment",
    "lanepaint.stages.caption",
    "lanepaint.stages.build_dataset",
    "lanepaint.stages.filter_dataset",
    "lanepaint.stages.train_lora",
    "lanepaint.stages.edit",
    "lanepaint.stages.evaluate",
    "lanepaint.evaluate.presets",
    "lanepaint.lanes.cli",
    "lanepaint.data.synth",
    "lanepaint.models.cli",
]


# `lanepaint kfp ...` and `lanepaint run-local ...` hand over to ``pipelines/`` (part of a
# repository checkout): the library itself never imports kfp.
PIPELINE_COMMANDS = {
    "kfp": ("pipelines.submit", "submit runs, upload pipelines, create schedules"),
    "run-local": ("pipelines.local", "run a pipeline on this machine with kfp.local"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lanepaint", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    for name, (_, help_text) in PIPELINE_COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PIPELINE_COMMANDS:
        module = importlib.import_module(PIPELINE_COMMANDS[argv[0]][0])
        return int(module.main(argv[1:], prog=f"lanepaint {argv[0]}") or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
