"""The FluxFill dataset: ``train.csv`` (image, mask, prompt, prompt_2) + ``images/`` + ``masks/``.

Paths in the CSV are relative to the dataset root and may never leave it, neither as text
(``..``, absolute) nor through a symlink (resolved before any file is read). Masks are
single-channel images, 255 = repaint, 0 = keep. A dataset is published whole: it is built
in a local staging folder and appears at its destination only when complete (atomic
directory replace locally; on GCS the files first and ``train.csv`` last, so a reader
never sees rows whose files are missing), with the marker ``.lanepaint.json`` naming the
stage that made it; a folder without that stage's marker is never replaced.
"""

from __future__ import annotations

import csv
import errno
import io
import logging
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lanepaint.data.vocab import CaptionError, parse_caption
from lanepaint.io import storage
from lanepaint.io.atomic import atomic_path, temp_name
from lanepaint.io.images import encode_png
from lanepaint.kit.guard import MARKER, claim_output, marker_text, read_marker

log = logging.getLogger(__name__)

CSV_NAME = "train.csv"
COLUMNS = ("image", "mask", "prompt", "prompt_2")
REQUIRED_COLUMNS = ("image", "mask", "prompt")
LINK_MODES = ("copy", "hardlink", "symlink")


class DatasetFormatError(ValueError):
    """The dataset as a whole cannot be read (no CSV, empty file, missing columns)."""


class UnsafePathError(ValueError):
    """A path from the CSV is absolute or escapes the dataset root."""


@dataclass(frozen=True)
class FluxFillRow:
    image: str
    mask: str
    prompt: str
    prompt_2: str = ""
    line: int = field(default=0, compare=False)

    def as_csv(self) -> list[str]:
        return [self.image, self.mask, self.prompt, self.prompt_2]


@dataclass(frozen=True)
class Rejection:
    """A CSV row that was not used, and why. Nothing is dropped without one."""

    line: int
    reason: str
    image: str = ""

    def as_dict(self) -> dict:
        return {"line": self.line, "image": self.image, "reason": self.reason}


def safe_relpath(path: str) -> str:
    """Normalize a CSV path; refuse absolute paths and anything that escapes the root."""
    raw = (path or "").strip()
    if not raw:
        raise UnsafePathError("empty path")
    if raw.startswith(("/", "\\")) or "://" in raw or (len(raw) > 1 and raw[1] == ":"):
        raise UnsafePathError(f"absolute path not allowed: {raw!r}")
    norm = posixpath.normpath(raw.replace("\\", "/"))
    if norm == ".." or norm.startswith("../") or norm == ".":
        raise UnsafePathError(f"path escapes the dataset root: {raw!r}")
    return norm


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _fields(line: str) -> list[str]:
    """One physical line as CSV fields (strict: a quote must close on the same line)."""
    try:
        return next(csv.reader([line], strict=True))
    except StopIteration:
        return []


def parse_csv(text: str, source: str = CSV_NAME) -> tuple[list[FluxFillRow], list[Rejection]]:
    """Parse train.csv text into rows and per-row rejections.

    Every physical line is accounted for: it is the header, blank, a row, or a rejection
    with its line number. A row is one line (no field of ours holds a line break), so an
    unclosed quote rejects its own line only and can never swallow the lines after it.
    Whole-file problems (empty, no header, missing required columns) raise
    DatasetFormatError. A UTF-8 BOM is accepted. Unknown extra columns are ignored with a
    warning (they are never silently merged).
    """
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise DatasetFormatError(f"{source} is empty")
    lines = _LINE_BREAK.split(text)
    index, width = _header(lines[0], source)
    rows: list[FluxFillRow] = []
    rejections: list[Rejection] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue  # blank line
        try:
            values = _fields(line)
        except csv.Error as exc:
            first = line.split(",", 1)[0].strip()[:200]
            rejections.append(Rejection(number, f"malformed CSV row: {exc}", first))
            continue
        if all(not v.strip() for v in values):
            continue
        row = _row(values, index, width, number)
        (rows if isinstance(row, FluxFillRow) else rejections).append(row)
    return rows, rejections


def _header(line: str, source: str) -> tuple[dict[str, int], int]:
    """(column -> position, number of columns) from the header line."""
    try:
        header = [h.strip().lstrip("\ufeff") for h in _fields(line)]
    except csv.Error as exc:
        raise DatasetFormatError(f"{source}: unreadable header: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DatasetFormatError(
            f"{source}: missing column(s) {', '.join(missing)}; header is {header}; "
            f"expected {', '.join(COLUMNS)}"
        )
    extra = [c for c in header if c not in COLUMNS]
    if extra:
        log.warning("%s: ignoring unknown column(s) %s", source, ", ".join(extra))
    return {name: header.index(name) for name in COLUMNS if name in header}, len(header)


def _row(values: list[str], index: dict[str, int], width: int, line: int):
    """A FluxFillRow, or the Rejection that says why the line is not one."""
    if len(values) != width:
        return Rejection(
            line, f"wrong field count: row has {len(values)}, header has {width}", values[0]
        )
    image = values[index["image"]].strip()
    try:
        row = FluxFillRow(
            image=safe_relpath(image),
            mask=safe_relpath(values[index["mask"]]),
            prompt=values[index["prompt"]].strip(),
            prompt_2=values[index["prompt_2"]].strip() if "prompt_2" in index else "",
            line=line,
        )
    except UnsafePathError as exc:
        return Rejection(line, f"unsafe path: {exc}", image)
    if not row.prompt:
        return Rejection(line, "empty prompt", image)
    return row


def format_csv(rows: Iterable[FluxFillRow]) -> str:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        # One row, one line: the reader rejects a line break inside a field.
        writer.writerow([_LINE_BREAK.sub(" ", v) for v in row.as_csv()])
    return buf.getvalue()


def read_dataset(root: str) -> tuple[list[FluxFillRow], list[Rejection]]:
    """Read ``root/train.csv`` (local or gs://)."""
    csv_uri = storage.join(root, CSV_NAME)
    try:
        text = storage.read_text(csv_uri)
    except FileNotFoundError as exc:
        raise DatasetFormatError(f"no {CSV_NAME} in dataset {root}") from exc
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(f"{csv_uri} is not UTF-8 text: {exc}") from exc
    return parse_csv(text, csv_uri)


def link_roots(local_root: Path) -> tuple[Path, ...]:
    """Folders a dataset's files may lie in: the root itself, plus the source datasets a
    ``--link-mode symlink`` filter linked into (named, relative to the root, in the
    dataset's ``.lanepaint.json``)."""
    roots = [local_root.resolve()]
    marker = read_marker(str(local_root)) or {}
    for rel in marker.get("links_into") or []:
        if isinstance(rel, str) and rel:
            roots.append((local_root / rel).resolve())
    return tuple(roots)


def resolve_inside(local_root: Path, rel: str, roots: tuple[Path, ...] | None = None) -> Path:
    """``local_root/rel`` with every symlink resolved; UnsafePathError when that lands
    outside the dataset (``roots``, default :func:`link_roots`). The text check of
    :func:`safe_relpath` cannot see a symlinked file or folder."""
    roots = roots if roots is not None else link_roots(local_root)
    try:
        path = (local_root / rel).resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop
        raise UnsafePathError(f"{rel} cannot be resolved: {exc}") from None
    if any(path == r or path.is_relative_to(r) for r in roots):
        return path
    raise UnsafePathError(f"{rel} leads outside the dataset root (a symlink to {path})")


def check_row(
    local_root: Path, row: FluxFillRow, roots: tuple[Path, ...] | None = None
) -> str | None:
    """Why a row is unusable (None when fine): files inside the dataset, decoding, sizes,
    mask, caption. ``roots``: :func:`link_roots` of ``local_root``, computed once by a
    caller that checks many rows."""
    try:
        parse_caption(row.prompt)
    except CaptionError as exc:
        return f"malformed caption: {exc}"
    roots = roots if roots is not None else link_roots(local_root)
    sizes = []
    for kind, rel in (("image", row.image), ("mask", row.mask)):
        try:
            path = resolve_inside(local_root, rel, roots)
        except UnsafePathError as exc:
            return f"unsafe path: {exc}"
        if not path.is_file():
            return f"missing {kind} file: {rel}"
        try:
            with Image.open(path) as im:
                im.load()
                sizes.append(im.size)
                if kind == "mask":
                    mask = np.asarray(im.convert("L"))
        except Exception as exc:  # PIL raises many types for broken files
            return f"undecodable {kind}: {rel}: {type(exc).__name__}: {exc}"
    if sizes[0] != sizes[1]:
        return f"size mismatch: image {sizes[0]} != mask {sizes[1]}"
    if not (mask >= 128).any():
        return f"empty mask: {row.mask}"
    return None


def _hardlink(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        raise ValueError(
            f"--link-mode hardlink needs the output on the filesystem of the input ({src} is "
            "on another one): use --link-mode copy or symlink, or an output beside the input"
        ) from None


def _move_tree(src: Path, dst: Path) -> None:
    """``shutil.move``, but a copy across filesystems that fails (a full disk) raises the
    first file's OSError with its errno, not one ``shutil.Error`` listing every file."""
    try:
        shutil.move(str(src), str(dst))
    except shutil.Error as exc:
        errors = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
        first = str(errors[0][-1]) if errors else str(exc)
        found = re.search(r"\[Errno (\d+)\] ([^:']+)", first)
        code = int(found.group(1)) if found else None
        why = found.group(2).strip() if found else first
        raise OSError(
            code, f"{why} (publishing into {dst.parent}: {len(errors)} files failed)"
        ) from exc


class DatasetWriter:
    """Builds a FluxFill dataset in a local staging folder and publishes it whole.

    Use as a context manager: on a clean exit ``commit()`` runs, on an exception nothing
    is published. Rows keep their relative paths, so files never collide. The dataset
    carries the marker ``.lanepaint.json`` naming ``stage``; an existing folder at ``root``
    is replaced only when its marker names the same stage (never a folder someone else
    made). ``marker`` adds fields to the marker (``links_into`` for symlinked datasets).
    """

    def __init__(self, root: str, stage: str = "dataset", marker: dict | None = None):
        self.root = root
        self.stage = stage
        self.marker = marker or {}
        self.rows: list[FluxFillRow] = []
        self._local_target = None if storage.is_gcs(root) else Path(root)
        self._staging = self._new_staging()
        self._committed = False
        self.write_text(MARKER, marker_text(stage, **self.marker))

    def _new_staging(self) -> Path:
        """Beside a local target (a hidden temp name), so hardlinks and the final rename
        stay on the output's filesystem whatever TMPDIR is; in TMPDIR for gs://."""
        if self._local_target is None:
            return Path(tempfile.mkdtemp(prefix="lanepaint-dataset-"))
        parent = self._local_target.parent
        parent.mkdir(parents=True, exist_ok=True)
        # The temp name of lanepaint.io.atomic: listings (storage.list_files) skip it.
        staging = parent / temp_name(self._local_target.name)
        staging.mkdir()
        return staging

    @property
    def staging(self) -> Path:
        return self._staging

    def _target(self, rel: str) -> Path:
        path = self._staging / safe_relpath(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def add(
        self,
        name: str,
        image: np.ndarray,
        mask: np.ndarray,
        prompt: str,
        prompt_2: str = "",
    ) -> FluxFillRow:
        """Add an RGB image and its mask (uint8; nonzero = repaint) as ``images/NAME.png``."""
        if image.shape[:2] != mask.shape[:2]:
            raise ValueError(f"{name}: image {image.shape[:2]} and mask {mask.shape[:2]} differ")
        row = FluxFillRow(f"images/{name}.png", f"masks/{name}.png", prompt, prompt_2)
        self._target(row.image).write_bytes(encode_png(image))
        binary = np.where(mask > 0, 255, 0).astype(np.uint8)
        self._target(row.mask).write_bytes(encode_png(binary))
        self.rows.append(row)
        return row

    def add_existing(self, row: FluxFillRow, src_root: Path, link_mode: str = "copy") -> None:
        """Add a row whose files already exist under ``src_root`` (local)."""
        if link_mode not in LINK_MODES:
            raise ValueError(f"link mode must be one of {LINK_MODES}, got {link_mode!r}")
        roots = link_roots(src_root)
        for rel in (row.image, row.mask):
            src = resolve_inside(src_root, rel, roots)
            dst = self._target(rel)
            if dst.exists() or dst.is_symlink():
                continue  # a file shared by two rows (e.g. one mask for several images)
            if link_mode == "copy":
                shutil.copy2(src, dst)
            elif link_mode == "hardlink":
                _hardlink(src, dst)
            else:
                # Relative to where the file will live after publishing, so the dataset can
                # move together with its source.
                final_dir = self._local_target / posixpath.dirname(rel)
                os.symlink(os.path.relpath(src, start=final_dir.resolve()), dst)
        self.rows.append(row)

    def write_text(self, rel: str, text: str) -> None:
        """An extra file inside the dataset (manifest, report)."""
        self._target(rel).write_text(text, encoding="utf-8")

    def commit(self) -> str:
        """Write train.csv and publish the staging folder at ``root``. Returns root."""
        if self._committed:
            return self.root
        claim_output(self.stage, self.root, write=False)  # never replace what is not ours
        csv_text = format_csv(self.rows)
        if self._local_target is not None:
            (self._staging / CSV_NAME).write_text(csv_text, encoding="utf-8")
            with atomic_path(self._local_target) as tmp:
                _move_tree(self._staging, tmp)
        else:
            # Files first (in parallel), train.csv last: the CSV is the commit point, and an
            # older CSV at this prefix is withdrawn before any file changes under it.
            storage.delete(storage.join(self.root, CSV_NAME))
            storage.upload_dir(self._staging, self.root)
            storage.write_text(storage.join(self.root, CSV_NAME), csv_text)
            shutil.rmtree(self._staging, ignore_errors=True)
        self._committed = True
        log.info("published dataset with %d rows at %s", len(self.rows), self.root)
        return self.root

    def discard(self) -> None:
        shutil.rmtree(self._staging, ignore_errors=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
