"""SAM2.1 road masks for a video, fed with decoded frames instead of a JPEG folder.

Why not the stock path: ``init_state(video_path)`` wants a folder of JPEGs, so a caller
decodes, JPEG-encodes, writes, reads, JPEG-decodes and PIL-resizes every frame on one CPU
thread before the GPU does anything (7.4 s of the 14.6 s the stock path takes for 150
1080p frames on an H100, docs/performance.md), and then runs the image encoder one frame
at a time during propagation. Here the inference state is built from frames as they come
out of the decoder: each frame is resized on the model's device (or with PIL, exactly as
stock, on CPU), the image encoder runs in batches while decoding goes on, and its features
are handed to the predictor through the state's feature cache. Tracking itself is the
predictor's own ``propagate_in_video``, so masks match the stock path (tests compare them).

The state dict mirrors ``SAM2VideoPredictor.init_state`` of sam2 1.1.0 field by field; a
test compares its keys with a stock state so a sam2 upgrade that adds fields fails loudly.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lanepaint.models.kernels import BACKENDS, sdpa_context
from lanepaint.segment.base import (
    TRACKING_COMPILE_MODES,
    EmptyVideoError,
    Segmentation,
    as_rgb,
    check_same_size,
)
from lanepaint.segment.prompts import DEFAULT_POINTS, Point, to_pixels, validate_points

log = logging.getLogger(__name__)

# sam2.utils.misc.load_video_frames defaults (ImageNet statistics).
IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)
OBJ_ID = 1


@dataclass(frozen=True)
class Sam2Settings:
    """How frames reach the model; none of these change what SAM2 computes.

    ``encoder_batch``: frames per image-encoder call (padded to this size on CUDA so a
    compiled encoder sees one shape). ``max_cached_frames``: features kept ahead of the
    tracker; beyond it the encoder runs lazily and old features are dropped, which bounds
    GPU memory on long videos (about 8 MB per 1024-px frame in bf16 for hiera-large).
    ``bf16``: autocast to bfloat16 on CUDA (None: on for CUDA, never on CPU).
    ``compile_encoder``: keep the max-autotune compiled image encoder of sam2's VOS
    predictor. Off by default: compiling hiera-large at batch 8 ran for more than 7 minutes
    on an H100 without finishing, and the batched encoder is large-GEMM bound already, so
    only the per-frame tracking modules (memory attention, decoders, memory encoder), where
    compilation removes launch overhead, stay compiled.
    ``side_stream``: resize and encode on a second CUDA stream (None: on for CUDA). Tracking
    is bound by kernel launches and leaves the GPU mostly idle; on the side stream the
    encoder's large GEMMs fill that time, and frame i's tracking waits (on the GPU, via an
    event) only for the batch holding frame i instead of for every batch queued before it.
    ``attention``: SDPA kernel choice (``lanepaint.models.kernels``; auto = cuDNN first on
    Hopper). ``compile_tracking``: ``torch.compile`` mode for the per-frame tracking modules (memory
    encoder, memory attention, prompt encoder, mask decoder), e.g. ``"default"``; "" leaves
    a plain predictor's eager and gives sam2's VOS predictor ``VOS_TRACKING_MODE`` (see
    ``tracking_compile_mode``). The plain inductor modes compile in about a minute and
    still remove most of the per-frame Python and launch overhead (docs/segment.md).
    """

    encoder_batch: int = 8
    max_cached_frames: int = 512
    bf16: bool | None = None
    compile_encoder: bool = False
    side_stream: bool | None = None
    compile_tracking: str = ""
    attention: str = "auto"

    def __post_init__(self) -> None:
        if self.encoder_batch < 1:
            raise ValueError("encoder_batch must be >= 1")
        if self.max_cached_frames < self.encoder_batch:
            raise ValueError("max_cached_frames must be >= encoder_batch")
        if self.attention not in BACKENDS:
            raise ValueError(f"attention must be one of {BACKENDS}")
        if self.compile_tracking not in TRACKING_COMPILE_MODES:
            raise ValueError(f"compile_tracking must be one of {TRACKING_COMPILE_MODES}")


TRACKING_MODULES = ("memory_encoder", "memory_attention", "sam_prompt_encoder", "sam_mask_decoder")


def compile_tracking_modules(predictor, mode: str) -> None:
    """Compile the per-frame tracking modules in place, as sam2's VOS predictor does, but
    with a chosen inductor mode. The memory attention sees a growing memory bank (dynamic
    shapes); the others always see one shape. Idempotent."""
    if getattr(predictor, "_lanepaint_tracking_compiled", None) == mode:
        return
    for name in TRACKING_MODULES:
        module = getattr(predictor, name)
        vars(module).pop("forward", None)  # an earlier compile (ours or sam2's VOS)
        module.forward = torch.compile(
            module.forward, mode=mode, dynamic=name == "memory_attention"
        )
    predictor._lanepaint_tracking_compiled = mode


VOS_TRACKING_MODE = "default"


def tracking_compile_mode(predictor, requested: str) -> str:
    """The compile mode for the tracking modules: the one asked for, else, for sam2's VOS
    predictor, inductor's default mode (no CUDA graphs). sam2 compiles them with
    max-autotune and CUDA graphs, whose replays overwrote the memory attention's output
    before the mask decoder read it on an H100 (torch 2.11; sam2 issue 501): a crash after
    a 4-minute compile. max-autotune without CUDA graphs was still autotuning after 6
    minutes on an H100; the default mode tracked after an 87 s first run (docs/segment.md)."""
    if requested:
        return requested
    from sam2.sam2_video_predictor import SAM2VideoPredictorVOS

    return VOS_TRACKING_MODE if isinstance(predictor, SAM2VideoPredictorVOS) else ""


def autocast_context(device: torch.device, bf16: bool | None):
    """bf16 autocast on CUDA (models.md: propagate has a bf16/fp32 mismatch otherwise)."""
    if device.type == "cuda" and bf16 is not False:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _on(stream):
    """Run the enclosed CUDA work on ``stream`` (no-op for None, e.g. on the CPU)."""
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()


_PRECISION_BITS = 22  # Pillow's fixed-point precision for 8-bit resampling


def _high_priority_stream(side_stream, device: torch.device):
    """With the encoder on a side stream, tracking runs on a high-priority stream: its
    small, launch-bound kernels are then scheduled ahead of the encoder's queued GEMM
    blocks instead of behind them, so tracking frame i overlaps encoding later frames."""
    if side_stream is None:
        return None
    tracker = torch.cuda.Stream(device, priority=-16)  # clamped to the highest priority
    tracker.wait_stream(torch.cuda.current_stream(device))
    return tracker


def _pil_bicubic(x: float) -> float:
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


@functools.lru_cache(maxsize=32)
def pil_resize_weights(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] integer weights of Pillow's antialiased bicubic resize (Resample.c:
    precompute_coeffs + normalize_coeffs_8bpc), so a matrix product reproduces it exactly."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    weights = np.zeros((out_size, in_size), np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [_pil_bicubic((x + xmin - center + 0.5) / filterscale) for x in range(xmax)]
        total = sum(k)
        for x, w in enumerate(k):
            w = w / total if total != 0.0 else w
            v = w * (1 << _PRECISION_BITS)
            weights[xx, xmin + x] = int(v - 0.5) if v < 0 else int(v + 0.5)
    return weights


def _fixed_point_round(x: torch.Tensor) -> torch.Tensor:
    """Pillow's ``clip8((acc + half) >> PRECISION_BITS)`` on exact float64 accumulators."""
    half = float(1 << (_PRECISION_BITS - 1))
    return torch.floor((x + half) / float(1 << _PRECISION_BITS)).clamp_(0, 255)


class _Frames:
    """``inference_state["images"]``: frames resized to SxS, kept as uint8 on the device.

    The resize is the stock loader's (PIL bicubic with antialiasing, one pass per axis in
    Pillow's order, 8-bit fixed point) as two float64 matrix products on the device: the
    weights and sums are integers below 2**53, so the result is bit-identical to PIL and
    costs well under a millisecond per 1080p frame on a GPU. Indexing gives what the
    stock loader stores, a normalized float32 [3,S,S] tensor (uint8 / 255 in float64, cast
    to float32, minus mean, divided by std).
    """

    def __init__(self, image_size: int, device: torch.device, stream=None):
        self.size = image_size
        self.device = device
        self.stream = stream
        self._u8: list[torch.Tensor] = []
        self._weights: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._mean = torch.tensor(IMG_MEAN, dtype=torch.float32, device=device)[:, None, None]
        self._std = torch.tensor(IMG_STD, dtype=torch.float32, device=device)[:, None, None]

    def _resize_weights(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        if (h, w) not in self._weights:
            wy = torch.from_numpy(pil_resize_weights(h, self.size)).to(self.device)
            wx = torch.from_numpy(pil_resize_weights(w, self.size)).to(self.device)
            self._weights[(h, w)] = (wy, wx.T.contiguous())
        return self._weights[(h, w)]

    def append(self, rgb: np.ndarray) -> None:
        with _on(self.stream):
            self._append(rgb)

    def _append(self, rgb: np.ndarray) -> None:
        h, w = rgb.shape[:2]
        rgb = rgb if rgb.flags.writeable else rgb.copy()  # torch refuses read-only memory
        x = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1).to(torch.float64)
        if (h, w) != (self.size, self.size):
            wy, wx_t = self._resize_weights(h, w)
            passes = [(w != self.size, lambda t: t @ wx_t), (h != self.size, lambda t: wy @ t)]
            if w < self.size < h:  # Pillow shrinks first when one pass shrinks, one grows
                passes.reverse()
            for needed, apply in passes:
                if needed:
                    x = _fixed_point_round(apply(x))
        self._u8.append(x.to(torch.uint8))

    def normalized(self, start: int, stop: int) -> torch.Tensor:
        x = torch.stack(self._u8[start:stop]).to(torch.float64).div_(255.0).float()
        return (x - self._mean) / self._std

    def __len__(self) -> int:
        return len(self._u8)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.normalized(index, index + 1)[0]


class _FeatureCache:
    """``inference_state["cached_features"]``: image-encoder output per frame, in batches.

    The predictor asks ``get(frame_idx)`` before running its own encoder; a hit is used
    as is (and the cache is never replaced), so every frame's features come from here.
    Position encodings depend on the feature shape only, so one copy serves all frames.
    """

    def __init__(self, model, frames: _Frames, settings: Sam2Settings, autocast):
        self.model = model
        self.frames = frames
        self.batch = settings.encoder_batch
        self.max_cached = settings.max_cached_frames
        # A compiled encoder (static shapes) must see one batch size: pad the last batch.
        self.pad = "forward" in vars(model.image_encoder)
        self.autocast = autocast
        self.entries: dict[int, tuple[torch.Tensor, dict[str, list[torch.Tensor]]]] = {}
        self.ready: dict[int, torch.cuda.Event] = {}  # per frame, when encoded on a side stream
        self.encoded_upto = 0  # frames [0, encoded_upto) have been encoded at least once
        self.num_frames: int | None = None
        self._pos: list[torch.Tensor] | None = None
        self.encoder_calls = 0

    def _encode(self, start: int, stop: int) -> None:
        stream = self.frames.stream
        with _on(stream):
            x = self.frames.normalized(start, stop)
            n = x.shape[0]
            if self.pad and n < self.batch:
                x = torch.cat([x, x[-1:].expand(self.batch - n, -1, -1, -1)])
            with self.autocast():
                out = self.model.forward_image(x)
            if self._pos is None:
                self._pos = [p[0:1].clone() for p in out["vision_pos_enc"]]
            event = None
            if stream is not None:
                event = torch.cuda.Event()
                event.record(stream)
        self.encoder_calls += 1
        fpn = out["backbone_fpn"]
        for k in range(n):
            feats = {"backbone_fpn": [f[k : k + 1] for f in fpn], "vision_pos_enc": self._pos}
            self.entries[start + k] = (x[k : k + 1], feats)
            if event is not None:
                self.ready[start + k] = event
        self.encoded_upto = max(self.encoded_upto, stop)

    def _hand_over(self, frame_idx: int) -> None:
        """Make the tracker's stream wait for this frame's encoder batch (on the GPU, no
        host sync), and tell the allocator that stream uses the tensors, so their memory is
        not reused by the side stream while tracking kernels may still read it."""
        event = self.ready.pop(frame_idx, None)
        if event is None:
            return
        current = torch.cuda.current_stream(self.frames.device)
        current.wait_event(event)
        image, feats = self.entries[frame_idx]
        for t in (image, *feats["backbone_fpn"], *feats["vision_pos_enc"]):
            t.record_stream(current)

    def prefetch(self) -> None:
        """Encode full batches of frames that have arrived, up to ``max_cached`` ahead."""
        while (
            len(self.frames) - self.encoded_upto >= self.batch
            and self.encoded_upto + self.batch <= self.max_cached
        ):
            self._encode(self.encoded_upto, self.encoded_upto + self.batch)

    def finish(self) -> None:
        """All frames are in: encode the rest that fits in the cache."""
        self.num_frames = len(self.frames)
        self.prefetch()
        stop = min(self.num_frames, self.max_cached)
        if self.encoded_upto < stop:
            self._encode(self.encoded_upto, stop)

    def get(self, frame_idx: int, default: Any = None):
        if frame_idx not in self.entries:
            if self.num_frames is None or not 0 <= frame_idx < self.num_frames:
                return default
            self._encode(frame_idx, min(frame_idx + self.batch, self.num_frames))
        self._hand_over(frame_idx)
        if len(self.entries) > self.max_cached:
            # Tracking moves forward; the frame before the current one may still be asked
            # for (the prompt frame is read twice), anything older is done with.
            for idx in [i for i in self.entries if i < frame_idx - 1]:
                del self.entries[idx]
                self.ready.pop(idx, None)
        return self.entries[frame_idx]

    def __contains__(self, frame_idx: int) -> bool:
        return frame_idx in self.entries


def new_inference_state(predictor, images, cache, height: int, width: int) -> dict:
    """The dict ``init_state`` builds (sam2 1.1.0), with our frames and feature cache."""
    device = predictor.device
    return {
        "images": images,
        "num_frames": len(images),
        "offload_video_to_cpu": False,
        "offload_state_to_cpu": False,
        "video_height": height,
        "video_width": width,
        "device": device,
        "storage_device": device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": cache,
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }


def _track(
    predictor, state: dict, points: Sequence[Point], keep_logits: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Prompt frame 0 with positive points and propagate; masks (and logits) on the CPU."""
    h, w = state["video_height"], state["video_width"]
    pixels = np.asarray(to_pixels(points, w, h), dtype=np.float32)
    labels = np.ones(len(points), dtype=np.int32)
    predictor.add_new_points_or_box(state, frame_idx=0, obj_id=OBJ_ID, points=pixels, labels=labels)
    n = state["num_frames"]
    device = state["device"]
    masks = torch.zeros((n, h, w), dtype=torch.bool, device=device)
    logits = torch.zeros((n, h, w), dtype=torch.float32) if keep_logits else None
    for frame_idx, _, video_res in predictor.propagate_in_video(state):
        masks[frame_idx] = video_res[0, 0] > 0
        if logits is not None:
            logits[frame_idx] = video_res[0, 0].float().cpu()
    return masks.cpu().numpy(), (logits.numpy() if logits is not None else None)


def supports_in_memory_frames(predictor) -> bool:
    """True for predictors with the sam2 1.x video API this module drives."""
    needed = ("forward_image", "_get_image_feature", "propagate_in_video", "image_size")
    return all(hasattr(predictor, name) for name in needed)


class Sam2RoadSegmenter:
    """One loaded SAM2 video predictor, reused for every video of a stage run."""

    name = "sam2"

    def __init__(
        self,
        predictor,
        points: Sequence[Point] = DEFAULT_POINTS,
        settings: Sam2Settings | None = None,
    ):
        self.predictor = predictor
        self.points = validate_points(points)
        self.settings = settings or Sam2Settings()
        self.device = torch.device(predictor.device)
        self.in_memory = supports_in_memory_frames(predictor)
        encoder = getattr(predictor, "image_encoder", None)
        if not self.settings.compile_encoder and encoder is not None:
            # sam2 compiles by assigning an instance attribute; removing it restores eager.
            vars(encoder).pop("forward", None)
        mode = tracking_compile_mode(predictor, self.settings.compile_tracking)
        if mode and self.device.type == "cuda":
            compile_tracking_modules(predictor, mode)

    def _autocast(self):
        return autocast_context(self.device, self.settings.bf16)

    def segment(self, frames: Iterable[np.ndarray], keep_logits: bool = False) -> Segmentation:
        """Masks for the frames of one video (consumed as they are decoded)."""
        if not self.in_memory:
            return self._segment_via_jpeg(frames, keep_logits)
        model = self.predictor
        side = self.settings.side_stream
        if side is None:
            side = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if side and self.device.type == "cuda" else None
        with torch.inference_mode(), sdpa_context(self.settings.attention, self.device):
            images = _Frames(model.image_size, self.device, stream)
            cache = _FeatureCache(model, images, self.settings, self._autocast)
            if stream is not None:  # constants and weights were copied on the default stream
                stream.wait_stream(torch.cuda.current_stream(self.device))
            full: list[np.ndarray] = []
            for frame in frames:
                rgb = as_rgb(frame)
                if full:
                    check_same_size(full[0], rgb, len(full))
                full.append(rgb)
                images.append(rgb)
                cache.prefetch()
            if not full:
                raise EmptyVideoError("no frames to segment")
            cache.finish()
            h, w = full[0].shape[:2]
            state = new_inference_state(model, images, cache, h, w)
            with self._autocast(), _on(tracker := _high_priority_stream(stream, self.device)):
                masks, logits = _track(model, state, self.points, keep_logits)
            if tracker is not None:
                torch.cuda.current_stream(self.device).wait_stream(tracker)
        return Segmentation(full, masks, logits)

    def _segment_via_jpeg(self, frames: Iterable[np.ndarray], keep_logits: bool) -> Segmentation:
        """Fallback for predictors without the sam2 1.x internals: the stock JPEG path."""
        full = [as_rgb(f) for f in frames]
        if not full:
            raise EmptyVideoError("no frames to segment")
        with tempfile.TemporaryDirectory(prefix="lanepaint-sam2-") as tmp:
            write_jpeg_folder(full, tmp)
            masks, logits = stock_masks(
                self.predictor, tmp, self.points, self.settings.bf16, keep_logits
            )
        return Segmentation(full, masks, logits)


# --- the stock path (reference for tests and the benchmark) ---------------------------------


def write_jpeg_folder(frames: Iterable[np.ndarray], folder: str | os.PathLike[str]) -> int:
    """``00000.jpg`` ... as sam2's loader expects (quality 95); returns the frame count."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for n, frame in enumerate(frames, start=1):
        Image.fromarray(as_rgb(frame)).save(folder / f"{n - 1:05d}.jpg", quality=95)
    return n


def read_jpeg_folder(folder: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """Decoded frames of a JPEG folder in sam2's order (PIL, as the stock loader)."""
    from PIL import Image

    names = sorted(Path(folder).glob("*.jpg"), key=lambda p: int(p.stem))
    for path in names:
        with Image.open(path) as img:
            yield np.asarray(img.convert("RGB"))


def stock_masks(
    predictor,
    jpeg_folder: str | os.PathLike[str],
    points: Sequence[Point] = DEFAULT_POINTS,
    bf16: bool | None = None,
    keep_logits: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The stock predictor path: ``init_state`` on a JPEG folder, then propagate."""
    device = torch.device(predictor.device)
    with torch.inference_mode(), autocast_context(device, bf16):
        state = predictor.init_state(str(jpeg_folder))
        return _track(predictor, state, validate_points(points), keep_logits)
