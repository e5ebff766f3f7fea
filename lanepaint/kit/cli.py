"""The stage subcommands, built from each stage's Config.

A stage module calls :func:`register_stage` with its Config class, the function that adds
its input/output arguments and the function that runs it. User errors (bad flags, missing
inputs or models) end in one line on stderr and exit code 2, before any model loads.
"""

from __future__ import annotations

import argparse
import errno
import logging
import re
from collections.abc import Callable

from lanepaint.kit.settings import add_arguments

log = logging.getLogger("lanepaint")


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "fix your input": one line, exit 2."""
    from lanepaint.data.fluxfill import DatasetFormatError
    from lanepaint.io.storage import CredentialsError
    from lanepaint.models.root import ModelError

    return (
        ValueError,
        FileNotFoundError,
        NotADirectoryError,
        ModelError,
        DatasetFormatError,
        CredentialsError,
    )


def register_stage(
    subparsers,
    name: str,
    doc: str,
    config_cls: type,
    add_io: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int | None],
    exclude: tuple[str, ...] = (),
) -> argparse.ArgumentParser:
    """The subcommand: ``doc`` is the stage module's docstring (its first line, after
    "Stage <name>:", is the one-line help), the flags come from ``config_cls``."""
    help_line = doc.splitlines()[0].split(":", 1)[-1].strip().rstrip(".")
    parser = subparsers.add_parser(
        name, help=help_line, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_io(parser)
    add_arguments(parser, config_cls, exclude)
    parser.set_defaults(func=lambda args: guarded(run, args))
    return parser


def guarded(run: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    try:
        return int(run(args) or 0)
    except user_errors() as exc:
        log.error("%s", exc)
        return 2
    except Exception as exc:
        if _environment_errno(exc) is not None:
            # A full disk, a read-only or forbidden output: the environment, not a bug.
            # Writes are atomic, so nothing half-written is left; a rerun resumes.
            why = " ".join(str(exc).split())
            log.error("%s; fix it and run again (finished items are kept)", why)
            return 2
        if not _is_gcs_outage(exc):
            raise
        from lanepaint.io.storage import DEADLINE_ENV

        why = " ".join(str(exc).split())
        log.error("GCS unreachable (retries end after %s seconds): %s", DEADLINE_ENV, why)
        return 1


ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _environment_errno(exc: BaseException) -> int | None:
    """The errno of a full disk / read-only / forbidden write behind ``exc``: an OSError
    itself, one it was raised from, or a library's own I/O error that names it
    (safetensors' Rust writer raises ``SafetensorError: ... (os error 28)``)."""
    seen: BaseException | None = exc
    for _ in range(8):  # the cause chain, bounded
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno in ENVIRONMENT_ERRNOS:
            return seen.errno
        found = re.search(r"\(os error (\d+)\)", str(seen))
        if found and int(found.group(1)) in ENVIRONMENT_ERRNOS:
            return int(found.group(1))
        seen = seen.__cause__ or seen.__context__
    return None


def _is_gcs_outage(exc: Exception) -> bool:
    """Retries spent on a transient GCS error (``LANEPAINT_GCS_DEADLINE_S`` is the budget)."""
    try:
        from google.api_core.exceptions import RetryError, ServerError
    except ImportError:
        return False
    return isinstance(exc, RetryError | ServerError)
