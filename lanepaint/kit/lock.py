"""One writer per output: a lock file (local) or lock object (gs://) beside the output.

``<parent>/.<name>.lanepaint.lock`` holds who writes (stage, host, pid, the process's start
time, a token). It is created exclusively (``O_EXCL`` locally, ``if_generation_match=0`` on
GCS) and refreshed by a heartbeat thread while the stage runs; a clean exit removes it.

A lock that is there already means another writer, unless it is stale:

- same host: its process is gone (pid not alive, or alive with another start time);
- another host: no heartbeat for ``LANEPAINT_LOCK_LEASE_S`` seconds
  (default 180). A holder that has missed two heartbeats is waited for until the lease is
  over, so a retried task (KFP restarts a killed pod elsewhere) takes over its own lock.

Once held, temp files that killed writers left in (or beside) the output are removed:
locally only our temp names of dead processes (:func:`lanepaint.io.atomic.sweep_dead_temps`);
on GCS only our temp objects older than the lease
(:func:`lanepaint.io.storage.sweep_stale_gcs_temps`).

A live holder makes the second writer fail at once with one line (exit 2 through the kit).
Child processes of the holder (torchrun ranks) inherit its token through
``LANEPAINT_LOCK_TOKEN`` and pass; ranks started by an outside torchrun share the
launcher's run id as their token.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import posixpath
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from lanepaint.io import storage
from lanepaint.io.atomic import sweep_dead_temps
from lanepaint.io.procs import pid_alive, proc_start

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lanepaint.lock"
TOKEN_ENV = "LANEPAINT_LOCK_TOKEN"
LEASE_ENV = "LANEPAINT_LOCK_LEASE_S"
DEFAULT_LEASE_S = 180.0

_held: dict[str, int] = {}  # lock uri -> nesting depth, for locks this process holds
_held_lock = threading.Lock()


class OutputBusyError(ValueError):
    """Another run is writing the same output (one line, exit 2)."""


def lease_s() -> float:
    return float(os.environ.get(LEASE_ENV) or DEFAULT_LEASE_S)


def parent_and_name(uri: str) -> tuple[str, str]:
    """(folder, last name) of a local path or gs URI; the folder is '.' for a bare name."""
    uri = uri.rstrip("/") or uri
    if storage.is_gcs(uri):
        bucket, key = storage.split_gcs(uri)
        folder, name = posixpath.split(key)
        return f"gs://{bucket}/{folder}".rstrip("/"), name
    folder, name = os.path.split(uri)
    return folder or ".", name


def lock_uri(output: str) -> str:
    folder, name = parent_and_name(output)
    return storage.join(folder, f".{name}{LOCK_SUFFIX}")


def inherited_token() -> str | None:
    """The token of a lock held by a parent process or a torchrun sibling, if any."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id and "LOCAL_RANK" in os.environ:
        return f"torchrun:{socket.gethostname()}:{run_id}:{os.environ.get('MASTER_PORT', '')}"
    return None


@dataclass
class Holder:
    """What a lock says about its writer, and how long since its last heartbeat."""

    info: dict
    age: float
    generation: int = 0

    @property
    def same_host(self) -> bool:
        return self.info.get("host") == socket.gethostname()

    def describe(self) -> str:
        return (
            f"{self.info.get('stage', '?')} (pid {self.info.get('pid')} on "
            f"{self.info.get('host')}, since {self.info.get('started_at')}, last heartbeat "
            f"{self.age:.0f} s ago)"
        )


class OutputLock:
    """The lock of one output; :func:`output_lock` is the way to use it."""

    def __init__(self, stage: str, output: str):
        from lanepaint.io.reports import now_iso

        self.stage, self.output, self.uri = stage, output, lock_uri(output)
        self.inherited = inherited_token()
        self.token = self.inherited or uuid.uuid4().hex
        self.info = {
            "stage": stage,
            "output": output,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "proc_start": proc_start(os.getpid()),
            "token": self.token,
            "started_at": now_iso(),
        }
        self.owned = False
        self.lost = False
        self._generation = 0
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # ---------------------------------------------------------------- backends

    def _create(self) -> bool:
        text = json.dumps(self.info, sort_keys=True) + "\n"
        if storage.is_gcs(self.uri):
            generation = storage.put_if_generation(self.uri, text, 0)
            if generation is None:
                return False
            self._generation = generation
            return True
        try:
            os.makedirs(os.path.dirname(self.uri) or ".", exist_ok=True)
            fd = os.open(self.uri, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:  # a read-only or missing parent: say where, one line
            raise ValueError(f"cannot create the lock {self.uri}: {exc.strerror}") from None
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        return True

    def _read(self) -> Holder | None:
        """The current holder; None when there is no lock. An unreadable lock (a writer
        died between creating and filling it) reads as an empty holder of that age."""
        if storage.is_gcs(self.uri):
            found = storage.read_versioned(self.uri)
            if found is None:
                return None
            text, generation, age = found
        else:
            try:
                with open(self.uri) as f:
                    text = f.read()
                age = time.time() - os.stat(self.uri).st_mtime
            except FileNotFoundError:
                return None
            generation = 0
        try:
            info = json.loads(text)
        except json.JSONDecodeError:
            info = {}
        return Holder(info if isinstance(info, dict) else {}, max(0.0, age), generation)

    def _remove(self, holder: Holder) -> bool:
        """Remove the lock if it is still ``holder``'s; False when it changed meanwhile."""
        if storage.is_gcs(self.uri):
            return storage.delete_if_generation(self.uri, holder.generation)
        aside = f"{self.uri}.stale-{uuid.uuid4().hex}"
        try:
            os.rename(self.uri, aside)
        except FileNotFoundError:
            return False
        try:
            with open(aside) as f:
                same = _token_of(f.read()) == holder.info.get("token")
            if not same:  # another writer replaced it in between: give it back
                with contextlib.suppress(FileExistsError):
                    os.link(aside, self.uri)
            return same
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(aside)

    # ---------------------------------------------------------------- acquire / release

    def _judged_by_pid(self, holder: Holder) -> bool:
        return holder.same_host

    def _stale(self, holder: Holder) -> bool:
        info = holder.info
        if not info:
            return holder.age > 10.0  # a create that never got its content
        if self._judged_by_pid(holder):
            return not pid_alive(int(info.get("pid") or 0), info.get("proc_start"))
        return holder.age >= lease_s()

    def _worth_waiting(self, holder: Holder) -> bool:
        """A lock being filled, or one whose holder (judged by heartbeat) missed two beats:
        it is either back soon or stale when the lease is over."""
        if not holder.info:
            return True
        return not self._judged_by_pid(holder) and holder.age > 2 * lease_s() / 6

    def acquire(self, wait_s: float = 0.0) -> None:
        """Take the lock, or raise OutputBusyError naming the live holder."""
        deadline = time.monotonic() + wait_s
        while True:
            if self._create():
                self.owned = True
                self._start_heartbeat()
                return
            holder = self._read()
            if holder is None:
                continue  # released between our create and read
            if holder.info.get("token") == self.token:
                # Ours: a retried create that had succeeded, or a parent's / sibling's lock.
                self.owned = holder.info.get("pid") == os.getpid()
                self._generation = holder.generation
                if self.owned:
                    self._start_heartbeat()
                return
            if self._stale(holder):
                log.warning("taking over the stale lock %s of %s", self.uri, holder.describe())
                self._remove(holder)
                continue
            if self._worth_waiting(holder) or time.monotonic() < deadline:
                time.sleep(min(5.0, max(0.05, lease_s() / 60)))
                continue
            raise OutputBusyError(
                f"{self.output} is being written by {holder.describe()}; wait for it to "
                f"finish or use another output (lock: {self.uri})"
            )

    def _start_heartbeat(self) -> None:
        self._beat = threading.Thread(target=self._heartbeat, name="lock-heartbeat", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(lease_s() / 6):
            try:
                self._refresh()
            except Exception as exc:  # noqa: BLE001 - a missed beat; the next one retries
                log.warning("lock heartbeat of %s failed: %s", self.uri, exc)

    def _refresh(self) -> None:
        text = json.dumps(self.info, sort_keys=True) + "\n"
        if storage.is_gcs(self.uri):
            generation = storage.put_if_generation(self.uri, text, self._generation)
            if generation is None:
                self._lose()
            else:
                self._generation = generation
            return
        holder = self._read()
        if holder is None or holder.info.get("token") != self.token:
            self._lose()
            return
        os.utime(self.uri)

    def _lose(self) -> None:
        if not self.lost:
            log.error("lost the lock %s: another run took it over", self.uri)
        self.lost = True
        self._stop.set()

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if not self.owned or self.lost:
            return
        holder = self._read()
        if holder is not None and holder.info.get("token") == self.token:
            holder.generation = holder.generation or self._generation
            self._remove(holder)


def _token_of(text: str) -> str | None:
    try:
        return json.loads(text).get("token")
    except (json.JSONDecodeError, AttributeError):
        return None


def _sweep(output: str, lock: OutputLock) -> None:
    """Temp files of killed writers of this output go once we hold it (never a live one's).

    Local: only temps whose writer's process is gone. gs://: the writer cannot be checked,
    so only temp objects older than the lease and the GCS deadline (a live writer's temp
    lives from its upload's end to its compose, retried within that deadline), and only by
    the process that took the lock (its child ranks would only list the output again)."""
    if storage.is_gcs(output):
        if lock.inherited:
            return
        age = dt.timedelta(seconds=max(lease_s(), storage.gcs_deadline_s()))
        removed = storage.sweep_stale_gcs_temps(output, dt.datetime.now(dt.UTC) - age)
    else:
        removed = sweep_dead_temps(output)
    if removed:
        log.warning("removed %d temp file(s) left by killed runs in %s", len(removed), output)


@contextlib.contextmanager
def output_lock(stage: str, output: str, wait_s: float = 0.0) -> Iterator[OutputLock | None]:
    """Hold the lock of ``output`` for the block (re-entrant within a process). Child
    processes started inside the block inherit the lock's token."""
    uri = lock_uri(output)
    with _held_lock:
        depth = _held.get(uri, 0)
        _held[uri] = depth + 1
    if depth:
        try:
            yield None
        finally:
            with _held_lock:
                _held[uri] -= 1
        return
    lock = OutputLock(stage, output)
    previous = os.environ.get(TOKEN_ENV)
    try:
        lock.acquire(wait_s)
        os.environ[TOKEN_ENV] = lock.token
        _sweep(output, lock)
        yield lock
    finally:
        if previous is None:
            os.environ.pop(TOKEN_ENV, None)
        else:
            os.environ[TOKEN_ENV] = previous
        lock.release()
        with _held_lock:
            _held.pop(uri, None)
