"""What every stage checks before it writes: nothing lost, nothing read from its own output.

- :func:`check_apart` — an output that is, contains or lies inside an input is refused
  (paths resolved, symlinks included; gs:// URIs compared as normalized prefixes).
- :func:`claim_output` — a stage writes only into an output that is new, empty, or marked
  as its own: the marker ``.lanepaint.json`` ({stage, created_at}) in every output folder
  it creates (``.<name>.lanepaint.json`` beside a file output) decides. A folder made by
  a person or by another stage is never written into, replaced or deleted.
- :func:`lanepaint.kit.lock.output_lock` — one writer per output.
- :func:`require_input` — a missing input folder or prefix is an error, never "0 items".
- :func:`guard_output` — the first three in one ``with`` line, for a stage::

      with guard_output(STAGE, output_dir, inputs=[input_dir, model_root]):
          ...

Every refusal is a ValueError (FileNotFoundError for a missing input): one line and exit
code 2 through :mod:`lanepaint.kit.cli`, before anything is read, loaded or written.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator

from lanepaint.io import storage
from lanepaint.io.atomic import _is_temp_name
from lanepaint.kit.lock import LOCK_SUFFIX, OutputBusyError, output_lock, parent_and_name

MARKER = ".lanepaint.json"

__all__ = [
    "MARKER",
    "OutputBusyError",
    "OutputError",
    "check_apart",
    "claim_output",
    "guard_output",
    "marker_uri",
    "read_marker",
    "require_input",
]


class OutputError(ValueError):
    """The output cannot be used as given (one line, exit 2)."""


# --------------------------------------------------------------------------- locations


def _location(uri: str) -> tuple[str, str]:
    """(backend, normalized path): local paths resolved (symlinks followed), gs URIs as
    ``/``-joined key segments without empty or ``.`` ones."""
    if storage.is_gcs(uri):
        bucket, key = storage.split_gcs(uri)
        return f"gs://{bucket}", "/" + "/".join(p for p in key.split("/") if p not in ("", "."))
    return "local", os.path.realpath(os.path.abspath(uri))


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def check_apart(
    inputs: Iterable[str | None], outputs: Iterable[str | None], inside_ok: Iterable[str] = ()
) -> None:
    """Refuse an output that is an input, contains one, or lies inside one (a stage would
    read its own outputs, or replace its inputs). ``inside_ok``: outputs allowed inside
    an input (a report folder the input's layout reserves for it)."""
    allowed = {_location(u) for u in inside_ok}
    for out in filter(None, outputs):
        o = _location(out)
        for inp in filter(None, inputs):
            i = _location(inp)
            if o[0] != i[0]:
                continue
            if o[1] == i[1]:
                raise OutputError(f"the output {out} is the input {inp}: write somewhere else")
            if _within(i[1], o[1]):
                raise OutputError(f"the output {out} contains the input {inp}: pick another")
            if _within(o[1], i[1]) and o not in allowed:
                raise OutputError(f"the output {out} is inside the input {inp}: pick another")


def require_input(uri: str, what: str = "input") -> None:
    """A missing local path, or a gs:// prefix with nothing under it, is a user error."""
    if not uri or not storage.exists(uri):
        raise FileNotFoundError(f"no {what} at {uri!r}: check the path (nothing is there)")


# --------------------------------------------------------------------------- markers


def marker_uri(output: str, file: bool = False) -> str:
    """The marker of an output folder (inside it) or an output file (beside it)."""
    if file:
        folder, name = parent_and_name(output)
        return storage.join(folder, f".{name}{MARKER}")
    return storage.join(output, MARKER)


def read_marker(output: str, file: bool = False) -> dict | None:
    """The marker's content, or None when there is none (or it is unreadable)."""
    try:
        marker = json.loads(storage.read_text(marker_uri(output, file)))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("stage"), str) else None


def marker_text(stage: str, **extra) -> str:
    from lanepaint.io.reports import now_iso

    return json.dumps({"stage": stage, "created_at": now_iso(), **extra}, indent=2) + "\n"


def _holds_content(output: str, file: bool) -> bool:
    """Whether something other than our own bookkeeping is at the output."""
    if storage.is_gcs(output):
        return storage.exists(output)
    if file:
        if os.path.isdir(output):
            raise OutputError(f"the output {output} is a folder; give a file name")
        return os.path.lexists(output)
    if os.path.lexists(output) and not os.path.isdir(output):
        raise OutputError(f"the output {output} is a file; give a folder")
    if not os.path.isdir(output):
        return False
    return any(
        not _is_temp_name(e.name) and e.name != MARKER and not e.name.endswith(LOCK_SUFFIX)
        for e in os.scandir(output)
    )


def _summary_stage(uri: str | None) -> str | None:
    """The stage named in a summary.json (outputs made before the marker existed)."""
    if not uri:
        return None
    try:
        summary = json.loads(storage.read_text(uri))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError):
        return None
    stage = summary.get("stage") if isinstance(summary, dict) else None
    return stage if isinstance(stage, str) else None


def claim_output(
    stage: str,
    output: str,
    file: bool = False,
    summary: str | None = None,
    write: bool = True,
) -> None:
    """Refuse an output that holds something this stage did not make; else mark it ours.

    Ours: the marker names this stage, or (outputs made before the marker existed) no
    marker and ``summary`` (default ``<output>/summary.json`` for folders) names it.
    ``write=False`` checks only (a writer that publishes the marker with its files).
    """
    marker = read_marker(output, file)
    where = marker_uri(output, file)
    if marker is not None:
        if marker["stage"] != stage:
            raise OutputError(
                f"{output} was made by lanepaint {marker['stage']}, not {stage}: give "
                f"{stage} an output of its own"
            )
        return
    if _holds_content(output, file):
        summary = summary if file else summary or storage.join(output, "summary.json")
        if _summary_stage(summary) != stage:
            raise OutputError(
                f"{output} already exists and was not made by lanepaint {stage} (no {where}); "
                f"nothing was changed: use a new or empty output (if it is an earlier "
                f'{stage} output, write {{"stage": "{stage}"}} into {where})'
            )
    if write:
        storage.write_text(where, marker_text(stage))


@contextlib.contextmanager
def guard_output(
    stage: str,
    output: str,
    inputs: Iterable[str | None] = (),
    file: bool = False,
    inside_ok: Iterable[str] = (),
    summary: str | None = None,
    wait_s: float = 0.0,
) -> Iterator[None]:
    """Check the output against the inputs, lock it, claim it; hold the lock for the block."""
    check_apart(inputs, [output], inside_ok)
    with output_lock(stage, output, wait_s):
        claim_output(stage, output, file, summary)
        yield
