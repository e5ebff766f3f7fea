"""Stage segment: the SAM2 runner against the stock path, the VideoPainter layout on smoke
SAM2, resume, failure isolation, bad inputs, gs:// and the CLI."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from lanepaint.cli import main as cli
from lanepaint.data.synth import SceneSpec, render_clip
from lanepaint.data.videopainter import VideoPainterLayout
from lanepaint.io import storage
from lanepaint.io.video import probe, read_frames, write_video
from lanepaint.models.root import SAM2_CHECKPOINT, SAM2_SIDECAR, SMOKE_MARKER
from lanepaint.models.smoke import SMOKE_SAM2_CONFIG, SMOKE_SAM2_OVERRIDES, tiny_sam2
from lanepaint.segment import sam2_video
from lanepaint.segment.base import Segmentation
from lanepaint.segment.inputs import assign_ids, list_inputs
from lanepaint.segment.prompts import DEFAULT_POINTS, format_points, parse_points
from lanepaint.segment.stream import output_size
from lanepaint.stages import segment as seg
from lanepaint.stages.segment import LoadedSegmenter, SegmentConfig, segment_videos

torch.set_num_threads(2)


def _visible(predictor) -> None:
    """Random weights say "no object" on every frame (all logits -1024): push the object
    score up so that logits, and the comparison below, depend on the image."""
    head = predictor.sam_mask_decoder.pred_obj_score_head
    with torch.no_grad():
        head.layers[-1].bias.fill_(20.0)


def synth_video(path: Path, frames: int = 6, fps: float = 10.0, size=(96, 64), **kw) -> Path:
    spec = SceneSpec(width=size[0], height=size[1], **kw)
    video, _ = render_clip(spec, frames, fps)
    write_video(path, video, fps)
    return path


@pytest.fixture(scope="module")
def sam2_root(tmp_path_factory) -> Path:
    """A model root holding only the smoke SAM2 (what the segment stage needs)."""
    root = tmp_path_factory.mktemp("models")
    state = {k: v.contiguous() for k, v in tiny_sam2(0).state_dict().items()}
    torch.save({"model": state}, root / SAM2_CHECKPOINT)
    sidecar = {"config": SMOKE_SAM2_CONFIG, "hydra_overrides": list(SMOKE_SAM2_OVERRIDES)}
    (root / SAM2_SIDECAR).write_text(json.dumps(sidecar))
    (root / SMOKE_MARKER).write_text(json.dumps({"smoke": True}))
    return root


@pytest.fixture(scope="module")
def sam2_loaded(sam2_root) -> LoadedSegmenter:
    return seg.load_segmenter(SegmentConfig(device="cpu"), str(sam2_root))


@pytest.fixture(scope="module")
def classical_loaded() -> LoadedSegmenter:
    return seg.load_segmenter(SegmentConfig(segmenter="classical"))


@pytest.fixture(scope="module")
def chunks(tmp_path_factory) -> Path:
    """Two chunk folders holding a clip of the same name (ids must not collide)."""
    root = tmp_path_factory.mktemp("videos")
    synth_video(root / "chunk_0000" / "clip.mp4", frames=8, fps=10.0)
    synth_video(root / "chunk_0001" / "clip.mp4", frames=5, fps=8.0, shadows=True, seed=1)
    return root


def _meta_rows(root: str) -> list[dict]:
    text = storage.read_text(storage.join(root, "meta.csv"))
    return list(csv.DictReader(io.StringIO(text)))


def _npz(root: str, video_id: str) -> np.ndarray:
    data = storage.read_bytes(storage.join(root, "mask_root", video_id, "all_masks.npz"))
    with np.load(io.BytesIO(data)) as z:
        assert list(z.keys()) == ["arr_0"]
        return z["arr_0"]


# --- the SAM2 runner ------------------------------------------------------------------------


def test_in_memory_frames_match_the_stock_jpeg_path(tmp_path):
    predictor = tiny_sam2(0)
    _visible(predictor)
    video, _ = render_clip(SceneSpec(width=96, height=64), 3, 8.0)
    jpg = tmp_path / "jpg"
    sam2_video.write_jpeg_folder(video, jpg)
    frames = list(sam2_video.read_jpeg_folder(jpg))  # the exact pixels the stock path sees
    stock_masks, stock_logits = sam2_video.stock_masks(predictor, jpg, keep_logits=True)
    # Batch of 2 with a 2-frame cache: the encoder runs eagerly, then lazily with eviction.
    settings = sam2_video.Sam2Settings(encoder_batch=2, max_cached_frames=2)
    runner = sam2_video.Sam2RoadSegmenter(predictor, DEFAULT_POINTS, settings)
    ours = runner.segment(iter(frames), keep_logits=True)
    assert stock_logits.min() < 0 < stock_logits.max()  # a real comparison, not all -1024
    np.testing.assert_array_equal(ours.logits, stock_logits)
    np.testing.assert_array_equal(ours.masks, stock_masks)
    assert ours.masks.shape == (3, 64, 96) and ours.masks.dtype == bool
    stock_state = predictor.init_state(str(jpg))
    ours_state = sam2_video.new_inference_state(predictor, [], {}, 64, 96)
    assert set(ours_state) == set(stock_state)


@pytest.mark.parametrize(
    ("height", "width"), [(64, 96), (720, 1280), (300, 200), (200, 300), (40, 30), (256, 256)]
)
def test_device_resize_is_bit_identical_to_pil(height, width):
    """The stock loader's PIL resize, as matrix products (both pass orders, up and down)."""
    from PIL import Image

    frame = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    frames = sam2_video._Frames(256, torch.device("cpu"))
    frames.append(frame)
    expected = np.array(Image.fromarray(frame).resize((256, 256)))
    np.testing.assert_array_equal(frames._u8[0].permute(1, 2, 0).numpy(), expected)


# --- the stage on smoke SAM2 ------------------------------------------------------------------


def test_sam2_stage_writes_the_videopainter_layout(tmp_path, chunks, sam2_loaded, sam2_root):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    out = str(tmp_path / "out")
    config = SegmentConfig(max_frames=3, fps=8.0, png_masks=True, overlay=True, device="cpu")
    inputs = [str(chunks), str(bad)]
    result = segment_videos(inputs, out, str(sam2_root), config, loaded=sam2_loaded)
    s = result.summary
    assert (s["inputs"], s["done"], s["failed"]) == (3, 2, 1)
    assert s["model_set"] == "smoke" and "smoke" in s["model_set_label"]
    assert {"decode", "segment", "encode", "postprocess", "total"} <= set(s["timings_s"])
    failures = [json.loads(x) for x in (Path(out) / "failures.jsonl").read_text().splitlines()]
    assert [f["reason"].split(":")[0] for f in failures] == ["unreadable video"]
    assert "smoke" in (Path(out) / "summary.md").read_text()

    rows = _meta_rows(out)
    assert [r["video_id"] for r in rows] == ["chunk_0000__clip", "chunk_0001__clip"]
    layout = VideoPainterLayout(out)
    expected = 3  # max_frames (the sources hold 0.8 s at 10 fps and 0.625 s at 8 fps)
    for row in rows:
        vid = row["video_id"]
        video_path = Path(out) / "raw_videos" / row["path"]
        assert video_path.parent.name == vid.split("__")[0]
        info = probe(video_path)
        assert (info.fps, info.frames, info.width, info.height) == (8.0, expected, 96, 64)
        masks = _npz(out, vid)
        assert masks.dtype == np.uint8 and masks.shape == (expected, 64, 96)
        assert set(np.unique(masks)) <= {0, 1}
        assert (row["fps"], row["frames"], row["start_frame"], row["end_frame"]) == (
            "8.0",
            str(expected),
            "0",
            str(expected),
        )
        pngs = sorted((Path(out) / "mask_root" / vid / "png").glob("*.png"))
        assert len(pngs) == expected
        assert probe(Path(out) / "overlays" / f"{vid}.mp4").frames == expected
        record = json.loads((Path(out) / "records" / f"{vid}.json").read_text())
        assert record["empty_mask"] == (masks.max() == 0)
        assert record["model_set"] == "smoke"
        assert (record["status"], record["settings_key"]) == ("ok", s["settings_key"])
        np.testing.assert_array_equal(layout.read_masks(vid), masks)
    no_road = [r["video_id"] for r in rows if _npz(out, r["video_id"]).max() == 0]
    details = s["details"]
    assert details["no_road_videos"] == no_road and details["no_road"] == len(no_road)
    assert details["frames_segmented"] == 2 * expected and details["videos_in_meta"] == 2

    # Resume: nothing left to do, no model needed, meta.csv unchanged (no duplicate rows).
    before = (Path(out) / "meta.csv").read_text()
    again = segment_videos(inputs, out, str(sam2_root), config)
    assert (again.summary["done"], again.summary["skipped_done"]) == (0, 2)
    assert again.summary["model_set"] == "smoke"
    assert (Path(out) / "meta.csv").read_text() == before


def test_sam2_stage_on_a_real_clip(tmp_path, shared_data, sam2_loaded, sam2_root):
    src = shared_data / "videos" / "udacity_vd_test_video.mp4"
    out = str(tmp_path / "out")
    config = SegmentConfig(max_frames=2, fps=8.0, device="cpu")
    result = segment_videos([str(src)], out, str(sam2_root), config, loaded=sam2_loaded)
    assert result.summary["done"] == 1
    (row,) = _meta_rows(out)
    assert row["video_id"] == "udacity_vd_test_video" and row["source"] == str(src)
    assert _npz(out, row["video_id"]).shape == (2, 720, 1280)
    record = json.loads((Path(out) / "records" / "udacity_vd_test_video.json").read_text())
    assert record["source_info"]["fps"] == 25.0 and record["record"]["fps"] == 8.0


# --- resume, failures and bad inputs (classical: the same stage code, no model cost) ------------


def test_resume_redoes_only_incomplete_or_changed_videos(tmp_path, chunks, classical_loaded):
    out = str(tmp_path / "out")
    config = SegmentConfig(segmenter="classical", max_frames=3)
    first = segment_videos([str(chunks)], out, config=config, loaded=classical_loaded)
    assert first.summary["done"] == 2
    (Path(out) / "mask_root" / "chunk_0001__clip" / "all_masks.npz").unlink()
    second = segment_videos([str(chunks)], out, config=config, loaded=classical_loaded)
    assert (second.summary["done"], second.summary["skipped_done"]) == (1, 1)
    assert len(_meta_rows(out)) == 2
    changed = SegmentConfig(segmenter="classical", max_frames=2)
    third = segment_videos([str(chunks)], out, config=changed, loaded=classical_loaded)
    assert third.summary["done"] == 2
    assert [r["frames"] for r in _meta_rows(out)] == ["2", "2"]
    # A new source gets the bare name (no record holds it); old rows stay.
    extra = synth_video(tmp_path / "more" / "clip.mp4", frames=3)
    fourth = segment_videos([str(extra)], out, config=changed, loaded=classical_loaded)
    assert fourth.summary["done"] == 1
    assert [r["video_id"] for r in _meta_rows(out)] == [
        "chunk_0000__clip",
        "chunk_0001__clip",
        "clip",
    ]
    # Speed switches never force a redo; --overwrite does, and keeps every record.
    fast = SegmentConfig(segmenter="classical", max_frames=2, workers=1, encoder_batch=2)
    inputs = [str(chunks), str(extra)]
    fifth = segment_videos(inputs, out, config=fast, loaded=classical_loaded)
    assert (fifth.summary["done"], fifth.summary["skipped_done"]) == (0, 3)
    redo = SegmentConfig(segmenter="classical", max_frames=2, overwrite=True)
    sixth = segment_videos(inputs, out, config=redo, loaded=classical_loaded)
    assert (sixth.summary["done"], sixth.summary["skipped_done"]) == (3, 0)
    assert sixth.summary["settings_key"] == fifth.summary["settings_key"]
    assert len(_meta_rows(out)) == 3


def test_zero_means_all_frames_at_the_source_rate(tmp_path, chunks, classical_loaded):
    out = str(tmp_path / "out")
    config = SegmentConfig(segmenter="classical", max_frames=0, fps=0)
    result = segment_videos([str(chunks)], out, config=config, loaded=classical_loaded)
    assert result.summary["done"] == 2
    rows = {r["video_id"]: (r["frames"], r["fps"]) for r in _meta_rows(out)}
    assert rows == {"chunk_0000__clip": ("8", "10.0"), "chunk_0001__clip": ("5", "8.0")}


def _zero_frame_video(path: Path) -> Path:
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=8)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
    container.mux(stream.encode(None))
    container.close()
    return path


def _gray_video(path: Path, size=(97, 65), frames: int = 3) -> Path:
    """A true gray-format source (FFV1 gray in Matroska), odd-sized on purpose."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=8)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "gray"
        for i in range(frames):
            img = np.tile(np.linspace(20, 200, size[0], dtype=np.uint8), (size[1], 1))
            frame = av.VideoFrame.from_ndarray(img, format="gray")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _vfr_video(path: Path) -> Path:
    """Frames 40 ms and 120 ms apart, alternately (a dash cam dropping frames)."""
    video, _ = render_clip(SceneSpec(width=96, height=64), 8, 10.0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        t = 0
        for i, img in enumerate(video):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = t
            frame.time_base = stream.codec_context.time_base
            t += 40 if i % 2 == 0 else 120
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def test_bad_inputs_are_recorded_and_the_rest_goes_on(tmp_path, classical_loaded):
    src = tmp_path / "in"
    src.mkdir()
    (src / "garbage.mp4").write_bytes(b"\x00" * 1000)
    _zero_frame_video(src / "empty.mp4")
    write_video(src / "tiny.mp4", np.full((2, 8, 8, 3), 90, np.uint8), 8.0)
    small, _ = render_clip(SceneSpec(width=96, height=54), 2, 8.0)
    huge = [cv2.resize(f, (3840, 2160), interpolation=cv2.INTER_LINEAR) for f in small]
    write_video(src / "huge.mp4", huge, 8.0)
    _gray_video(src / "gray.mkv")
    vfr = _vfr_video(src / "vfr.mp4")
    assert probe(vfr).variable_frame_rate
    out = str(tmp_path / "out")
    config = SegmentConfig(segmenter="classical", max_frames=4, fps=8.0)
    inputs = [str(src), str(tmp_path / "missing.mp4"), str(tmp_path / "nothing_here")]
    result = segment_videos(inputs, out, config=config, loaded=classical_loaded)
    s = result.summary
    reasons = {
        Path(f["item"]).name: f["reason"].split(":")[0]
        for f in map(json.loads, (Path(out) / "failures.jsonl").read_text().splitlines())
    }
    assert reasons["garbage.mp4"] == "unreadable video"
    assert reasons["empty.mp4"] in ("unreadable video", "no frames")
    assert reasons["tiny.mp4"] == "too small"
    assert reasons["missing.mp4"] == "missing input"
    assert reasons["nothing_here"] == "missing input"
    assert s["inputs"] == 8 and s["failed"] == 5 and s["done"] == 3
    rows = {r["video_id"]: r for r in _meta_rows(out)}
    assert (rows["huge"]["width"], rows["huge"]["height"]) == ("1920", "1080")
    assert (rows["gray"]["width"], rows["gray"]["height"]) == ("96", "64")
    assert _npz(out, "gray").shape == (3, 64, 96)
    # VFR: 8 source frames over 0.64 s + the last frame's 120 ms -> 0.76 s at 8 fps = 4 frames
    # (max_frames 4 would also give 4; the duration check is in the record).
    assert rows["vfr"]["frames"] == "4"
    record = json.loads((Path(out) / "records" / "vfr.json").read_text())
    assert record["source_info"]["variable_frame_rate"] is True


def test_a_failing_video_does_not_stop_the_batch(tmp_path, chunks, classical_loaded):
    class FailsOnFirst:
        """The classical segmenter, except that it raises on the first video."""

        name = "classical"

        def __init__(self):
            self.calls = 0

        def segment(self, frames):
            self.calls += 1
            out = classical_loaded.segmenter.segment(frames)
            if self.calls == 1:
                raise RuntimeError("boom")
            return Segmentation(out.frames, out.masks)

    loaded = LoadedSegmenter(FailsOnFirst(), classical_loaded.metadata)
    out = str(tmp_path / "out")
    config = SegmentConfig(segmenter="classical", max_frames=2)
    result = segment_videos([str(chunks)], out, config=config, loaded=loaded)
    assert (result.summary["done"], result.summary["failed"]) == (1, 1)
    assert result.summary["failures_by_reason"] == {"segment error": 1}
    assert [r["video_id"] for r in _meta_rows(out)] == ["chunk_0001__clip"]


def test_gcs_input_and_output(gcs_bucket, tmp_path, classical_loaded):
    local = synth_video(tmp_path / "clip.mp4", frames=4)
    storage.upload_file(local, f"gs://{gcs_bucket}/src/chunk_0007/clip.mp4")
    out = f"gs://{gcs_bucket}/vp"
    config = SegmentConfig(segmenter="classical", max_frames=3, png_masks=True)
    src = f"gs://{gcs_bucket}/src"
    result = segment_videos([src], out, config=config, loaded=classical_loaded)
    assert result.summary["done"] == 1
    assert storage.exists(f"{out}/raw_videos/chunk_0007/clip.0.mp4")
    assert _npz(out, "clip").shape == (3, 64, 96)
    assert len(storage.list_files(f"{out}/mask_root/clip/png")) == 3
    assert [r["source"] for r in _meta_rows(out)] == [f"{src}/chunk_0007/clip.mp4"]
    with tempfile.TemporaryDirectory() as tmp:
        storage.download_file(f"{out}/raw_videos/chunk_0007/clip.0.mp4", Path(tmp) / "v.mp4")
        assert read_frames(Path(tmp) / "v.mp4").shape == (3, 64, 96, 3)
    again = segment_videos([src], out, config=config, loaded=classical_loaded)
    assert again.summary["skipped_done"] == 1


# --- ids, geometry, prompts, CLI ----------------------------------------------------------------


def test_ids_are_unique_and_stable():
    jobs = assign_ids(
        ["/d/chunk_0001/a.mp4", "/d/chunk_0000/a.mp4", "/d/chunk_0000/b c.MP4", "gs://bk/x.mp4"]
    )
    assert [(j.group, j.video_id) for j in jobs] == [
        ("chunk_0000", "chunk_0000__a"),
        ("chunk_0000", "b_c"),
        ("chunk_0001", "chunk_0001__a"),
        ("videos", "x"),
    ]
    # An existing record keeps its id; a newcomer with the same name is prefixed.
    jobs = assign_ids(["/e/a.mp4", "/d/chunk_0000/a.mp4"], {"/d/chunk_0000/a.mp4": "a"})
    assert {j.source: j.video_id for j in jobs} == {"/d/chunk_0000/a.mp4": "a", "/e/a.mp4": "e__a"}


def test_output_size_is_even_and_bounded():
    assert output_size(1920, 1080, 1920) == (1920, 1080)
    assert output_size(3840, 2160, 1920) == (1920, 1080)
    assert output_size(97, 65, 1920) == (96, 64)
    assert output_size(4000, 3001, 1920) == (1920, 1440)


def test_points_round_trip_and_validation():
    assert parse_points(format_points(DEFAULT_POINTS)) == DEFAULT_POINTS
    assert len(DEFAULT_POINTS) == 9
    assert all(0.3 < x < 0.7 and 0.6 < y < 0.9 for x, y in DEFAULT_POINTS)
    for bad in ("0.5", "1.5,0.5", "a,b", ""):
        with pytest.raises(ValueError):
            parse_points(bad)
    with pytest.raises(ValueError):
        SegmentConfig(segmenter="other")


def test_settings_are_declared_once_on_the_config():
    from components.segment import segment as component
    from lanepaint.cli import build_parser
    from lanepaint.kit import from_args
    from lanepaint.kit.settings import component_defaults_drift, from_params

    argv = ["segment", "--videos", "v.mp4", "--output-dir", "o", "--max-frames", "0"]
    args = build_parser().parse_args(
        [*argv, "--fps", "0", "--points", "0.5,0.8", "--dilate", "2", "--vos"]
    )
    config = from_args(SegmentConfig, args)
    expected = SegmentConfig(max_frames=0, fps=0.0, points=((0.5, 0.8),), dilate=2, vos=True)
    assert config == expected
    assert config.compile_tracking == "" and config.postprocess.dilate == 2
    params = {"points": "0.5,0.8", "max_frames": 0, "fps": 0.0, "dilate": 2, "vos": True}
    assert from_params(SegmentConfig, {**params, "videos": ["v.mp4"]}) == expected
    assert component_defaults_drift(component.python_func) == []
    for bad in ({"max_frames": -1}, {"fps": -1.0}, {"compile_tracking": "reduce-overhead"}):
        with pytest.raises(ValueError):
            SegmentConfig(**bad)


def test_every_video_extension_is_listed(tmp_path):
    for name in ("a.m4v", "b.MOV", "c.txt"):
        (tmp_path / name).write_bytes(b"")
    sources, problems = list_inputs([str(tmp_path)])
    assert [Path(s).name for s in sources] == ["a.m4v", "b.MOV"] and problems == []


def test_cli_with_a_video_list(tmp_path, chunks, capsys):
    listing = tmp_path / "videos.txt"
    listing.write_text(
        f"# two clips\n{chunks}/chunk_0000/clip.mp4\n\n{chunks}/chunk_0001/clip.mp4\n"
    )
    out = tmp_path / "out"
    args = ["segment", "--video-list", str(listing), "--output-dir", str(out)]
    rc = cli([*args, "--segmenter", "classical", "--max-frames", "2", "--points", "0.5,0.8"])
    assert rc == 0
    assert "segmented 2" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["points"] == [[0.5, 0.8]] and summary["model_set"] == "classical"
    assert cli(["segment", "--videos", str(chunks), "--output-dir", str(out)]) == 2  # no root
    only_bad = tmp_path / "bad.mp4"
    only_bad.write_bytes(b"x")
    bad_args = ["segment", "--videos", str(only_bad), "--output-dir", str(tmp_path / "o2")]
    assert cli([*bad_args, "--segmenter", "classical"]) == 1


def test_vos_tracking_modules_are_compiled_without_cuda_graphs(sam2_root, monkeypatch):
    """sam2's VOS predictor compiles its tracking modules with CUDA graphs, which crashed on
    an H100 (docs/segment.md); on CUDA the segmenter recompiles them without, unless a mode
    was asked for. The plain predictor stays eager by default."""
    from lanepaint.models.loaders import load_sam2_video_predictor
    from lanepaint.segment import sam2_video

    vos = load_sam2_video_predictor(sam2_root, vos_optimized=True)
    plain = load_sam2_video_predictor(sam2_root)
    assert sam2_video.tracking_compile_mode(vos, "") == "default"
    mode = "max-autotune-no-cudagraphs"
    assert sam2_video.tracking_compile_mode(vos, mode) == mode
    assert sam2_video.tracking_compile_mode(plain, "") == ""
    compiled = []
    monkeypatch.setattr(sam2_video, "compile_tracking_modules", lambda p, m: compiled.append(m))
    monkeypatch.setattr(type(vos), "device", property(lambda _: torch.device("cuda")))
    sam2_video.Sam2RoadSegmenter(vos)
    assert compiled == ["default"]
