"""The fault suite (issue 17, part 6): a stage killed, out of space, facing a read-only
output or a GCS outage loses nothing, duplicates nothing, leaves nothing half-written that
a rerun takes as done, says what happened in one line, and finishes on rerun once the
cause is gone. docs/reliability.md lists what each test proves.

Kills are deterministic: the CLI runs in a subprocess through ``HARNESS``, which stops the
process at a chosen point (after the Nth ledger commit, or with the Nth atomic write's temp
file on disk but not yet renamed) and prints ``AT-FAULT``; the test then sends SIGKILL.
"""

from __future__ import annotations

import errno
import http.client
import http.server
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from lp_testdata import make_dataset
from PIL import Image

from lanepaint.cli import main as cli
from lanepaint.data import fluxfill
from lanepaint.io import storage
from lanepaint.io.atomic import _is_temp_name
from lanepaint.kit.lock import TOKEN_ENV, lock_uri

REPO = Path(__file__).resolve().parents[1]
QUICK_BUILD = ["--segmenter", "classical", "--captioner", "analyzer", "--frame-numbers", "0"]

HARNESS = r"""
import os, sys, time
mode, nth = os.environ["FAULT_MODE"], int(os.environ["FAULT_AT"])
seen = [0]

def stop():
    print("AT-FAULT", flush=True)
    time.sleep(600)

if mode == "commit":  # after the Nth ledger record is committed
    from lanepaint.kit import ledger
    original = ledger.Ledger.commit
    def commit(self, item, record):
        out = original(self, item, record)
        seen[0] += 1
        if seen[0] == nth:
            stop()
        return out
    ledger.Ledger.commit = commit
elif mode == "write":  # the Nth atomic write's temp file is on disk, not yet renamed
    from lanepaint.io import atomic
    real_replace = os.replace
    class _Os:
        def __getattr__(self, name):
            return getattr(os, name)
        @staticmethod
        def replace(src, dst):
            name = os.environ.get("FAULT_NAME")
            if atomic._is_temp_name(os.path.basename(str(src))) and ".tmp-" in str(src) and (
                not name or os.path.basename(str(dst)) == name
            ):
                seen[0] += 1
                if seen[0] == nth:
                    stop()
            return real_replace(src, dst)
    atomic.os = _Os()
elif mode.startswith("after:"):  # after the Nth return of module:function
    import importlib
    module_name, attr = mode[len("after:"):].split(":")
    module = importlib.import_module(module_name)
    original_fn = getattr(module, attr)
    def after(*args, **kwargs):
        out = original_fn(*args, **kwargs)
        seen[0] += 1
        if seen[0] == nth:
            stop()
        return out
    setattr(module, attr, after)
for assignment in filter(None, os.environ.get("FAULT_SET", "").split(";")):
    import importlib, json
    target, value = assignment.split("=", 1)
    module_name, attr = target.split(":")
    setattr(importlib.import_module(module_name), attr, json.loads(value))
from lanepaint.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_until_fault(
    argv: list[str],
    mode: str,
    nth: int = 1,
    timeout: float = 90,
    settings: str = "",
    name: str = "",
) -> None:
    """Run the CLI in a subprocess, SIGKILL it once it reaches the fault point.
    ``settings``: module constants to set first, ``module:NAME=<json>;...``; ``name``: in
    ``write`` mode, count only the writes of files with this name."""
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    env.update(FAULT_MODE=mode, FAULT_AT=str(nth), FAULT_SET=settings, FAULT_NAME=name)
    proc = subprocess.Popen(
        [sys.executable, "-c", HARNESS, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline and b"AT-FAULT" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert b"AT-FAULT" in line, f"the run ended before the fault point (rc {proc.poll()})"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if _is_temp_name(p.name)]


def clips(folder: Path, n: int) -> Path:
    from lanepaint.data.synth import SceneSpec, render_clip
    from lanepaint.io.video import write_video

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        frames, _ = render_clip(SceneSpec(width=96, height=64, seed=i), 2, 8.0)
        write_video(folder / f"clip{i}.mp4", frames, 8.0)
    return folder


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def segment_argv(videos: Path, out: Path) -> list[str]:
    return [
        *("segment", "--segmenter", "classical"),
        *("--videos", str(videos), "--output-dir", str(out)),
    ]


def check_segment_output(out: Path, n: int) -> None:
    """Every clip exactly once: a record, a mask file that loads, a meta.csv row."""
    from lanepaint.data.masks import read_masks_npz

    records = sorted(p.stem for p in (out / "records").glob("*.json"))
    assert records == [f"clip{i}" for i in range(n)]
    for stem in records:
        npz = out / "mask_root" / stem / "all_masks.npz"
        assert read_masks_npz(npz.read_bytes(), str(npz)).shape[0] > 0
    rows = (out / "meta.csv").read_text().strip().splitlines()[1:]
    assert len(rows) == n and len(set(rows)) == n
    assert not Path(lock_uri(str(out))).exists()


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return clips(tmp_path_factory.mktemp("videos") / "clips", 4)


@pytest.fixture
def dataset(tmp_path: Path) -> str:
    return make_dataset(str(tmp_path / "raw"), n=6)


# --------------------------------------------------------------------------- 1. SIGKILL


@pytest.mark.parametrize("mode", ["commit", "write"])
def test_segment_killed_then_rerun_does_each_clip_once(videos, tmp_path, mode):
    out = tmp_path / "seg"
    run_until_fault(segment_argv(videos, out), mode, nth=2)
    assert Path(lock_uri(str(out))).exists()  # the killed run's lock is left behind
    if mode == "write":
        assert temp_files(out)  # killed with a temp file on disk, not yet renamed
    assert cli(segment_argv(videos, out)) == 0  # takes over the stale lock (pid gone)
    s = summary(out)
    assert s["inputs"] == 4 and s["done"] + s["skipped_done"] == 4 and s["failed"] == 0
    # What the killed run committed is kept, not redone; the half-written item is redone.
    assert s["skipped_done"] == 2 if mode == "commit" else s["skipped_done"] < 4
    check_segment_output(out, 4)  # a temp file the kill left behind is never taken as done
    assert not temp_files(out)  # ... and is removed by the rerun (its writer is dead)
    # A third run has nothing to do.
    assert cli(segment_argv(videos, out)) == 0
    assert summary(out)["skipped_done"] == 4


def test_build_dataset_killed_then_rerun_builds_each_item_once(dataset, tmp_path):
    out = tmp_path / "built"
    argv = ["build-dataset", "--images", dataset, "--output-dir", str(out), *QUICK_BUILD]
    run_until_fault(argv, "commit", nth=2)
    assert Path(lock_uri(str(out))).exists()
    assert cli(argv) == 0
    s = summary(out)
    assert s["failed"] == 0 and s["done"] + s["skipped_done"] >= 2
    rows, rejected = fluxfill.read_dataset(str(out))
    images = [r.image for r in rows]
    assert len(images) == len(set(images)) and not rejected
    assert cli(argv) == 0
    assert sorted(r.image for r in fluxfill.read_dataset(str(out))[0]) == sorted(images)
    fresh = tmp_path / "fresh"
    assert cli([*argv[: -len(QUICK_BUILD) - 2], "--output-dir", str(fresh), *QUICK_BUILD]) == 0
    assert len(fluxfill.read_dataset(str(fresh))[0]) == len(rows)  # nothing lost


def test_filter_dataset_killed_mid_write_publishes_nothing_then_rerun_finishes(dataset, tmp_path):
    out = tmp_path / "filtered"
    argv = ["filter-dataset", "--input-dir", dataset, "--output-dir", str(out)]
    run_until_fault(argv, "write", nth=1)
    # The dataset is published whole or not at all: no train.csv a reader would take as done.
    assert not (out / "train.csv").exists()
    assert cli(argv) == 0
    rows, rejected = fluxfill.read_dataset(str(out))
    assert len(rows) == 6 and not rejected and len({r.image for r in rows}) == 6
    assert not Path(lock_uri(str(out))).exists()


@pytest.mark.slow
def test_train_lora_killed_after_a_checkpoint_resumes_from_it(tmp_path):
    from test_train_lora import build_flux_root, make_train_dataset

    from lanepaint.training import checkpoint as ckpt

    root = str(build_flux_root(tmp_path / "models"))
    data = make_train_dataset(str(tmp_path / "data"), n=4)
    out = tmp_path / "lora"
    argv = [
        *("train-lora", "--train-data", data, "--model-root", root, "--output-dir", str(out)),
        *("--rank", "4", "--alpha", "8", "--max-train-steps", "4", "--resolution", "48"),
        *("--mixed-precision", "no", "--max-sequence-length", "16", "--eval-rows", "2"),
        *("--checkpointing-steps", "2", "--workers", "2", "--work-dir", str(tmp_path / "w")),
    ]
    run_until_fault(argv, "after:lanepaint.training.checkpoint:publish", nth=1, timeout=150)
    assert [(i.step, i.complete) for i in ckpt.list_checkpoints(str(out))] == [(2, True)]
    assert not (out / "lora").exists() and Path(lock_uri(str(out))).exists()
    assert cli(argv) == 0
    details = summary(out)["details"]
    assert details["resumed_from_step"] == 2 and details["steps_done"] == 4
    steps = [line.split(",")[0] for line in (out / "loss.csv").read_text().splitlines()[1:]]
    train_steps = [s for s in steps if s.isdigit()]
    assert train_steps[-1] == "4"
    assert sorted(set(train_steps), key=int) == train_steps  # no step written twice
    assert (out / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert not Path(lock_uri(str(out))).exists()


@pytest.mark.slow
def test_edit_killed_after_one_video_then_rerun_edits_each_once(tmp_path):
    from test_edit import add_video

    from lanepaint.models.smoke import build_smoke

    root = str(build_smoke(tmp_path / "smoke"))
    data = tmp_path / "vp"
    for i in range(3):
        add_video(data, f"v{i}", 6, seed=i)
    out = tmp_path / "edits"
    argv = [
        *("edit", "--data-dir", str(data), "--output-dir", str(out), "--model-root", root),
        *("--first-frame-size", "32", "--first-frame-steps", "2", "--max-attempts", "2"),
        *("--first-frame-dilation", "2", "--first-frame-feather", "1", "--steps", "2"),
        *("--judge-backoff-s", "0", "--mask-dilation", "2", "--overlap", "1"),
        *("--judge-max-new-tokens", "8", "--judge-visual-tokens", "64"),
    ]
    run_until_fault(argv, "commit", nth=1, timeout=150)
    assert Path(lock_uri(str(out))).exists()
    assert len(list(out.glob("v*/*/record.json"))) == 1
    assert cli(argv) == 0
    s = summary(out)
    assert (s["inputs"], s["done"], s["skipped_done"], s["failed"]) == (3, 2, 1, 0)
    manifest = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(m["video_id"] for m in manifest) == ["v0", "v1", "v2"]  # each once
    assert all(m["status"] == "ok" for m in manifest)
    assert len(list(out.glob("v*/*/edited.mp4"))) == 3
    assert not Path(lock_uri(str(out))).exists()


@pytest.mark.slow
def test_caption_killed_after_a_progress_save_then_rerun_captions_each_once(dataset, tmp_path):
    from lanepaint.models.smoke import build_smoke

    root = str(build_smoke(tmp_path / "smoke"))
    out = tmp_path / "captions.jsonl"
    images = str(Path(dataset) / "images")
    argv = ["caption", "--images", images, "--output", str(out), "--model-root", root]
    argv += ["--batch-size", "1"]
    consts = "lanepaint.stages.caption:CHECKPOINT_S=0;lanepaint.stages.caption:BATCHES_PER_CALL=1"
    run_until_fault(argv, "after:lanepaint.stages.caption:save_records", 2, 150, consts)
    kept = [json.loads(x)["image"] for x in out.read_text().splitlines()]
    assert 0 < len(kept) < 6 and len(set(kept)) == len(kept)  # a whole file, no torn line
    assert Path(lock_uri(str(out))).exists()
    assert cli(argv) == 0
    records = [json.loads(x) for x in out.read_text().splitlines()]
    names = sorted(Path(r["image"]).name for r in records)
    assert names == sorted(p.name for p in Path(images).iterdir())  # each image once
    s = json.loads((tmp_path / "captions.summary.json").read_text())
    assert (s["skipped_done"], s["done"]) == (len(kept), 6 - len(kept))  # kept, not redone
    assert not Path(lock_uri(str(out))).exists()


def test_only_temp_files_of_dead_writers_are_swept(tmp_path):
    """The rerun removes what killed runs left (our temp names, writer gone), never a live
    writer's temp file, another host's, or a file that only looks like one."""
    from lanepaint.io import atomic
    from lanepaint.kit.lock import output_lock

    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    dead = subprocess.run(
        [
            sys.executable,
            "-c",
            "from lanepaint.io.atomic import temp_name as t; "
            "print(t('a.png', suffix='.png')); print(t('out')); print(t('b.npz', 'old'))",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout.split()
    (out / "sub" / dead[0]).write_bytes(b"half")  # a killed writer's temp file
    (tmp_path / dead[1]).mkdir()  # a killed writer's temp folder beside the output
    (tmp_path / dead[1] / "x.png").write_bytes(b"x")
    (out / dead[2]).write_bytes(b"old")
    live = out / atomic.temp_name("c.png", suffix=".png")  # ours: this process is alive
    live.write_bytes(b"in progress")
    other_host = "." + "d.png.tmp-" + "ffff" + dead[0].split(".tmp-")[1][4:]
    if other_host.split(".tmp-")[1][:4] == atomic._host_tag():
        other_host = other_host.replace(".tmp-ffff", ".tmp-fffe")
    (out / other_host).write_bytes(b"elsewhere")
    lookalike = out / "sub" / "e.png.tmp-1234"  # not a name of ours
    lookalike.write_bytes(b"a person's file")
    with output_lock("segment", str(out)):
        pass
    assert not (out / "sub" / dead[0]).exists() and not (tmp_path / dead[1]).exists()
    assert not (out / dead[2]).exists()
    assert live.exists() and (out / other_host).exists() and lookalike.exists()


def edits(root: Path, n: int) -> Path:
    """``n`` hand-made edits (tests/test_evaluate.py's) under ``root/edit``."""
    from test_evaluate import make_edit

    for i in range(n):
        make_edit(root, f"vid_{i}", i, passed_at=0)
    return root / "edit"


def evaluated_ids(out: Path) -> list[str]:
    return sorted(i["video_id"] for i in summary(out)["details"]["items"])


def test_evaluate_killed_mid_report_then_rerun_reports_every_edit_once(tmp_path):
    """Killed while publishing report.html of a second run (a third edit appeared): the
    rerun must not take the first run's report for this one's; every edit once."""
    edit_dir = edits(tmp_path, 2)
    out = tmp_path / "eval"
    argv = ["evaluate", "--edit-dir", str(edit_dir), "--output-dir", str(out)]
    assert cli(argv) == 0 and evaluated_ids(out) == ["vid_0", "vid_1"]
    from test_evaluate import make_edit

    make_edit(tmp_path, "vid_2", 2, passed_at=0)
    run_until_fault(argv, "write", nth=1, name="report.html")
    assert Path(lock_uri(str(out))).exists() and temp_files(out)
    assert "vid_2" not in (out / "report.html").read_text()  # the old report is still there
    assert cli(argv) == 0
    s = summary(out)
    assert (s["inputs"], s["done"], s["failed"]) == (3, 3, 0)
    assert evaluated_ids(out) == ["vid_0", "vid_1", "vid_2"]  # each edit once
    assert "vid_2" in (out / "report.html").read_text()
    assert not temp_files(out) and not Path(lock_uri(str(out))).exists()
    assert cli(argv) == 0 and summary(out)["done"] == 3  # a third run: nothing to do
    assert json.loads((out / "summary.json").read_text())["settings_key"] == s["settings_key"]


# --------------------------------------------------------------------------- 2. no space left


@contextmanager
def mounted(target: Path, *options: str):
    """A tmpfs (or a bind mount) at ``target``, or skip when mounting is not permitted."""
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", *options, str(target)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount ({' '.join(options)}): {done.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def remount(target: Path, mode: str, bind: bool = False) -> None:
    opts = f"remount,{mode},bind" if bind else f"remount,{mode}"
    done = subprocess.run(["mount", "-o", opts, str(target)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot remount {mode}: {done.stderr.strip()}")


def fill(disk: Path, free_kib: int) -> Path:
    """Leave about ``free_kib`` KiB free on the filesystem of ``disk``."""
    st = os.statvfs(disk)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(st.f_bavail * st.f_frsize - free_kib * 1024, 0))
    return filler


def one_error_line(caplog) -> str:
    """The one error line of the stage kit (logger ``lanepaint``)."""
    errors = [r.getMessage() for r in caplog.records if r.name == "lanepaint" and r.levelno >= 40]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    return errors[0]


def test_segment_on_a_full_disk_fails_clearly_keeps_what_is_done_and_finishes_later(
    videos, tmp_path, caplog
):
    with mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=1m", "tmpfs") as disk:
        out = disk / "seg"
        filler = fill(disk, 40)
        with caplog.at_level(logging.ERROR):
            assert cli(segment_argv(videos, out)) == 2
        assert "No space left on device" in one_error_line(caplog)
        kept = sorted(p.stem for p in (out / "records").glob("*.json"))
        assert len(kept) < 4
        filler.unlink()
        assert cli(segment_argv(videos, out)) == 0
        assert summary(out)["skipped_done"] == len(kept)  # what was done is kept, not redone
        check_segment_output(out, 4)


def test_build_dataset_on_a_full_disk_then_rerun(dataset, tmp_path, caplog):
    with mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=1m", "tmpfs") as disk:
        out = disk / "built"
        argv = ["build-dataset", "--images", dataset, "--output-dir", str(out), *QUICK_BUILD]
        filler = fill(disk, 40)
        with caplog.at_level(logging.ERROR):
            assert cli(argv) == 2
        assert "No space left on device" in one_error_line(caplog)
        assert not (out / "train.csv").exists()  # no dataset a reader would take as done
        filler.unlink()
        assert cli(argv) == 0
        rows, rejected = fluxfill.read_dataset(str(out))
        assert len(rows) == 12 and not rejected and len({r.image for r in rows}) == 12


def test_filter_dataset_on_a_full_disk_says_one_line_and_no_traceback(dataset, tmp_path):
    with mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=1m", "tmpfs") as disk:
        out = disk / "filtered"
        argv = ["filter-dataset", "--input-dir", dataset, "--output-dir", str(out)]
        filler = fill(disk, 40)
        cmd = [sys.executable, "-m", "lanepaint.cli", *argv]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
        assert len(errors) == 1 and "No space left on device" in errors[0], done.stderr
        assert not (out / "train.csv").exists() and not temp_files(disk)
        filler.unlink()
        assert subprocess.run(cmd, capture_output=True, cwd=REPO).returncode == 0
        rows, rejected = fluxfill.read_dataset(str(out))
        assert len(rows) == 6 and not rejected


def test_evaluate_on_a_full_disk_then_rerun(tmp_path, caplog):
    edit_dir = edits(tmp_path, 2)
    with mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=1m", "tmpfs") as disk:
        out = disk / "eval"
        argv = ["evaluate", "--edit-dir", str(edit_dir), "--output-dir", str(out)]
        filler = fill(disk, 24)  # the marker and lock fit, the report does not
        with caplog.at_level(logging.ERROR):
            assert cli(argv) == 2
        assert "No space left on device" in one_error_line(caplog)
        assert not (out / "summary.json").exists() and not temp_files(disk)
        filler.unlink()
        assert cli(argv) == 0 and evaluated_ids(out) == ["vid_0", "vid_1"]


@pytest.mark.slow
def test_train_lora_on_a_full_disk_then_rerun(tmp_path, caplog):
    """The model loads and trains, then the LoRA does not fit (safetensors' own I/O error
    names errno 28): one line, exit 2, no lora/ a rerun takes as done; the rerun after
    freeing space finishes."""
    from test_train_lora import build_flux_root, make_train_dataset

    root = str(build_flux_root(tmp_path / "models"))
    data = make_train_dataset(str(tmp_path / "data"), n=2)
    with mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=1m", "tmpfs") as disk:
        out = disk / "out"
        argv = [
            *("train-lora", "--train-data", data, "--model-root", root, "--output-dir", str(out)),
            *("--rank", "4", "--alpha", "8", "--max-train-steps", "2", "--resolution", "48"),
            *("--mixed-precision", "no", "--max-sequence-length", "16", "--eval-rows", "0"),
            *("--checkpointing-steps", "2", "--workers", "2", "--work-dir", str(tmp_path / "w")),
        ]
        filler = fill(disk, 8)
        with caplog.at_level(logging.ERROR):
            assert cli(argv) == 2
        assert "No space left on device" in one_error_line(caplog)
        assert not temp_files(disk) and not (out / "lora").exists()
        filler.unlink()
        assert cli(argv) == 0
        assert (out / "lora" / "pytorch_lora_weights.safetensors").is_file()


@pytest.mark.slow
def test_edit_on_a_full_disk_then_rerun(tmp_path, caplog):
    """Smoke models loaded, the disk fills while videos are written: one line, exit 2; no
    video is taken as done without its files; the rerun after freeing space edits each
    video once."""
    from test_edit import add_video

    from lanepaint.models.smoke import build_smoke

    root = str(build_smoke(tmp_path / "smoke"))
    data = tmp_path / "vp"
    for i in range(2):
        add_video(data, f"v{i}", 6, seed=i)
    with mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=1m", "tmpfs") as disk:
        out = disk / "edits"
        argv = [
            *("edit", "--data-dir", str(data), "--output-dir", str(out), "--model-root", root),
            *("--first-frame-size", "32", "--first-frame-steps", "2", "--max-attempts", "2"),
            *("--first-frame-dilation", "2", "--first-frame-feather", "1", "--steps", "2"),
            *("--judge-backoff-s", "0", "--mask-dilation", "2", "--overlap", "1"),
            *("--judge-max-new-tokens", "8", "--judge-visual-tokens", "64"),
        ]
        filler = fill(disk, 16)
        with caplog.at_level(logging.ERROR):
            assert cli(argv) == 2
        assert "No space left on device" in one_error_line(caplog)
        assert not temp_files(disk)
        assert [p.name for p in out.iterdir() if p.name != ".lanepaint.json"]  # it had begun
        for record in out.glob("v*/*/record.json"):  # a committed video has its files
            assert (record.parent / "edited.mp4").is_file()
        filler.unlink()
        assert cli(argv) == 0
        manifest = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
        assert sorted(m["video_id"] for m in manifest) == ["v0", "v1"]
        assert all(m["status"] == "ok" for m in manifest)


@pytest.mark.slow
def test_caption_when_writes_fail_with_enospc_then_rerun(dataset, tmp_path, monkeypatch, caplog):
    """The VLM loads, then every write after the marker fails with ENOSPC (a fault-
    injecting writer): one line, exit 2, no torn or duplicated line; the rerun finishes."""
    from lanepaint.io import atomic
    from lanepaint.models.smoke import build_smoke

    root = str(build_smoke(tmp_path / "smoke"))
    images = tmp_path / "images"
    images.mkdir()
    for name in sorted(os.listdir(Path(dataset) / "images"))[:3]:
        os.link(Path(dataset) / "images" / name, images / name)
    out = tmp_path / "captions.jsonl"
    argv = ["caption", "--images", str(images), "--output", str(out), "--model-root", root]
    real, calls = os.replace, [0]

    def replace(src, dst):
        calls[0] += 1
        if calls[0] > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with caplog.at_level(logging.ERROR):
        assert cli(argv) == 2
    assert "No space left on device" in one_error_line(caplog)
    assert not out.exists() and not temp_files(tmp_path)
    monkeypatch.setattr(atomic.os, "replace", real)
    assert cli(argv) == 0
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(records) == len({r["image"] for r in records}) == 3


def test_a_writer_failing_with_enospc_after_n_writes_leaves_nothing_half_written(
    videos, tmp_path, monkeypatch, caplog
):
    """The fault-injecting writer: the 3rd atomic rename fails with ENOSPC."""
    from lanepaint.io import atomic

    out = tmp_path / "seg"
    calls = [0]
    real = os.replace

    def replace(src, dst):
        calls[0] += 1
        if calls[0] == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    # One failed write is a recorded failure of that clip; the others are done.
    assert cli(segment_argv(videos, out)) == 0
    s = summary(out)
    assert (s["done"], s["failed"]) == (3, 1) and list(s["failures_by_reason"]) != []
    monkeypatch.setattr(atomic.os, "replace", real)
    assert not temp_files(out)  # the failed write's temp file was removed
    assert cli(segment_argv(videos, out)) == 0
    s = summary(out)
    assert (s["done"], s["skipped_done"], s["failed"]) == (1, 3, 0)  # only the failed one
    check_segment_output(out, 4)


# --------------------------------------------------------------------------- 3. read-only


def test_segment_into_a_read_only_output_is_one_line_and_nothing_lost(tmp_path, caplog):
    src = clips(tmp_path / "clips", 2)
    out = tmp_path / "seg"
    assert cli(segment_argv(src, out)) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    clips(tmp_path / "more", 4)
    for i in (2, 3):
        os.replace(tmp_path / "more" / f"clip{i}.mp4", src / f"clip{i}.mp4")
    with mounted(out, "--bind", str(out)):
        remount(out, "ro", bind=True)
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            rc = cli(segment_argv(src, out))
        assert rc == 2 and "Read-only file system" in one_error_line(caplog)
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not Path(lock_uri(str(out))).exists()  # the lock (in the writable parent) released
    assert cli(segment_argv(src, out)) == 0
    assert summary(out)["skipped_done"] == 2
    check_segment_output(out, 4)


def test_evaluate_into_a_read_only_output_is_one_line_and_nothing_lost(tmp_path, caplog):
    edit_dir = edits(tmp_path, 2)
    out = tmp_path / "eval"
    argv = ["evaluate", "--edit-dir", str(edit_dir), "--output-dir", str(out)]
    assert cli(argv) == 0
    from test_evaluate import make_edit

    make_edit(tmp_path, "vid_2", 2, passed_at=0)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with mounted(out, "--bind", str(out)):
        remount(out, "ro", bind=True)
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert cli(argv) == 2
        assert "Read-only file system" in one_error_line(caplog)
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not Path(lock_uri(str(out))).exists()
    assert cli(argv) == 0 and evaluated_ids(out) == ["vid_0", "vid_1", "vid_2"]


@pytest.mark.parametrize("stage", ["caption", "train-lora", "edit"])
def test_model_stages_refuse_a_read_only_output_before_loading(stage, tmp_path, caplog):
    """An output folder that cannot be written: one line, exit 2, before any model loads
    (the model root does not even hold models), nothing created, the lock released."""
    out = tmp_path / "out"
    out.mkdir()
    models, data = tmp_path / "models", tmp_path / "data"
    models.mkdir()
    data.mkdir()
    if stage == "caption":
        Image.new("RGB", (8, 8)).save(data / "a.png")
        argv = ["caption", "--images", str(data), "--output", str(out / "c.jsonl"),
                "--model-root", str(models)]  # fmt: skip
        where = out / "c.jsonl"
    elif stage == "train-lora":
        make_dataset(str(data / "ds"), n=2)
        argv = ["train-lora", "--train-data", str(data / "ds"), "--model-root", str(models),
                "--output-dir", str(out)]  # fmt: skip
        where = out
    else:
        from test_reliability import edit_layout

        for folder in ("FLUX.1-Fill-dev", "CogVideoX-5b-I2V", "VideoPainter/checkpoints/branch",
                       "Qwen2.5-VL-7B-Instruct"):  # fmt: skip
            (models / folder).mkdir(parents=True)
        argv = ["edit", "--data-dir", edit_layout(data / "vp"), "--output-dir", str(out),
                "--model-root", str(models)]  # fmt: skip
        where = out
    with mounted(out, "--bind", str(out)):
        remount(out, "ro", bind=True)
        with caplog.at_level(logging.ERROR):
            assert cli(argv) == 2
        assert "Read-only file system" in one_error_line(caplog)
        assert not list(out.iterdir())
    assert not Path(lock_uri(str(where))).exists()


def test_a_read_only_parent_refuses_the_lock_in_one_line(dataset, tmp_path, caplog):
    with mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=1m", "tmpfs") as disk:
        out = disk / "filtered"
        argv = ["filter-dataset", "--input-dir", dataset, "--output-dir", str(out)]
        remount(disk, "ro")
        with caplog.at_level(logging.ERROR):
            assert cli(argv) == 2
        assert "Read-only file system" in one_error_line(caplog)
        remount(disk, "rw")
        assert cli(argv) == 0 and len(fluxfill.read_dataset(str(out))[0]) == 6


def test_hardlinks_work_whatever_filesystem_tmpdir_is_on(dataset, tmp_path, monkeypatch):
    """filter-dataset used to stage in TMPDIR: on another filesystem every hardlink failed
    (EXDEV, a traceback). It stages beside the output now."""
    with mounted(tmp_path / "tmpdir", "-t", "tmpfs", "-o", "size=4m", "tmpfs") as tmpdir:
        monkeypatch.setenv("TMPDIR", str(tmpdir))
        monkeypatch.setattr("tempfile.tempdir", None)
        out = tmp_path / "linked"
        argv = ["filter-dataset", "--input-dir", dataset, "--output-dir", str(out)]
        assert cli([*argv, "--link-mode", "hardlink"]) == 0
        rows, _ = fluxfill.read_dataset(str(out))
        assert len(rows) == 6
        assert (out / rows[0].image).stat().st_ino == (Path(dataset) / rows[0].image).stat().st_ino
        assert not temp_files(tmp_path) and not list(tmpdir.iterdir())


def test_hardlinks_across_filesystems_are_one_line(dataset, tmp_path, caplog):
    with mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=4m", "tmpfs") as disk:
        out = disk / "linked"
        argv = ["filter-dataset", "--input-dir", dataset, "--output-dir", str(out)]
        with caplog.at_level(logging.ERROR):
            assert cli([*argv, "--link-mode", "hardlink"]) == 2
        assert "--link-mode copy" in one_error_line(caplog)
        assert not (out / "train.csv").exists() and not temp_files(disk)
        assert cli([*argv, "--link-mode", "copy"]) == 0
        assert len(fluxfill.read_dataset(str(out))[0]) == 6


# --------------------------------------------------------------------------- 4. GCS outages


class FlakyProxy(http.server.ThreadingHTTPServer):
    """A proxy on 127.0.0.1 in front of the emulator: requests whose number (from 1) is in
    ``fail`` get a 503, those in ``drop`` a closed connection, the others pass through."""

    daemon_threads = True

    def __init__(self, upstream: str, fail=(), drop=()):
        self.upstream = upstream.split("://", 1)[-1]
        self.fail, self.drop = set(fail), set(drop)
        self.count = 0
        self.faults = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def _any(self) -> None:
        proxy: FlakyProxy = self.server
        with proxy.lock:
            proxy.count += 1
            n = proxy.count
            fault = n in proxy.fail or n in proxy.drop
            proxy.faults += fault
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if n in proxy.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if n in proxy.fail:
            self._reply(
                503,
                {"Content-Type": "application/json"},
                b'{"error": {"code": 503, "message": "busy"}}',
            )
            return
        conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        skip = {"transfer-encoding", "connection", "content-length"}
        self._reply(
            resp.status, {k: v for k, v in resp.getheaders() if k.lower() not in skip}, data
        )
        conn.close()

    def _reply(self, status: int, headers: dict, data: bytes) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _any


@contextmanager
def through_proxy(monkeypatch, gcs_server, **faults):
    proxy = FlakyProxy(gcs_server.url, **faults)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    try:
        yield proxy
    finally:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.url)
        proxy.shutdown()
        proxy.server_close()


@pytest.fixture
def fresh_outage_clock():
    storage._outage_since = None
    yield
    storage._outage_since = None


def dead_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # closed: connection refused


@pytest.mark.gcs
def test_transient_503s_and_dropped_connections_are_retried(
    gcs_bucket, gcs_server, monkeypatch, fresh_outage_clock
):
    uri = f"gs://{gcs_bucket}/retry/a.bin"
    with through_proxy(monkeypatch, gcs_server, fail={1, 4}, drop={2}) as proxy:
        storage.write_bytes(uri, b"payload")
        assert storage.read_bytes(uri) == b"payload"
        assert proxy.faults == 3
    assert storage.list_files(f"gs://{gcs_bucket}/retry") == [uri]  # written once, no temp
    assert storage._outage_since is None  # a success ended the outage


@pytest.mark.gcs
def test_a_stage_finishes_through_intermittent_503s(
    dataset, gcs_bucket, gcs_server, monkeypatch, tmp_path, fresh_outage_clock
):
    src, out = f"gs://{gcs_bucket}/raw", f"gs://{gcs_bucket}/filtered"
    storage.upload_dir(dataset, src)
    with through_proxy(monkeypatch, gcs_server, fail={3, 11, 25}) as proxy:
        assert cli(["filter-dataset", "--input-dir", src, "--output-dir", out]) == 0
        assert proxy.faults == 3
    rows, rejected = fluxfill.read_dataset(out)
    assert len(rows) == 6 and not rejected and len({r.image for r in rows}) == 6
    assert not [u for u in storage.list_files(out) if ".tmp-" in u]


@pytest.mark.gcs
def test_a_dead_endpoint_fails_clearly_within_one_deadline(
    gcs_server, monkeypatch, caplog, tmp_path, fresh_outage_clock
):
    monkeypatch.setenv(storage.DEADLINE_ENV, "2")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", dead_endpoint())
    t0 = time.monotonic()
    for i in range(5):  # five calls share one deadline, not 5 x 2 s
        with pytest.raises(Exception, match="Timeout of"):
            storage.read_bytes(f"gs://nowhere/obj{i}")
    assert time.monotonic() - t0 < 6
    # A stage: one line, exit 1, within the deadline (already spent: one try per call).
    storage._outage_since = None
    t0 = time.monotonic()
    with caplog.at_level(logging.ERROR):
        rc = cli(
            [
                "filter-dataset",
                "--input-dir",
                "gs://nowhere/raw",
                "--output-dir",
                "gs://nowhere/out",
            ]
        )
    assert rc == 1 and time.monotonic() - t0 < 8
    line = one_error_line(caplog)
    assert line.startswith("GCS unreachable")


@contextmanager
def silent_endpoint():
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_an_endpoint_that_never_answers_is_bounded_by_the_deadline(
    monkeypatch, caplog, fresh_outage_clock
):
    """Each try used to wait the library's 60 s read timeout; a try now waits at most what
    is left of the deadline (then min(deadline, 10 s) once it is spent)."""
    monkeypatch.setenv(storage.DEADLINE_ENV, "1.5")
    with silent_endpoint() as url:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
        t0 = time.monotonic()
        with pytest.raises(Exception, match="Timeout of .*Read timed out"):
            storage.read_bytes("gs://silent/obj")
        assert time.monotonic() - t0 < 5
        storage._outage_since = None
        t0 = time.monotonic()
        with caplog.at_level(logging.ERROR):
            rc = cli(
                [
                    "filter-dataset",
                    "--input-dir",
                    "gs://silent/raw",
                    "--output-dir",
                    "gs://silent/out",
                ]
            )
        assert rc == 1 and time.monotonic() - t0 < 8
        assert one_error_line(caplog).startswith("GCS unreachable")


def test_the_gcs_deadline_setting_is_checked(monkeypatch):
    monkeypatch.setenv(storage.DEADLINE_ENV, "0")
    with pytest.raises(ValueError, match="must be > 0"):
        storage.gcs_deadline_s()
    monkeypatch.setenv(storage.DEADLINE_ENV, "soon")
    with pytest.raises(ValueError, match="not a number"):
        storage.gcs_deadline_s()
    monkeypatch.delenv(storage.DEADLINE_ENV)
    assert storage.gcs_deadline_s() == 120.0


# --------------------------------------------------------------------------- 5. feature cache


class _FakeTextPipe:
    """Enough of a FluxFill pipeline for ``build_text_cache``: counts encoded prompts."""

    class text_encoder:  # noqa: N801
        device = "cpu"

    def __init__(self):
        self.encoded = 0

    def encode_prompt(self, prompt, prompt_2, device, max_sequence_length):
        import torch

        self.encoded += len(prompt)
        n = len(prompt)
        return torch.ones(n, 4, 8), torch.ones(n, 8), None


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_feature_cache_entry_is_recomputed(tmp_path, damage, caplog):
    from lanepaint.training import data as tdata

    cache = tdata.FeatureCache(tmp_path / "cache")
    pipe = _FakeTextPipe()
    pairs = [("a road", "a road"), ("a lane", "a lane")]
    assert tdata.build_text_cache(pipe, cache, pairs, "tid", 16) == 2
    assert tdata.build_text_cache(pipe, cache, pairs, "tid", 16) == 0  # intact: reused
    key = tdata.text_key("a road", "a road", 16, "tid")
    path = cache._path("text", key)
    raw = path.read_bytes()
    path.write_bytes({"truncated": raw[:-7], "garbage": b"\xff" * 64, "empty": b""}[damage])
    with caplog.at_level(logging.WARNING):
        assert tdata.build_text_cache(pipe, cache, pairs, "tid", 16) == 1  # recomputed
    assert "damaged" in caplog.text
    assert path.read_bytes() == raw and cache.get_text(key)["pooled"].shape == (8,)


def _flip_data_byte(raw: bytes) -> bytes:
    """The entry with one byte of its tensor data changed (size and header intact)."""
    n = int.from_bytes(raw[:8], "little")
    at = 8 + n + (len(raw) - 8 - n) // 2
    return raw[:at] + bytes([raw[at] ^ 0x5A]) + raw[at + 1 :]


def _swap_shape(raw: bytes) -> bytes:
    """The entry with one tensor's shape [4,8] described as [8,4] (same size, same bytes)."""
    assert raw.count(b"[4,8]") == 1
    return raw.replace(b"[4,8]", b"[8,4]")


@pytest.mark.parametrize("damage", [_flip_data_byte, _swap_shape], ids=["data byte", "shape"])
def test_a_feature_cache_entry_damaged_inside_is_found_by_its_checksum(tmp_path, damage, caplog):
    """Size and header still agree, so only the checksum in the metadata can tell."""
    from lanepaint.training import cache as tcache
    from lanepaint.training import data as tdata

    cache = tdata.FeatureCache(tmp_path / "cache")
    pipe = _FakeTextPipe()
    pairs = [("a road", "a road"), ("a lane", "a lane")]
    assert tdata.build_text_cache(pipe, cache, pairs, "tid", 16) == 2
    key = tdata.text_key("a lane", "a lane", 16, "tid")
    path = cache._path("text", key)
    raw = path.read_bytes()
    assert tcache.CHECKSUM_KEY.encode() in raw
    damaged = damage(raw)
    assert len(damaged) == len(raw) and damaged != raw
    path.write_bytes(damaged)
    with caplog.at_level(logging.WARNING):
        assert tdata.build_text_cache(pipe, cache, pairs, "tid", 16) == 1  # recomputed
    assert "damaged (ValueError: checksum mismatch)" in caplog.text
    assert path.read_bytes() == raw
    assert tdata.build_text_cache(pipe, cache, pairs, "tid", 16) == 0  # whole again: reused


def test_latent_cache_entries_carry_a_checksum_that_survives_their_round_trip(tmp_path):
    """The latent entries (several dtypes, packed mask bits) verify and read back."""
    import numpy as np
    import torch

    from lanepaint.training import cache as tcache

    cache = tcache.FeatureCache(tmp_path / "cache")
    mask = torch.zeros(16, 24, dtype=torch.uint8)
    mask[4:9, 3:20] = 1
    tensors = {
        k: torch.randn(16, 2, 3, dtype=torch.bfloat16) for k in ("latent_mean", "latent_std")
    }
    tensors["mask_bits"] = torch.from_numpy(np.packbits(mask.numpy().ravel()))
    tensors["mask_hw"] = torch.tensor(mask.shape)
    cache.put("latents", "ab" * 32, tensors)
    assert cache.has_latents("ab" * 32)
    back = cache.get_latents("ab" * 32)
    assert torch.equal(back["mask"], mask) and torch.equal(
        back["latent_std"], tensors["latent_std"]
    )
    path = cache._path("latents", "ab" * 32)
    path.write_bytes(_flip_data_byte(path.read_bytes()))
    assert not cache.has_latents("ab" * 32) and not path.exists()


def test_cache_entries_from_before_the_checksum_are_trusted_when_whole(tmp_path):
    """An entry without a checksum (written before it existed) is kept once its header
    matches its size (the documented rule), and still refused when it is cut short."""
    import torch
    from safetensors.torch import save_file

    from lanepaint.training import cache as tcache

    cache = tcache.FeatureCache(tmp_path / "cache")
    path = cache._path("text", "cd" * 32)
    path.parent.mkdir(parents=True)
    save_file({"prompt_embeds": torch.ones(4, 8), "pooled": torch.ones(8)}, str(path))
    assert cache.has_text("cd" * 32) and cache.get_text("cd" * 32)["pooled"].shape == (8,)
    path.write_bytes(path.read_bytes()[:-4])
    assert not cache.has_text("cd" * 32) and not path.exists()
