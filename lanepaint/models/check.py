"""``lanepaint models check``: is each model of a root present, how big, does it load."""

from __future__ import annotations

import gc
import time
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lanepaint.models.files import (
    check_safetensors,
    check_safetensors_in,
    read_json,
    tree_size,
)
from lanepaint.models.registry import MODEL_SPECS, ModelSpec
from lanepaint.models.root import ModelError, ModelRoot


@dataclass(frozen=True)
class CheckResult:
    name: str
    path: str
    required: bool
    present: bool
    size_bytes: int | None
    # loaded | files ok | absent (optional) | missing (required) | broken
    status: str
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("loaded", "files ok", "absent")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def validate_files(name: str, path: Path) -> None:
    """Checks that read no weights: JSON parses, safetensors are whole, no lone pickles.

    Generic over the tree, because real repositories hold more than the loaders read (e.g.
    the single-file ``flux1-fill-dev.safetensors`` beside the diffusers folders).
    """
    if path.is_file() and path.suffix == ".safetensors":
        check_safetensors(name, path)
        return
    if path.is_file():
        try:  # the zip directory sits at the end of the file: a cut copy fails here
            with zipfile.ZipFile(path) as archive:
                archive.namelist()
        except (OSError, zipfile.BadZipFile) as exc:
            raise ModelError(name, path, f"truncated or not a torch checkpoint: {exc}") from exc
        return
    folders = [path, *(p for p in sorted(path.rglob("*")) if p.is_dir())]
    weights = [w for folder in folders for w in check_safetensors_in(name, folder)]
    if not weights:
        raise ModelError(name, path, "no .safetensors weights in model folder")
    for json_file in sorted(path.rglob("*.json")):
        read_json(name, json_file)


def check_model(root: ModelRoot, spec: ModelSpec, load: bool = True) -> CheckResult:
    path = root / spec.relpath
    start = time.perf_counter()

    def result(status: str, error: str | None = None) -> CheckResult:
        size = tree_size(path) if path.exists() else None
        seconds = round(time.perf_counter() - start, 3)
        return CheckResult(
            spec.name, spec.relpath, spec.required, path.exists(), size, status, error, seconds
        )

    if not path.exists():
        return result("missing", "not found") if spec.required else result("absent")
    try:
        validate_files(spec.name, path)
        if not (load and spec.load):
            return result("files ok")
        loaded = spec.load(root)
        del loaded
        gc.collect()
    except Exception as exc:  # a check reports every failure instead of stopping at one
        # the report prefixes the model's name: a ModelError's own prefix would repeat it
        error = f"{exc.reason} ({exc.path})" if isinstance(exc, ModelError) else repr(exc)
        return result("broken", error)
    return result("loaded")


def check_root(
    root: ModelRoot, load: bool = True, specs: Iterable[ModelSpec] | None = None
) -> list[CheckResult]:
    """One result per model slot, loading each model on the CPU unless ``load`` is False."""
    return [check_model(root, spec, load) for spec in (specs or MODEL_SPECS.values())]


def _human(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_report(root: ModelRoot, results: list[CheckResult]) -> str:
    rows = [("MODEL", "REQUIRED", "USED BY", "SIZE", "STATUS", "PATH")]
    rows += [
        (
            r.name,
            "yes" if r.required else "no",
            ",".join(MODEL_SPECS[r.name].used_by) if r.name in MODEL_SPECS else "-",
            _human(r.size_bytes),
            r.status,
            r.path,
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"model root: {root.path}", f"model set: {root.model_set_label()}", ""]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    errors = [f"  {r.name}: {r.error}" for r in results if not r.ok]
    if errors:
        verdict = "problems:"
    elif any(r.status == "files ok" for r in results):
        verdict = "all required models present; files valid (not all loaded)"
    else:
        verdict = "all required models present and loadable"
    return "\n".join([*lines, "", verdict, *errors])
