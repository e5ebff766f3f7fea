"""One storage API for local paths and ``gs://bucket/key`` URIs.

Every stage reads and writes its artifacts through this module so that the same code runs
on a laptop (local folders) and in KFP (GCS under the pipeline root). Writes are atomic at
the destination: a reader, a retried KFP task or a parallel worker sees either the old or
the new content, never a partial file. GCS calls are retried on transient errors (429,
5xx, connection errors) with the library's exponential-backoff ``DEFAULT_RETRY``.

Credentials: ``gs://`` uses Application Default Credentials (``storage.Client()``; on a
laptop ``gcloud auth application-default login``, in CI ``GOOGLE_APPLICATION_CREDENTIALS``,
on GKE Workload Identity) and the project from ``GOOGLE_CLOUD_PROJECT`` or the credentials;
objects need no project, so none is fine. ``STORAGE_EMULATOR_HOST`` points every call at an
emulator (fake-gcs-server) with anonymous credentials. See docs/cluster.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import mimetypes
import os
import posixpath
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from lanepaint.io.atomic import _is_temp_name, atomic_path, atomic_write_bytes

if TYPE_CHECKING:
    from google.cloud.storage import Blob, Client

_SCHEME = "gs://"
# Bucket naming rules (lowercase letters, digits, -, _, .), lenient on the details.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
# Temp objects made by _publish_gcs: `<key>.tmp-<uuid hex>`.
_GCS_TEMP_RE = re.compile(r"\.tmp-[0-9a-f]{32}$")

_client_lock = threading.Lock()
_client_cache: tuple[tuple[int, str | None, str | None], Client] | None = None
_CREDENTIALS_HINT = (
    "gs:// needs Application Default Credentials: on a laptop run `gcloud auth "
    "application-default login`; in CI set GOOGLE_APPLICATION_CREDENTIALS to a key file or a "
    "workload identity federation config; on GKE use Workload Identity; for an emulator set "
    "STORAGE_EMULATOR_HOST (docs/cluster.md)"
)


class CredentialsError(Exception):
    """No Application Default Credentials for ``gs://``: one line saying how to get them
    (a user error, exit 2 through the stage kit)."""


DEADLINE_ENV = "LANEPAINT_GCS_DEADLINE_S"
_DEFAULT_DEADLINE_S = 120.0
_outage_lock = threading.Lock()
_outage_since: float | None = None  # monotonic time of the first failed try of this outage


def gcs_deadline_s() -> float:
    """The one retry budget of a stage's GCS outage (env ``LANEPAINT_GCS_DEADLINE_S``)."""
    raw = os.environ.get(DEADLINE_ENV, "")
    try:
        value = float(raw) if raw.strip() else _DEFAULT_DEADLINE_S
    except ValueError:
        raise ValueError(f"{DEADLINE_ENV}={raw!r} is not a number of seconds") from None
    if not value > 0:
        raise ValueError(f"{DEADLINE_ENV} must be > 0 seconds, got {raw!r}")
    return value


def _note_error(_exc: Exception, started: float | None = None) -> None:
    """An outage starts when its first failed call started (a hung try counts)."""
    global _outage_since
    with _outage_lock:
        if _outage_since is None:
            _outage_since = time.monotonic() if started is None else started


def _note_success() -> None:
    global _outage_since
    if _outage_since is not None:
        with _outage_lock:
            _outage_since = None


def _retry():
    """``DEFAULT_RETRY`` (exponential backoff on 429/5xx/connection errors) under ONE
    deadline per outage, not one per call: a dead endpoint used to cost the library's 120 s
    on every remaining call. The clock starts at the first failed try and stops at the
    next call that succeeds; once spent, each call makes a single try and fails."""
    from google.api_core.retry import Retry
    from google.cloud.storage.retry import DEFAULT_RETRY

    class _OutageRetry(Retry):
        def __call__(self, func, on_error=None):
            def call(*args, **kwargs):
                started = time.monotonic()
                inner = super(_OutageRetry, self).__call__(
                    func, lambda exc: _note_error(exc, started)
                )
                result = inner(*args, **kwargs)
                _note_success()
                return result

            return call

    since = _outage_since
    left = gcs_deadline_s() - (time.monotonic() - since if since is not None else 0.0)
    return _OutageRetry(
        predicate=DEFAULT_RETRY._predicate,
        initial=DEFAULT_RETRY._initial,
        maximum=DEFAULT_RETRY._maximum,
        multiplier=DEFAULT_RETRY._multiplier,
        timeout=max(left, 0.001),
    )


def _request_timeout(given):
    """A try's HTTP timeout (the library's is 60 s per try, and a hung endpoint that
    accepts connections and never answers held each try that long): at most what is left
    of the outage deadline, and once it is spent at most min(deadline, 10 s), so a healthy
    endpoint can still end the outage."""
    deadline = gcs_deadline_s()
    since = _outage_since
    left = deadline - (time.monotonic() - since) if since is not None else deadline
    cap = max(left, min(deadline, _SPENT_TRY_S))
    if isinstance(given, tuple):
        return tuple(None if t is None else min(t, cap) for t in given)
    return cap if given is None else min(given, cap)


_SPENT_TRY_S = 10.0


def _bound_timeouts(client: Client) -> Client:
    """Every HTTP request of ``client`` (JSON API calls and media transfers both go
    through its session) gets :func:`_request_timeout`."""
    session = client._http
    request = session.request

    def bounded(method, url, *args, **kwargs):
        kwargs["timeout"] = _request_timeout(kwargs.get("timeout"))
        return request(method, url, *args, **kwargs)

    session.request = bounded
    return client


def _client() -> Client:
    """The process's storage client, created on first use.

    Keyed by pid (a forked worker must not share the parent's HTTP connections), by the
    emulator address (tests start the emulator after import) and by GOOGLE_CLOUD_PROJECT.
    """
    global _client_cache
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    project = os.environ.get("GOOGLE_CLOUD_PROJECT")
    key = (os.getpid(), emulator, project)
    with _client_lock:
        if _client_cache is None or _client_cache[0] != key:
            _client_cache = (key, _bound_timeouts(_new_client(emulator, project)))
        return _client_cache[1]


def _new_client(emulator: str | None, project: str | None) -> Client:
    """An emulator client (anonymous), or one on Application Default Credentials whose
    project is GOOGLE_CLOUD_PROJECT, else the credentials' own, else none at all."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    if emulator:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project=project or "lanepaint-local", credentials=AnonymousCredentials()
        )
    try:
        try:
            return storage.Client()
        except OSError:
            # "Project was not passed and could not be determined": reading and writing
            # objects needs no project (e.g. ADC from `gcloud auth application-default
            # login` without a gcloud default project).
            return storage.Client(project=None)
    except DefaultCredentialsError as exc:
        raise CredentialsError(f"{_CREDENTIALS_HINT} ({exc})") from exc


def _not_found() -> type[Exception]:
    from google.api_core.exceptions import NotFound

    return NotFound


# --------------------------------------------------------------------------- URIs


def is_gcs(uri: str) -> bool:
    """True for ``gs://`` URIs."""
    return str(uri).startswith(_SCHEME)


def split_gcs(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``; the key is ``""`` for the bucket root."""
    if not is_gcs(uri):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    bucket, _, key = uri[len(_SCHEME) :].partition("/")
    if not _BUCKET_RE.match(bucket):
        raise ValueError(f"malformed gs:// URI (bad bucket name): {uri!r}")
    return bucket, key


def _gcs_uri(bucket: str, key: str) -> str:
    return f"{_SCHEME}{bucket}/{key}"


def _dir_prefix(key: str) -> str:
    """Object-name prefix for the "directory" ``key`` (``""`` for the bucket root)."""
    key = key.rstrip("/")
    return f"{key}/" if key else ""


def join(base: str, *parts: str) -> str:
    """Join path parts under ``base``.

    Parts are always relative to ``base`` (leading slashes are dropped, unlike
    os.path.join) so that joining a key never escapes the root on either backend.
    """
    parts = tuple(str(p) for p in parts)
    if is_gcs(base):
        bucket, key = split_gcs(base)
        pieces = [key, *parts]
        segments = [s for piece in pieces for s in piece.split("/") if s]
        out = _gcs_uri(bucket, "/".join(segments))
        last = next((p for p in reversed(pieces) if p.strip("/")), "")
        if segments and last.endswith("/"):
            out += "/"
        return out
    return os.path.join(base, *(p.lstrip("/" + os.sep) for p in parts))


# --------------------------------------------------------------------------- reads


def exists(uri: str) -> bool:
    """True if a file/object exists at ``uri`` or, for a directory/prefix, anything under it."""
    if not is_gcs(uri):
        return os.path.exists(uri)
    bucket_name, key = split_gcs(uri)
    bucket = _client().bucket(bucket_name)
    if not key:
        return bucket.exists(retry=_retry())
    try:
        if not key.endswith("/") and bucket.blob(key).exists(retry=_retry()):
            return True
        blobs = _client().list_blobs(
            bucket_name, prefix=_dir_prefix(key), page_size=100, retry=_retry()
        )
        return any(not _GCS_TEMP_RE.search(b.name) for b in blobs)
    except _not_found():
        return False


def read_bytes(uri: str) -> bytes:
    """Whole file/object as bytes; FileNotFoundError names ``uri`` when missing."""
    if not is_gcs(uri):
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"no such file: {uri}") from None
    bucket_name, key = split_gcs(uri)
    try:
        return _client().bucket(bucket_name).blob(key).download_as_bytes(retry=_retry())
    except _not_found():
        raise FileNotFoundError(f"no such object: {uri}") from None


def read_text(uri: str) -> str:
    """UTF-8 text of a file/object."""
    return read_bytes(uri).decode("utf-8")


# --------------------------------------------------------------------------- writes


def _content_type(key: str, default: str = "application/octet-stream") -> str:
    return mimetypes.guess_type(key)[0] or default


def _publish_gcs(uri: str, upload: Callable[[Blob], None], content_type: str) -> None:
    """Upload to ``<key>.tmp-<uuid>`` and compose it onto ``key``.

    Readers of ``key`` never see a partial object. The temp upload carries
    ``if_generation_match=0``, which makes it safe to retry; compose of the same source
    onto the same name is idempotent, so it is retried unconditionally.
    """
    from google.api_core.exceptions import PreconditionFailed

    bucket_name, key = split_gcs(uri)
    if not key or key.endswith("/"):
        raise ValueError(f"not an object URI: {uri!r}")
    bucket = _client().bucket(bucket_name)
    tmp = bucket.blob(f"{key}.tmp-{uuid.uuid4().hex}")
    try:
        try:
            upload(tmp)
        except PreconditionFailed:
            # Only a retry of our own finished upload can hit a uuid-named object.
            pass
        final = bucket.blob(key)
        final.content_type = content_type
        final.compose([tmp], retry=_retry())
    except _not_found():
        raise FileNotFoundError(f"bucket not found for {uri}") from None
    finally:
        with contextlib.suppress(_not_found()):
            tmp.delete(retry=_retry())


def write_bytes(uri: str, data: bytes) -> None:
    """Atomically write ``data`` to a file/object (creating parent directories)."""
    if not is_gcs(uri):
        atomic_write_bytes(uri, data)
        return
    ctype = _content_type(uri)

    def upload(blob: Blob) -> None:
        blob.upload_from_string(data, content_type=ctype, if_generation_match=0, retry=_retry())

    _publish_gcs(uri, upload, ctype)


def write_text(uri: str, text: str) -> None:
    """Atomically write UTF-8 text."""
    if not is_gcs(uri):
        write_bytes(uri, text.encode("utf-8"))
        return
    ctype = _content_type(uri, "text/plain")
    data = text.encode("utf-8")

    def upload(blob: Blob) -> None:
        blob.upload_from_string(data, content_type=ctype, if_generation_match=0, retry=_retry())

    _publish_gcs(uri, upload, ctype)


def upload_file(local_path: str | Path, uri: str) -> None:
    """Publish a local file at ``uri`` (local or gs), atomically at the destination."""
    src = Path(local_path)
    if not src.is_file():
        raise FileNotFoundError(f"no such file: {src}")
    if not is_gcs(uri):
        with atomic_path(uri) as tmp:
            shutil.copyfile(src, tmp)
        return
    ctype = _content_type(uri)

    def upload(blob: Blob) -> None:
        blob.upload_from_filename(
            str(src), content_type=ctype, if_generation_match=0, retry=_retry()
        )

    _publish_gcs(uri, upload, ctype)


def download_file(uri: str, local_path: str | Path) -> None:
    """Fetch ``uri`` (local or gs) to ``local_path`` via temp file + rename."""
    if not is_gcs(uri):
        if not os.path.isfile(uri):
            raise FileNotFoundError(f"no such file: {uri}")
        with atomic_path(local_path) as tmp:
            shutil.copyfile(uri, tmp)
        return
    bucket_name, key = split_gcs(uri)
    blob = _client().bucket(bucket_name).blob(key)
    try:
        with atomic_path(local_path) as tmp:
            blob.download_to_filename(str(tmp), retry=_retry())
    except _not_found():
        raise FileNotFoundError(f"no such object: {uri}") from None


def copy(src: str, dst: str) -> None:
    """Copy one file/object between any combination of local paths and gs URIs."""
    if not is_gcs(src):
        upload_file(src, dst)
        return
    if not is_gcs(dst):
        download_file(src, dst)
        return
    # gs -> gs: server-side rewrite (the object appears only when complete; the loop covers
    # large cross-location copies that need several calls). Same-content rewrite is
    # idempotent, hence retried unconditionally.
    src_bucket, src_key = split_gcs(src)
    dst_bucket, dst_key = split_gcs(dst)
    client = _client()
    source = client.bucket(src_bucket).blob(src_key)
    target = client.bucket(dst_bucket).blob(dst_key)
    try:
        token, _, _ = target.rewrite(source, retry=_retry())
        while token is not None:
            token, _, _ = target.rewrite(source, token=token, retry=_retry())
    except _not_found():
        if not exists(src):
            raise FileNotFoundError(f"no such object: {src}") from None
        raise FileNotFoundError(f"bucket not found for {dst}") from None


# --------------------------------------------------------------------------- listing


def _walk_local(root: Path) -> list[Path]:
    """Files under ``root`` (recursive), skipping temps of atomic.py."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not _is_temp_name(d)]
        out.extend(Path(dirpath, f) for f in filenames if not _is_temp_name(f))
    return out


def _list_gcs(uri: str, include_temp: bool = False) -> list[Blob]:
    """Blobs at ``key`` itself or under ``key/``; placeholder "folder" objects skipped."""
    bucket_name, key = split_gcs(uri)
    prefix = _dir_prefix(key)
    exact = key.rstrip("/")
    try:
        blobs = _client().list_blobs(bucket_name, prefix=exact or None, retry=_retry())
        out = [
            b
            for b in blobs
            if (b.name == exact or b.name.startswith(prefix))
            and not b.name.endswith("/")
            and (include_temp or not _GCS_TEMP_RE.search(b.name))
        ]
    except _not_found():
        raise FileNotFoundError(f"bucket not found for {uri}") from None
    return out


def list_files(prefix: str) -> list[str]:
    """Every file/object at or under ``prefix`` (recursive), as full URIs/paths, sorted.

    A missing local path or empty prefix gives ``[]``; a missing bucket raises
    FileNotFoundError. Temps of in-flight atomic writes are excluded.
    """
    if is_gcs(prefix):
        bucket_name, _ = split_gcs(prefix)
        return sorted(_gcs_uri(bucket_name, b.name) for b in _list_gcs(prefix))
    root = Path(prefix)
    if root.is_file():
        return [] if _is_temp_name(root.name) else [str(root)]
    if not root.is_dir():
        return []
    return sorted(os.path.join(prefix, str(p.relative_to(root))) for p in _walk_local(root))


# --------------------------------------------------------------------------- deletes


def delete(uri: str) -> None:
    """Delete one file/object; absent is fine. A local directory raises IsADirectoryError."""
    if not is_gcs(uri):
        if os.path.isdir(uri) and not os.path.islink(uri):
            raise IsADirectoryError(f"use delete_prefix for directories: {uri}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(uri)
        return
    bucket_name, key = split_gcs(uri)
    with contextlib.suppress(_not_found()):
        _client().bucket(bucket_name).blob(key).delete(retry=_retry())


def delete_prefix(uri: str) -> None:
    """Delete a file/object and everything under it (temps included); absent is fine."""
    if not is_gcs(uri):
        if os.path.isdir(uri) and not os.path.islink(uri):
            shutil.rmtree(uri)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(uri)
        return
    try:
        blobs = _list_gcs(uri, include_temp=True)
    except FileNotFoundError:
        return
    _delete_blobs(blobs)


def _delete_blobs(blobs: list[Blob], max_workers: int = 8) -> None:
    def one(blob: Blob) -> None:
        with contextlib.suppress(_not_found()):
            blob.delete(retry=_retry())

    if len(blobs) <= 1:
        for b in blobs:
            one(b)
        return
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        list(pool.map(one, blobs))


def sweep_stale_gcs_temps(uri: str, created_before: dt.datetime) -> list[str]:
    """Delete the temp objects of :func:`_publish_gcs` (``<key>.tmp-<32 hex>``) at or under
    ``uri`` that were created before ``created_before``; returns their URIs.

    A killed writer leaves its temp between upload and compose; listings hide it but it
    costs storage forever. On GCS the writer's process cannot be checked, so age decides:
    the caller (the output's lock holder) passes a cutoff no live writer's temp can predate.
    Objects of other outputs (``<uri>-b/...``) and look-alike names are never touched."""
    bucket_name, key = split_gcs(uri)
    exact = key.rstrip("/")
    try:
        # One listing of the output (a page per 1000 objects); no server-side glob: the
        # emulator ignores matchGlob, so it could not be tested.
        listed = _client().list_blobs(bucket_name, prefix=exact or None, retry=_retry())
        stale = [
            b
            for b in listed
            if _GCS_TEMP_RE.search(b.name)
            and (
                not exact or b.name.startswith(exact + "/") or _GCS_TEMP_RE.sub("", b.name) == exact
            )
            and b.time_created is not None
            and b.time_created < created_before
        ]
    except _not_found():
        return []
    _delete_blobs(stale)
    return [_gcs_uri(bucket_name, b.name) for b in stale]


# --------------------------------------------------------------------------- versioned objects


def put_if_generation(uri: str, text: str, generation: int = 0) -> int | None:
    """Write a gs object only if its generation is ``generation`` (0: only if absent).

    Returns the new generation, or None when the object is not at that generation (someone
    else wrote it). The condition makes a retried request safe. Used for lock objects.
    """
    from google.api_core.exceptions import PreconditionFailed

    bucket_name, key = split_gcs(uri)
    blob = _client().bucket(bucket_name).blob(key)
    try:
        blob.upload_from_string(
            text.encode("utf-8"),
            content_type="application/json",
            if_generation_match=generation,
            retry=_retry(),
        )
    except PreconditionFailed:
        return None
    except _not_found():
        raise FileNotFoundError(f"bucket not found for {uri}") from None
    return int(blob.generation)


def read_versioned(uri: str) -> tuple[str, int, float] | None:
    """(text, generation, seconds since it was last written) of a gs object; None if absent."""
    bucket_name, key = split_gcs(uri)
    try:
        blob = _client().bucket(bucket_name).get_blob(key, retry=_retry())
        if blob is None:
            return None
        text = blob.download_as_bytes(if_generation_match=blob.generation, retry=_retry())
    except _not_found():
        return None
    except Exception as exc:  # PreconditionFailed: rewritten between the two calls
        if type(exc).__name__ != "PreconditionFailed":
            raise
        return read_versioned(uri)
    age = (dt.datetime.now(dt.UTC) - blob.updated).total_seconds()
    return text.decode("utf-8", errors="replace"), int(blob.generation), age


def delete_if_generation(uri: str, generation: int) -> bool:
    """Delete a gs object only if it is still at ``generation``; False when it was not."""
    from google.api_core.exceptions import PreconditionFailed

    bucket_name, key = split_gcs(uri)
    try:
        _client().bucket(bucket_name).blob(key).delete(
            if_generation_match=generation, retry=_retry()
        )
    except PreconditionFailed:
        return False
    except _not_found():
        return True
    return True


# --------------------------------------------------------------------------- trees


def _raise_failures(action: str, uri: str, names: list[str], results: list) -> None:
    """transfer_manager returns one result per file (None or an exception): surface them."""
    failures = [(n, r) for n, r in zip(names, results, strict=True) if isinstance(r, Exception)]
    if failures:
        name, first = failures[0]
        raise RuntimeError(
            f"{action} {uri}: {len(failures)} of {len(names)} files failed (first: {name}: {first})"
        ) from first


def _copy_tree(src: Path, dst: Path) -> list[str]:
    if not src.is_dir():
        raise FileNotFoundError(f"no such directory: {src}")
    out = []
    for path in sorted(_walk_local(src)):
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        out.append(str(target))
    return out


def upload_dir(local_dir: str | Path, uri: str, max_workers: int = 8) -> list[str]:
    """Upload the tree under ``local_dir`` to ``uri``; returns the destination URIs.

    Objects are uploaded in parallel threads by transfer_manager; any failed file raises.
    Each object appears whole, but the tree as a whole is not atomic on GCS.
    """
    src = Path(local_dir)
    if not is_gcs(uri):
        return _copy_tree(src, Path(uri))
    if not src.is_dir():
        raise FileNotFoundError(f"no such directory: {src}")
    from google.cloud.storage import transfer_manager

    names = sorted(p.relative_to(src).as_posix() for p in _walk_local(src))
    if not names:
        return []
    bucket_name, key = split_gcs(uri)
    prefix = _dir_prefix(key)
    results = transfer_manager.upload_many_from_filenames(
        _client().bucket(bucket_name),
        names,
        source_directory=str(src),
        blob_name_prefix=prefix,
        # Re-uploading identical bytes to the same name is idempotent.
        upload_kwargs={"retry": _retry()},
        max_workers=max_workers,
        worker_type=transfer_manager.THREAD,
        raise_exception=False,
    )
    _raise_failures("uploading to", uri, names, results)
    return [_gcs_uri(bucket_name, prefix + n) for n in names]


def download_dir(uri: str, local_dir: str | Path, max_workers: int = 8) -> list[str]:
    """Download everything under the prefix ``uri`` into ``local_dir``; returns local paths.

    FileNotFoundError when nothing is there (an empty prefix is almost always a wrong URI).
    """
    dst = Path(local_dir)
    if not is_gcs(uri):
        return _copy_tree(Path(uri), dst)
    from google.cloud.storage import transfer_manager

    bucket_name, key = split_gcs(uri)
    prefix = _dir_prefix(key)
    names = sorted(b.name[len(prefix) :] for b in _list_gcs(uri) if b.name.startswith(prefix))
    if not names:
        raise FileNotFoundError(f"no objects under {uri}")
    for name in names:
        if name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"object name escapes the target directory: {prefix}{name}")
    dst.mkdir(parents=True, exist_ok=True)
    results = transfer_manager.download_many_to_path(
        _client().bucket(bucket_name),
        names,
        destination_directory=str(dst),
        blob_name_prefix=prefix,
        download_kwargs={"retry": _retry()},
        max_workers=max_workers,
        worker_type=transfer_manager.THREAD,
        create_directories=True,
        raise_exception=False,
    )
    _raise_failures("downloading", uri, names, results)
    return [str(dst.joinpath(*n.split("/"))) for n in names]


# --------------------------------------------------------------------------- local views


@contextlib.contextmanager
def local_path(uri: str) -> Iterator[Path]:
    """A local file to read ``uri`` from (libraries such as PyAV want a path).

    gs objects are downloaded to a temp file with the same basename, removed afterwards.
    """
    if not is_gcs(uri):
        if not os.path.exists(uri):
            raise FileNotFoundError(f"no such file: {uri}")
        yield Path(uri)
        return
    _, key = split_gcs(uri)
    with tempfile.TemporaryDirectory(prefix="lanepaint-") as tmp:
        path = Path(tmp) / (posixpath.basename(key.rstrip("/")) or "object")
        download_file(uri, path)
        yield path


@contextlib.contextmanager
def open_read(uri: str) -> Iterator[BinaryIO]:
    """A seekable binary reader: a zip's central directory or one member can be read from
    GCS without downloading the whole object (google-cloud-storage's ranged BlobReader)."""
    if not is_gcs(uri):
        with open(uri, "rb") as fh:
            yield fh
        return
    bucket, key = split_gcs(uri)
    blob = _client().bucket(bucket).blob(key)
    try:
        fh = blob.open("rb", retry=_retry())
    except _not_found() as exc:
        raise FileNotFoundError(f"no such object: {uri}") from exc
    with fh:
        yield fh


@contextlib.contextmanager
def local_dir_for_write(uri: str) -> Iterator[Path]:
    """A local directory whose tree becomes ``uri`` on clean exit; nothing on exception.

    Local: the directory atomically replaces ``uri``. GCS: the tree is uploaded, then
    objects under ``uri`` that the new tree lacks are deleted so both backends end with
    exactly the written tree (the GCS swap itself is not atomic).
    """
    if not is_gcs(uri):
        with atomic_path(uri) as tmp:
            tmp.mkdir()
            yield tmp
        return
    with tempfile.TemporaryDirectory(prefix="lanepaint-") as tmp:
        yield Path(tmp)
        before = {b.name: b for b in _list_gcs(uri)}
        bucket_name, _ = split_gcs(uri)
        written = set(upload_dir(tmp, uri))
        stale = [b for name, b in before.items() if _gcs_uri(bucket_name, name) not in written]
        _delete_blobs(stale)


def cache_dir(uri: str, cache_root: Path) -> Path:
    """A local copy of the prefix ``uri``, downloaded once per machine and reused.

    gs: ``cache_root/<bucket>/<key>``. An flock on a sibling lock file serializes parallel
    processes and threads; a completion marker written after the atomic rename of the
    finished download tells later callers the copy is whole. Local paths are returned as is.
    """
    if not is_gcs(uri):
        path = Path(uri)
        if not path.exists():
            raise FileNotFoundError(f"no such directory: {uri}")
        return path
    bucket_name, key = split_gcs(uri)
    key = key.strip("/")
    dest = Path(cache_root, bucket_name, *[p for p in key.split("/") if p])
    marker = dest.with_name(f".{dest.name}.complete")
    if marker.exists() and dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = dest.with_name(f".{dest.name}.lock")
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            if marker.exists() and dest.is_dir():
                return dest
            with atomic_path(dest) as tmp:
                download_dir(uri, tmp)
            with atomic_path(marker) as tmp:
                tmp.write_text(uri + "\n")
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return dest
