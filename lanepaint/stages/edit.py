"""Stage edit: repaint the lane markings of videos, one or more instructions per video.

Input is a VideoPainter layout (what segment writes). For each video and instruction:
1. first frame — FluxFill (+ optional LoRA) paints the dilated, feathered road mask of frame
   0 from the instruction's caption; the Qwen2.5-VL judge checks it (3-panel image) and on
   FAIL the caption is revised and FluxFill retried (at most 5 attempts, best kept);
2. propagation — CogVideoX-5B-I2V with the VideoPainter branch carries the edited first
   frame through the video (49-frame windows, overlapping, with ID resampling);
3. outputs — edited video, side-by-side video, every first-frame attempt, the judge's
   verdicts and a record with settings, model versions and timings (lanepaint.edit.layout).

Models are loaded once per run and placed by the placement plan; all first frames are
painted (phase 1: FluxFill + judge) before any video is propagated (phase 2: CogVideoX), so
phase-1 models can be released when memory requires it. A rerun skips every video whose
record exists with the same settings and model versions; a video that fails (bad mask,
out of memory, ...) is recorded in failures.jsonl and the batch goes on.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from PIL import Image
from tqdm import tqdm

from lanepaint.data.videopainter import VideoPainterLayout, VideoRecord
from lanepaint.edit.first_frame import FirstFrameConfig, FirstFramePainter, compile_flux
from lanepaint.edit.instructions import Instruction, parse_instructions
from lanepaint.edit.layout import EditLayout
from lanepaint.io import reports, storage
from lanepaint.io.images import write_png
from lanepaint.models.kernels import BACKENDS, sdpa_context

log = logging.getLogger(__name__)

ID_LORA_FILE = "VideoPainterID/checkpoints/pytorch_lora_weights.safetensors"
MAX_MASK_COVERAGE = 0.98


@dataclass(frozen=True)
class EditConfig:
    instructions: str = "lane single white solid"
    first_frame: FirstFrameConfig = field(default_factory=FirstFrameConfig)
    judge: bool = True
    judge_max_new_tokens: int = 128
    judge_visual_tokens: int = 990
    vlm_size: str = "7B"
    lora: str | None = None
    steps: int = 50
    guidance: float = 6.0
    conditioning_scale: float = 1.0
    mask_dilation: int = 16  # pixels at 480 rows; scaled with the model's frame height
    overlap: int = 5
    id_resample: bool = True
    prev_clip_weight: float = 1.0
    max_frames: int | None = None
    seed: int = 42
    compile: bool = False
    attention: str = "auto"  # SDPA kernels (lanepaint.models.kernels); speed only
    video_ids: tuple[str, ...] = ()
    num_shards: int = 1
    shard_index: int = 0

    def settings_hash(self, model_metadata: dict) -> str:
        """Output-relevant settings + model identity: a rerun with equal hash is a no-op."""
        d = asdict(self)
        for key in (
            "video_ids",
            "num_shards",
            "shard_index",
            "compile",
            "attention",
            "instructions",
        ):
            d.pop(key)
        d["models"] = model_metadata
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Models:
    """Everything a run loads once."""

    root: object
    flux: object
    judge: object | None
    painter: object
    plan: object
    metadata: dict
    vlm: str = "qwen_vl_7b"
    # Loaded by the stage run itself: nothing else will use phase one's models again, so
    # they are dropped rather than copied back to the CPU (~40 s for FluxFill + the VLM).
    owned: bool = False

    def release_phase_one(self) -> None:
        """Free what the plan says must not stay beside CogVideoX (each model by its flag)."""
        from lanepaint.models.placement import release

        names = [("flux_fill", self.flux)]
        if self.judge is not None:
            names.append((self.vlm, self.judge.generator.model))
        doomed = [m for n, m in names if self.plan[n].release_between_phases]
        if doomed:
            release(*doomed, keep=not self.owned)


def _dtype(device: str):
    import torch

    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


def load_models(model_root: str, config: EditConfig) -> Models:
    """FluxFill (+LoRA), the judge and CogVideoX+branch, placed by the plan."""
    import torch
    from diffusers import CogVideoXDPMScheduler

    from lanepaint.models import loaders, placement
    from lanepaint.models.root import as_model_root
    from lanepaint.videopainter.pipeline import VideoPainterPipeline
    from lanepaint.vlm.judge import Judge
    from lanepaint.vlm.qwen import VLMGenerator

    root = as_model_root(model_root)
    vlm = f"qwen_vl_{config.vlm_size.lower()}"
    phases = (
        (("flux_fill", vlm), ("cogvideox_i2v",))
        if config.judge
        else (("flux_fill",), ("cogvideox_i2v",))
    )
    plan = placement.plan_placement(placement.visible_gpus(), phases)
    log.info("placement plan:\n%s", plan.describe())

    flux_dev = plan["flux_fill"].device
    flux = loaders.load_flux_fill(root, _dtype(flux_dev), "cpu")
    if config.lora:
        flux.load_lora_weights(str(local_lora_dir(config.lora)), adapter_name="lanepaint")
    placement.apply_placement(flux, plan["flux_fill"])
    if config.compile and str(flux_dev).startswith("cuda"):
        if plan["flux_fill"].offload == "none":
            compile_flux(flux)
        else:  # offload hooks move weights per call: nothing to fuse or compile in place
            log.info("FluxFill is offloaded (%s): not compiled", plan["flux_fill"].offload)

    judge = None
    if config.judge:
        where = plan[vlm]
        offloaded = where.offload != "none"
        model, processor = loaders.load_qwen_vl(
            root, config.vlm_size, _dtype(where.device), "cpu" if offloaded else where.device
        )
        if offloaded:
            placement.apply_placement(model, where)
        judge = Judge(
            VLMGenerator(model, processor, static_cache=True),
            config.judge_max_new_tokens,
            config.judge_visual_tokens,
        )

    cog_dev = plan["cogvideox_i2v"].device
    dtype = _dtype(cog_dev)
    pipe = loaders.load_cogvideox_i2v(root, dtype, "cpu")
    pipe.scheduler = CogVideoXDPMScheduler.from_config(
        pipe.scheduler.config, timestep_spacing="trailing"
    )
    branch = loaders.load_videopainter_branch(root, dtype, "cpu")
    painter = VideoPainterPipeline(pipe, branch)
    if (root / ID_LORA_FILE).is_file():
        painter.load_id_lora(root / ID_LORA_FILE)
    painter.to(cog_dev if plan["cogvideox_i2v"].offload == "none" else "cpu")
    if config.compile and str(cog_dev).startswith("cuda"):
        painter.compile_blocks()
    metadata = {**root.metadata(), "lora": config.lora, "torch": torch.__version__}
    return Models(root, flux, judge, painter, plan, metadata, vlm)


def local_lora_dir(uri: str):
    """A train-lora output folder (local or gs://, fetched once) holding the LoRA file."""
    from pathlib import Path

    from lanepaint.models.root import default_cache_root

    folder = (
        Path(storage.cache_dir(uri, default_cache_root() / "loras"))
        if storage.is_gcs(uri)
        else Path(uri)
    )
    if not (folder / "pytorch_lora_weights.safetensors").is_file():
        raise FileNotFoundError(f"no pytorch_lora_weights.safetensors in LoRA folder {uri}")
    return folder


def model_size(painter) -> tuple[int, int]:
    """(H, W) the video model works at (480x720 for CogVideoX-5B-I2V)."""
    cfg = painter.pipe.transformer.config
    factor = painter.pipe.vae_scale_factor_spatial
    return cfg.sample_height * factor, cfg.sample_width * factor


def resize_video(frames: np.ndarray, masks: np.ndarray, size: tuple[int, int]):
    """Frames (bicubic) and masks (nearest) at the model's size."""
    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames, (masks > 0).astype(np.uint8)
    out_f = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BICUBIC)) for f in frames])
    out_m = np.stack(
        [
            np.asarray(Image.fromarray((m > 0).astype(np.uint8)).resize((w, h), Image.NEAREST))
            for m in masks
        ]
    )
    return out_f, out_m


def unsafe_record(record: VideoRecord) -> str | None:
    """Why a meta.csv row cannot be used safely (ids and paths become path parts)."""
    from lanepaint.data.fluxfill import UnsafePathError, safe_relpath
    from lanepaint.data.videopainter import safe_video_id

    for name in ("video_id", "mask_id"):
        value = getattr(record, name)
        if not value or safe_video_id(value) != value:
            return f"{name} {value!r} is not a plain file name"
    try:
        safe_relpath(record.path)
    except UnsafePathError as exc:
        return str(exc)
    return None


def load_item(layout: VideoPainterLayout, record: VideoRecord, max_frames: int | None):
    """Frames and masks of one video, checked: a mask per frame, not empty, not everything."""
    from lanepaint.io.video import read_frames

    with storage.local_path(layout.video_for(record)) as path:
        frames = read_frames(path, max_frames=max_frames)
    masks = layout.read_masks(record.mask_id)
    if max_frames:
        masks = masks[:max_frames]
    if len(frames) == 0:
        raise ValueError("video has no frames (no first frame to edit)")
    n = min(len(frames), len(masks))
    if n < len(frames):
        log.warning(
            "%s: %d frames but %d masks; using %d", record.video_id, len(frames), len(masks), n
        )
    frames, masks = frames[:n], masks[:n]
    if masks.shape[1:] != frames.shape[1:3]:
        raise ValueError(f"mask size {masks.shape[1:]} != frame size {frames.shape[1:3]}")
    coverage = float((masks > 0).mean())
    if not (masks[0] > 0).any():
        raise ValueError("empty mask on the first frame: nothing to edit")
    if coverage > MAX_MASK_COVERAGE:
        raise ValueError(f"mask covers {coverage:.1%} of the video: no background to keep")
    return frames, masks


def _select(records: list[VideoRecord], config: EditConfig) -> list[VideoRecord]:
    from lanepaint.data.sources import shard

    if config.video_ids:
        wanted = set(config.video_ids)
        records = [r for r in records if r.video_id in wanted]
    return shard(sorted(records, key=lambda r: r.video_id), config.num_shards)[config.shard_index]


def edit_videos(
    data_dir: str,
    output_dir: str,
    model_root: str,
    config: EditConfig | None = None,
    models: Models | None = None,
    summary_dir: str | None = None,
) -> dict:
    """Run the edit stage; returns the summary, written to ``summary_dir`` (default: the
    output dir; parallel shards each pass their own and ``merge_edits`` combines them)."""
    import torch

    config = config or EditConfig()
    started = time.perf_counter()
    instructions = parse_instructions(config.instructions)
    vp = VideoPainterLayout(data_dir)
    out = EditLayout(output_dir)
    failures = reports.Failures()
    records = []
    for rec in _select(vp.read_meta(), config):
        problem = unsafe_record(rec)
        if problem:
            failures.add(rec.video_id, f"bad meta.csv row: {problem}")
        else:
            records.append(rec)
    timings = reports.Timings()

    from lanepaint.models.root import as_model_root

    root = as_model_root(model_root)
    meta = {**root.metadata(), "lora": config.lora}
    settings = config.settings_hash(meta)
    done = {
        (r["video_id"], r["instruction_slug"])
        for r in out.records()
        if r.get("settings") == settings and r.get("status") == "ok"
    }
    todo = [(r, i) for r in records for i in instructions if (r.video_id, i.slug) not in done]
    log.info(
        "%d videos x %d instructions; %d done, %d to do",
        len(records),
        len(instructions),
        len(records) * len(instructions) - len(todo),
        len(todo),
    )
    if todo and models is None:
        with timings.phase("load_models"):
            models = load_models(model_root, config)
            models.owned = True
    gpu = "cuda" if torch.cuda.is_available() else "cpu"

    # Phase 1: first frames (FluxFill + judge) for every item.
    first: dict[tuple[str, str], dict] = {}
    firsts: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # frame 0 and its mask per video
    painter = None
    if todo:
        size = model_size(models.painter)
        scale = size[0] / 480  # dilation and feathering are given for 480-row frames
        ff_config = replace(
            config.first_frame,
            dilation=round(config.first_frame.dilation * scale),
            feather=round(config.first_frame.feather * scale),
        )
        painter = FirstFramePainter(models.flux, models.judge, ff_config)
    for record, inst in tqdm(todo, desc="first frames", unit="item"):
        key = (record.video_id, inst.slug)
        t0 = time.perf_counter()
        # An older record (other settings) must not vouch for the files rewritten below.
        storage.delete(out.record(*key))
        try:
            if record.video_id not in firsts:
                frames, masks = resize_video(*load_item(vp, record, config.max_frames), size)
                firsts[record.video_id] = (frames[0], masks[0])
            frame0, mask0 = firsts[record.video_id]
            with sdpa_context(config.attention, gpu):  # single use: one per call
                result = painter.run(frame0, mask0, inst)
            for attempt in result.attempts:
                write_png(out.attempt(*key, attempt.index), attempt.image)
            write_png(out.attempt(*key, "best.png"), result.best.image)
            judge_doc = {"instruction": inst.text, **result.as_dict()}
            storage.write_text(out.judge(*key), json.dumps(judge_doc, indent=2) + "\n")
            first[key] = {"result": result, "seconds": time.perf_counter() - t0}
        except Exception as exc:  # noqa: BLE001 - recorded; the batch goes on
            _fail(failures, record, inst, "first frame", exc)
    if models is not None and todo:
        models.release_phase_one()

    # Phase 2: propagation. Each item's videos, masks and record are written on a thread
    # while the GPU propagates the next item (so two items' frames are in memory at most).
    from lanepaint.io.video import write_video

    def finish(record, inst, key, frames, masks, result, t0: float, t_prop: float) -> None:
        ff = first[key]["result"]
        t1 = time.perf_counter()
        write_local_video(out.edited(*key), result.frames, record.fps, write_video)
        side = np.concatenate([frames, result.frames], axis=2)
        write_local_video(out.side_by_side(*key), side, record.fps, write_video)
        t_enc = time.perf_counter() - t1
        rec = {
            "video_id": record.video_id,
            "instruction": inst.text,
            "instruction_slug": inst.slug,
            "attributes": inst.attributes.as_dict(),
            "status": "ok",
            "settings": settings,
            **meta,
            "source_video": _resized_source(out, key, frames, record, vp, write_video),
            # The region actually repainted (dilated): evaluate measures background outside it.
            "mask_uri": _write_masks(
                out.item(*key, "repainted_masks.npz"),
                repainted_masks(result.masks, masks[0], ff_config),
            ),
            "item_dir": out.item(*key),
            "edited": out.edited(*key),
            "side_by_side": out.side_by_side(*key),
            "judge": out.judge(*key),
            "first_frame": ff.as_dict(),
            "frames": int(len(result.frames)),
            "fps": record.fps,
            "size": list(result.frames.shape[1:3]),
            "windows": list(result.window_starts),
            "timings_s": {
                "first_frame": round(first[key]["seconds"], 3),
                "propagate": round(t_prop, 3),
                **{f"propagate_{k}": round(v, 3) for k, v in result.timings.items()},
                "encode": round(t_enc, 3),
                "total": round(first[key]["seconds"] + time.perf_counter() - t0, 3),
            },
            "finished_at": reports.now_iso(),
        }
        storage.write_text(out.record(*key), json.dumps(rec, indent=2) + "\n")

    def collect(pending) -> int:
        """Wait for an item's writes; a failure is recorded like any other."""
        if pending is None:
            return 0
        future, record, inst = pending
        try:
            future.result()
            return 1
        except Exception as exc:  # noqa: BLE001
            _fail(failures, record, inst, "writing outputs", exc)
            return 0

    written = 0
    pending = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="edit-writer") as writer:
        for record, inst in tqdm(
            [t for t in todo if (t[0].video_id, t[1].slug) in first],
            desc="propagate",
            unit="item",
        ):
            key = (record.video_id, inst.slug)
            ff = first[key]["result"]
            t0 = time.perf_counter()
            try:
                # Decoded again rather than held: a shard's videos need not fit in memory.
                frames, masks = resize_video(*load_item(vp, record, config.max_frames), size)
                with sdpa_context(config.attention, gpu):  # single use: one per call
                    result = models.painter(
                        frames,
                        masks,
                        inst.prompt_2,
                        ff.best.image,
                        num_inference_steps=config.steps,
                        guidance_scale=config.guidance,
                        conditioning_scale=config.conditioning_scale,
                        mask_dilation=round(config.mask_dilation * size[0] / 480),
                        overlap=config.overlap,
                        id_resample=config.id_resample,
                        prev_clip_weight=config.prev_clip_weight,
                        seed=config.seed,
                    )
                t_prop = time.perf_counter() - t0
            except Exception as exc:  # noqa: BLE001
                if isinstance(exc, torch.cuda.OutOfMemoryError):
                    torch.cuda.empty_cache()
                _fail(failures, record, inst, "propagation", exc)
                continue
            written += collect(pending)
            job = (record, inst, key, frames, masks, result, t0, t_prop)
            pending = (writer.submit(finish, *job), record, inst)
        written += collect(pending)

    summary = {
        "stage": "edit",
        "data_dir": data_dir,
        "output": output_dir,
        **meta,
        "settings": settings,
        "videos": len(records),
        "instructions": [i.text for i in instructions],
        "items": len(records) * len(instructions),
        "skipped_done": len(records) * len(instructions) - len(todo),
        "edited": written,
        "failed": len(failures),
        "failed_by_reason": failures.by_reason(),
        "placement": models.plan.describe() if models else None,
        "timings_s": {**timings.as_dict(), "total": round(time.perf_counter() - started, 3)},
        "finished_at": reports.now_iso(),
    }
    reports.write_reports(
        summary_dir or output_dir, "edit", summary, failures, [root.model_set_label()]
    )
    if summary_dir is None:
        write_manifest(output_dir)
    return summary


def default_output_dir(data_dir: str) -> str:
    """Where edits of a VideoPainter root go unless told: ``<root>__edits`` beside it."""
    return data_dir.rstrip("/") + "__edits"


def write_manifest(output_dir: str) -> list[dict]:
    """manifest.jsonl: one line per finished (video, instruction), from the records."""
    records = EditLayout(output_dir).records()
    keys = ("video_id", "instruction_slug", "status", "settings", "model_set", "edited")
    storage.write_text(
        storage.join(output_dir, "manifest.jsonl"),
        "".join(json.dumps({k: r.get(k) for k in keys}) + "\n" for r in records),
    )
    return records


def merge_edits(output_dir: str, num_shards: int | None = None) -> dict:
    """Combine the shards' summaries and failures and write the manifest (after a fan-out).

    With ``num_shards`` only this run's shards count (an earlier run into the same folder
    may have left more)."""
    records = write_manifest(output_dir)
    shard_root = storage.join(output_dir, "_shards")
    summaries, failures = [], reports.Failures()
    current = None if num_shards is None else {f"shard_{i:04d}" for i in range(num_shards)}
    for uri in storage.list_files(shard_root):
        if current is not None and uri.rsplit("/", 2)[-2] not in current:
            continue
        if uri.endswith("/" + reports.SUMMARY_JSON):
            summaries.append(json.loads(storage.read_text(uri)))
        elif uri.endswith("/" + reports.FAILURES):
            for line in storage.read_text(uri).splitlines():
                if line.strip():
                    rec = json.loads(line)
                    failures.add(rec.pop("item"), rec.pop("reason"), **rec)
    labels = sorted({s.get("model_set_label", "") for s in summaries} - {""})
    summary = {
        "stage": "edit",
        "output": output_dir,
        "shards": len(summaries),
        "items": sum(s["items"] for s in summaries),
        "edited": sum(s["edited"] for s in summaries),
        "skipped_done": sum(s["skipped_done"] for s in summaries),
        "failed": len(failures),
        "records": len(records),
        "model_set_label": "; ".join(labels),
        "finished_at": reports.now_iso(),
    }
    reports.write_reports(output_dir, "edit", summary, failures, labels)
    return summary


def write_local_video(uri: str, frames: np.ndarray, fps: float, write_video) -> None:
    """Encode locally, then publish (gs:// or local) atomically."""
    import tempfile
    from pathlib import Path

    if not storage.is_gcs(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        write_video(uri, frames, fps)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "video.mp4"
        write_video(local, frames, fps)
        storage.upload_file(local, uri)


def _resized_source(out: EditLayout, key, frames, record: VideoRecord, vp, write_video) -> str:
    """The original at the model's size (what evaluate compares against)."""
    if (record.height, record.width) == frames.shape[1:3]:
        return vp.video_for(record)
    uri = out.item(*key, "original.mp4")
    write_local_video(uri, frames, record.fps, write_video)
    return uri


def repainted_masks(
    propagated: np.ndarray, first_mask: np.ndarray, ff_config: FirstFrameConfig
) -> np.ndarray:
    """Per frame, the pixels the edit may change: the propagation's (dilated) masks, and on
    frame 0 FluxFill's dilated mask plus its feathered rim."""
    from lanepaint.data.masks import dilate

    out = np.asarray(propagated).astype(np.uint8).copy()
    out[0] |= dilate(first_mask, ff_config.dilation + ff_config.feather)
    return out


def _write_masks(uri: str, masks: np.ndarray) -> str:
    buf = io.BytesIO()
    np.savez_compressed(buf, arr_0=np.asarray(masks).astype(np.uint8))
    storage.write_bytes(uri, buf.getvalue())
    return uri


def _fail(
    failures: reports.Failures, record: VideoRecord, inst: Instruction, phase: str, exc: Exception
) -> None:
    log.warning("%s / %s: %s failed: %s", record.video_id, inst.slug, phase, exc)
    failures.add(f"{record.video_id}/{inst.slug}", f"{phase}: {type(exc).__name__}: {exc}")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "edit",
        help="repaint lane markings: FluxFill first frame + judge, VideoPainter propagation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", required=True, help="VideoPainter layout (from segment)")
    parser.add_argument(
        "--instruction",
        required=True,
        help="e.g. 'lane single white solid'; several joined by '||'",
    )
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--model-root", required=True)
    parser.add_argument("--lora", default=None, help="FluxFill LoRA folder (train-lora output)")
    parser.add_argument("--lora-scale", type=float, default=1.0)
    parser.add_argument("--no-judge", action="store_true", help="one attempt, no VLM")
    parser.add_argument("--vlm-size", default="7B", choices=("7B", "72B"))
    parser.add_argument("--max-attempts", type=int, default=5)
    parser.add_argument("--first-frame-size", type=int, default=1024)
    parser.add_argument("--first-frame-steps", type=int, default=50)
    parser.add_argument("--steps", type=int, default=50, help="propagation steps")
    parser.add_argument("--guidance", type=float, default=6.0)
    parser.add_argument("--conditioning-scale", type=float, default=1.0)
    parser.add_argument("--mask-dilation", type=int, default=16)
    parser.add_argument("--overlap", type=int, default=5)
    parser.add_argument("--no-id-resample", action="store_true")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--video-ids", nargs="*", default=())
    parser.add_argument("--num-shards", type=int, default=1)
    parser.add_argument("--shard-index", type=int, default=0)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the FluxFill and CogVideoX blocks (CUDA; ~40 s once per run)",
    )
    parser.add_argument(
        "--attention",
        default="auto",
        choices=BACKENDS,
        help="SDPA kernels; auto = cuDNN first on Hopper (measured fastest, docs/performance.md)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.set_defaults(func=_run)


def config_from_args(args: argparse.Namespace) -> EditConfig:
    ff = replace(
        FirstFrameConfig(),
        size=args.first_frame_size,
        steps=args.first_frame_steps,
        max_attempts=args.max_attempts,
        lora_scale=args.lora_scale,
        seed=args.seed,
    )
    return EditConfig(
        instructions=args.instruction,
        first_frame=ff,
        judge=not args.no_judge,
        vlm_size=args.vlm_size,
        lora=args.lora,
        steps=args.steps,
        guidance=args.guidance,
        conditioning_scale=args.conditioning_scale,
        mask_dilation=args.mask_dilation,
        overlap=args.overlap,
        id_resample=not args.no_id_resample,
        max_frames=args.max_frames,
        seed=args.seed,
        compile=args.compile,
        attention=args.attention,
        video_ids=tuple(args.video_ids),
        num_shards=args.num_shards,
        shard_index=args.shard_index,
    )


def _run(args: argparse.Namespace) -> int:
    summary = edit_videos(args.data_dir, args.output_dir, args.model_root, config_from_args(args))
    print(
        f"edited {summary['edited']} of {summary['items']} (video, instruction) items "
        f"({summary['skipped_done']} already done, {summary['failed']} failed) -> "
        f"{args.output_dir}"
    )
    return 0 if summary["failed"] == 0 else 1
