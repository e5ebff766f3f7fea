"""Checkpoints under ``{output}/checkpoints/checkpoint-NNNNNN/``, local or gs://.

A checkpoint is written whole into a local staging folder first (accelerate's state: LoRA
weights, optimizer, per-process RNG states; plus the LR scheduler's state as JSON and our
training state) and then published. ``MANIFEST.json`` (file names and sizes, the settings
the run was made with) is the commit point: locally the finished folder is renamed into
place with the manifest inside; on GCS every file is uploaded first and the manifest last.
A checkpoint without a manifest, or whose files do not match it, is never resumed from, so
a full disk or a failed upload cannot produce a corrupt "latest".
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import shutil
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lanepaint.io import storage
from lanepaint.io.atomic import atomic_path
from lanepaint.io.reports import now_iso

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
MANIFEST = "MANIFEST.json"
STATE = "training_state.json"
LR_SCHEDULER = "lr_scheduler.json"
_NAME_RE = re.compile(r"^checkpoint-(\d{6,})$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, published or read."""


class ResumeMismatchError(ValueError):
    """The checkpoint in the output folder was made with other settings."""


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:06d}"


@dataclass(frozen=True)
class CheckpointInfo:
    step: int
    uri: str
    complete: bool


def list_checkpoints(output_dir: str) -> list[CheckpointInfo]:
    """Every ``checkpoint-N`` folder under the output, oldest first, complete or not."""
    root = storage.join(output_dir, CHECKPOINTS)
    found: dict[int, set[str]] = {}
    if storage.is_gcs(root):
        prefix = root.rstrip("/") + "/"
        for uri in storage.list_files(root):
            name, _, rest = uri[len(prefix) :].partition("/")
            m = _NAME_RE.match(name)
            if m:
                found.setdefault(int(m.group(1)), set()).add(rest)
    elif os.path.isdir(root):
        for name in os.listdir(root):
            m = _NAME_RE.match(name)
            if m and os.path.isdir(os.path.join(root, name)):
                found[int(m.group(1))] = set(os.listdir(os.path.join(root, name)))
    return [
        CheckpointInfo(step, storage.join(root, checkpoint_name(step)), MANIFEST in files)
        for step, files in sorted(found.items())
    ]


def read_manifest(uri: str) -> dict | None:
    """The manifest of a checkpoint, or None when it is missing or unreadable."""
    try:
        manifest = json.loads(storage.read_text(storage.join(uri, MANIFEST)))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return manifest if isinstance(manifest, dict) and "files" in manifest else None


def latest_complete(output_dir: str) -> tuple[CheckpointInfo, dict] | None:
    """The newest checkpoint with a readable manifest."""
    for info in reversed(list_checkpoints(output_dir)):
        if info.complete:
            manifest = read_manifest(info.uri)
            if manifest is not None:
                return info, manifest
            log.warning("ignoring %s: unreadable manifest", info.uri)
    return None


def saved_settings(manifest: dict) -> dict:
    """The settings a checkpoint was made with (``fingerprint`` in older checkpoints)."""
    return manifest.get("settings") or manifest.get("fingerprint") or {}


def save_scheduler_state(scheduler, folder: Path) -> None:
    """The LR scheduler's state as JSON: its state_dict is plain numbers (accelerate's
    custom-state path would pickle it, and loading a pickle can run code)."""
    (folder / LR_SCHEDULER).write_text(json.dumps(scheduler.state_dict()) + "\n")


def load_scheduler_state(scheduler, folder: Path, step: int) -> None:
    """Restore the state saved by :func:`save_scheduler_state`. Older checkpoints pickled
    it instead; the schedule is a function of the step count, so it is replayed."""
    path = folder / LR_SCHEDULER
    if path.is_file():
        scheduler.load_state_dict(json.loads(path.read_text()))
        return
    log.info("%s has no %s: replaying the LR schedule to step %d", folder, LR_SCHEDULER, step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()"
        for _ in range(step):
            scheduler.step()


def _file_sizes(folder: Path) -> dict[str, int]:
    return {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def verify(folder: Path, manifest: dict) -> None:
    """Raise CheckpointError unless ``folder`` holds exactly the manifest's files and sizes."""
    have = _file_sizes(folder)
    want = manifest["files"]
    bad = sorted(k for k in want if have.get(k) != want[k])
    if bad:
        raise CheckpointError(f"checkpoint {folder} does not match its manifest: {bad}")


def publish(staging: Path, dest: str, manifest: dict) -> dict:
    """Publish the finished ``staging`` folder at ``dest``; the manifest is the commit point."""
    manifest = {**manifest, "files": _file_sizes(staging), "published_at": now_iso()}
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    if storage.is_gcs(dest):
        storage.delete_prefix(dest)  # leftovers of an earlier failed attempt at this step
        storage.upload_dir(staging, dest)
        storage.write_text(storage.join(dest, MANIFEST), text)
        shutil.rmtree(staging, ignore_errors=True)
    else:
        (staging / MANIFEST).write_text(text)
        with atomic_path(dest) as tmp:
            shutil.move(str(staging), str(tmp))
    return manifest


def fetch(info: CheckpointInfo, manifest: dict, local_dir: Path) -> Path:
    """A verified local folder with the checkpoint's files (gs:// is downloaded)."""
    if storage.is_gcs(info.uri):
        if local_dir.exists():
            shutil.rmtree(local_dir)
        storage.download_dir(info.uri, local_dir)
        folder = local_dir
    else:
        folder = Path(info.uri)
    verify(folder, manifest)
    return folder


def prune(output_dir: str, keep: int, all_incomplete: bool = False) -> list[int]:
    """Delete all but the newest ``keep`` complete checkpoints, and incomplete leftovers.

    Incomplete folders older than the newest complete one are leftovers of failed
    publishes; with ``all_incomplete`` (at start-up, when no publish can be in flight)
    newer ones go too. The manifest goes first, so a checkpoint half deleted is never
    taken for complete. Returns the steps deleted.
    """
    infos = list_checkpoints(output_dir)
    complete = [i for i in infos if i.complete]
    newest = complete[-1].step if complete else -1
    doomed = complete[: max(0, len(complete) - keep)]
    doomed += [i for i in infos if not i.complete and (all_incomplete or i.step < newest)]
    for info in sorted(doomed, key=lambda i: i.step):
        storage.delete(storage.join(info.uri, MANIFEST))
        storage.delete_prefix(info.uri)
    return sorted(i.step for i in doomed)


class Publisher:
    """Publishes checkpoints on one background thread so training does not wait on GCS.

    At most one publish is in flight (``submit`` waits for the previous one). Failures are
    recorded, not raised: the previous complete checkpoint stays the latest.
    """

    def __init__(self, output_dir: str, keep: int):
        self.output_dir = output_dir
        self.keep = keep
        self.failures: list[dict] = []
        self.published: list[int] = []
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None

    def submit(
        self, step: int, staging: Path, manifest: dict, publish_fn: Callable | None = None
    ) -> None:
        self.wait()
        self._idle.clear()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ckpt-publish", daemon=True)
            self._thread.start()
        self._queue.put((step, staging, manifest, publish_fn))

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            step, staging, manifest, publish_fn = job
            dest = storage.join(self.output_dir, CHECKPOINTS, checkpoint_name(step))
            try:
                (publish_fn or publish)(staging, dest, manifest)
                self.published.append(step)
                deleted = prune(self.output_dir, self.keep)
                log.info("checkpoint %s published%s", dest, f"; pruned {deleted}" * bool(deleted))
            except Exception as exc:  # disk full, GCS outage: keep training, keep old latest
                log.error("checkpoint at step %d failed: %s: %s", step, type(exc).__name__, exc)
                self.failures.append({"step": step, "reason": f"{type(exc).__name__}: {exc}"})
                shutil.rmtree(staging, ignore_errors=True)
            finally:
                self._idle.set()

    def record_failure(self, step: int, reason: str) -> None:
        self.failures.append({"step": step, "reason": reason})

    def wait(self) -> None:
        self._idle.wait()

    def close(self) -> None:
        """Wait for the last publish and stop the thread."""
        self.wait()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
