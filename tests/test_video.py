"""lanepaint.io.video against real PyAV/FFmpeg on small synthetic clips."""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from lanepaint.io.video import (
    VideoError,
    VideoInfo,
    iter_frames,
    probe,
    read_frames,
    read_frames_at,
    write_video,
)

W, H, N, FPS = 64, 48, 30, 25


def moving_rect(n: int = N, h: int = H, w: int = W) -> list[np.ndarray]:
    """A red rectangle moving right one pixel per frame on a dark-blue background."""
    frames = []
    for i in range(n):
        frame = np.zeros((h, w, 3), np.uint8)
        frame[..., 2] = 60
        frame[10:30, i : i + 12] = (230, 30, 20)
        frames.append(frame)
    return frames


def rect_x(frame: np.ndarray) -> float:
    """Mean column of the red pixels."""
    cols = np.nonzero(frame[..., 0] > 128)[1]
    return float(cols.mean())


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    assert write_video(path, moving_rect(), FPS) == N
    return path


def no_temps(directory: Path) -> bool:
    return not [p for p in os.listdir(directory) if p.startswith(".")]


def test_write_probe_read_roundtrip(clip: Path) -> None:
    info = probe(clip)
    assert info == VideoInfo(
        fps=25.0,
        frames=N,
        width=W,
        height=H,
        duration=pytest.approx(N / FPS),
        codec="h264",
        variable_frame_rate=False,
    )
    frames = read_frames(clip)
    assert frames.shape == (N, H, W, 3) and frames.dtype == np.uint8
    source = np.stack(moving_rect()).astype(np.int16)
    assert np.abs(frames.astype(np.int16) - source).mean() < 4
    for i in (0, 10, 29):
        assert rect_x(frames[i]) == pytest.approx(i + 5.5, abs=0.75)
    assert no_temps(clip.parent)


def test_stream_is_h264_yuv420p_at_exact_fraction_rate(tmp_path: Path) -> None:
    path = tmp_path / "ntsc.mp4"
    write_video(path, moving_rect(12), 30000 / 1001)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == Fraction(30000, 1001)
        assert stream.codec_context.pix_fmt == "yuv420p"
    assert probe(path).fps == pytest.approx(30000 / 1001, rel=1e-12)


def test_resample_by_time(clip: Path) -> None:
    source = read_frames(clip)
    down = read_frames(clip, fps=8)
    # outputs at t = k/8 for t < 1.2 s: k = 0..9; frame k is source frame floor(k*25/8)
    assert len(down) == math.ceil(N / FPS * 8) == 10
    for k, frame in enumerate(down):
        np.testing.assert_array_equal(frame, source[k * 25 // 8])
    # resampling at the source rate is the identity
    np.testing.assert_array_equal(read_frames(clip, fps=FPS), source)
    # upsampling repeats frames, each yielded as its own array
    up = list(iter_frames(clip, fps=50))
    assert len(up) == 2 * N
    np.testing.assert_array_equal(up[0], up[1])
    assert not np.shares_memory(up[0], up[1])


def test_max_frames(clip: Path) -> None:
    assert read_frames(clip, max_frames=7).shape[0] == 7
    assert read_frames(clip, fps=8, max_frames=3).shape[0] == 3
    assert read_frames(clip, max_frames=1000).shape[0] == N
    with pytest.raises(ValueError):
        read_frames(clip, max_frames=0)
    with pytest.raises(ValueError):
        read_frames(clip, fps=0)


def test_read_frames_at(clip: Path) -> None:
    source = read_frames(clip)
    got = read_frames_at(clip, [29, 0, 5, 5, 30, 500, -1])
    assert sorted(got) == [0, 5, 29]
    for i, frame in got.items():
        np.testing.assert_array_equal(frame, source[i])
    assert read_frames_at(clip, []) == {}


def test_odd_size_is_padded_by_edge_replication(tmp_path: Path) -> None:
    frame = np.zeros((47, 63, 3), np.uint8)
    frame[:, -1] = 255  # last column white
    frame[-1, :] = 255  # last row white
    path = tmp_path / "odd.mp4"
    assert write_video(path, [frame] * 3, 10) == 3
    info = probe(path)
    assert (info.width, info.height) == (64, 48)
    out = read_frames(path)[1]
    # replicated edge: the padded column/row are white too (zero padding would be black)
    assert out[5:40, 63].min() > 200 and out[47, 5:55].min() > 200
    assert out[5:40, 20].max() < 50


def test_grayscale_input(tmp_path: Path) -> None:
    levels = (0, 90, 180, 255)
    frames = [np.full((H, W), v, np.uint8) for v in levels]
    path = tmp_path / "gray.mp4"
    assert write_video(path, iter(frames), 5) == len(levels)
    out = read_frames(path)
    assert out.shape == (len(levels), H, W, 3)
    for got, level in zip(out, levels, strict=True):
        assert np.abs(got.astype(int) - level).max() <= 3


def test_other_pixel_formats_decode_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "yuv444.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv444p"
        for frame in moving_rect(4):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    frames = read_frames(path)
    assert frames.shape == (4, H, W, 3) and frames.dtype == np.uint8
    assert rect_x(frames[3]) == pytest.approx(3 + 5.5, abs=0.75)


def test_invalid_frames_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.mp4"
    with pytest.raises(VideoError, match="bad.mp4"):
        write_video(path, [], 25)
    with pytest.raises(ValueError):
        write_video(path, [np.zeros((H, W, 3), np.float32)], 25)
    with pytest.raises(ValueError):
        write_video(path, [np.zeros((H, W, 3), np.uint8), np.zeros((H, W + 2, 3), np.uint8)], 25)
    assert not path.exists() and no_temps(tmp_path)


def test_write_is_atomic(clip: Path) -> None:
    before = clip.read_bytes()

    def failing():
        yield from moving_rect(5)
        raise RuntimeError("upstream failed")

    with pytest.raises(RuntimeError, match="upstream failed"):
        write_video(clip, failing(), FPS)
    assert clip.read_bytes() == before
    assert no_temps(clip.parent)


@pytest.mark.parametrize("kind", ["random", "truncated", "empty"])
def test_corrupt_inputs_raise_video_error(clip: Path, kind: str) -> None:
    path = clip.with_name(f"{kind}.mp4")
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    elif kind == "truncated":
        path.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    else:
        path.write_bytes(b"")
    for read in (probe, read_frames, lambda p: read_frames_at(p, [0])):
        with pytest.raises(VideoError, match=f"{kind}.mp4"):
            read(path)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        probe(tmp_path / "nope.mp4")


@pytest.mark.parametrize("ext", ["mp4", "avi"])  # mp4 drops the empty stream, avi keeps it
def test_zero_frame_video_raises(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"zero.{ext}"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        container.start_encoding()  # header only, no packets
    assert path.stat().st_size > 0
    for read in (probe, read_frames, lambda p: read_frames_at(p, [0])):
        with pytest.raises(VideoError, match=f"zero.{ext}"):
            read(path)


def test_variable_frame_rate_resamples_by_time(tmp_path: Path) -> None:
    times_ms = [0, 40, 80, 200, 240, 400, 440, 480, 800, 840]  # gaps, bursts, a long hold
    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), i * 25, np.uint8), "rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))

    info = probe(path)
    assert info.variable_frame_rate
    assert info.frames == len(times_ms)
    assert info.duration == pytest.approx(0.88, abs=0.002)  # last frame 840 ms + 40 ms
    assert info.fps == pytest.approx(len(times_ms) / info.duration)

    out = read_frames(path, fps=10)
    # t = 0, .1, ..., .8 (< 0.88 s): the latest source frame with pts <= t
    expected = [max(i for i, ms in enumerate(times_ms) if ms <= 100 * k) for k in range(9)]
    assert expected == [0, 2, 3, 4, 5, 7, 7, 7, 8]
    got = [round(float(f.mean()) / 25) for f in out]
    assert got == expected
    assert len(read_frames(path)) == len(times_ms)


def test_constant_rate_clip_is_not_vfr(clip: Path) -> None:
    assert not probe(clip).variable_frame_rate


def test_probe_real_dashcam_sample(shared_data: Path) -> None:
    path = shared_data / "videos" / "udacity_vd_test_video.mp4"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    info = probe(path)
    assert (info.width, info.height, info.fps, info.frames) == (1280, 720, 25.0, 38)
    assert not info.variable_frame_rate
    assert read_frames(path, fps=8, max_frames=2).shape == (2, 720, 1280, 3)


# --- found by mutation testing (docs/testing.md, "Mutation testing") ---------------------


@pytest.mark.parametrize(
    "pts,vfr",
    [
        ([0, 10], False),  # too few frames to tell
        ([0, 10, 30], True),  # three frames are enough
        ([0, 100, 200, 300], False),
        ([300, 0, 200, 100], False),  # decode order (B-frames) is sorted first
        ([0, 100, 201, 300], False),  # one tick of time-base rounding
        ([0, 100, 202, 300], True),
        ([0, 1000, 2005, 3000], False),  # 1 % of the median interval
        ([0, 1000, 2020, 3000], True),
        ([0, 0, 10, 20, 30], False),  # a repeated timestamp is not an interval
        ([5, 5, 5, 15], False),  # one interval left: nothing to compare
        ([0, 1, 2, 3, 13, 23, 33], True),
    ],
)
def test_variable_frame_rate_detection(pts: list[int], vfr: bool) -> None:
    from lanepaint.io.video import _is_vfr

    assert _is_vfr(pts) is vfr


def test_long_constant_rate_clip_is_probed_from_its_first_packets(tmp_path: Path) -> None:
    n = 130  # more than the 120 packets probe() inspects
    path = tmp_path / "long.mp4"
    assert write_video(path, [np.full((H, W, 3), i, np.uint8) for i in range(n)], FPS) == n
    info = probe(path)
    assert (info.frames, info.fps, info.variable_frame_rate) == (n, 25.0, False)
    assert info.duration == pytest.approx(n / FPS, abs=0.05)


def test_long_variable_rate_clip_is_scanned_to_the_end(tmp_path: Path) -> None:
    times_ms = [i * 40 + (20 if i % 2 else 0) for i in range(130)]  # 40 ms +- 20 ms jitter
    times_ms[-1] = times_ms[-2] + 40
    path = tmp_path / "vfr_long.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), i, np.uint8), "rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    info = probe(path)
    assert info.variable_frame_rate and info.frames == len(times_ms)
    assert info.duration == pytest.approx((times_ms[-1] + 40) / 1000, abs=0.03)
    assert info.fps == pytest.approx(len(times_ms) / info.duration)
    assert len(read_frames(path)) == len(times_ms)


@pytest.mark.parametrize("shape", [(47, 64), (48, 63), (47, 63, 1), (48, 64, 1)])
def test_one_odd_side_and_single_channel_frames(tmp_path: Path, shape: tuple) -> None:
    path = tmp_path / "odd.mp4"
    assert write_video(path, [np.full(shape, 200, np.uint8)] * 2, 10) == 2
    info = probe(path)
    assert (info.width, info.height) == (64, 48)
    assert np.abs(read_frames(path).astype(int) - 200).max() <= 3


def test_write_video_options(tmp_path: Path) -> None:
    frames = [np.random.default_rng(i).integers(0, 255, (H, W, 3), np.uint8) for i in range(5)]
    write_video(tmp_path / "q0.mp4", frames, 10, crf=0)
    write_video(tmp_path / "q51.mp4", frames, 10, crf=51)
    assert (tmp_path / "q0.mp4").stat().st_size > 3 * (tmp_path / "q51.mp4").stat().st_size
    with pytest.raises(ValueError, match="local path"):
        write_video("gs://bkt/x.mp4", frames, 10)
    with pytest.raises(ValueError, match="HxWx3"):
        write_video(tmp_path / "rgba.mp4", [np.zeros((H, W, 4), np.uint8)], 10)


def test_resample_to_one_frame_per_second(clip: Path) -> None:
    assert len(read_frames(clip, fps=1)) == 2  # 30 frames at 25 fps: 1.2 s
    with pytest.raises(ValueError, match="fps"):
        read_frames(clip, fps=0)


def test_first_frame_and_a_single_index(clip: Path) -> None:
    source = read_frames(clip)
    assert np.array_equal(read_frames(clip, max_frames=1), source[:1])
    got = read_frames_at(clip, [3])  # stops decoding at the largest wanted index
    assert list(got) == [3] and np.array_equal(got[3], source[3])


def test_time_counts_from_the_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "late_start.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), i * 25, np.uint8), "rgb24")
            frame.pts, frame.time_base = 500 + 40 * i, Fraction(1, 1000)  # starts at 0.5 s
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    info = probe(path)
    assert info.frames == 10 and info.duration == pytest.approx(0.4, abs=0.002)
    out = read_frames(path, fps=25)
    assert [round(float(f.mean()) / 25) for f in out] == list(range(10))


def test_write_video_to_a_path_without_extension_is_mp4(tmp_path):
    from lanepaint.io.video import read_frames, write_video

    frames = np.zeros((3, 32, 48, 3), np.uint8)
    out = tmp_path / "clip"
    assert write_video(out, frames, 8.0) == 3
    assert len(read_frames(str(out))) == 3
