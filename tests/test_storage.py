"""lanepaint.io.storage on a local folder and on the real GCS emulator (fake-gcs-server)."""

from __future__ import annotations

import json
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


# --------------------------------------------------------------------------- mutation testing
# Found by `make mutation` (docs/testing.md): each test kills mutants the tests above missed.


def test_atomic_path_removes_a_failed_file_write(tmp_path: Path) -> None:
    with pytest.raises(KeyError), atomic_path(tmp_path / "f.txt") as tmp:
        tmp.write_text("half")
        raise KeyError("boom")
    assert os.listdir(tmp_path) == []  # the temp file is gone, not only temp folders


def test_download_file_between_local_paths(tmp_path: Path) -> None:
    src = tmp_path / "src.txt"
    src.write_text("payload")
    storage.download_file(str(src), tmp_path / "new" / "dst.txt")
    assert (tmp_path / "new" / "dst.txt").read_text() == "payload"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        storage.download_file(str(tmp_path / "nope.txt"), tmp_path / "x.txt")


@pytest.mark.gcs
def test_gcs_objects_get_a_content_type_from_their_name(bucket: str, tmp_path: Path) -> None:
    local = tmp_path / "f.png"
    local.write_bytes(b"\x89PNG")
    storage.write_text(f"gs://{bucket}/s/summary.json", "{}")
    storage.write_text(f"gs://{bucket}/s/report.html", "<p>")
    storage.write_text(f"gs://{bucket}/s/notes.unknownext", "x")
    storage.write_bytes(f"gs://{bucket}/s/blob", b"x")
    storage.write_bytes(f"gs://{bucket}/s/data.csv", b"a,b\n")
    storage.upload_file(local, f"gs://{bucket}/s/f.png")
    storage.upload_file(local, f"gs://{bucket}/s/f-no-ext")
    types = {b.name: b.content_type for b in storage._client().list_blobs(bucket, prefix="s/")}
    assert types == {
        "s/summary.json": "application/json",
        "s/report.html": "text/html",
        "s/notes.unknownext": "text/plain",
        "s/blob": "application/octet-stream",
        "s/data.csv": "text/csv",
        "s/f.png": "image/png",
        "s/f-no-ext": "application/octet-stream",
    }
    with pytest.raises(ValueError, match="not an object URI"):
        storage.write_text(f"gs://{bucket}/s/", "x")


def test_list_files_skips_folder_placeholders(monkeypatch: pytest.MonkeyPatch) -> None:
    # fake-gcs-server drops "folder/" objects (the console makes them), so the listing is faked
    names = ["p", "p/sub/", "p/sub/a.txt", f"p/b.txt.tmp-{'0' * 32}", "pq/x.txt", "pX", "pX/y"]
    blobs = [type("B", (), {"name": n})() for n in names]
    client = type("C", (), {"list_blobs": lambda self, bucket, prefix, retry: blobs})()
    monkeypatch.setattr(storage, "_client", lambda: client)
    assert storage.list_files("gs://bkt/p/") == ["gs://bkt/p", "gs://bkt/p/sub/a.txt"]
    assert storage.list_files("gs://bkt/pX") == ["gs://bkt/pX", "gs://bkt/pX/y"]
    every = ["p", "p/sub/a.txt", "pX", "pX/y", "pq/x.txt"]
    assert storage.list_files("gs://bkt") == [f"gs://bkt/{n}" for n in every]  # bucket root


def test_join_keeps_names_as_they_are() -> None:
    assert storage.join("/data", "X1.txt") == "/data/X1.txt"
    assert storage.join("gs://bkt/a", "X1.txt") == "gs://bkt/a/X1.txt"


@pytest.mark.gcs
def test_versioned_objects(bucket: str) -> None:
    uri = f"gs://{bucket}/lock"
    first = storage.put_if_generation(uri, "a")
    assert first and storage.put_if_generation(uri, "b") is None  # 0: only if absent
    second = storage.put_if_generation(uri, "b", first)
    assert second and second != first
    text, generation, age = storage.read_versioned(uri)
    assert (text, generation) == ("b", second) and 0 <= age < 60
    # (fake-gcs-server ignores ifGenerationMatch on delete: the False case is not testable)
    assert storage.delete_if_generation(uri, second) is True
    assert storage.read_versioned(uri) is None
    assert storage.delete_if_generation(uri, second) is True  # already gone


@pytest.mark.gcs
def test_download_dir_makes_nested_folders(bucket: str, tmp_path: Path) -> None:
    storage.write_text(f"gs://{bucket}/t/a/b.txt", "b")
    dst = tmp_path / "new" / "deeper"
    assert storage.download_dir(f"gs://{bucket}/t", dst) == [str(dst / "a" / "b.txt")]
    assert storage.download_dir(f"gs://{bucket}/t", dst) == [str(dst / "a" / "b.txt")]  # exists


@pytest.mark.parametrize("name", ["e/../../escape.txt", "e//abs.txt"])
def test_download_dir_refuses_object_names_that_escape(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    # fake-gcs-server normalizes such names, so the listing is faked
    monkeypatch.setattr(storage, "_list_gcs", lambda uri: [type("B", (), {"name": name})()])
    with pytest.raises(ValueError, match="escapes the target directory"):
        storage.download_dir("gs://bkt/e", tmp_path / "e")
    assert not (tmp_path / "e").exists()


@pytest.mark.gcs
def test_cache_dir_redownloads_a_copy_without_its_completion_marker(
    bucket: str, tmp_path: Path
) -> None:
    uri = f"gs://{bucket}/models/m/"
    storage.write_text(storage.join(uri, "w.bin"), "new")
    dest = tmp_path / "cache" / bucket / "models" / "m"
    dest.mkdir(parents=True)
    (dest / "w.bin").write_text("half")  # a copy whose download never finished
    assert storage.cache_dir(uri, tmp_path / "cache") == dest  # trailing "/" is the same prefix
    assert (dest / "w.bin").read_text() == "new"
    assert (dest.parent / ".m.complete").read_text() == uri + "\n"


def test_pointer_files(tmp_path: Path) -> None:
    from lanepaint.io.artifacts import resolve_pointer, write_pointer

    ptr = tmp_path / "art" / "pointer"
    content = write_pointer(ptr, "gs://bkt/run/out", "dataset", items=3)
    want = {"lanepaint_pointer": 1, "uri": "gs://bkt/run/out", "kind": "dataset", "items": 3}
    assert content == want
    assert json.loads(ptr.read_text()) == content
    assert resolve_pointer(ptr) == resolve_pointer(str(ptr)) == "gs://bkt/run/out"
    (tmp_path / "plain.json").write_text('{"uri": "x"}')  # JSON, but not a pointer
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    (tmp_path / "text").write_text("not json")
    for other in ("plain.json", "binary", "text", "missing"):
        assert resolve_pointer(str(tmp_path / other)) == str(tmp_path / other)
    assert resolve_pointer("gs://bkt/x") == "gs://bkt/x"


def test_publish_stage_outputs(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from lanepaint.io.artifacts import publish_stage

    out = tmp_path / "out"
    storage.write_text(str(out / "summary.md"), "# report\n")
    summary = {"inputs": 4, "done": 2, "skipped_done": 1, "failed": 1, "model_set": "smoke"}
    summary["details"] = {"frames": 12, "ratio": 0.5, "ok": True, "name": "x"}
    artifact = SimpleNamespace(path=str(tmp_path / "artifact"), metadata={"kept": 1})
    logged: dict = {}
    metrics = SimpleNamespace(log_metric=logged.__setitem__)
    report = SimpleNamespace(path=str(tmp_path / "report.md"))
    publish_stage(SimpleNamespace(output=str(out), summary=summary), artifact, metrics, report, "x")
    pointer = json.loads(Path(artifact.path).read_text())
    assert pointer == {
        "lanepaint_pointer": 1,
        "uri": str(out),
        "kind": "x",
        "items": 3,
        "model_set": "smoke",
    }
    assert artifact.metadata == {"kept": 1, "uri": str(out), "items": 3, "model_set": "smoke"}
    # numbers of the details become metrics too; booleans and text do not
    want = {"inputs": 4, "done": 2, "skipped_done": 1, "failed": 1, "frames": 12, "ratio": 0.5}
    assert logged == want
    assert Path(report.path).read_text() == "# report\n"


@pytest.mark.parametrize("kind", ["local", pytest.param("gcs", marks=pytest.mark.gcs)])
def test_png_roundtrip_and_a_bad_file_is_one_failure(request, tmp_path: Path, kind: str) -> None:
    import numpy as np

    from lanepaint.io.images import read_rgb, try_read_rgb, write_png

    base = str(tmp_path) if kind == "local" else f"gs://{request.getfixturevalue('bucket')}"
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    write_png(storage.join(base, "rgb.png"), rgb)
    write_png(storage.join(base, "gray.png"), rgb[..., 0])
    assert storage.read_bytes(storage.join(base, "rgb.png"))[:4] == b"\x89PNG"
    assert np.array_equal(read_rgb(storage.join(base, "rgb.png")), rgb)
    assert np.array_equal(read_rgb(storage.join(base, "gray.png")), np.dstack([rgb[..., 0]] * 3))
    storage.write_bytes(storage.join(base, "bad.png"), b"not an image")
    image, error = try_read_rgb(storage.join(base, "bad.png"))
    assert image is None and error is not None
    image, error = try_read_rgb(storage.join(base, "rgb.png"))
    assert error is None and np.array_equal(image, rgb)


def test_write_reports(tmp_path: Path) -> None:
    from lanepaint.io.reports import Failures, write_reports

    failures = Failures()
    failures.add("v1", "bad: header", frame=2)
    summary = {"done": 1, "by": {"a": 2}}
    assert write_reports(str(tmp_path), "title", summary, failures, ["note"]) == summary
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    md = (tmp_path / "summary.md").read_text()
    assert md.startswith("# title\n\n> note\n") and "| done | 1 |" in md and "| a | 2 |" in md
    records = [json.loads(x) for x in (tmp_path / "failures.jsonl").read_text().splitlines()]
    assert records == [{"item": "v1", "reason": "bad: header", "frame": 2}]
    write_reports(str(tmp_path / "no-failures"), "t", {})
    assert sorted(os.listdir(tmp_path / "no-failures")) == ["summary.json", "summary.md"]
