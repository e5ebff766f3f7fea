"""What every benchmark records: the perf JSON of performance.md, card and commit included."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
from pathlib import Path


def card() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return "cpu"


def commit() -> str:
    """The code's commit: $LANEPAINT_COMMIT (set where the tree travels without .git, e.g. a
    lent GPU machine), else git."""
    import os

    if os.environ.get("LANEPAINT_COMMIT"):
        return os.environ["LANEPAINT_COMMIT"]
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def sync(device=None) -> None:
    """Wait for queued GPU work (timings are host clocks); a no-op on the CPU. ``device``:
    a str or torch.device; None means the current CUDA device if there is one."""
    import torch

    if device is None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    elif torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def rel_l2(a, b) -> float:
    """||a - b|| / ||a|| in float32, for tensors or arrays (``a`` is the reference)."""
    import numpy as np
    import torch

    a, b = (
        torch.as_tensor(np.asarray(x, np.float32) if isinstance(x, np.ndarray) else x)
        for x in (a, b)
    )
    a, b = a.float().flatten(), b.float().flatten()
    return float((a - b).norm() / a.norm().clamp_min(1e-12))


def perf_record(
    stage: str,
    ours_s: float,
    reference_s: float,
    rel_err: float | None,
    floor_s: float | None,
    peak_gib: float | None,
    extra: dict | None = None,
) -> dict:
    """One result with the keys of docs/perf/<stage>.json."""
    return {
        "stage": stage,
        "card": card(),
        "commit": commit(),
        "date": dt.date.today().isoformat(),
        "ours_s": round(ours_s, 5),
        "reference_s": round(reference_s, 5),
        "ratio": round(reference_s / ours_s, 4) if ours_s else None,
        "peak_gib": None if peak_gib is None else round(peak_gib, 3),
        "floor_s": floor_s,
        "rel_err": rel_err,
        "extra": extra or {},
    }


def write_json(results: list[dict], out_dir: Path, size: str) -> list[Path]:
    """``<stage>.json`` for full-size runs; ``<stage>.smoke.json`` so CI never overwrites
    a measured result."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in results:
        name = f"{r['stage']}.json" if size == "full" else f"{r['stage']}.smoke.json"
        path = out_dir / name
        path.write_text(json.dumps(r, indent=2) + "\n")
        paths.append(path)
    return paths


def format_table(results: list[dict]) -> str:
    """The table every bench prints last: one row per perf record."""

    def cell(value, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [
        f"{'stage':<14} {'ours_s':>9} {'ref_s':>9} {'ratio':>7} {'floor_s':>8} "
        f"{'rel_err':>9} {'peak_gib':>8}"
    ]
    for r in results:
        lines.append(
            f"{r['stage']:<14} {r['ours_s']:>9.3f} {r['reference_s']:>9.3f} "
            f"{cell(r['ratio'], '.2f'):>7} {cell(r['floor_s'], '.2f'):>8} "
            f"{cell(r['rel_err'], '.2e'):>9} {cell(r['peak_gib'], '.1f'):>8}"
        )
    return "\n".join(lines)


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every benchmark takes: --size full|smoke and --out-dir."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--size", choices=("full", "smoke"), default="smoke")
    parser.add_argument("--out-dir", type=Path, default=Path("docs/perf"))
    return parser
