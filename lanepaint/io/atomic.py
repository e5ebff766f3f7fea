"""Atomic local writes: readers (other pipeline steps, a resumed run) never see half a file.

Everything is written to a hidden sibling first and renamed into place, which is atomic on
POSIX within one filesystem. The temp name keeps the target's extension because writers
such as ``np.savez``, PyAV, OpenCV and PIL pick or append formats from the suffix.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

# `.<name>.tmp-<32 hex><ext>` (work in progress) and `.<name>.old-<32 hex><ext>` (a replaced
# directory being removed); storage.list_files hides both.
_TEMP_RE = re.compile(r"^\..+\.(?:tmp|old)-[0-9a-f]{32}(?:\.[^./]*)?$")


def _is_temp_name(name: str) -> bool:
    """True for the basename of a temp or aside path made by this module."""
    return _TEMP_RE.match(name) is not None


def _sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{uuid.uuid4().hex}{path.suffix}")


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
