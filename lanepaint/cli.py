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
    "lanepaint.data.synth",
    "lanepaint.stages.filter_dataset",
    "lanepaint.models.cli",
    "lanepaint.lanes.cli",
    "lanepaint.stages.caption",
    "lanepaint.stages.build_dataset",
    "lanepaint.stages.evaluate",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lanepaint", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command not built yet in this checkout
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
