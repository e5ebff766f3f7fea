"""lanepaint.io.storage on a local folder and on the real GCS emulator (fake-gcs-server)."""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

from lanepaint.io import storage
from lanepaint.io.atomic import atomic_path, atomic_write_text

TREE = {
    "a.txt": b"alpha",
    "sub/b.bin": bytes(range(256)) * 4,
    "sub/deeper/c.json": b'{"c": 1}',
    "sub/empty": b"",
}


@pytest.fixture
def bucket(gcs_bucket) -> str:
    return gcs_bucket


@pytest.fixture(params=["local", pytest.param("gcs", marks=pytest.mark.gcs)])
def root(request, tmp_path: Path) -> str:
    """A storage root on each backend."""
    if request.param == "local":
        return str(tmp_path / "store")
    return f"gs://{request.getfixturevalue('bucket')}/root"


def write_tree(base: Path) -> None:
    for rel, data in TREE.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(data)


def raw_names(uri: str) -> list[str]:
    """Every name under a root, temps included (bypassing storage.list_files)."""
    if storage.is_gcs(uri):
        bucket, _ = storage.split_gcs(uri)
        return [b.name for b in storage._client().list_blobs(bucket)]
    return [str(Path(d, f)) for d, dirs, files in os.walk(uri) for f in files + dirs]


def assert_no_temps(uri: str) -> None:
    leftovers = [n for n in raw_names(uri) if ".tmp-" in n or ".old-" in n]
    assert leftovers == []


# --------------------------------------------------------------------------- pure helpers


def test_split_and_join() -> None:
    assert storage.is_gcs("gs://bkt/a") and not storage.is_gcs("/tmp/gs://x")
    assert storage.split_gcs("gs://bkt/a/b.txt") == ("bkt", "a/b.txt")
    assert storage.split_gcs("gs://bkt") == ("bkt", "")
    for bad in ("gs://", "gs:///key", "gs://Bad_Bucket/k", "s3://bkt/k", "/local/path"):
        with pytest.raises(ValueError, match=bad.replace("/", ".")):
            storage.split_gcs(bad)
    assert storage.join("gs://bkt", "a", "b.txt") == "gs://bkt/a/b.txt"
    assert storage.join("gs://bkt/root/", "/a/", "", "b//c") == "gs://bkt/root/a/b/c"
    assert storage.join("gs://bkt/x//y", "z/") == "gs://bkt/x/y/z/"
    assert storage.join("/data/root", "a", "b.txt") == os.path.join("/data/root", "a", "b.txt")
    assert storage.join("/data/root", "/a") == os.path.join("/data/root", "a")


def test_atomic_path_replaces_directories_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "out" / "dir"
    for content in ("one", "two"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "f.txt").write_text(content)
            assert tmp.parent == target.parent and tmp.name.startswith(".")
    assert (target / "f.txt").read_text() == "two"
    with pytest.raises(KeyError), atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "f.txt").write_text("three")
        raise KeyError("boom")
    assert (target / "f.txt").read_text() == "two"
    atomic_write_text(tmp_path / "out" / "note.txt", "hi")
    assert sorted(os.listdir(tmp_path / "out")) == ["dir", "note.txt"]


# --------------------------------------------------------------------------- both backends


def test_write_read_roundtrip(root: str) -> None:
    blob = storage.join(root, "a", "b.bin")
    storage.write_bytes(blob, b"\x00\x01payload")
    assert storage.read_bytes(blob) == b"\x00\x01payload"
    storage.write_bytes(blob, b"second")
    assert storage.read_bytes(blob) == b"second"
    text = storage.join(root, "notes.txt")
    storage.write_text(text, "voie — ligne blanche\n")
    assert storage.read_text(text) == "voie — ligne blanche\n"

    assert storage.exists(blob) and storage.exists(text)
    assert storage.exists(storage.join(root, "a"))  # directory / prefix
    assert not storage.exists(storage.join(root, "a", "b.b"))  # partial name is not a file
    assert not storage.exists(storage.join(root, "missing"))
    assert_no_temps(root)


def test_missing_raises_file_not_found(root: str, tmp_path: Path) -> None:
    missing = storage.join(root, "no", "such.txt")
    for call in (
        lambda: storage.read_bytes(missing),
        lambda: storage.read_text(missing),
        lambda: storage.download_file(missing, tmp_path / "x"),
        lambda: storage.copy(missing, str(tmp_path / "y")),
        lambda: storage.download_dir(storage.join(root, "no"), tmp_path / "z"),
    ):
        with pytest.raises(FileNotFoundError, match="such.txt|no"):
            call()
    with pytest.raises(FileNotFoundError, match="such.txt"), storage.local_path(missing):
        pass
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_list_files(root: str) -> None:
    for rel in ("a/1.txt", "a/sub/2.txt", "ab/3.txt", "top.txt"):
        storage.write_text(storage.join(root, rel), rel)
    a = storage.join(root, "a")
    assert storage.list_files(a) == [storage.join(a, "1.txt"), storage.join(a, "sub", "2.txt")]
    assert storage.list_files(a + "/") == storage.list_files(a)
    assert len(storage.list_files(root)) == 4
    assert storage.list_files(storage.join(root, "top.txt")) == [storage.join(root, "top.txt")]
    assert storage.list_files(storage.join(root, "nothing")) == []


def test_list_files_hides_in_flight_temps(root: str, tmp_path: Path) -> None:
    final = storage.join(root, "d", "final.txt")
    storage.write_text(final, "x")
    in_flight = storage.join(root, "d", "w.txt")
    if storage.is_gcs(root):
        bucket, key = storage.split_gcs(in_flight)
        tmp_blob = storage._client().bucket(bucket).blob(f"{key}.tmp-{'0' * 32}")
        tmp_blob.upload_from_string(b"partial")
        assert storage.list_files(storage.join(root, "d")) == [final]
        assert not storage.exists(in_flight)
    else:
        with atomic_path(in_flight) as tmp:
            tmp.write_text("partial")
            assert storage.list_files(storage.join(root, "d")) == [final]
            assert not storage.exists(in_flight)
        assert storage.list_files(storage.join(root, "d")) == [final, in_flight]
    storage.delete_prefix(storage.join(root, "d"))
    assert raw_names(root) == []


def test_delete(root: str) -> None:
    one = storage.join(root, "x", "one.txt")
    storage.write_text(one, "1")
    storage.write_text(storage.join(root, "x", "y", "two.txt"), "2")
    storage.delete(one)
    assert not storage.exists(one)
    storage.delete(one)  # absent: no error
    storage.delete_prefix(storage.join(root, "x"))
    assert storage.list_files(root) == [] and not storage.exists(storage.join(root, "x"))
    storage.delete_prefix(storage.join(root, "x"))


def test_upload_download_dir_roundtrip(root: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src)
    dest = storage.join(root, "tree")
    uploaded = storage.upload_dir(src, dest, max_workers=2)
    assert uploaded == sorted(storage.join(dest, rel) for rel in TREE)
    assert storage.list_files(dest) == uploaded

    back = tmp_path / "back"
    downloaded = storage.download_dir(dest, back, max_workers=2)
    assert downloaded == sorted(str(back / rel) for rel in TREE)
    for rel, data in TREE.items():
        assert (back / rel).read_bytes() == data
    assert_no_temps(root)


def test_local_dir_for_write(root: str) -> None:
    out = storage.join(root, "out")
    with storage.local_dir_for_write(out) as d:
        write_tree(d)
        assert not storage.exists(out)  # nothing visible before the block ends
    assert storage.list_files(out) == sorted(storage.join(out, rel) for rel in TREE)

    # a second publish replaces the whole tree
    with storage.local_dir_for_write(out) as d:
        (d / "only.txt").write_text("new")
    assert storage.list_files(out) == [storage.join(out, "only.txt")]

    # an exception publishes nothing, neither to a new nor over an existing target
    for target in (storage.join(root, "never"), out):
        with pytest.raises(RuntimeError, match="stage failed"):
            with storage.local_dir_for_write(target) as d:
                (d / "half.txt").write_text("half")
                raise RuntimeError("stage failed")
    assert not storage.exists(storage.join(root, "never"))
    assert storage.list_files(out) == [storage.join(out, "only.txt")]
    assert_no_temps(root)


def test_local_path(root: str) -> None:
    uri = storage.join(root, "videos", "clip.mp4")
    storage.write_bytes(uri, b"not really a video")
    with storage.local_path(uri) as path:
        assert path.name == "clip.mp4"
        assert path.read_bytes() == b"not really a video"
    assert path.exists() == (not storage.is_gcs(uri))  # gs temp copies are removed


# --------------------------------------------------------------------------- across backends


@pytest.mark.gcs
@pytest.mark.parametrize("src_kind,dst_kind", [("l", "g"), ("g", "l"), ("g", "g"), ("l", "l")])
def test_copy_across_backends(bucket: str, tmp_path: Path, src_kind: str, dst_kind: str) -> None:
    def place(kind: str, name: str) -> str:
        return str(tmp_path / name) if kind == "l" else f"gs://{bucket}/c/{name}"

    src, dst = place(src_kind, "src.bin"), place(dst_kind, "sub/dst.bin")
    storage.write_bytes(src, b"payload" * 100)
    storage.write_bytes(dst, b"old")
    storage.copy(src, dst)
    assert storage.read_bytes(dst) == b"payload" * 100
    assert storage.read_bytes(src) == b"payload" * 100
    assert_no_temps(f"gs://{bucket}")
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]


@pytest.mark.gcs
def test_missing_bucket_is_file_not_found(bucket: str) -> None:
    uri = f"gs://{bucket}-absent/x.txt"
    with pytest.raises(FileNotFoundError, match=f"{bucket}-absent"):
        storage.read_bytes(uri)
    with pytest.raises(FileNotFoundError, match=f"{bucket}-absent"):
        storage.write_bytes(uri, b"x")
    assert not storage.exists(uri)


def _cache_worker(uri: str, cache_root: str) -> tuple[str, int]:
    path = storage.cache_dir(uri, Path(cache_root))
    return str(path), os.stat(path).st_ino


@pytest.mark.gcs
def test_cache_dir_downloads_once_under_concurrency(bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src)
    uri = f"gs://{bucket}/models/tiny"
    storage.upload_dir(src, uri)
    cache_root = tmp_path / "cache"

    barrier = threading.Barrier(4)

    def in_thread() -> tuple[str, int]:
        barrier.wait()
        return _cache_worker(uri, str(cache_root))

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: in_thread(), range(4)))
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        results += list(pool.map(_cache_worker, [uri] * 2, [str(cache_root)] * 2))

    expected = cache_root / bucket / "models" / "tiny"
    # one path and one directory inode: nobody re-downloaded and swapped it
    assert set(results) == {(str(expected), os.stat(expected).st_ino)}
    for rel, data in TREE.items():
        assert (expected / rel).read_bytes() == data
    assert sorted(p.name for p in expected.parent.iterdir()) == [
        ".tiny.complete",
        ".tiny.lock",
        "tiny",
    ]

    # later calls use the copy without touching GCS
    storage.delete_prefix(uri)
    assert storage.cache_dir(uri, cache_root) == expected
    with pytest.raises(FileNotFoundError):
        storage.cache_dir(f"gs://{bucket}/models/other", cache_root)
    assert not (cache_root / bucket / "models" / "other").exists()


def test_cache_dir_local_is_identity(tmp_path: Path) -> None:
    assert storage.cache_dir(str(tmp_path), tmp_path / "cache") == tmp_path
    assert not (tmp_path / "cache").exists()


# --------------------------------------------------------------------------- the client


@pytest.fixture
def no_gcs_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No cached client, and no emulator, project or key file from the environment."""
    monkeypatch.setattr(storage, "_client_cache", None)
    for name in (
        "STORAGE_EMULATOR_HOST",
        "GOOGLE_CLOUD_PROJECT",
        "GCLOUD_PROJECT",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def fake_adc(monkeypatch: pytest.MonkeyPatch, project: str | None, error: bool = False):
    """google.auth.default as on a machine with Application Default Credentials whose
    project is ``project`` (or none), or, with ``error``, without any credentials."""
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from google.auth.exceptions import DefaultCredentialsError

    credentials = AnonymousCredentials()

    def default(scopes=None, **_):
        if error:
            raise DefaultCredentialsError("Your default credentials were not found.")
        return credentials, project

    monkeypatch.setattr(google.auth, "default", default)
    return credentials


def test_client_uses_adc_and_google_cloud_project(no_gcs_env: pytest.MonkeyPatch) -> None:
    adc = fake_adc(no_gcs_env, "project-of-the-credentials")
    no_gcs_env.setenv("GOOGLE_CLOUD_PROJECT", "project-of-the-env")
    client = storage._client()
    assert client._credentials is adc and client.project == "project-of-the-env"
    assert storage._client() is client  # cached
    no_gcs_env.delenv("GOOGLE_CLOUD_PROJECT")
    client = storage._client()  # the project is part of the cache key
    assert client._credentials is adc and client.project == "project-of-the-credentials"


def test_client_needs_no_project(no_gcs_env: pytest.MonkeyPatch) -> None:
    """ADC without a project (`gcloud auth application-default login` and no gcloud
    default project): objects need none, so the client is made without one."""
    adc = fake_adc(no_gcs_env, None)
    client = storage._client()
    assert client._credentials is adc and client.project is None


def test_missing_credentials_is_a_one_line_user_error(
    no_gcs_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from lanepaint.kit.cli import guarded

    fake_adc(no_gcs_env, None, error=True)
    with pytest.raises(storage.CredentialsError, match="gcloud auth application-default login"):
        storage.exists("gs://some-bucket/key")
    assert guarded(lambda _: storage.read_text("gs://some-bucket/key"), None) == 2
    assert "Application Default Credentials" in caplog.text


def test_emulator_client_is_anonymous_with_the_env_project(
    no_gcs_env: pytest.MonkeyPatch,
) -> None:
    from google.auth.credentials import AnonymousCredentials

    fake_adc(no_gcs_env, None, error=True)  # the emulator never looks for credentials
    no_gcs_env.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    client = storage._client()
    assert isinstance(client._credentials, AnonymousCredentials)
    assert client.project == "lanepaint-local"
    assert client._connection.API_BASE_URL == "http://127.0.0.1:9"
    no_gcs_env.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    assert storage._client().project == "my-project"
