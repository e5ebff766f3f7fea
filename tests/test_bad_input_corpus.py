"""The bad-input corpus (issue 17): hostile inputs for every stage, each with its outcome.

Every case is one row of a table below and gets one of three outcomes, checked as the
user sees it:

- ``REFUSED`` — exit code 2 and exactly one error line naming what to fix (the kit's
  logger, argparse's ``error:`` line, or the tool's own stderr line), no traceback, nothing
  created at the output, no model loaded (edit's loader fails the test if called);
- ``RECORDED`` — the bad item is a failure (``failures.jsonl``) or a rejected row with its
  reason, and the rest of the batch is done (one run per stage serves all its rows);
- ``HANDLED`` — the input is odd but valid and comes out right (a 16-bit image scaled,
  not clipped to white; a rotated video turned upright; a gs:// input read).

CLI calls run in-process (``lanepaint.cli.main``); an exception escaping it fails the case.
docs/reliability.md counts these cases per stage.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
from lp_testdata import make_dataset
from PIL import Image

from lanepaint.cli import main as cli
from lanepaint.data import fluxfill
from lanepaint.data.synth import SceneSpec, render_clip
from lanepaint.edit.models import LORA_FILE
from lanepaint.io.video import write_video

QUICK_BUILD = ["--segmenter", "classical", "--captioner", "analyzer", "--frame-numbers", "0"]


# --------------------------------------------------------------------------- helpers


def run_cli(argv: list[str], caplog, capsys) -> tuple[int, list[str], str]:
    """(exit code, error lines, stderr) of one in-process CLI call. Error lines: the kit's
    ERROR records, argparse's ``error:`` line and the tools' own ``lanepaint ...:`` lines."""
    caplog.clear()
    capsys.readouterr()
    with caplog.at_level(logging.ERROR):
        try:
            rc = cli(argv)
        except SystemExit as exc:  # argparse
            rc = exc.code
    err = capsys.readouterr().err
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    lines += [x for x in err.splitlines() if x.startswith(("lanepaint", "error:"))]
    return rc, lines, err


def assert_refused(argv: list[str], word: str, caplog, capsys) -> None:
    rc, lines, err = run_cli(argv, caplog, capsys)
    assert rc == 2, (rc, lines, err)
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert word in lines[0], lines[0]
    assert "Traceback" not in err


def frame(seed: int = 0, width: int = 96, height: int = 64) -> np.ndarray:
    frames, _ = render_clip(SceneSpec(width=width, height=height, seed=seed), 1, 8.0)
    return frames[0]


def rotated_clip(path: Path, degrees: int) -> np.ndarray:
    """A clip whose display matrix says "turn by ``degrees``" (PyAV writes the side data);
    returns the frames as stored (landscape)."""
    frames, _ = render_clip(SceneSpec(width=96, height=64, seed=3), 2, 8.0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.set_display_rotation(degrees)
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())
    return frames


def gray16(path: Path, seed: int = 0) -> np.ndarray:
    """A 16-bit grey PNG (PIL writes I;16); returns the 8-bit values it must read as."""
    gray8 = frame(seed)[..., 1]
    Image.fromarray(gray8.astype(np.uint16) * 257).save(path)
    return gray8


def failures(folder: Path, name: str = "failures.jsonl") -> dict[str, str]:
    """item -> reason of a stage's failures file."""
    text = (folder / name).read_text() if (folder / name).exists() else ""
    return {json.loads(x)["item"]: json.loads(x)["reason"] for x in text.splitlines()}


# --------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    """Good inputs the refusal cases spoil one at a time."""
    root = tmp_path_factory.mktemp("corpus")
    videos = root / "videos"
    videos.mkdir()
    frames, _ = render_clip(SceneSpec(width=96, height=64, seed=0), 2, 8.0)
    write_video(videos / "good.mp4", frames, 8.0)
    dataset = Path(make_dataset(str(root / "dataset"), n=3))
    (root / "a_file.txt").write_text("not a folder")
    edits = root / "edits"
    edits.mkdir()
    return {
        "root": root,
        "videos": videos,
        "dataset": dataset,
        "images": dataset / "images",
        "file": root / "a_file.txt",
        "edits": edits,
        "missing": root / "nowhere",
    }


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "out"


# --------------------------------------------------------------------------- refusals

#: (case id, argv builder (base inputs, output) -> argv, word the one line must contain)
Refusal = tuple[str, Callable[[dict, Path], list[str]], str]


def seg(b, o, *flags):
    return ["segment", "--segmenter", "classical", "--videos", str(b["videos"]),
            "--output-dir", str(o), *flags]  # fmt: skip


def cap(b, o, *flags):
    return ["caption", "--images", str(b["images"]), "--output", str(o / "c.jsonl"),
            "--model-root", str(b["missing"]), *flags]  # fmt: skip


def build(b, o, *flags):
    return ["build-dataset", "--images", str(b["images"]), "--output-dir", str(o),
            *QUICK_BUILD, *flags]  # fmt: skip


def filt(b, o, *flags):
    return ["filter-dataset", "--input-dir", str(b["dataset"]), "--output-dir", str(o), *flags]


def train(b, o, *flags):
    return ["train-lora", "--train-data", str(b["dataset"]), "--model-root", str(b["missing"]),
            "--output-dir", str(o), *flags]  # fmt: skip


def evaluate(b, o, *flags):
    return ["evaluate", "--edit-dir", str(b["edits"]), "--output-dir", str(o), *flags]


REFUSALS: list[Refusal] = [
    # segment
    ("segment fps nan", lambda b, o: seg(b, o, "--fps", "nan"), "--fps must be a finite number"),
    ("segment fps inf", lambda b, o: seg(b, o, "--fps", "inf"), "--fps must be a finite number"),
    ("segment fps negative", lambda b, o: seg(b, o, "--fps", "-1"), "fps must be >= 0"),
    ("segment fps text", lambda b, o: seg(b, o, "--fps", "fast"), "--fps: invalid float"),
    ("segment max frames < 0", lambda b, o: seg(b, o, "--max-frames", "-1"), "max_frames"),
    ("segment unknown segmenter", lambda b, o: seg(b, o, "--segmenter", "x"), "invalid choice"),
    ("segment crf 99", lambda b, o: seg(b, o, "--crf", "99"), "crf must be in [0, 51]"),
    ("segment min side 1", lambda b, o: seg(b, o, "--min-side", "1"), "min_side"),
    ("segment workers 0", lambda b, o: seg(b, o, "--workers", "0"), "workers must be >= 1"),
    ("segment min component nan", lambda b, o: seg(b, o, "--min-component", "nan"), "finite"),
    ("segment bad points", lambda b, o: seg(b, o, "--points", "1,2,3"), "points"),
    (
        "segment missing videos",
        lambda b, o: seg({**b, "videos": b["missing"]}, o),
        "no video or folder at",
    ),
    ("segment output is a file", lambda b, o: seg(b, b["file"]), "is a file; give a folder"),
    (
        "segment output inside its input",
        lambda b, o: seg(b, b["videos"] / "out"),
        "inside the input",
    ),
    (
        "segment sam2 without model root",
        lambda b, o: [*seg(b, o, "--segmenter", "sam2"), "--model-root", str(b["missing"])],
        "nowhere",
    ),
    # caption
    ("caption missing images", lambda b, o: cap({**b, "images": b["missing"]}, o), "no images"),
    ("caption missing model root", lambda b, o: cap(b, o), "nowhere"),
    ("caption batch size 0", lambda b, o: cap(b, o, "--batch-size", "0"), "batch"),
    ("caption max new tokens 0", lambda b, o: cap(b, o, "--max-new-tokens", "0"), "token"),
    ("caption unknown vlm size", lambda b, o: cap(b, o, "--vlm-size", "3B"), "invalid choice"),
    (
        "caption output is a folder",
        lambda b, o: [
            "caption",
            "--images",
            str(b["images"]),
            "--output",
            str(b["edits"]),
            "--model-root",
            str(b["videos"]),
        ],  # fmt: skip
        "is a folder; give a file name",
    ),
    # build-dataset
    ("build num shards 0", lambda b, o: build(b, o, "--num-shards", "0"), "--num-shards"),
    (
        "build shard index out of range",
        lambda b, o: build(b, o, "--num-shards", "2", "--shard-index", "2"),
        "in [0, 2)",
    ),
    ("build frame number < 0", lambda b, o: build(b, o, "--frame-numbers", "-1"), "frame"),
    ("build frame numbers text", lambda b, o: build(b, o, "--frame-numbers", "one"), "frame"),
    ("build coverage 1.5", lambda b, o: build(b, o, "--min-coverage", "1.5"), "coverage"),
    ("build coverage nan", lambda b, o: build(b, o, "--min-coverage", "nan"), "finite"),
    ("build seed < 0", lambda b, o: build(b, o, "--seed", "-1"), "seed must be >= 0"),
    (
        "build chunk end before start",
        lambda b, o: build(b, o, "--chunk-start", "5", "--chunk-end", "2"),
        "chunk end 2 is before chunk start 5",
    ),
    ("build missing images", lambda b, o: build({**b, "images": b["missing"]}, o), "no images"),
    (
        "build missing source",
        lambda b, o: [
            "build-dataset",
            "--source",
            str(b["missing"]),
            "--output-dir",
            str(o),
            *QUICK_BUILD,
        ],  # fmt: skip
        "no video source",
    ),
    # filter-dataset
    (
        "filter missing input",
        lambda b, o: filt({**b, "dataset": b["missing"]}, o),
        "nowhere",
    ),
    ("filter limit < 0", lambda b, o: filt(b, o, "--limit", "-1"), "limit"),
    ("filter workers 0", lambda b, o: filt(b, o, "--workers", "0"), "workers"),
    ("filter unknown color", lambda b, o: filt(b, o, "--color", "purple"), "purple"),
    ("filter unknown link mode", lambda b, o: filt(b, o, "--link-mode", "x"), "invalid choice"),
    ("filter output is its input", lambda b, o: filt(b, b["dataset"]), "is the input"),
    ("filter output is a file", lambda b, o: filt(b, b["file"]), "is a file; give a folder"),
    # train-lora (all before FluxFill loads: the model root does not even exist)
    ("train missing csv", lambda b, o: train({**b, "dataset": b["missing"]}, o), "no training"),
    ("train missing model root", lambda b, o: train(b, o), "nowhere"),
    ("train rank 0", lambda b, o: train(b, o, "--rank", "0"), "rank must be >= 1"),
    ("train learning rate nan", lambda b, o: train(b, o, "--learning-rate", "nan"), "finite"),
    ("train adam beta1 1.5", lambda b, o: train(b, o, "--adam-beta1", "1.5"), "beta1"),
    ("train adam epsilon < 0", lambda b, o: train(b, o, "--adam-epsilon", "-1"), "epsilon"),
    ("train logit std 0", lambda b, o: train(b, o, "--logit-std", "0"), "logit std"),
    ("train resolution 8", lambda b, o: train(b, o, "--resolution", "8"), "resolution"),
    ("train dropout 1", lambda b, o: train(b, o, "--dropout", "1"), "dropout"),
    ("train seed < 0", lambda b, o: train(b, o, "--seed", "-1"), "seed must be >= 0"),
    ("train unknown precision", lambda b, o: train(b, o, "--mixed-precision", "fp64"), "choice"),
    ("train steps text", lambda b, o: train(b, o, "--max-train-steps", "many"), "invalid int"),
    # evaluate
    ("evaluate missing edits", lambda b, o: evaluate({**b, "edits": b["missing"]}, o), "no edit"),
    ("evaluate max frames < 0", lambda b, o: evaluate(b, o, "--max-frames", "-1"), "max frames"),
    ("evaluate embed limit nan", lambda b, o: evaluate(b, o, "--embed-limit-mb", "nan"), "finite"),
    ("evaluate embed limit < 0", lambda b, o: evaluate(b, o, "--embed-limit-mb", "-1"), "embed"),
    # lanes analyze
    (
        "lanes missing input",
        lambda b, o: ["lanes", "analyze", str(b["missing"] / "a.png")],
        "nowhere",
    ),
    (
        "lanes max frames 0",
        lambda b, o: ["lanes", "analyze", str(b["videos"] / "good.mp4"), "--max-frames", "0"],
        "--max-frames must be >= 1",
    ),
    # models check
    ("models check missing root", lambda b, o: ["models", "check", str(b["missing"])], "nowhere"),
]


@pytest.mark.parametrize("case,argv,word", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_refused_in_one_line_before_anything_happens(base, out, caplog, capsys, case, argv, word):
    assert_refused(argv(base, out), word, caplog, capsys)
    assert not out.exists()


# --------------------------------------------------------------------------- edit refusals


@pytest.fixture
def edit_io(tmp_path: Path, monkeypatch) -> dict[str, str]:
    """A one-video layout, model folders and a LoRA; loading the models fails the test."""
    from test_reliability import edit_layout

    import lanepaint.edit.models
    import lanepaint.stages.edit

    def no_models(*args, **kwargs):
        raise AssertionError("the models were loaded")

    monkeypatch.setattr(lanepaint.edit.models, "load_models", no_models)
    monkeypatch.setattr(lanepaint.stages.edit, "load_models", no_models)
    for folder in ("FLUX.1-Fill-dev", "CogVideoX-5b-I2V", "VideoPainter/checkpoints/branch",
                   "Qwen2.5-VL-7B-Instruct"):  # fmt: skip
        (tmp_path / "models" / folder).mkdir(parents=True)
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / LORA_FILE).write_bytes(b"adapter")
    (tmp_path / "a_file").write_text("x")
    return {
        "data": edit_layout(tmp_path / "vp"),
        "inf": edit_layout(tmp_path / "vp_inf", fps="inf"),
        "width": edit_layout(tmp_path / "vp_w", width="wide"),
        "file": str(tmp_path / "a_file"),
        "models": str(tmp_path / "models"),
        "out": str(tmp_path / "edits"),
    }


EDIT_REFUSALS = [
    ("lora scale nan", ["--lora-scale", "nan"], "--lora-scale must be a finite number"),
    ("guidance inf", ["--guidance", "inf"], "--guidance must be a finite number"),
    ("judge backoff < 0", ["--judge-backoff-s", "-1"], "judge-backoff-s must be >= 0"),
    ("seed < 0", ["--seed", "-1"], "seed must be >= 0"),
    ("steps 0", ["--steps", "0"], "steps must be >= 1"),
    ("num shards 0", ["--num-shards", "0"], "num-shards must be >= 1"),
    ("shard index out of range", ["--num-shards", "2", "--shard-index", "2"], "not in [0, 2)"),
    ("unknown attention", ["--attention", "fast"], "invalid choice"),
    ("instruction of one word", ["--instruction", "lane"], "instruction"),
    ("meta.csv fps inf", "inf", "not a finite number"),
    ("meta.csv width not a number", "width", "width 'wide' is not an integer"),
    ("data dir is a file", "file", "no meta.csv"),
]


@pytest.mark.parametrize("case,flags,word", EDIT_REFUSALS, ids=[c[0] for c in EDIT_REFUSALS])
def test_edit_refused_before_any_model_loads(edit_io, caplog, capsys, case, flags, word):
    data = edit_io[flags] if isinstance(flags, str) else edit_io["data"]
    flags = [] if isinstance(flags, str) else flags
    argv = ["edit", "--data-dir", data, "--output-dir", edit_io["out"],
            "--model-root", edit_io["models"], *flags]  # fmt: skip
    assert_refused(argv, word, caplog, capsys)
    assert not Path(edit_io["out"]).exists()


# --------------------------------------------------------------------------- segment batch


@pytest.fixture(scope="module")
def segmented(tmp_path_factory) -> tuple[int, Path, Path]:
    """One segment run over a folder of good, broken and odd videos."""
    root = tmp_path_factory.mktemp("seg")
    videos = root / "videos"
    videos.mkdir()
    frames, _ = render_clip(SceneSpec(width=96, height=64, seed=0), 2, 8.0)
    write_video(videos / "good.mp4", frames, 8.0)
    raw = (videos / "good.mp4").read_bytes()
    (videos / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "truncated.mp4").write_bytes(raw[: len(raw) // 2])
    (videos / "text.mp4").write_text("not a video\n")
    (videos / "notes.txt").write_text("not listed")
    rotated_clip(videos / "rotated.mp4", 90)
    write_video(videos / "one_frame.mp4", frames[:1], 8.0)
    out = root / "seg"
    rc = cli(["segment", "--segmenter", "classical", "--videos", str(videos), "--output-dir",
              str(out)])  # fmt: skip
    return rc, videos, out


SEGMENT_ITEMS = [
    ("garbage bytes", "garbage", "unreadable video"),
    ("empty file", "empty", "unreadable video"),
    ("truncated mp4", "truncated", "unreadable video"),
    ("text named .mp4", "text", "unreadable video"),
    ("rotated 90 degrees", "rotated", "HANDLED"),
    ("one frame", "one_frame", "HANDLED"),
]


@pytest.mark.parametrize("case,stem,outcome", SEGMENT_ITEMS, ids=[c[0] for c in SEGMENT_ITEMS])
def test_segment_batch(segmented, case, stem, outcome):
    from lanepaint.io.video import probe

    rc, videos, out = segmented
    assert rc == 0
    rows = {r.split(",")[0]: r.split(",") for r in (out / "meta.csv").read_text().splitlines()}
    assert "good" in rows and "notes" not in rows  # the rest of the batch is done
    failed = {Path(k).stem: v for k, v in failures(out).items()}
    if outcome != "HANDLED":
        assert outcome in failed[stem] and stem not in rows
        return
    assert stem not in failed and stem in rows
    if stem == "rotated":  # the display rotation is applied: 96x64 stored, shown 64x96
        info = probe(out / "raw_videos" / rows[stem][1])
        assert (info.width, info.height, info.rotation) == (64, 96, 0)
        assert (rows[stem][5], rows[stem][6]) == ("64", "96")


# --------------------------------------------------------------------------- build batch


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[int, Path, np.ndarray]:
    root = tmp_path_factory.mktemp("build")
    images = root / "images"
    images.mkdir()
    f = frame(0)
    Image.fromarray(f).save(images / "good.png")
    gray8 = gray16(images / "gray16.png")
    Image.fromarray(f).convert("RGBA").save(images / "rgba.png")
    Image.fromarray(f).convert("P").save(images / "palette.png")
    Image.fromarray(f[:4, :4]).save(images / "tiny.png")
    (images / "garbage.png").write_bytes(np.random.default_rng(1).bytes(500))
    (images / "empty.png").write_bytes(b"")
    raw = (images / "good.png").read_bytes()
    (images / "truncated.png").write_bytes(raw[: len(raw) // 2])
    (images / "folder.png").mkdir()
    out = root / "built"
    rc = cli(["build-dataset", "--images", str(images), "--output-dir", str(out), *QUICK_BUILD])
    return rc, out, gray8


BUILD_ITEMS = [
    ("garbage png", "garbage.png", "UnidentifiedImageError"),
    ("empty png", "empty.png", "UnidentifiedImageError"),
    ("truncated png", "truncated.png", "truncated"),
    ("16-bit grey png", "gray16.png", "HANDLED"),
    ("rgba png", "rgba.png", "HANDLED"),
    ("palette png", "palette.png", "HANDLED"),
    ("4x4 png", "tiny.png", "HANDLED"),
    ("a folder named .png", "folder.png", "IGNORED"),
]


@pytest.mark.parametrize("case,name,outcome", BUILD_ITEMS, ids=[c[0] for c in BUILD_ITEMS])
def test_build_dataset_batch(built, case, name, outcome):
    rc, out, gray8 = built
    assert rc == 0
    rows, rejected = fluxfill.read_dataset(str(out))
    by_source = {Path(r.image).name.split("__")[0]: r for r in rows}
    assert "good.png" in by_source and not rejected
    failed = {Path(k).name: v for k, v in failures(out).items()}
    if outcome == "IGNORED":
        assert name not in failed and name not in by_source
    elif outcome != "HANDLED":
        assert outcome in failed[name] and name not in by_source
    else:
        assert name not in failed and name in by_source
    if name == "gray16.png":  # scaled to 8 bits, not clipped to white
        written = np.asarray(Image.open(out / by_source[name].image).convert("L"))
        assert np.abs(written.astype(int) - gray8).max() <= 1


# --------------------------------------------------------------------------- filter batch


@pytest.fixture(scope="module")
def filtered(tmp_path_factory) -> tuple[int, Path, dict[int, str]]:
    """One filter-dataset run over a train.csv with a bad row of each kind (line -> kind)."""
    root = tmp_path_factory.mktemp("filter")
    ds = Path(make_dataset(str(root / "raw"), n=6))
    outside = root / "outside.png"
    Image.fromarray(frame(2)[:24, :32]).save(outside)
    (ds / "images" / "link.png").symlink_to(outside)
    (ds / "images" / "bad.png").write_bytes(b"not a png")
    Image.fromarray(frame(3)[:10, :10]).save(ds / "images" / "small.png")
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(ds / "masks" / "blank.png")
    header, *good = (ds / "train.csv").read_text().splitlines()
    cap = good[0].split(",")[2]
    bad = {
        "dotdot": f"../raw/images/frame_000.png,masks/frame_000.png,{cap},",
        "absolute": f"{ds}/images/frame_000.png,masks/frame_000.png,{cap},",
        "missing image": f"images/nope.png,masks/frame_000.png,{cap},",
        "symlink outside": f"images/link.png,masks/frame_000.png,{cap},",
        "undecodable image": f"images/bad.png,masks/frame_000.png,{cap},",
        "size mismatch": f"images/small.png,masks/frame_000.png,{cap},",
        "empty mask": f"images/frame_001.png,masks/blank.png,{cap},",
        "malformed caption": "images/frame_002.png,masks/frame_002.png,a nice road,",
        "too few fields": "images/frame_003.png",
        "unclosed quote": f'images/frame_004.png,masks/frame_004.png,"{cap},',
    }
    lines = [header, good[0], *bad.values(), "", *good[1:]]
    (ds / "train.csv").write_text("\n".join(lines) + "\n")
    out = root / "filtered"
    rc = cli(["filter-dataset", "--input-dir", str(ds), "--output-dir", str(out),
              "--link-mode", "copy"])  # fmt: skip
    return rc, out, {3 + i: kind for i, kind in enumerate(bad)}  # line 1 header, 2 good


FILTER_ROWS = [
    ("row with ..", "dotdot", "unsafe path"),
    ("row with an absolute path", "absolute", "unsafe path"),
    ("row whose image is missing", "missing image", "missing image file"),
    ("row whose image links outside", "symlink outside", "unsafe path"),
    ("row whose image does not decode", "undecodable image", "undecodable image"),
    ("row whose sizes differ", "size mismatch", "size mismatch"),
    ("row with an empty mask", "empty mask", "empty mask"),
    ("row with a caption outside the vocabulary", "malformed caption", "malformed caption"),
    ("row with too few fields", "too few fields", "field"),
    ("row with an unclosed quote", "unclosed quote", "malformed CSV row"),
]


@pytest.mark.parametrize("case,kind,reason", FILTER_ROWS, ids=[c[0] for c in FILTER_ROWS])
def test_filter_dataset_rejects_each_bad_row_by_line(filtered, case, kind, reason):
    rc, out, kinds = filtered
    assert rc == 0
    rows, rejected = fluxfill.read_dataset(str(out))
    assert len(rows) == 6  # every good row, including those after the unclosed quote
    by_line = {json.loads(x)["line"]: json.loads(x) for x in (out / "failures.jsonl")
               .read_text().splitlines()}  # fmt: skip
    line = next(n for n, k in kinds.items() if k == kind)
    assert reason in by_line[line]["reason"], by_line[line]
    assert len(by_line) == len(kinds)  # one rejection per bad line, no more


# --------------------------------------------------------------------------- evaluate batch


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> tuple[dict, Path]:
    from test_evaluate import make_edit

    from lanepaint.stages.evaluate import evaluate

    root = tmp_path_factory.mktemp("eval")
    make_edit(root, "good", 0, passed_at=0)
    broken = make_edit(root, "broken_video", 1, passed_at=0)
    Path(broken["edited"]).write_bytes(b"broken")
    no_mask = make_edit(root, "no_mask", 2, passed_at=0)
    os.remove(no_mask["mask_uri"])
    edits = root / "edit"
    for name, text in [("torn", '{"video_id": "torn", "instr'), ("list", "[]"),
                       ("no_ids", '{"status": "ok"}'), ("binary", None)]:  # fmt: skip
        item = edits / name / "slug"
        item.mkdir(parents=True)
        if text is None:
            (item / "record.json").write_bytes(b"\xff\xfe\x00garbage")
        else:
            (item / "record.json").write_text(text)
    result = evaluate(str(edits), str(root / "out"))
    return result.summary, root / "out"


EVALUATE_ITEMS = [
    ("torn record.json", "torn/slug", "unreadable record: JSONDecodeError"),
    ("record.json that is a list", "list/slug", "unreadable record: ValueError: not an edit"),
    ("record.json without ids", "no_ids/slug", "unreadable record: ValueError: not an edit"),
    ("record.json not UTF-8", "binary/slug", "unreadable record: UnicodeDecodeError"),
    ("edited video undecodable", "broken_video/single_white_solid", "VideoError"),
    ("mask file missing", "no_mask/single_white_solid", "FileNotFoundError"),
]


@pytest.mark.parametrize("case,item,reason", EVALUATE_ITEMS, ids=[c[0] for c in EVALUATE_ITEMS])
def test_evaluate_records_each_bad_edit(evaluated, case, item, reason):
    summary, out = evaluated
    assert (summary["inputs"], summary["done"], summary["failed"]) == (7, 1, 6)
    assert reason in failures(out)[item]
    assert [i["video_id"] for i in summary["details"]["items"]] == ["good"]


# --------------------------------------------------------------------------- caption batch


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory) -> Path:
    from lanepaint.models.smoke import build_smoke

    return build_smoke(tmp_path_factory.mktemp("models") / "smoke", seed=0)


@pytest.fixture(scope="module")
def captioned(tmp_path_factory, smoke_root) -> tuple[int, Path]:
    import cv2

    root = tmp_path_factory.mktemp("caption")
    images = root / "images"
    images.mkdir()
    Image.fromarray(frame(0)).save(images / "good.png")
    gray16(images / "gray16.png")
    (images / "garbage.png").write_bytes(np.random.default_rng(2).bytes(400))
    (images / "empty.png").write_bytes(b"")
    cv2.imwrite(str(images / "color16.png"), frame(1)[..., ::-1].astype(np.uint16) * 257)
    Image.fromarray(frame(2)).save(images / "jpeg_named.png", format="JPEG")
    out = root / "captions.jsonl"
    rc = cli(["caption", "--images", str(images), "--output", str(out), "--model-root",
              str(smoke_root), "--batch-size", "2"])  # fmt: skip
    return rc, out


CAPTION_ITEMS = [
    ("garbage png", "garbage.png", "UnidentifiedImageError"),
    ("empty png", "empty.png", "UnidentifiedImageError"),
    ("16-bit grey png", "gray16.png", "HANDLED"),
    ("16-bit colour png", "color16.png", "HANDLED"),
    ("a JPEG named .png", "jpeg_named.png", "HANDLED"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case,name,outcome", CAPTION_ITEMS, ids=[c[0] for c in CAPTION_ITEMS])
def test_caption_batch(captioned, case, name, outcome):
    rc, out = captioned
    assert rc == 0
    records = [json.loads(x) for x in out.read_text().splitlines()]
    done = {Path(r["image"]).name for r in records if not r.get("error")}
    assert len(records) == len({r["image"] for r in records}) == 6  # one line per image
    failed = {Path(k).name: v for k, v in failures(out.parent, "captions.failures.jsonl").items()}
    assert "good.png" in done
    if outcome == "HANDLED":
        assert name in done and name not in failed
    else:
        assert outcome in failed[name] and name not in done


# --------------------------------------------------------------------------- readers


def test_every_image_reader_scales_16_bit_instead_of_clipping(tmp_path):
    """The 16-bit grey PNG (PIL) and a 16-bit colour PNG (OpenCV) read the same as their
    8-bit originals through each reader path: caption/build (read_rgb), lanes analyze
    (load_image) and train-lora (load_pair)."""
    import cv2

    from lanepaint.io.images import read_rgb
    from lanepaint.lanes.analyze import load_image
    from lanepaint.training.data import load_pair

    gray8 = gray16(tmp_path / "g16.png")
    rgb8 = frame(4)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb8[..., ::-1].astype(np.uint16) * 257)
    assert Image.open(tmp_path / "c16.png").mode.startswith("RGB")
    assert np.abs(read_rgb(str(tmp_path / "g16.png"))[..., 0].astype(int) - gray8).max() <= 1
    assert np.abs(read_rgb(str(tmp_path / "c16.png")).astype(int) - rgb8).max() <= 1
    assert np.abs(load_image(tmp_path / "g16.png").astype(int) - gray8).max() <= 1
    mask = np.zeros(gray8.shape, np.uint8)
    mask[32:] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    image, _ = load_pair((tmp_path / "g16.png").read_bytes(), (tmp_path / "m.png").read_bytes(), 64)
    clipped = (np.where(gray8 > 0, 255, 0) / 127.5 - 1).mean()  # what I;16 -> RGB gave
    assert abs(float(image[0].mean()) - (gray8 / 127.5 - 1).mean()) < 0.05
    assert abs(float(image[0].mean()) - clipped) > 0.3


@pytest.mark.parametrize("degrees,shape", [(90, (96, 64)), (-90, (96, 64)), (180, (64, 96))])
def test_a_rotated_video_decodes_upright(tmp_path, degrees, shape):
    from lanepaint.io.video import probe, read_frames

    stored = rotated_clip(tmp_path / "r.mp4", degrees)
    frames = read_frames(tmp_path / "r.mp4")
    info = probe(tmp_path / "r.mp4")
    assert frames.shape[1:3] == shape and (info.height, info.width) == shape
    assert info.rotation == degrees % 360
    want = np.rot90(stored[0], degrees // 90)  # counter-clockwise, as ffmpeg shows it
    assert np.abs(frames[0].astype(int) - want).mean() < 8  # h264 loss only


# --------------------------------------------------------------------------- lanes analyze


def test_lanes_analyze_corpus(tmp_path, caplog, capsys):
    """A 16-bit PNG is analyzed (not called white everywhere); a float TIFF and an npz
    mask holding pickled objects are one line, exit 2; an undecodable image is a result
    with a note, not a traceback."""
    gray16(tmp_path / "g16.png")
    rc, lines, _ = run_cli(["lanes", "analyze", str(tmp_path / "g16.png"), "--json"], caplog,
                           capsys)  # fmt: skip
    assert rc == 0 and not lines
    Image.fromarray(frame(1)[..., 0].astype(np.float32)).save(tmp_path / "f.tif")
    assert_refused(["lanes", "analyze", str(tmp_path / "f.tif")], "float", caplog, capsys)
    np.savez(tmp_path / "m.npz", arr_0=np.array([{"a": 1}], dtype=object))
    argv = ["lanes", "analyze", str(tmp_path / "g16.png"), "--mask", str(tmp_path / "m.npz")]
    assert_refused(argv, "pickled", caplog, capsys)
    (tmp_path / "junk.png").write_bytes(b"junk")
    rc, lines, out_err = run_cli(["lanes", "analyze", str(tmp_path / "junk.png")], caplog, capsys)
    assert rc == 0 and "Traceback" not in out_err


@pytest.mark.gcs
def test_lanes_analyze_reads_gcs_inputs(gcs_bucket, tmp_path, caplog, capsys):
    from lanepaint.io import storage

    Image.fromarray(frame(0)).save(tmp_path / "f.png")
    frames, road = render_clip(SceneSpec(width=96, height=64, seed=0), 2, 8.0)
    write_video(tmp_path / "v.mp4", frames, 8.0)
    np.savez(tmp_path / "m.npz", arr_0=road)
    for name in ("f.png", "v.mp4", "m.npz"):
        storage.upload_file(tmp_path / name, f"gs://{gcs_bucket}/in/{name}")
    local = json.loads(_analyze([str(tmp_path / "v.mp4"), "--mask", str(tmp_path / "m.npz")],
                                caplog, capsys))  # fmt: skip
    remote = json.loads(_analyze([f"gs://{gcs_bucket}/in/v.mp4", "--mask",
                                  f"gs://{gcs_bucket}/in/m.npz"], caplog, capsys))  # fmt: skip
    assert remote == local  # the same analysis, read through lanepaint.io.storage
    assert json.loads(_analyze([f"gs://{gcs_bucket}/in/f.png"], caplog, capsys))["caption"]
    assert_refused(["lanes", "analyze", f"gs://{gcs_bucket}/in/nope.png"], "no such object",
                   caplog, capsys)  # fmt: skip


def _analyze(args: list[str], caplog, capsys) -> str:
    caplog.clear()
    capsys.readouterr()
    assert cli(["lanes", "analyze", *args, "--json"]) == 0
    return capsys.readouterr().out


# --------------------------------------------------------------------------- models check


def _component_without_weights(root: Path) -> None:
    for f in (root / "FLUX.1-Fill-dev" / "vae").glob("*.safetensors"):
        f.unlink()


def _pickled_weights(root: Path) -> None:
    folder = root / "CogVideoX-5b-I2V" / "vae"
    for f in folder.glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))


def _truncated(root: Path) -> None:
    f = next((root / "Qwen2.5-VL-7B-Instruct").glob("*.safetensors"))
    f.write_bytes(f.read_bytes()[:-100])


def _bad_json(root: Path) -> None:
    (root / "FLUX.1-Fill-dev" / "transformer" / "config.json").write_text("{not json")


MODEL_ROOTS = [
    ("component folder without weights", "flux_fill", _component_without_weights,
     "component has config.json but no .safetensors"),
    ("pickled weights only", "cogvideox_i2v", _pickled_weights, "refusing to unpickle"),
    ("truncated safetensors", "qwen_vl_7b", _truncated, "safetensors"),
    ("config.json not JSON", "flux_fill", _bad_json, "config.json"),
]  # fmt: skip


@pytest.mark.parametrize("case,model,spoil,word", MODEL_ROOTS, ids=[c[0] for c in MODEL_ROOTS])
def test_models_check_finds_each_broken_root(
    smoke_root, tmp_path, capsys, case, model, spoil, word
):
    from test_models import derived_root

    folders = ["FLUX.1-Fill-dev", "CogVideoX-5b-I2V", "Qwen2.5-VL-7B-Instruct"]
    root = derived_root(smoke_root, tmp_path / "root", copy=folders)
    spoil(root)
    capsys.readouterr()
    assert cli(["models", "check", str(root), "--json", "--files-only"]) == 1
    report = json.loads(capsys.readouterr().out)
    status = {m["name"]: m for m in report["models"]}
    assert status[model]["status"] == "broken" and word in status[model]["error"]
    assert sum(not m["ok"] for m in report["models"]) == 1  # the others still pass
