"""Atomic local writes: readers (other pipeline steps, a resumed run) never see half a file.

Everything is written to a hidden sibling first and renamed into place, which is atomic on
POSIX within one filesystem. The temp name keeps the target's extension because writers
such as ``np.savez``, PyAV, OpenCV and PIL pick or append formats from the suffix.

A temp name's 32 hex digits say who writes it (a hash of the host, the pid and the
process's start time, then random), so :func:`sweep_dead_temps` can remove what a killed
run left behind without touching a live writer's work.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import socket
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

from lanepaint.io.procs import pid_alive, proc_start

# `.<name>.tmp-<32 hex><ext>` (work in progress) and `.<name>.old-<32 hex><ext>` (a replaced
# directory being removed); storage.list_files hides both.
_TEMP_RE = re.compile(r"^\..+\.(?:tmp|old)-[0-9a-f]{32}(?:\.[^./]*)?$")


def _is_temp_name(name: str) -> bool:
    """True for the basename of a temp or aside path made by this module."""
    return _TEMP_RE.match(name) is not None


def _host_tag() -> str:
    return f"{zlib.crc32(socket.gethostname().encode()) & 0xFFFF:04x}"


_writer: tuple[int, str] | None = None  # (pid, the hex that names this process's writes)


def _writer_hex() -> str:
    """host (4 hex) + pid (8) + start time (12) of this process; cached per pid (fork)."""
    global _writer
    pid = os.getpid()
    if _writer is None or _writer[0] != pid:
        start = proc_start(pid) or 0
        _writer = (pid, f"{_host_tag()}{pid & 0xFFFFFFFF:08x}{start & 0xFFFFFFFFFFFF:012x}")
    return _writer[1]


def temp_name(name: str, kind: str = "tmp", suffix: str = "") -> str:
    """``.<name>.<kind>-<writer hex><8 random hex><suffix>``: a name :func:`_is_temp_name`
    knows and :func:`sweep_dead_temps` can attribute to its writer."""
    return f".{name}.{kind}-{_writer_hex()}{uuid.uuid4().hex[:8]}{suffix}"


def _sibling(path: Path, kind: str) -> Path:
    return path.with_name(temp_name(path.name, kind, path.suffix))


def _writer_dead(name: str) -> bool:
    """Whether the temp name was made on this host by a process that is gone."""
    digits = re.search(r"\.(?:tmp|old)-([0-9a-f]{32})(?:\.[^./]*)?$", name)
    if digits is None:
        return False
    hexes = digits.group(1)
    if hexes[:4] != _host_tag():
        return False  # another host's (a shared filesystem): its process cannot be judged
    start = int(hexes[12:24], 16)
    return not pid_alive(int(hexes[4:12], 16), start or None)


def sweep_dead_temps(output: str | Path) -> list[Path]:
    """Remove the temp files and folders that killed runs left in ``output`` (a folder,
    searched through without following links) or beside it (its own temp siblings).
    Only names this module makes, of writers that are gone; returns what was removed."""
    output = Path(output)
    found: list[Path] = []
    if output.parent.is_dir():
        found += list(output.parent.glob(f".{glob.escape(output.name)}.*"))
    if output.is_dir() and not output.is_symlink():
        for folder, dirs, files in os.walk(output):
            for name in [*dirs, *files]:
                if _is_temp_name(name):
                    found.append(Path(folder) / name)
            dirs[:] = [d for d in dirs if not _is_temp_name(d)]
    removed = [p for p in found if _is_temp_name(p.name) and _writer_dead(p.name)]
    for path in removed:
        _remove(path)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (best effort: some filesystems refuse directory fsync)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp sibling of ``path``; on clean exit move it onto ``path``.

    The caller creates a file or a directory at the yielded path. A directory replaces an
    existing target by renaming the old one aside first, so the target name is never
    missing for longer than between two renames. On exception the temp is removed and the
    target is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target, "tmp")
    try:
        yield tmp
        if not tmp.exists() and not tmp.is_symlink():
            raise FileNotFoundError(f"nothing was written to the temp path for {target}")
        if tmp.is_dir() and not tmp.is_symlink() and (target.exists() or target.is_symlink()):
            old = _sibling(target, "old")
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)
                raise
            _remove(old)
        else:
            os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (fsync before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))
