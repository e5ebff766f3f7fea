"""``python -m bench.segment --size full|smoke``: SAM2.1 road masks for one video, end to end.

Work unit (performance.md): a 150-frame 1080p clip at 8 fps, 9 positive points on frame 0,
one object. Full size builds SAM2.1 hiera-large with random weights on the GPU.

- ours: the segment stage's path — the mp4 is decoded in a thread (PyAV), frames are resized
  on the GPU, the image encoder runs in batches while decoding goes on, bf16 autocast; timed
  from opening the mp4 until the masks are on the CPU. Mask clean-up (not in the stock path)
  is timed separately. ``--vos`` uses sam2's VOS predictor (tracking modules compiled, the
  image encoder left eager) and also runs the same path with the plain predictor, eager:
  its time (``ours_eager_s``) and ``rel_err_vs_eager`` = 1 - IoU of the VOS masks against
  the plain predictor's, on the same clip (issue 20: which should the stage default to).
  At smoke size ``--vos`` runs the tiny plain predictor in both (sam2's VOS class compiles
  with max-autotune, far too slow for a CPU test): it checks the comparison's wiring only.
- reference: the stock path a user writes — ``init_state`` on a folder of the same frames as
  JPEGs (written beforehand, untimed, as in performance.md's stock measurement), then
  ``add_new_points_or_box`` and ``propagate_in_video`` under bf16 autocast, masks to the CPU.

``rel_err`` is 1 - IoU of the two mask stacks. Random weights make the object-score head
call every frame "no object" (all masks empty, so any comparison would be trivially
perfect); its output bias is set to +20 in both predictors, which keeps the weights random
but makes the masks depend on the image. On CUDA every path gets one warm-up run (compile
time with ``--vos``), reported as ``first_run_s``. Smoke size runs the tiny model at 256 px
on the CPU in seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import perf_record, sync, write_json
from lanepaint.segment.base import TRACKING_COMPILE_MODES

GiB = 1024**3
SIZES = {
    # frames, width, height, render width (synth scenes are upscaled: rendering 1080p in
    # numpy would take minutes and add nothing to what is measured)
    "full": (150, 1920, 1080, 480),
    "smoke": (2, 96, 64, 96),
}


def make_clip(path: Path, frames: int, width: int, height: int, render_width: int) -> Path:
    """A synthetic drive at 8 fps, upscaled with a little sensor noise (so the encoder sees
    realistic detail), encoded as H.264 like a source video."""
    import cv2

    from lanepaint.data.synth import SceneSpec, render_clip
    from lanepaint.io.video import write_video

    render_height = max(16, round(render_width * height / width / 2) * 2)
    spec = SceneSpec(width=render_width, height=render_height, shadows=True, seed=3)
    video, _ = render_clip(spec, frames, 8.0)
    rng = np.random.default_rng(0)

    def upscaled():
        for frame in video:
            if (render_width, render_height) != (width, height):
                frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_CUBIC)
                noise = rng.normal(0, 2.0, frame.shape).astype(np.float32)
                frame = np.clip(frame + noise, 0, 255).astype(np.uint8)
            yield frame

    write_video(path, upscaled(), 8.0)
    return path


def _visible(predictor) -> None:
    """Make random weights predict "object present" (see the module doc)."""
    head = predictor.sam_mask_decoder.pred_obj_score_head
    last = head.layers[-1] if hasattr(head, "layers") else head
    with torch.no_grad():
        last.bias.fill_(20.0)


def build_predictors(size: str, vos: bool):
    """(ours, reference) predictors with identical random weights."""
    if size == "full":
        from lanepaint.models.fullsize import build_sam2_video_predictor

        ref = build_sam2_video_predictor("cuda", vos_optimized=False)
        ours = build_sam2_video_predictor("cuda", vos_optimized=vos) if vos else ref
    else:
        from lanepaint.models.smoke import tiny_sam2

        ref = ours = tiny_sam2()
    if ours is not ref:
        ours.load_state_dict(ref.state_dict())
    _visible(ref)
    _visible(ours)
    return ours, ref


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / GiB if device.type == "cuda" else None


def run_ours(segmenter, clip: Path, frames: int) -> tuple[float, np.ndarray, dict]:
    """Decode + segment, as the stage does it; returns (seconds, masks, phase seconds)."""
    from lanepaint.io.reports import Timings
    from lanepaint.segment.stream import FrameStream

    device = segmenter.device
    timings = Timings()
    sync(device)
    start = time.perf_counter()
    stream = FrameStream(str(clip), timings, fps=8.0, max_frames=frames, max_side=4096).start()
    try:
        result = segmenter.segment(stream.frames())
    finally:
        stream.close()
    sync(device)
    seconds = time.perf_counter() - start
    return seconds, result.masks, {**timings.as_dict(), "frames": len(result.frames)}


def run_reference(predictor, jpeg_dir: Path) -> tuple[float, np.ndarray]:
    from lanepaint.segment.sam2_video import stock_masks

    device = torch.device(predictor.device)
    sync(device)
    start = time.perf_counter()
    masks, _ = stock_masks(predictor, jpeg_dir)
    sync(device)
    return time.perf_counter() - start, masks


def _encoder_seconds(segmenter, frames) -> float:
    """Resize + image encoder alone for all frames, batched as in ``segment`` (synced)."""
    from lanepaint.segment.sam2_video import _FeatureCache, _Frames

    model, device = segmenter.predictor, segmenter.device
    frames = list(frames)
    with torch.inference_mode():
        images = _Frames(model.image_size, device)
        cache = _FeatureCache(model, images, segmenter.settings, segmenter._autocast)
        sync(device)
        start = time.perf_counter()
        for f in frames:
            images.append(f)
            cache.prefetch()
        cache.finish()
        sync(device)
        return time.perf_counter() - start


def _timed(fn, device: torch.device, repeats: int, warmup: bool):
    """Median seconds of ``repeats`` calls after an optional warm-up; last output, warm-up s."""
    warm_s = None
    if warmup:
        t = time.perf_counter()
        fn()
        warm_s = time.perf_counter() - t
    times, out = [], None
    _peak_reset(device)
    for _ in range(repeats):
        out = fn()
        times.append(out[0])
    return statistics.median(times), out, _peak(device), warm_s


def _run_eager(predictor, encoder_batch: int, clip: Path, frames: int, repeats: int):
    """Our path with the plain predictor, eager: (median seconds, masks)."""
    from lanepaint.segment.sam2_video import Sam2RoadSegmenter, Sam2Settings

    eager = Sam2RoadSegmenter(predictor, settings=Sam2Settings(encoder_batch=encoder_batch))
    device = eager.device
    seconds, (_, masks, _), _, _ = _timed(
        lambda: run_ours(eager, clip, frames), device, repeats, device.type == "cuda"
    )
    print(f"ours, eager: {seconds:.3f} s", flush=True)
    return seconds, masks


def run(
    size: str,
    out_dir: Path,
    repeats: int,
    vos: bool = False,
    encoder_batch: int = 8,
    compile_tracking: str = "",
) -> dict:
    from lanepaint.io.video import iter_frames
    from lanepaint.segment.postprocess import PostprocessSettings, iou, postprocess_masks
    from lanepaint.segment.sam2_video import (
        Sam2RoadSegmenter,
        Sam2Settings,
        read_jpeg_folder,
        write_jpeg_folder,
    )

    if size == "full" and not torch.cuda.is_available():
        raise SystemExit("--size full needs a CUDA GPU (use --size smoke on a CPU)")
    frames, width, height, render_width = SIZES[size]
    ours_pred, ref_pred = build_predictors(size, vos)
    device = torch.device(ours_pred.device)
    if compile_tracking and size == "full" and ours_pred is ref_pred:
        from lanepaint.models.fullsize import build_sam2_video_predictor

        ours_pred = build_sam2_video_predictor("cuda")  # the reference stays eager
        ours_pred.load_state_dict(ref_pred.state_dict())
    settings = Sam2Settings(encoder_batch=encoder_batch, compile_tracking=compile_tracking)
    segmenter = Sam2RoadSegmenter(ours_pred, settings=settings)
    warmup = device.type == "cuda"
    with tempfile.TemporaryDirectory(prefix="bench-segment-") as tmp:
        clip = make_clip(Path(tmp) / "clip.mp4", frames, width, height, render_width)
        jpeg_dir = Path(tmp) / "jpg"
        write_jpeg_folder(iter_frames(clip, fps=8.0, max_frames=frames), jpeg_dir)

        ref_s, (_, ref_masks), ref_peak, _ = _timed(
            lambda: run_reference(ref_pred, jpeg_dir), device, repeats, warmup
        )
        print(f"reference: {ref_s:.3f} s", flush=True)
        eager_s = eager_masks = None
        if vos or (compile_tracking and size == "full"):  # the same path, plain and eager
            eager_s, eager_masks = _run_eager(ref_pred, encoder_batch, clip, frames, repeats)
        ours_s, (_, ours_masks, phases), ours_peak, compile_s = _timed(
            lambda: run_ours(segmenter, clip, frames), device, repeats, warmup
        )
        print(f"ours: {ours_s:.3f} s (first run {compile_s} s)", flush=True)
        serial_s = None
        if device.type == "cuda":  # the same, encoder on the tracker's stream
            serial = Sam2RoadSegmenter(
                ours_pred,
                settings=Sam2Settings(
                    encoder_batch=encoder_batch,
                    side_stream=False,
                    compile_tracking=compile_tracking,
                ),
            )
            serial_s, (_, serial_masks, _), _, _ = _timed(
                lambda: run_ours(serial, clip, frames), device, repeats, True
            )
            print(f"ours, one stream: {serial_s:.3f} s", flush=True)
        # Same pixels as the reference (its JPEG round trip): what is left is our path's
        # own difference (bf16 batching), not the input's.
        same_input = segmenter.segment(read_jpeg_folder(jpeg_dir)).masks
        encode_s = None
        if device.type == "cuda":
            encode_s = _encoder_seconds(segmenter, read_jpeg_folder(jpeg_dir))
    t = time.perf_counter()
    postprocess_masks(ours_masks, PostprocessSettings(), workers=8)
    post_s = time.perf_counter() - t
    agreement = iou(ours_masks, ref_masks)
    vs_eager = None if eager_masks is None else round(1.0 - iou(ours_masks, eager_masks), 6)
    serial_err = None if serial_s is None else round(1 - iou(serial_masks, ref_masks), 6)
    extra = {
        "size": size,
        "work_unit": f"{frames} frames {width}x{height} @ 8 fps, 9 points, 1 object",
        "frames": int(ours_masks.shape[0]),
        "fps_ours": round(ours_masks.shape[0] / ours_s, 2),
        "fps_reference": round(ref_masks.shape[0] / ref_s, 2),
        "vos_optimized": vos,
        "compile_tracking": compile_tracking,
        "encoder_batch": encoder_batch,
        "ours_phases_s": phases,
        "ours_eager_s": None if eager_s is None else round(eager_s, 4),
        # --vos: VOS predictor against the plain one, same clip, same path (1 - IoU)
        "rel_err_vs_eager": vs_eager,
        "ours_one_stream_s": None if serial_s is None else round(serial_s, 4),
        "rel_err_one_stream": serial_err,
        "first_run_s": None if compile_s is None else round(compile_s, 2),
        "postprocess_s": round(post_s, 4),
        "resize_and_encoder_s": None if encode_s is None else round(encode_s, 4),
        "rel_err_same_input": round(1.0 - iou(same_input, ref_masks), 6),
        "reference_peak_gib": None if ref_peak is None else round(ref_peak, 3),
        "mask_fraction_ours": round(float(ours_masks.mean()), 4),
        "mask_fraction_reference": round(float(ref_masks.mean()), 4),
        "rel_err_is": "1 - IoU(ours masks, reference masks)",
        "repeats": repeats,
    }
    record = perf_record(
        "segment", ours_s, ref_s, round(1.0 - agreement, 6), None, ours_peak, extra
    )
    write_json([record], out_dir, size)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=tuple(SIZES), default="smoke")
    parser.add_argument("--out-dir", type=Path, default=Path("docs/perf"))
    parser.add_argument("--repeats", type=int, default=None, help="default 3 full, 1 smoke")
    parser.add_argument(
        "--vos",
        action="store_true",
        help="ours with sam2's VOS predictor (tracking compiled); eager is timed too",
    )
    parser.add_argument("--encoder-batch", type=int, default=8)
    parser.add_argument(
        "--compile-tracking",
        default="",
        choices=TRACKING_COMPILE_MODES,
        help="torch.compile mode for the tracking modules of ours (e.g. default; empty = eager)",
    )
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.size == "full" else 1)
    r = run(args.size, args.out_dir, repeats, args.vos, args.encoder_batch, args.compile_tracking)
    x = r["extra"]
    print(json.dumps(x))
    peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
    print(
        f"{'stage':<8} {'work unit':<44} {'ours_s':>8} {'reference_s':>11} {'ratio':>6} "
        f"{'peak_gib':>8} {'fps':>7}"
    )
    print(
        f"{r['stage']:<8} {x['work_unit']:<44} {r['ours_s']:>8.3f} {r['reference_s']:>11.3f} "
        f"{r['ratio']:>6.2f} {peak:>8} {x['fps_ours']:>7.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
