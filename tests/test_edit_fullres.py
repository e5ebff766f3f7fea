"""Stage edit at the source's resolution and aspect (smoke models, CPU): a 16:9 clip, a real
dash-cam clip cut short, portrait, odd-sized and smaller-than-the-model videos each give an
edit of exactly their size whose background is the source's, and evaluate measures them
against the true source."""

import json
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
from test_edit import FAST

import lanepaint.edit.outputs as outputs
from lanepaint.data.synth import SceneSpec, render_clip
from lanepaint.data.videopainter import VideoPainterLayout, VideoRecord
from lanepaint.evaluate import metrics
from lanepaint.io.video import probe, read_frames, write_video
from lanepaint.stages.edit import edit_videos, load_models

pytestmark = pytest.mark.slow  # the smoke set is built once per module

CONFIG = replace(FAST, instructions="lane single white solid", judge=False, mask_dilation=16)
SLUG = "single_white_solid"
REAL_CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
REAL_CLIP = (
    REAL_CLIP if REAL_CLIP.is_dir() else Path("/work/shared/data/videos")
) / "udacity_vd_test_video.mp4"
FRAMES = 4
# Background PSNR of the decoded edit against the decoded source (H.264 at crf 18 both, the
# smoke models painting noise inside the mask): the 16:9 clips must reach 40 dB (measured
# 42.9 on the real clip, 41.1 on the synthetic one under crop). In the tiny test videos a
# mask edge cuts through most 16x16 macroblocks, so coding error from the noise spills
# further (measured 34.9 dB at 24x40, 39.1 at 64x96): a looser bound there; the lossless
# path checks exactness.
MIN_BACKGROUND_PSNR_DB = 40.0
TINY_BACKGROUND_PSNR_DB = 33.0
SIXTEEN_NINE = ("wide", "real")

# video id -> (rows, columns) of the source, as the edit must give it back.
SIZES = {
    "wide": (180, 320),  # 16:9
    "portrait": (96, 64),
    "odd": (65, 97),  # odd sides kept by a 4:4:4 source
    "odd_padded": (65, 97),  # odd masks; the layout's video padded to even (as segment does)
    "small": (24, 40),  # smaller than the smoke model's 32x48 view
}


def road_mask(h: int, w: int) -> np.ndarray:
    """A road-like trapezoid over the lower half."""
    import cv2

    mask = np.zeros((h, w), np.uint8)
    pts = np.array([[w // 3, h // 2], [2 * w // 3, h // 2], [w - 1, h - 1], [0, h - 1]])
    cv2.fillPoly(mask, [pts.astype(np.int32)], 1)
    return mask


def write_yuv444(path: Path, frames: np.ndarray, fps: float) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))


def add(layout: VideoPainterLayout, video_id: str, frames: np.ndarray, masks: np.ndarray) -> None:
    path = Path(layout.raw_video("chunk_0000", video_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    if video_id == "odd":
        write_yuv444(path, frames, 8)
    else:
        write_video(path, frames, 8.0)
    layout.write_masks(video_id, masks)
    h, w = masks.shape[1:]
    rel = layout.raw_video_rel("chunk_0000", video_id)
    records = layout.read_meta() + [
        VideoRecord(video_id, rel, video_id, 8.0, len(frames), w, h, 0, len(frames) - 1)
    ]
    layout.write_meta(records)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vp")
    layout = VideoPainterLayout(str(root))
    for k, (video_id, (h, w)) in enumerate(SIZES.items()):
        frames, road = render_clip(SceneSpec(width=w, height=h, seed=k), FRAMES, 8.0)
        add(layout, video_id, frames, road)
    if REAL_CLIP.is_file():  # a real 1280x720 dash-cam clip, cut short
        frames = read_frames(REAL_CLIP, fps=8.0, max_frames=FRAMES)
        add(layout, "real", frames, np.stack([road_mask(*frames.shape[1:3])] * len(frames)))
    return root


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    from lanepaint.models.smoke import build_smoke

    return str(build_smoke(tmp_path_factory.mktemp("smoke") / "root"))


@pytest.fixture(scope="module")
def edits(smoke_root, data, tmp_path_factory):
    """One edit run over every video; the composited frames are caught before encoding."""
    caught = {}
    real = outputs.write_item_files

    def catch(out, source, item, frames, edited, repainted):
        caught[item.record.video_id] = (frames, edited, repainted)
        return real(out, source, item, frames, edited, repainted)

    out = tmp_path_factory.mktemp("edit")
    mp = pytest.MonkeyPatch()
    mp.setattr(outputs, "write_item_files", catch)
    try:
        models = load_models(smoke_root, CONFIG)
        summary = edit_videos(str(data), str(out), smoke_root, CONFIG, models=models).summary
    finally:
        mp.undo()
    return out, summary, caught


def _ids():
    return [*SIZES, "real"]


@pytest.mark.parametrize("video_id", _ids())
def test_edit_has_the_source_size_and_its_background(edits, video_id):
    out, summary, caught = edits
    if video_id == "real" and not REAL_CLIP.is_file():
        pytest.skip(f"{REAL_CLIP} not here (the shared data set is absent)")
    assert summary["failed"] == 0, (out / "failures.jsonl").read_text()
    record = json.loads((out / video_id / SLUG / "record.json").read_text())
    h, w = SIZES.get(video_id, (720, 1280))
    assert record["size"] == [h, w] and record["frames"] == FRAMES
    geometry = record["geometry"]
    pt, pl, pb, pr = geometry["placed"]  # rounding to whole view pixels bounds the error
    assert geometry["mode"] == "fit" and geometry["aspect_error"] < 0.01 + 1 / min(pb - pt, pr - pl)
    info = probe(record["edited"])
    assert (info.height, info.width, info.frames) == (h, w, FRAMES)
    assert (probe(record["side_by_side"]).height, probe(record["side_by_side"]).width) == (h, 2 * w)
    with np.load(record["mask_uri"]) as npz:
        repainted = npz["arr_0"] > 0
    assert repainted.shape == (FRAMES, h, w)
    # The lossless path, before encoding: outside the repaint region, the source exactly.
    frames, edited, caught_masks = caught[video_id]
    assert np.array_equal(caught_masks > 0, repainted)
    assert np.array_equal(edited[~repainted], frames[~repainted])
    assert np.abs(edited[repainted].astype(int) - frames[repainted]).mean() > 5  # repainted
    # Decoded: the edit against the true source (the layout's own video).
    assert record["source_video"].endswith(f"{video_id}.0.mp4")
    source = read_frames(record["source_video"])[:, :h, :w]
    decoded = read_frames(record["edited"])
    psnr = metrics.background_preservation(source, decoded, repainted)["background_psnr_db"]
    least = MIN_BACKGROUND_PSNR_DB if video_id in SIXTEEN_NINE else TINY_BACKGROUND_PSNR_DB
    assert psnr >= least, f"{video_id}: background PSNR {psnr} dB"


def test_crop_geometry_is_recorded_and_keyed(smoke_root, data, edits, tmp_path):
    """Another geometry is another settings key (never mixed with fit's edits)."""
    out, summary, _ = edits
    config = replace(CONFIG, geometry="crop", video_ids=("wide",))
    result = edit_videos(str(data), str(out), smoke_root, config)
    assert result.summary["done"] == 1 and result.summary["settings_key"] != summary["settings_key"]
    record = json.loads((out / "wide" / SLUG / "record.json").read_text())
    assert record["geometry"]["mode"] == "crop" and record["size"] == [180, 320]
    assert result.summary["settings"]["geometry"] == "crop"


def test_evaluate_measures_against_the_true_source(edits, tmp_path):
    from lanepaint.stages.evaluate import evaluate

    out, _, _ = edits
    result = evaluate(str(out), str(tmp_path / "eval"))
    items = {i["video_id"]: i for i in result.summary["details"]["items"]}
    assert result.summary["failed"] == 0
    assert set(items) >= set(SIZES)
    for video_id, item in items.items():
        assert item["size"] == list(SIZES.get(video_id, (720, 1280)))
        least = MIN_BACKGROUND_PSNR_DB if video_id in SIXTEEN_NINE else TINY_BACKGROUND_PSNR_DB
        assert item["background_psnr_db"] >= least
        assert item["sharpness_ratio_edited"] is not None
