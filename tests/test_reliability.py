"""Bad input and concurrent writers (issue 17): a clear error, nothing lost, nothing read
from outside the root. Each test is one promise of docs/reliability.md.

CLI refusals are checked as the user sees them: exit code 2, one line, and nothing at the
output changed (no file deleted, replaced or added).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from lp_testdata import COMBOS, make_dataset

from lanepaint.cli import main as cli
from lanepaint.data import fluxfill
from lanepaint.data.masks import MaskFileError, read_masks_npz
from lanepaint.data.videopainter import VideoPainterLayout
from lanepaint.edit.models import LORA_FILE
from lanepaint.io import storage
from lanepaint.io.video import write_video
from lanepaint.kit import OutputBusyError, OutputError, check_apart, claim_output
from lanepaint.kit.guard import MARKER, read_marker
from lanepaint.kit.lock import LEASE_ENV, TOKEN_ENV, lock_uri, output_lock

REPO = Path(__file__).resolve().parents[1]
CAP = COMBOS[0].caption
QUICK_BUILD = ["--segmenter", "classical", "--captioner", "analyzer", "--frame-numbers", "0"]


# --------------------------------------------------------------------------- helpers


def refused(argv: list[str], caplog) -> str:
    """Run the CLI; it must exit 2 with exactly one one-line error. Returns the line."""
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert cli(argv) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def foreign_folder(path: Path) -> dict[str, bytes]:
    """A folder a person made: files lanepaint must never delete or replace."""
    (path / "notes").mkdir(parents=True)
    (path / "keep.txt").write_text("precious")
    (path / "notes" / "a.md").write_text("mine")
    return snapshot(path)


HOLDER = """
import sys, time
from lanepaint.kit.lock import output_lock
with output_lock("other-run", sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


@contextmanager
def held_elsewhere(output: str):
    """Another live process holding the output's lock (killed with SIGKILL at the end)."""
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, output], stdout=subprocess.PIPE, env=env, cwd=REPO
    )
    try:
        assert proc.stdout.readline().strip() == b"held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def tiny_video(path: Path, seed: int = 0) -> Path:
    from lanepaint.data.synth import SceneSpec, render_clip

    frames, _ = render_clip(SceneSpec(width=96, height=64, seed=seed), 2, 8.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames, 8.0)
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> str:
    return make_dataset(str(tmp_path / "raw"), n=6)


# --------------------------------------------------------------------------- 1. data loss


def test_filter_refuses_an_existing_folder_it_did_not_make(dataset, tmp_path, caplog):
    target = tmp_path / "precious"
    before = foreign_folder(target)
    line = refused(["filter-dataset", "--input-dir", dataset, "--output-dir", str(target)], caplog)
    assert "not made by lanepaint filter-dataset" in line
    assert snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious", "raw"]  # nothing aside
    # Its own earlier output (marked) is still replaced by a rerun with other settings.
    out = str(tmp_path / "mine")
    assert cli(["filter-dataset", "--input-dir", dataset, "--output-dir", out]) == 0
    assert read_marker(out)["stage"] == "filter-dataset"
    argv = ["filter-dataset", "--input-dir", dataset, "--output-dir", out, "--limit", "2"]
    assert cli(argv) == 0
    assert len(fluxfill.read_dataset(out)[0]) == 2


def test_every_stage_refuses_a_folder_it_did_not_make(dataset, tmp_path, caplog):
    models = str(tmp_path / "models")  # a model root that exists (checked first)
    os.makedirs(models)
    video = tiny_video(tmp_path / "clips" / "a.mp4")
    out = tmp_path / "precious"
    before = foreign_folder(out)
    runs = [
        ["segment", "--segmenter", "classical", "--videos", str(video), "--output-dir", str(out)],
        ["build-dataset", "--images", dataset, "--output-dir", str(out), *QUICK_BUILD],
        ["evaluate", "--edit-dir", str(tmp_path / "clips"), "--output-dir", str(out)],
        ["train-lora", "--train-data", dataset, "--model-root", models, "--output-dir", str(out)],
    ]
    for argv in runs:
        assert "not made by lanepaint" in refused(argv, caplog), argv[0]
    assert snapshot(out) == before
    notes = tmp_path / "notes.jsonl"  # caption writes one file: the same rule
    notes.write_text("my notes\n")
    argv = ["caption", "--images", dataset, "--output", str(notes), "--model-root", models]
    assert "not made by lanepaint caption" in refused(argv, caplog)
    assert notes.read_text() == "my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clips",
        "models",
        "notes.jsonl",
        "precious",
        "raw",
    ]


def test_a_folder_of_another_stage_is_refused(dataset, tmp_path, caplog):
    out = tmp_path / "seg"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"stage": "segment"}))
    (out / "meta.csv").write_text("video_id\n")
    before = snapshot(out)
    line = refused(["filter-dataset", "--input-dir", dataset, "--output-dir", str(out)], caplog)
    assert "made by lanepaint segment" in line and snapshot(out) == before


def test_dataset_writer_never_replaces_a_foreign_folder(tmp_path):
    target = tmp_path / "ds"
    before = foreign_folder(target)
    writer = fluxfill.DatasetWriter(str(target))
    writer.add("a", np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), np.uint8), CAP)
    with pytest.raises(OutputError, match="not made by lanepaint dataset"):
        writer.commit()
    writer.discard()
    assert snapshot(target) == before


def test_an_output_of_the_wrong_kind_is_refused(dataset, tmp_path, caplog):
    models = str(tmp_path / "models")  # a model root that exists (checked first)
    os.makedirs(models)
    file = tmp_path / "file"
    file.write_text("x")
    argv = ["filter-dataset", "--input-dir", dataset, "--output-dir", str(file)]
    assert "is a file; give a folder" in refused(argv, caplog)
    argv = ["caption", "--images", dataset, "--output", str(tmp_path), "--model-root", models]
    assert "contains the input" in refused(argv, caplog)
    (tmp_path / "folder").mkdir()
    argv[4] = str(tmp_path / "folder")
    assert "is a folder; give a file name" in refused(argv, caplog)
    assert file.read_text() == "x" and not any((tmp_path / "folder").iterdir())


def test_outputs_made_before_the_marker_are_adopted(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"stage": "segment"}))
    claim_output("segment", str(out))
    assert read_marker(str(out))["stage"] == "segment"
    with pytest.raises(OutputError):
        claim_output("evaluate", str(out))


@pytest.mark.parametrize(
    "inp,out,word",
    [
        ("data", "data", "is the input"),
        ("data", "data/sub", "inside the input"),
        ("data/sub", "data", "contains the input"),
        ("gs://bkt/runs/x", "gs://bkt/runs//x/./y/", "inside the input"),
        ("gs://bkt/runs/x/", "gs://bkt/runs", "contains the input"),
    ],
)
def test_an_output_inside_or_above_an_input_is_refused(tmp_path, inp, out, word):
    def where(p: str) -> str:
        return p if p.startswith("gs://") else str(tmp_path / p)

    with pytest.raises(OutputError, match=word):
        check_apart([where(inp)], [where(out)])


def test_apart_resolves_symlinks_and_allows_siblings(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "data")
    with pytest.raises(OutputError, match="inside the input"):
        check_apart([str(tmp_path / "data")], [str(tmp_path / "alias" / "out")])
    check_apart([str(tmp_path / "raw")], [str(tmp_path / "raw__all")])  # a sibling
    check_apart(["gs://bkt/raw"], ["gs://bkt/raw__all", "gs://other/raw/x", str(tmp_path)])
    check_apart([str(tmp_path / "e")], [str(tmp_path / "e" / "r")], [str(tmp_path / "e/r")])


def test_stages_refuse_an_output_around_their_input(dataset, tmp_path, caplog):
    video = tiny_video(tmp_path / "clips" / "a.mp4")
    seg = ["segment", "--segmenter", "classical", "--videos", str(video)]
    assert "contains the input" in refused([*seg, "--output-dir", str(tmp_path)], caplog)
    inside = ["filter-dataset", "--input-dir", dataset, "--output-dir", dataset + "/sub"]
    assert "inside the input" in refused(inside, caplog)
    build = ["build-dataset", "--images", dataset, "--output-dir", dataset + "/x", *QUICK_BUILD]
    assert "inside the input" in refused(build, caplog)
    assert not (Path(dataset) / "sub").exists() and not (Path(dataset) / "x").exists()


def test_a_second_writer_gets_one_line_and_the_output_is_untouched(dataset, tmp_path, caplog):
    out = tmp_path / "out"
    assert cli(["filter-dataset", "--input-dir", dataset, "--output-dir", str(out)]) == 0
    before = snapshot(out)
    argv = ["filter-dataset", "--input-dir", dataset, "--output-dir", str(out), "--limit", "1"]
    with held_elsewhere(str(out)) as holder:
        line = refused(argv, caplog)
        assert f"pid {holder.pid}" in line and "other-run" in line
    assert snapshot(out) == before
    # The holder was killed (SIGKILL): its lock is stale and the next run takes it over.
    assert Path(lock_uri(str(out))).exists()
    assert cli(argv) == 0 and len(fluxfill.read_dataset(str(out))[0]) == 1
    assert not Path(lock_uri(str(out))).exists()


def test_every_stage_takes_the_lock(dataset, tmp_path, caplog):
    models = str(tmp_path / "models")  # a model root that exists (checked first)
    os.makedirs(models)
    video = tiny_video(tmp_path / "clips" / "a.mp4")
    out = tmp_path / "out"
    runs = [
        ["segment", "--segmenter", "classical", "--videos", str(video), "--output-dir", str(out)],
        ["build-dataset", "--images", dataset, "--output-dir", str(out), *QUICK_BUILD],
        ["evaluate", "--edit-dir", str(tmp_path / "clips"), "--output-dir", str(out)],
        ["caption", "--images", dataset, "--output", str(out), "--model-root", models],
        ["train-lora", "--train-data", dataset, "--model-root", models, "--output-dir", str(out)],
    ]
    with held_elsewhere(str(out)):
        for argv in runs:
            assert "is being written by other-run" in refused(argv, caplog), argv[0]
    assert not out.exists()


def test_lock_of_another_host_is_taken_over_after_its_lease(tmp_path, monkeypatch):
    monkeypatch.setenv(LEASE_ENV, "3")
    out = str(tmp_path / "out")
    lock = Path(lock_uri(out))
    info = {"stage": "x", "host": "elsewhere", "pid": 1, "token": "t", "started_at": "then"}
    lock.write_text(json.dumps(info))
    with pytest.raises(OutputBusyError, match="pid 1 on elsewhere"), output_lock("s", out):
        pass  # a fresh heartbeat: a live writer on another host
    old = time.time() - 1.5  # missed two heartbeats (1 s): a killed pod, waited for
    os.utime(lock, (old, old))
    t0 = time.monotonic()
    with output_lock("s", out) as held:
        assert held.owned and json.loads(lock.read_text())["host"] != "elsewhere"
    assert 1.0 < time.monotonic() - t0 < 5.0 and not lock.exists()


CHILD = """
import sys
from lanepaint.kit.lock import OutputBusyError, output_lock
try:
    with output_lock("child", sys.argv[1]):
        print("inherited")
except OutputBusyError:
    print("busy")
"""


def test_child_processes_inherit_the_lock(tmp_path):
    out = str(tmp_path / "out")

    def child(env: dict) -> str:
        argv = [sys.executable, "-c", CHILD, out]
        return subprocess.run(argv, env=env, capture_output=True, text=True, cwd=REPO).stdout

    with output_lock("parent", out):
        assert child(dict(os.environ)).strip() == "inherited"  # torchrun ranks
        stranger = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
        assert child(stranger).strip() == "busy"
        assert Path(lock_uri(out)).exists()
    assert not Path(lock_uri(out)).exists() and TOKEN_ENV not in os.environ


@pytest.mark.gcs
def test_gcs_lock_is_exclusive_and_released(gcs_bucket):
    out = f"gs://{gcs_bucket}/runs/out"
    with held_elsewhere(out) as holder:
        with pytest.raises(OutputBusyError, match=f"pid {holder.pid}"), output_lock("s", out):
            pass
    # Killed: the same host sees the pid is gone and takes the lock over.
    with output_lock("s", out) as held:
        assert held.owned and storage.exists(lock_uri(out))
        with output_lock("s", out) as again:  # re-entrant within the process
            assert again is None
    assert not storage.exists(lock_uri(out))


def _put_objects(bucket: str, names: list[str]) -> None:
    """Raw objects, as a killed writer or someone else left them (not through our writer)."""
    b = storage._client().bucket(bucket)
    for name in names:
        b.blob(name).upload_from_string(b"x")


def _names(bucket: str) -> set[str]:
    return {b.name for b in storage._client().list_blobs(bucket)}


HEX = "0123456789abcdef" * 2  # 32 hex digits, the uuid of _publish_gcs's temp names
# Our temp names at or under gs://<bucket>/runs/out (the output folder, and a temp of an
# output object of that name), then what the sweep must leave: objects, look-alikes, other
# outputs' temps.
OURS = [f"runs/out/a.bin.tmp-{HEX}", f"runs/out/sub/b.json.tmp-{HEX}", f"runs/out.tmp-{HEX}"]
NOT_OURS = [
    "runs/out/a.bin",
    "runs/out/c.tmp-nothex",
    f"runs/out/d.tmp-{HEX[:31]}",
    f"runs/out/e.tmp-{HEX}.bin",
    f"runs/out-b/f.tmp-{HEX}",
    f"runs/outer.tmp-{HEX}",
    f"other/runs/out/g.tmp-{HEX}",
]


def test_stale_gcs_temps_are_swept_by_age_and_name_only(gcs_bucket):
    """``sweep_stale_gcs_temps`` removes our temp objects created before the cutoff, at or
    under the output only; a younger temp (a live writer's) and every other name stay."""
    _put_objects(gcs_bucket, OURS + NOT_OURS)
    time.sleep(0.05)  # server timestamps: the cutoff falls strictly between the two groups
    cutoff = storage._client().bucket(gcs_bucket).blob("probe")
    cutoff.upload_from_string(b"")
    time.sleep(0.05)
    young = f"runs/out/h.bin.tmp-{HEX}"
    _put_objects(gcs_bucket, [young])
    out = f"gs://{gcs_bucket}/runs/out"
    assert storage.list_files(out) == [
        f"{out}/a.bin",
        f"{out}/c.tmp-nothex",
        f"{out}/d.tmp-{HEX[:31]}",
        f"{out}/e.tmp-{HEX}.bin",
    ]
    removed = storage.sweep_stale_gcs_temps(out, cutoff.time_created)
    assert sorted(removed) == sorted(f"gs://{gcs_bucket}/{n}" for n in OURS)
    assert _names(gcs_bucket) == {*NOT_OURS, young, "probe"}
    assert (
        storage.sweep_stale_gcs_temps(f"gs://{gcs_bucket}-missing/out", cutoff.time_created) == []
    )


def test_the_gcs_lock_holder_sweeps_temps_older_than_the_lease(gcs_bucket, monkeypatch, caplog):
    """A run that takes a gs:// output's lock removes the temp objects killed runs left
    there, once they are older than the lease and the GCS deadline: a killed writer's
    process cannot be checked on GCS, age decides."""
    out = f"gs://{gcs_bucket}/runs/out"
    _put_objects(gcs_bucket, OURS + NOT_OURS)
    with output_lock("s", out):  # default lease (180 s): too young to be judged
        pass
    assert _names(gcs_bucket) == {*OURS, *NOT_OURS}
    monkeypatch.setenv(LEASE_ENV, "1")
    monkeypatch.setenv(storage.DEADLINE_ENV, "1")
    time.sleep(1.2)
    with caplog.at_level(logging.WARNING), output_lock("s", out) as held:
        assert held.owned
        assert _names(gcs_bucket) == {*NOT_OURS, storage.split_gcs(lock_uri(out))[1]}
    assert "removed 3 temp file(s) left by killed runs" in caplog.text


def test_segment_meta_csv_is_rebuilt_from_every_record_on_disk(tmp_path, monkeypatch):
    from lanepaint.stages import segment as seg

    videos = [tiny_video(tmp_path / "in" / f"{n}.mp4", seed=i) for i, n in enumerate("abc")]
    out = str(tmp_path / "out")
    config = seg.SegmentConfig(segmenter="classical", max_frames=2)
    seg.segment_videos([str(videos[0])], out, config=config)
    original = seg._segment_all

    def another_writer_commits_c(run, todo, loaded):
        done = original(run, todo, loaded)
        seg.segment_videos([str(videos[2])], out, config=config)  # committed meanwhile
        return done

    monkeypatch.setattr(seg, "_segment_all", another_writer_commits_c)
    seg.segment_videos([str(videos[1])], out, config=config)
    meta = list(csv.DictReader(io.StringIO(storage.read_text(storage.join(out, "meta.csv")))))
    assert sorted(r["video_id"] for r in meta) == ["a", "b", "c"]


def test_strict_csv_accounts_for_every_physical_line():
    lines = [
        "image,mask,prompt,prompt_2",
        f'images/a.png,masks/a.png,{CAP},"unclosed quote',
        *[f"images/{i}.png,masks/{i}.png,{CAP}," for i in range(5)],
        f'"images/q.png" x,masks/q.png,{CAP},',
        "",
        f"images/z.png,masks/z.png,{CAP},a\rimages/r.png,masks/r.png,{CAP},",
    ]
    rows, rejected = fluxfill.parse_csv("\n".join(lines) + "\n")
    assert [r.line for r in rejected] == [2, 8] and "malformed" in rejected[0].reason
    assert [r.line for r in rows] == [3, 4, 5, 6, 7, 10, 11]
    assert all("\n" not in r.prompt_2 and "images/" not in r.prompt_2 for r in rows)
    # Our writer never writes a line break inside a field, so its CSV reads back whole.
    row = fluxfill.FluxFillRow("images/a.png", "masks/a.png", CAP, "two\nlines")
    assert fluxfill.parse_csv(fluxfill.format_csv([row]))[0][0].prompt_2 == "two lines"


def test_filter_counts_the_lines_an_unclosed_quote_used_to_swallow(dataset, tmp_path):
    from lanepaint.stages.filter_dataset import filter_dataset

    csv_path = Path(dataset) / "train.csv"
    text = csv_path.read_text().splitlines()
    text[1] = text[1].rsplit(",", 1)[0] + ',"unclosed'
    csv_path.write_text("\n".join(text) + "\n")
    s = filter_dataset(dataset, str(tmp_path / "out")).summary
    assert (s["inputs"], s["done"], s["failed"]) == (6, 5, 1)
    assert s["failures_by_reason"] == {"malformed CSV row": 1}


# --------------------------------------------------------------------------- 2. outside the root


def _outside_links(root: Path, tmp_path: Path) -> None:
    """Row 0's image is a symlink to a file outside; row 1's mask sits in a symlinked
    folder outside. Both files are valid images, so only the containment check stops them."""
    secret = tmp_path / "secret"
    secret.mkdir()
    image = root / "images" / "frame_000.png"
    (secret / "frame_000.png").write_bytes(image.read_bytes())
    image.unlink()
    image.symlink_to(secret / "frame_000.png")
    (secret / "frame_001.png").write_bytes((root / "masks" / "frame_001.png").read_bytes())
    (root / "linked").symlink_to(secret)
    csv_path = root / "train.csv"
    csv_path.write_text(csv_path.read_text().replace("masks/frame_001.png", "linked/frame_001.png"))


def test_filter_never_follows_a_symlink_out_of_the_dataset(dataset, tmp_path):
    from lanepaint.stages.filter_dataset import filter_dataset

    _outside_links(Path(dataset), tmp_path)
    out = tmp_path / "out"
    s = filter_dataset(dataset, str(out)).summary
    assert (s["done"], s["failures_by_reason"]) == (4, {"unsafe path": 2})
    failures = (out / "failures.jsonl").read_text()
    assert "leads outside the dataset root" in failures
    assert not any("secret" in str(p.resolve()) for p in out.rglob("*.png"))


def test_a_symlinked_filter_output_stays_readable(dataset, tmp_path):
    from lanepaint.stages.filter_dataset import FilterConfig, filter_dataset

    linked = tmp_path / "linked"
    filter_dataset(dataset, str(linked), FilterConfig(link_mode="symlink"))
    assert read_marker(str(linked))["links_into"] == ["../raw"]
    again = filter_dataset(str(linked), str(tmp_path / "copy")).summary
    assert (again["done"], again["failed"]) == (6, 0)


# --------------------------------------------------------------------------- 3. no unpickling


def test_a_mask_npz_with_object_arrays_is_refused_clearly(tmp_path):
    buf = io.BytesIO()
    np.savez(buf, arr_0=np.array([{"x": 1}, None], dtype=object))
    with pytest.raises(MaskFileError, match="pickled object arrays; refusing"):
        read_masks_npz(buf.getvalue(), "m.npz")
    layout = VideoPainterLayout(str(tmp_path))
    Path(layout.masks("v")).parent.mkdir(parents=True)
    Path(layout.masks("v")).write_bytes(buf.getvalue())
    with pytest.raises(MaskFileError, match="pickled"):
        layout.read_masks("v")
    for bad, why in [(b"junk", "not a readable"), (_npz(x=np.zeros(2)), "no arr_0")]:
        with pytest.raises(MaskFileError, match=why):
            read_masks_npz(bad, "m.npz")


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_nothing_in_lanepaint_unpickles():
    """Every np.load says allow_pickle=False, every torch.load weights_only=True; no
    pickle-based module, no weights_only=False, no accelerate custom state (accelerate
    loads it with weights_only=False)."""
    import ast

    problems = []
    for path in sorted((REPO / "lanepaint").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(
                    n.split(".")[0] in ("pickle", "dill", "joblib", "cloudpickle") for n in names
                ):
                    problems.append(f"{where}: imports a pickle module")
            if not isinstance(node, ast.Call):
                continue
            func = ast.unparse(node.func)
            kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if func == "np.load" and kw.get("allow_pickle") != "False":
                problems.append(f"{where}: np.load without allow_pickle=False")
            if func == "torch.load" and kw.get("weights_only") != "True":
                problems.append(f"{where}: torch.load without weights_only=True")
            if kw.get("weights_only") == "False" or kw.get("allow_pickle") == "True":
                problems.append(f"{where}: {func} unpickles")
            if func.endswith("register_for_checkpointing"):
                problems.append(f"{where}: accelerate custom state is unpickled on load")
    assert not problems, problems


# --------------------------------------------------------------------------- 4. missing inputs


def test_missing_inputs_are_errors_not_zero_items(tmp_path, caplog):
    missing = str(tmp_path / "nowhere")
    out = tmp_path / "out"
    assert "no video source" in refused(
        ["build-dataset", "--source", missing, "--output-dir", str(out), *QUICK_BUILD], caplog
    )
    assert "no images folder" in refused(
        ["build-dataset", "--images", missing, "--output-dir", str(out), *QUICK_BUILD], caplog
    )
    assert "no edit output" in refused(
        ["evaluate", "--edit-dir", missing, "--output-dir", str(out)], caplog
    )
    assert "no images folder or prefix" in refused(
        ["caption", "--images", missing, "--output", str(out), "--model-root", "m"], caplog
    )
    assert "no training CSV" in refused(
        ["train-lora", "--train-data", missing, "--model-root", "m", "--output-dir", str(out)],
        caplog,
    )
    assert not out.exists()


@pytest.mark.gcs
def test_an_empty_gcs_prefix_is_a_missing_input(gcs_bucket, tmp_path, caplog):
    missing = f"gs://{gcs_bucket}/nothing/here"
    out = str(tmp_path / "out")
    assert "no images folder" in refused(
        ["caption", "--images", missing, "--output", out, "--model-root", "m"], caplog
    )
    assert "no video source" in refused(
        ["build-dataset", "--source", missing, "--output-dir", out, *QUICK_BUILD], caplog
    )


@pytest.mark.parametrize(
    "flags,word",
    [
        (["--num-shards", "0"], "--num-shards"),
        (["--num-shards", "2", "--shard-index", "2"], "in [0, 2)"),
    ],
)
def test_shard_flags_out_of_range_are_user_errors(tmp_path, caplog, flags, word):
    src = tmp_path / "src" / "chunk_0000"
    tiny_video(src / "a.mp4")
    argv = ["build-dataset", "--source", str(src.parent), "--output-dir", str(tmp_path / "o")]
    assert word in refused([*argv, *QUICK_BUILD, *flags], caplog)
    assert not (tmp_path / "o").exists()


def test_evaluate_may_write_its_own_folder_inside_the_edits_only(tmp_path, caplog):
    from lanepaint.stages.evaluate import default_output_dir, evaluate

    edits = tmp_path / "edits"
    edits.mkdir()
    result = evaluate(str(edits), default_output_dir(str(edits)))
    assert result.summary["inputs"] == 0 and (edits / "_evaluation" / "report.html").exists()
    other = ["evaluate", "--edit-dir", str(edits), "--output-dir", str(edits / "elsewhere")]
    assert "inside the input" in refused(other, caplog)


# --------------------------------------------------------------------------- edit


EDIT_ROW = {
    "video_id": "v1",
    "path": "chunk_0000/v1.0.mp4",
    "mask_id": "v1",
    "fps": "8.0",
    "frames": "4",
    "width": "96",
    "height": "64",
    "start_frame": "0",
    "end_frame": "3",
}


def edit_layout(root: Path, drop: str = "", **values: str) -> str:
    """A VideoPainter layout whose meta.csv has one row (``values`` replace its fields,
    ``drop`` leaves a column out); the video itself is never reached."""
    row = {k: v for k, v in {**EDIT_ROW, **values}.items() if k != drop}
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "meta.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row), lineterminator="\n")
        writer.writeheader()
        writer.writerow(row)
    return str(root)


@pytest.fixture
def edit_io(tmp_path: Path, monkeypatch) -> dict[str, str]:
    """A layout, a model root and a LoRA folder; loading the models fails the test."""
    import lanepaint.edit.models
    import lanepaint.stages.edit

    def no_models(*args, **kwargs):
        raise AssertionError("the models were loaded")

    monkeypatch.setattr(lanepaint.edit.models, "load_models", no_models)
    monkeypatch.setattr(lanepaint.stages.edit, "load_models", no_models)
    for folder in (
        "FLUX.1-Fill-dev",
        "CogVideoX-5b-I2V",
        "VideoPainter/checkpoints/branch",
        "Qwen2.5-VL-7B-Instruct",
    ):
        (tmp_path / "models" / folder).mkdir(parents=True)
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / LORA_FILE).write_bytes(b"adapter")
    return {
        "data": edit_layout(tmp_path / "vp"),
        "models": str(tmp_path / "models"),
        "lora": str(tmp_path / "lora"),
        "out": str(tmp_path / "edits"),
    }


def edit_argv(data: str, out: str, models: str, *flags: str) -> list[str]:
    return ["edit", "--data-dir", data, "--output-dir", out, "--model-root", models, *flags]


@pytest.mark.parametrize(
    "case,word",
    [
        ("no data dir", "no VideoPainter layout (--data-dir)"),
        ("no meta.csv", "no meta.csv in the VideoPainter layout"),
        ("no fps column", "has no column fps"),
        ("frames not a number", "line 2: frames 'twelve' is not an integer"),
        ("fps NaN", "line 2: fps 'nan' is not a finite number"),
        ("empty instruction", "no edit instruction given"),
        ("unknown instruction", "unknown word 'triple'"),
        ("no LoRA folder", "no pytorch_lora_weights.safetensors in LoRA folder"),
        ("no LoRA file", "no pytorch_lora_weights.safetensors in LoRA folder"),
        ("no branch", "videopainter_branch: model folder not found"),
        ("no judge VLM", "qwen_vl_7b: model folder not found"),
    ],
)
def test_edit_input_errors_come_before_any_model_loads(edit_io, tmp_path, caplog, case, word):
    data, flags = edit_io["data"], []
    if case == "no data dir":
        data = str(tmp_path / "nowhere")
    elif case == "no meta.csv":
        os.remove(Path(data) / "meta.csv")
    elif case == "no fps column":
        data = edit_layout(tmp_path / "vp2", drop="fps")
    elif case == "frames not a number":
        data = edit_layout(tmp_path / "vp2", frames="twelve")
    elif case == "fps NaN":
        data = edit_layout(tmp_path / "vp2", fps="nan")
    elif case == "empty instruction":
        flags = ["--instruction", " || "]
    elif case == "unknown instruction":
        flags = ["--instruction", "lane triple white solid"]
    elif case == "no LoRA folder":
        flags = ["--lora", str(tmp_path / "no-lora")]
    elif case == "no branch":
        os.rmdir(Path(edit_io["models"]) / "VideoPainter/checkpoints/branch")
    elif case == "no judge VLM":
        os.rmdir(Path(edit_io["models"]) / "Qwen2.5-VL-7B-Instruct")
    else:
        os.remove(Path(edit_io["lora"]) / LORA_FILE)
        flags = ["--lora", edit_io["lora"]]
    argv = edit_argv(data, edit_io["out"], edit_io["models"], *flags)
    assert word in refused(argv, caplog)
    assert not Path(edit_io["out"]).exists()


def test_edit_refuses_an_output_around_its_inputs_or_not_its_own(edit_io, tmp_path, caplog):
    data, models, lora = edit_io["data"], edit_io["models"], edit_io["lora"]
    for out, flags, word in [
        (data + "/edits", [], "inside the input"),
        (str(tmp_path), [], "contains the input"),
        (models + "/edits", [], "inside the input"),
        (lora + "/edits", ["--lora", lora], "inside the input"),
    ]:
        assert word in refused(edit_argv(data, out, models, *flags), caplog), out
    assert not any(Path(p, "edits").exists() for p in (data, models, lora))
    precious = tmp_path / "precious"
    before = foreign_folder(precious)
    line = refused(edit_argv(data, str(precious), models), caplog)
    assert "not made by lanepaint edit" in line and snapshot(precious) == before
    # Its own output: marked on the first run, accepted by the next.
    for _ in range(2):
        assert cli(edit_argv(data, edit_io["out"], models, "--video-ids", "none")) == 0
    assert read_marker(edit_io["out"])["stage"] == "edit"


def test_edit_locks_its_output_or_its_shard(edit_io, monkeypatch, caplog):
    import lanepaint.stages.edit as stage

    data, models, out = edit_io["data"], edit_io["models"], edit_io["out"]
    argv = edit_argv(data, out, models, "--video-ids", "none")
    with held_elsewhere(out):
        assert "is being written by other-run" in refused(argv, caplog)
    assert not Path(out).exists()
    # Shards of one output run in parallel: each locks its own summary folder.
    config = stage.EditConfig(video_ids=("none",), num_shards=2, shard_index=1)
    shard = [storage.join(out, "_shards", f"shard_{i:04d}") for i in range(2)]
    stage.edit_videos(data, out, models, config, summary_dir=shard[1])  # claims the output
    os.remove(Path(shard[1], "summary.json"))
    with held_elsewhere(shard[0]):
        stage.edit_videos(data, out, models, config, summary_dir=shard[1])
    assert Path(shard[1], "summary.json").exists()
    with held_elsewhere(shard[1]), pytest.raises(OutputBusyError, match="other-run"):
        stage.edit_videos(data, out, models, config, summary_dir=shard[1])
    # A shard claims the output under the folder's lock (waiting MERGE_WAIT_S for it).
    monkeypatch.setattr(stage, "MERGE_WAIT_S", 0.0)
    with held_elsewhere(out), pytest.raises(OutputBusyError, match="other-run"):
        stage.edit_videos(data, out, models, config, summary_dir=shard[0])


def test_edit_merge_waits_for_the_folder_and_needs_one(edit_io, tmp_path, monkeypatch):
    import threading

    import lanepaint.stages.edit as stage
    from lanepaint.stages.edit import EditConfig, edit_videos, merge_edits

    data, models, out = edit_io["data"], edit_io["models"], edit_io["out"]
    with pytest.raises(FileNotFoundError, match="no edit output"):
        merge_edits(out)
    assert not Path(out).exists()
    config = EditConfig(video_ids=("none",))
    edit_videos(data, out, models, config, summary_dir=storage.join(out, "_shards", "shard_0000"))
    monkeypatch.setenv(LEASE_ENV, "6")  # the waiting merge looks again every 0.1 s
    monkeypatch.setattr(stage, "MERGE_WAIT_S", 30.0)
    with held_elsewhere(out) as holder:
        # The other merge ends after 1 s (killed, and reaped: a zombie's pid is alive).
        threading.Timer(1.0, lambda: (holder.kill(), holder.wait())).start()
        started = time.monotonic()
        merged = merge_edits(out, num_shards=1).summary
    assert time.monotonic() - started >= 0.9 and merged["details"]["shards"] == 1
