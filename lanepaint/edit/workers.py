"""Several items at once: one worker process per GPU, each editing a disjoint share of the
videos, merged into one run's report (the edit stage's ``parallel_items`` setting).

Why processes and not threads: each worker owns one GPU (``CUDA_VISIBLE_DEVICES``) and its
own copy of the models, so the placement plan inside a worker sees one card, exactly as a
one-GPU run does. A worker is the edit stage's own CLI on the same output with the videos
it edits given as ``--video-ids`` and its summary in a folder of its own (the shard path
the KFP fan-out uses), so every item is painted, propagated, written and recorded by the
same code as in a one-process run; the item records are the commit points, so a worker
that dies loses only its unfinished items and a rerun resumes. The parent holds the
output's lock; the workers inherit its token (``lanepaint.kit.lock``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lanepaint.io import reports, storage
from lanepaint.kit import StageReport

log = logging.getLogger(__name__)

WORKERS_DIR = "_workers"  # <summary folder>/_workers/worker_<k>/: a worker's own summary


@dataclass
class Worker:
    """One worker: its index, the device it gets, its videos and items, its summary."""

    index: int
    device: str  # "cuda:N" in the parent's numbering, or "cpu"
    visible: str  # its CUDA_VISIBLE_DEVICES entry ("" on the CPU)
    video_ids: tuple[str, ...]
    items: list = field(default_factory=list)  # lanepaint.edit.inputs.Item
    summary_dir: str = ""
    returncode: int | None = None


def worker_count(requested: int, gpus: int, videos: int) -> int:
    """How many workers: ``requested`` (0 = one per visible GPU, one without a GPU), never
    more than the videos to edit. More than the visible GPUs is refused (two workers on one
    card would each hold every model)."""
    if requested < 0:
        raise ValueError("parallel-items must be >= 0")
    n = requested or max(gpus, 1)
    if gpus and n > gpus:
        raise ValueError(f"parallel-items {n} is more than the {gpus} visible GPU(s)")
    return max(1, min(n, videos))


def plan_workers(items: Sequence, n: int, gpus: int, summary_root: str) -> list[Worker]:
    """Split the items to do by video (a video's instructions stay together: its frame 0 is
    read once) into ``n`` contiguous, balanced shares, in video-id order."""
    from lanepaint.data.sources import shard

    videos = sorted({item.record.video_id for item in items})
    devices = visible_devices(gpus)
    workers = []
    for k, share in enumerate(shard(videos, n)):
        wanted = set(share)
        workers.append(
            Worker(
                k,
                f"cuda:{k}" if devices else "cpu",
                devices[k] if devices else "",
                tuple(share),
                [item for item in items if item.record.video_id in wanted],
                storage.join(summary_root, WORKERS_DIR, f"worker_{k}"),
            )
        )
    return workers


def visible_devices(gpus: int) -> list[str]:
    """The parent's GPUs as ``CUDA_VISIBLE_DEVICES`` entries (its own list when set)."""
    if not gpus:
        return []
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given:
        return [d.strip() for d in given.split(",") if d.strip()][:gpus]
    return [str(i) for i in range(gpus)]


def worker_env(worker: Worker) -> dict[str, str]:
    """The parent's environment (the lock token included), with the worker's one GPU."""
    env = dict(os.environ)
    if worker.visible:
        env["CUDA_VISIBLE_DEVICES"] = worker.visible
    return env


def run_all(workers: list[Worker], command: Callable[[Worker], list[str]]) -> None:
    """Start every worker, wait for all; a worker that fails does not stop the others. If
    the parent is interrupted, the workers still running are stopped."""
    procs: list[subprocess.Popen] = []
    try:
        for w in workers:
            counts = (len(w.video_ids), len(w.items))
            log.info("worker %d (%s): %d videos, %d items", w.index, w.device, *counts)
            procs.append(subprocess.Popen(command(w), env=worker_env(w)))
        for w, proc in zip(workers, procs, strict=True):
            w.returncode = proc.wait()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()


def collect(report: StageReport, workers: list[Worker], committed: Callable[[], set]) -> list:
    """Add each worker's counts and failures to ``report``. A worker that left no summary
    (killed, crashed) is reported by what it committed: its items with a record count as
    done, the others fail naming the worker and how it ended. ``committed()`` gives the ids
    of the items whose record carries the run's settings key now. Returns the workers'
    lines for the summary's details."""
    details = []
    done_now: set | None = None
    for w in workers:
        uri = storage.join(w.summary_dir, reports.SUMMARY_JSON)
        line = {"worker": w.index, "device": w.device, "videos": len(w.video_ids)}
        line |= {"items": len(w.items), "exit_code": w.returncode}
        if storage.exists(uri):
            summary = json.loads(storage.read_text(uri))
            report.done += summary["done"]
            report.add_failures(storage.join(w.summary_dir, reports.FAILURES))
            line |= {"done": summary["done"], "failed": summary["failed"]}
            line["placement"] = summary["details"].get("placement")
            line["timings_s"] = summary["timings_s"]
        else:
            done_now = committed() if done_now is None else done_now
            finished = [item for item in w.items if item.id in done_now]
            reason = f"worker: worker {w.index} ({w.device}) {ended(w.returncode)}"
            for item in w.items:
                if item.id not in done_now:
                    report.fail(item.id, reason)
            report.done += len(finished)
            line |= {"done": len(finished), "failed": len(w.items) - len(finished)}
        details.append(line)
    return details


def ended(returncode: int | None) -> str:
    """How a worker ended, in words (a signal by its name)."""
    if returncode is not None and returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            pass
    return f"exited with code {returncode} before recording this item"


def remove_worker_dirs(workers: list[Worker]) -> None:
    """The workers' own summaries, once merged (this run made them)."""
    for w in workers:
        storage.delete_prefix(w.summary_dir)
    if workers:
        parent = w.summary_dir.rstrip("/").rsplit("/", 1)[0]
        if not storage.is_gcs(parent) and os.path.isdir(parent) and not os.listdir(parent):
            os.rmdir(parent)
