"""The GCS commit order of the two multi-object writers, proven by crashing them.

``DatasetWriter.commit`` (train.csv is the commit point; an older train.csv is withdrawn
before any file under it changes) and checkpoint publishing (MANIFEST.json is the commit
point, written after every file; pruning deletes the manifest before the files) each make
a series of object-changing calls into GCS. Each test runs its writer against the real
emulator once per interruption point k = 1, 2, ...: the k-th object-changing call and
every later one raise, as if the process died there. A reader then looks at the prefix
the way the library's readers do and checks the invariant. The loop ends at the first k
the writer survives, whose result must be the complete, correct write.

Object-changing calls are counted at google-cloud-storage's lowest level that
lanepaint.io.storage reaches: ``Blob._do_upload`` (every upload_from_string /
upload_from_filename, transfer_manager's included), ``Blob.compose``, ``Blob.rewrite``,
``Blob.delete``, plus Bucket-level copies/deletes so no other path goes uncounted.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from lanepaint.data import fluxfill
from lanepaint.io import storage
from lanepaint.training import checkpoint as ckpt

pytestmark = pytest.mark.gcs

_TEMP = re.compile(r"\.tmp-[0-9a-f]{32}$")
MAX_STEPS = 200  # a writer that never finishes under this many calls is a bug of its own


class Crash(Exception):
    """The injected failure: the writing process died at this call."""


class CrashAt:
    """Counts object-changing GCS calls; the ``k``-th one and all later ones raise."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, k: int):
        from google.cloud.storage import Blob, Bucket

        self.k = k
        self.calls: list[tuple[str, str]] = []  # (method, object name) of calls let through
        self.fired = False
        self._lock = threading.Lock()
        patches = [
            (Blob, "_do_upload"),
            (Blob, "compose"),
            (Blob, "rewrite"),
            (Blob, "delete"),
            (Bucket, "copy_blob"),
            (Bucket, "delete_blobs"),
        ]
        for cls, name in patches:
            monkeypatch.setattr(cls, name, self._wrap(name, getattr(cls, name)))

    def _wrap(self, method: str, original):
        def call(obj, *args, **kwargs):
            with self._lock:
                n = len(self.calls) + 1
                if self.fired or n >= self.k:
                    self.fired = True
                    raise Crash(f"injected crash at GCS call {self.k} ({method})")
                self.calls.append((method, getattr(obj, "name", "")))
            return original(obj, *args, **kwargs)

        return call

    def created(self) -> set[str]:
        """Object names made by the calls let through (compose/rewrite/upload targets)."""
        return {name for method, name in self.calls if method != "delete"}


def _in_chain(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, Crash):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _blobs(bucket: str, prefix: str) -> dict[str, object]:
    """What an independent reader lists: name -> Blob, temps of atomic writes hidden."""
    return {
        b.name: b
        for b in storage._client().list_blobs(bucket, prefix=prefix)
        if not _TEMP.search(b.name)
    }


# --------------------------------------------------------------------------- datasets


def _image(seed: int, size: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _mask(seed: int, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[seed % size :, :] = 255
    return mask


def _dataset_writer(root: str, version: str) -> tuple[fluxfill.DatasetWriter, str, dict]:
    """A staged dataset: "old" has rows a, b; "new" has b (other bytes) and c.

    Returns the writer, its train.csv text and its files (relpath -> bytes).
    """
    rows = {"old": [("a", 1, 8), ("b", 2, 8)], "new": [("b", 3, 10), ("c", 4, 10)]}[version]
    writer = fluxfill.DatasetWriter(root)
    for name, seed, size in rows:
        writer.add(name, _image(seed, size), _mask(seed, size), f"{version} prompt {name}")
    writer.write_text("meta.json", json.dumps({"version": version}))
    files = {
        p.relative_to(writer.staging).as_posix(): p.read_bytes()
        for p in sorted(writer.staging.rglob("*"))
        if p.is_file()
    }
    return writer, fluxfill.format_csv(writer.rows), files


def _read_dataset_state(root: str, versions: dict[str, tuple[str, dict]]) -> str | None:
    """Which dataset a reader of ``root`` sees ("old", "new", or None without train.csv),
    failing if train.csv is visible while any file of its dataset is missing or changed."""
    prefix = root.rstrip("/") + "/"
    listed = {u[len(prefix) :] for u in storage.list_files(root)}
    if fluxfill.CSV_NAME not in listed:
        return None
    text = storage.read_text(storage.join(root, fluxfill.CSV_NAME))
    label = next((v for v, (csv, _) in versions.items() if csv == text), None)
    assert label is not None, f"train.csv is neither the old nor the new one:\n{text}"
    rows, rejected = fluxfill.read_dataset(root)
    assert not rejected
    files = versions[label][1]
    named = {r.image for r in rows} | {r.mask for r in rows}
    assert named <= set(files)
    for rel, data in files.items():
        assert rel in listed, f"the {label} train.csv is visible but {rel} does not exist"
        assert storage.read_bytes(storage.join(root, rel)) == data, (
            f"the {label} train.csv is visible but {rel} holds other bytes"
        )
    return label


def test_dataset_commit_order_on_gcs(gcs_bucket, monkeypatch):
    seen: list[str | None] = []
    for k in range(1, MAX_STEPS + 1):
        root = f"gs://{gcs_bucket}/k{k:03d}/dataset"
        old, old_csv, old_files = _dataset_writer(root, "old")
        old.commit()
        new, new_csv, new_files = _dataset_writer(root, "new")
        versions = {"old": (old_csv, old_files), "new": (new_csv, new_files)}
        if k == 1:  # the setup is what it should be
            assert _read_dataset_state(root, versions) == "old"

        with monkeypatch.context() as m:
            crash = CrashAt(m, k)
            try:
                new.commit()
                error = None
            except Exception as exc:  # what the crash surfaces as (Crash or RuntimeError)
                error = exc
        if crash.fired:
            assert _in_chain(error), f"k={k}: the write failed for another reason: {error!r}"
            new.discard()
        else:
            assert error is None
        seen.append(_read_dataset_state(root, versions))
        if not crash.fired:
            break
    else:
        pytest.fail(f"the dataset write did not finish within {MAX_STEPS} GCS calls")

    # The last k is the write that ran through: complete and correct.
    steps = len(crash.calls)
    print(f"dataset commit: {steps} interruption points, reader saw {seen}")
    assert k == steps + 1 and steps >= len(new_files) + 2
    assert seen[-1] == "new"
    rows, rejected = fluxfill.read_dataset(root)
    assert not rejected and fluxfill.format_csv(rows) == new_csv
    assert {f"dataset/{r}" for r in [*new_files, fluxfill.CSV_NAME]} <= {
        n.split("/", 1)[1] for n in crash.created()
    }, "an object was created by a call this test does not count"
    # old -> (withdrawn) -> new, never back; the old CSV goes before any file changes
    states = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
    assert states == ["old", None, "new"], seen
    assert crash.calls[0] == ("delete", f"k{k:03d}/dataset/{fluxfill.CSV_NAME}")


# --------------------------------------------------------------------------- checkpoints


def _staging(tmp_path: Path, step: int, attempt: int) -> tuple[Path, dict]:
    """Accelerate-like checkpoint files; sizes depend on the step."""
    folder = tmp_path / f"staging-{step}-{attempt}"
    files = {
        "pytorch_lora_weights.safetensors": bytes([step]) * (300 + step),
        "optimizer.bin": bytes([step + 1]) * (200 + 2 * step),
        "scheduler.bin": b"s" * (10 + step),
        "random_states_0.pkl": b"r" * (50 + step),
        ckpt.STATE: json.dumps({"step": step}).encode(),
        # sorts before MANIFEST.json, so a prune that deletes the folder in parallel does not
        # happen to take the manifest first
        "EMA/ema.bin": b"e" * (5 + step),
    }
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder, files


def _read_checkpoint_state(out: str, versions: dict[int, dict], tmp_path: Path) -> int | None:
    """The step a resuming trainer would take; fails if any visible MANIFEST.json lists a
    file that is missing or of another size than listed (or than the checkpoint's)."""
    bucket, key = storage.split_gcs(out)
    blobs = _blobs(bucket, f"{key}/{ckpt.CHECKPOINTS}/")
    for name in sorted(blobs):
        if not name.endswith("/" + ckpt.MANIFEST):
            continue
        folder = name[: -len(ckpt.MANIFEST)]
        manifest = json.loads(blobs[name].download_as_bytes())
        step = manifest["step"]
        assert manifest["files"] == {r: len(d) for r, d in versions[step].items()}
        for rel, size in manifest["files"].items():
            blob = blobs.get(folder + rel)
            assert blob is not None, f"{name} is visible but {rel} does not exist"
            assert blob.size == size, f"{name} is visible but {rel} has {blob.size} != {size} B"
    latest = ckpt.latest_complete(out)
    if latest is None:
        return None
    info, manifest = latest
    local = ckpt.fetch(info, manifest, tmp_path / "fetched")  # verifies names and sizes
    for rel, data in versions[info.step].items():
        assert (local / rel).read_bytes() == data
    return info.step


@pytest.mark.slow  # ~4 s: 19 publishes against the emulator
def test_checkpoint_publish_order_on_gcs(gcs_bucket, monkeypatch, tmp_path):
    seen: list[int | None] = []
    for k in range(1, MAX_STEPS + 1):
        out = f"gs://{gcs_bucket}/k{k:03d}/run"
        first, files_1 = _staging(tmp_path, 1, k)
        ckpt.publish(first, f"{out}/{ckpt.CHECKPOINTS}/{ckpt.checkpoint_name(1)}", {"step": 1})
        dest = f"{out}/{ckpt.CHECKPOINTS}/{ckpt.checkpoint_name(2)}"
        # leftovers of an earlier attempt at step 2 that died before its manifest
        storage.write_bytes(f"{dest}/optimizer.bin", b"partial")
        storage.write_bytes(f"{dest}/stale.bin", b"stale")
        second, files_2 = _staging(tmp_path, 2, k)
        versions = {1: files_1, 2: files_2}
        if k == 1:  # the setup is what it should be
            assert _read_checkpoint_state(out, versions, tmp_path) == 1

        # The trainer's path: Publisher publishes, then prunes to the newest `keep`.
        with monkeypatch.context() as m:
            crash = CrashAt(m, k)
            publisher = ckpt.Publisher(out, keep=1)
            publisher.submit(2, second, {"step": 2})
            publisher.close()
        if crash.fired:
            assert len(publisher.failures) == 1, publisher.failures
            assert "injected crash" in publisher.failures[0]["reason"], publisher.failures
        else:
            assert publisher.failures == [] and publisher.published == [2]
        seen.append(_read_checkpoint_state(out, versions, tmp_path))
        if not crash.fired:
            break
    else:
        pytest.fail(f"the checkpoint publish did not finish within {MAX_STEPS} GCS calls")

    steps = len(crash.calls)
    print(f"checkpoint publish: {steps} interruption points, reader saw {seen}")
    assert k == steps + 1 and steps >= len(files_2) + 2
    # complete and correct: step 2 alone, exactly its files, step 1 and leftovers gone
    assert [(i.step, i.complete) for i in ckpt.list_checkpoints(out)] == [(2, True)]
    bucket, key = storage.split_gcs(out)
    names = set(_blobs(bucket, f"{key}/"))
    folder = f"{key}/{ckpt.CHECKPOINTS}/{ckpt.checkpoint_name(2)}/"
    assert names == {folder + r for r in [*files_2, ckpt.MANIFEST]}
    assert names <= crash.created(), "an object was created by a call this test does not count"
    # the resumable step only moves forward: 1 until step 2's manifest lands, then 2
    states = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
    assert states == [1, 2], seen
