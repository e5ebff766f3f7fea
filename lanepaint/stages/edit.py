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
phase-1 models can be released when memory requires it. A rerun skips every item whose
record carries the same settings key (output settings, model set and the LoRA's content
hash); an item that fails (bad mask, out of memory, ...) is recorded in failures.jsonl and
the batch goes on.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass, field, fields, replace

import numpy as np
from PIL import Image
from tqdm import tqdm

from lanepaint.data.videopainter import VideoPainterLayout, VideoRecord
from lanepaint.edit.first_frame import FirstFrameConfig, FirstFramePainter, FirstFrameResult
from lanepaint.edit.instructions import Instruction, parse_instructions
from lanepaint.edit.layout import EditLayout, EditLedger, item_id
from lanepaint.edit.models import LoraAdapter, Models, fetch_lora, load_models, model_size
from lanepaint.io import reports, storage
from lanepaint.io.images import write_png
from lanepaint.kit import (
    StageReport,
    StageResult,
    WriteBehind,
    from_args,
    output_settings,
    setting,
    settings_key,
)
from lanepaint.kit.cli import register_stage
from lanepaint.models.kernels import BACKENDS, sdpa_context

__all__ = ["EditConfig", "edit_videos", "load_models", "merge_edits"]

log = logging.getLogger(__name__)

STAGE = "edit"
MAX_MASK_COVERAGE = 0.98
REFERENCE_ROWS = 480  # pixel sizes (mask dilation, feathering) are given for 480-row frames

# EditConfig setting -> the FirstFrameConfig field it mirrors.
FIRST_FRAME_FIELDS = {
    "first_frame_size": "size",
    "first_frame_steps": "steps",
    "first_frame_guidance": "guidance",
    "first_frame_dilation": "dilation",
    "first_frame_feather": "feather",
    "max_attempts": "max_attempts",
    "lora_scale": "lora_scale",
    "judge_retries": "judge_retries",
    "judge_backoff_s": "backoff_s",
}


def _first_frame(name: str):
    """A setting mirroring ``FirstFrameConfig.<name>``: default, help and meaning are
    declared there once."""
    f = next(f for f in fields(FirstFrameConfig) if f.name == name)
    return setting(f.default, help=f.metadata["help"], output=f.metadata["output"])


def _ids(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


@dataclass(frozen=True)
class EditConfig:
    """Every setting of the edit stage, declared once (CLI flags, component help and the
    settings key follow from here).

    The first frame's settings are flat fields (``first_frame_size``, ``first_frame_steps``,
    ``first_frame_guidance``, ``first_frame_dilation``, ``first_frame_feather``,
    ``max_attempts``, ``lora_scale``, ``judge_retries``, ``judge_backoff_s``), each mirroring
    a field of :class:`~lanepaint.edit.first_frame.FirstFrameConfig` whose default and help
    it reuses; :attr:`first_frame` builds the painter's config from them (its seed is
    :attr:`seed`). Flat, so that each is one flag and one component parameter. The LoRA is
    an input, like the model root (``--lora``), keyed by its content hash.
    """

    instructions: str = setting(
        "lane single white solid",
        flag="--instruction",
        help="edit instruction(s), e.g. 'lane single white solid'; several joined by '||'. "
        "Selects items (each item is keyed by its instruction)",
        output=False,
    )
    judge: bool = setting(
        True, help="judge each first frame with the VLM and retry on FAIL (off: one attempt)"
    )
    vlm_size: str = setting("7B", choices=("7B", "72B"), help="Qwen2.5-VL size of the judge")
    judge_max_new_tokens: int = setting(128, help="most tokens of a judge answer")
    judge_visual_tokens: int = setting(990, help="visual tokens of the judge's 3-panel image")
    first_frame_size: int = _first_frame("size")
    first_frame_steps: int = _first_frame("steps")
    first_frame_guidance: float = _first_frame("guidance")
    first_frame_dilation: int = _first_frame("dilation")
    first_frame_feather: int = _first_frame("feather")
    max_attempts: int = _first_frame("max_attempts")
    lora_scale: float = _first_frame("lora_scale")
    judge_retries: int = _first_frame("judge_retries")
    judge_backoff_s: float = _first_frame("backoff_s")
    steps: int = setting(50, help="propagation denoising steps (CogVideoX + branch)")
    guidance: float = setting(6.0, help="propagation guidance scale (dynamic CFG)")
    conditioning_scale: float = setting(1.0, help="strength of the VideoPainter branch")
    mask_dilation: int = setting(
        16, help="dilation of the propagation masks, pixels at 480 rows (scaled to the model)"
    )
    overlap: int = setting(5, help="frames shared by consecutive propagation windows")
    id_resample: bool = setting(True, help="target-region ID resampling between windows")
    prev_clip_weight: float = setting(
        1.0, help="weight of the previous window's tokens in ID resampling (0 = off)"
    )
    max_frames: int = setting(0, help="edit the first N frames of each video (0 = all)")
    seed: int = setting(
        42, help="seed of the propagation and of first-frame attempt 0 (attempt k: seed + k)"
    )
    compile: bool = setting(
        True,
        output=False,
        help="regional torch.compile of the FluxFill and CogVideoX blocks; acts on CUDA only "
        "(elsewhere a no-op): ~35 s once per run, then 1.35x (first frame) and 1.30x "
        "(propagation) per video, measured in docs/performance.md",
    )
    attention: str = setting(
        "auto",
        choices=BACKENDS,
        output=False,
        help="SDPA kernels; auto = cuDNN first on Hopper (measured fastest, docs/performance.md)",
    )
    video_ids: tuple[str, ...] = setting(
        (), parse=_ids, output=False, help="edit only these videos, comma-separated (empty = all)"
    )
    num_shards: int = setting(1, output=False, help="split the videos into this many shards")
    shard_index: int = setting(0, output=False, help="the shard this run edits (0-based)")

    def __post_init__(self) -> None:
        parse_instructions(self.instructions)  # ValueError with the reason
        object.__setattr__(self, "video_ids", tuple(self.video_ids))
        self.first_frame  # noqa: B018 - FirstFrameConfig validates its fields
        if self.vlm_size not in ("7B", "72B"):
            raise ValueError(f"vlm size must be 7B or 72B, not {self.vlm_size!r}")
        if self.attention not in BACKENDS:
            raise ValueError(f"attention must be one of {BACKENDS}, not {self.attention!r}")
        for name in ("steps", "judge_max_new_tokens", "judge_visual_tokens", "num_shards"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1")
        for name in ("mask_dilation", "overlap", "max_frames"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', '-')} must be >= 0")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"shard index {self.shard_index} not in [0, {self.num_shards})")

    @property
    def first_frame(self) -> FirstFrameConfig:
        """The first-frame painter's settings (pixel sizes still at 480 rows)."""
        values = {ff: getattr(self, name) for name, ff in FIRST_FRAME_FIELDS.items()}
        return FirstFrameConfig(seed=self.seed, **values)


@dataclass(frozen=True)
class Item:
    """One (video, instruction): the unit the stage records, skips and fails."""

    record: VideoRecord
    instruction: Instruction

    @property
    def key(self) -> tuple[str, str]:
        return self.record.video_id, self.instruction.slug

    @property
    def id(self) -> str:
        return item_id(*self.key)


@dataclass
class EditRun:
    """One run: what to do, where, under which settings key, and its report."""

    config: EditConfig
    source: VideoPainterLayout
    out: EditLayout
    ledger: EditLedger
    report: StageReport
    todo: list[Item]
    identity: dict  # model set and LoRA, carried by every record
    lora: LoraAdapter | None
    device: str = "cpu"  # where the SDPA kernel choice applies
    size: tuple[int, int] = (0, 0)  # the video model's frame size, once models are loaded
    first_frame: FirstFrameConfig = field(default_factory=FirstFrameConfig)  # at that size


def edit_videos(
    data_dir: str,
    output_dir: str,
    model_root: str,
    config: EditConfig | None = None,
    *,
    lora: str = "",
    models: Models | None = None,
    summary_dir: str | None = None,
) -> StageResult:
    """Run the edit stage (see the module doc). The summary goes to ``summary_dir`` (default:
    the output; parallel shards each pass their own and :func:`merge_edits` combines them).
    ``models`` (from :func:`load_models`, with the same ``lora``) skips loading."""
    run = plan_run(data_dir, output_dir, model_root, config or EditConfig(), lora)
    if run.todo:
        models = prepare_models(run, model_root, models)
        firsts = paint_first_frames(run, models)
        models.release_phase_one()
        propagate(run, models, firsts)
    summary = run.report.write(summary_dir or output_dir)
    if summary_dir is None:
        write_manifest(output_dir)
    return StageResult(output_dir, summary)


def plan_run(
    data_dir: str, output_dir: str, model_root: str, config: EditConfig, lora: str
) -> EditRun:
    """The items of this shard, which of them are done under the current settings key, and
    the identity records carry; nothing heavy is loaded (user errors surface here)."""
    from lanepaint.models.device import resolve_device
    from lanepaint.models.root import as_model_root

    instructions = parse_instructions(config.instructions)
    source = VideoPainterLayout(data_dir)
    adapter = fetch_lora(lora) if lora else None
    model_set = as_model_root(model_root).metadata()
    sha = adapter.sha256 if adapter else None
    report = StageReport(STAGE, output_dir)
    report.set_models(model_set)
    report.settings = output_settings(config)
    report.settings_key = settings_key(config, models=model_set, lora_sha256=sha)
    ledger = EditLedger(output_dir, report.settings_key)
    videos = select_videos(source.read_meta(), config)
    items = []
    for record in videos:
        problem = unsafe_record(record)
        for inst in instructions:
            if problem:
                report.fail(Item(record, inst).id, f"bad meta.csv row: {problem}")
            else:
                items.append(Item(record, inst))
    todo, done = ledger.split(items, key=lambda it: it.id)
    report.inputs, report.skipped_done = len(videos) * len(instructions), len(done)
    report.details = {
        "data_dir": data_dir,
        "videos": len(videos),
        "instructions": [i.text for i in instructions],
        "lora": adapter.uri if adapter else None,
        "lora_sha256": sha,
        "placement": None,
    }
    log.info(
        "%d videos x %d instructions; %d done, %d to do",
        len(videos),
        len(instructions),
        len(done),
        len(todo),
    )
    identity = {**model_set, "lora": report.details["lora"], "lora_sha256": sha}
    run = EditRun(config, source, EditLayout(output_dir), ledger, report, todo, identity, adapter)
    run.device = resolve_device("auto")
    return run


def prepare_models(run: EditRun, model_root: str, models: Models | None) -> Models:
    """Load the models unless given (then they must hold the run's LoRA); the first-frame
    settings at the video model's frame size."""
    if models is None:
        with run.report.phase("load_models"):
            models = load_models(model_root, run.config, run.lora)
            models.owned = True
    elif _sha(models.lora) != _sha(run.lora):
        raise ValueError("the models given were loaded with another LoRA than this run's")
    run.size = model_size(models.painter)
    scale = run.size[0] / REFERENCE_ROWS
    ff = run.config.first_frame
    run.first_frame = replace(
        ff, dilation=round(ff.dilation * scale), feather=round(ff.feather * scale)
    )
    run.report.details["placement"] = models.plan.describe().splitlines()
    return models


def _sha(adapter: LoraAdapter | None) -> str | None:
    return adapter.sha256 if adapter else None


def paint_first_frames(run: EditRun, models: Models) -> dict[str, tuple[FirstFrameResult, float]]:
    """Phase 1, FluxFill + judge for every item: item id -> (result, seconds). An item's
    old record is withdrawn first (it must not vouch for the files rewritten here); its
    attempts and verdicts are written as soon as it is painted."""
    painter = FirstFramePainter(models.flux, models.judge, run.first_frame)
    firsts: dict[str, tuple[FirstFrameResult, float]] = {}
    frame0: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # frame 0 and its mask per video
    with run.report.phase("first_frames"):
        for item in tqdm(run.todo, desc="first frames", unit="item"):
            t0 = time.perf_counter()
            run.ledger.withdraw(item.id)
            try:
                video_id = item.record.video_id
                if video_id not in frame0:
                    frames, masks = load_resized(run, item.record)
                    frame0[video_id] = (frames[0], masks[0])
                with sdpa_context(run.config.attention, run.device):  # single use: one per call
                    result = painter.run(*frame0[video_id], item.instruction)
                write_first_frame(run.out, item, result)
                firsts[item.id] = (result, time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - recorded; the batch goes on
                _fail(run.report, item, "first frame", exc)
    return firsts


def write_first_frame(out: EditLayout, item: Item, result: FirstFrameResult) -> None:
    """Every attempt, the best one, and the judge's verdicts."""
    for attempt in result.attempts:
        write_png(out.attempt(*item.key, attempt.index), attempt.image)
    write_png(out.attempt(*item.key, "best.png"), result.best.image)
    judge_doc = {"instruction": item.instruction.text, **result.as_dict()}
    storage.write_text(out.judge(*item.key), json.dumps(judge_doc, indent=2) + "\n")


def propagate(
    run: EditRun, models: Models, firsts: dict[str, tuple[FirstFrameResult, float]]
) -> None:
    """Phase 2, CogVideoX + branch from each edited first frame. An item's outputs and
    record are written on a thread while the GPU propagates the next item (two items'
    frames in memory at most); a failed write loses only that item."""
    cfg = run.config
    scale = run.size[0] / REFERENCE_ROWS
    options = {
        "num_inference_steps": cfg.steps,
        "guidance_scale": cfg.guidance,
        "conditioning_scale": cfg.conditioning_scale,
        "mask_dilation": round(cfg.mask_dilation * scale),
        "overlap": cfg.overlap,
        "id_resample": cfg.id_resample,
        "prev_clip_weight": cfg.prev_clip_weight,
        "seed": cfg.seed,
    }
    writer = WriteBehind(
        on_done=lambda item, _: _count_done(run.report),
        on_error=lambda item, exc: _fail(run.report, item, "writing outputs", exc),
        name="edit-writer",
    )
    with run.report.phase("propagate"), writer:
        for item in tqdm([i for i in run.todo if i.id in firsts], desc="propagate", unit="item"):
            first, t0 = firsts[item.id], time.perf_counter()
            try:
                # Decoded again rather than held: a shard's videos need not fit in memory.
                frames, masks = load_resized(run, item.record)
                with sdpa_context(cfg.attention, run.device):  # single use: one per call
                    result = models.painter(
                        frames, masks, item.instruction.prompt_2, first[0].best.image, **options
                    )
                t_prop = time.perf_counter() - t0
            except Exception as exc:  # noqa: BLE001 - recorded; the batch goes on
                from lanepaint.models.device import free_gpu_memory

                free_gpu_memory()
                _fail(run.report, item, "propagation", exc)
                continue
            writer.submit(item, write_item, run, item, frames, masks, result, first, t0, t_prop)


def _count_done(report: StageReport) -> None:
    report.done += 1


def write_item(run: EditRun, item: Item, frames, masks, result, first, t0, t_prop) -> dict:
    """An item's videos, its source at the model's size and the repainted masks; its record
    last (the item's commit point)."""
    from lanepaint.io.video import write_video

    ff, ff_seconds = first
    out, key, fps = run.out, item.key, item.record.fps
    t1 = time.perf_counter()
    write_local_video(out.edited(*key), result.frames, fps, write_video)
    side = np.concatenate([frames, result.frames], axis=2)
    write_local_video(out.side_by_side(*key), side, fps, write_video)
    t_enc = time.perf_counter() - t1
    record = {
        "video_id": item.record.video_id,
        "instruction": item.instruction.text,
        "instruction_slug": item.instruction.slug,
        "attributes": item.instruction.attributes.as_dict(),
        **run.identity,
        "source_video": _resized_source(out, key, frames, item.record, run.source, write_video),
        # The region actually repainted (dilated): evaluate measures background outside it.
        "mask_uri": _write_masks(
            out.item(*key, "repainted_masks.npz"),
            repainted_masks(result.masks, masks[0], run.first_frame),
        ),
        "item_dir": out.item(*key),
        "edited": out.edited(*key),
        "side_by_side": out.side_by_side(*key),
        "judge": out.judge(*key),
        "first_frame": ff.as_dict(),
        "frames": int(len(result.frames)),
        "fps": fps,
        "size": list(result.frames.shape[1:3]),
        "windows": list(result.window_starts),
        "timings_s": {
            "first_frame": round(ff_seconds, 3),
            "propagate": round(t_prop, 3),
            **{f"propagate_{k}": round(v, 3) for k, v in result.timings.items()},
            "encode": round(t_enc, 3),
            "total": round(ff_seconds + time.perf_counter() - t0, 3),
        },
    }
    return run.ledger.commit(item.id, record)


def select_videos(records: list[VideoRecord], config: EditConfig) -> list[VideoRecord]:
    """This shard's videos (of ``video_ids`` when given), in video-id order."""
    from lanepaint.data.sources import shard

    if config.video_ids:
        wanted = set(config.video_ids)
        records = [r for r in records if r.video_id in wanted]
    return shard(sorted(records, key=lambda r: r.video_id), config.num_shards)[config.shard_index]


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


def load_resized(run: EditRun, record: VideoRecord) -> tuple[np.ndarray, np.ndarray]:
    """Frames and masks of one video, checked, at the video model's size."""
    return resize_video(*load_item(run.source, record, run.config.max_frames), run.size)


def load_item(layout: VideoPainterLayout, record: VideoRecord, max_frames: int = 0):
    """Frames and masks of one video (the first ``max_frames``; 0 = all), checked: a mask
    per frame, not empty, not everything."""
    from lanepaint.io.video import read_frames

    with storage.local_path(layout.video_for(record)) as path:
        frames = read_frames(path, max_frames=max_frames or None)
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


def default_output_dir(data_dir: str) -> str:
    """Where edits of a VideoPainter root go unless told: ``<root>__edits`` beside it."""
    return data_dir.rstrip("/") + "__edits"


def write_manifest(output_dir: str) -> list[dict]:
    """manifest.jsonl: one line per finished (video, instruction), from the records."""
    records = EditLayout(output_dir).records()
    keys = ("video_id", "instruction_slug", "status", "settings_key", "model_set", "edited")
    storage.write_text(
        storage.join(output_dir, "manifest.jsonl"),
        "".join(json.dumps({k: r.get(k) for k in keys}) + "\n" for r in records),
    )
    return records


def merge_edits(output_dir: str, num_shards: int = 0) -> StageResult:
    """Combine the shards' summaries and failures and write the manifest (after a fan-out).

    With ``num_shards`` (0 = every shard folder) only this run's shards count: an earlier
    run into the same folder may have left more."""
    records = write_manifest(output_dir)
    report = StageReport(STAGE, output_dir)
    current = {f"shard_{i:04d}" for i in range(num_shards)} if num_shards else None
    summaries = []
    for uri in storage.list_files(storage.join(output_dir, "_shards")):
        if current is not None and uri.rsplit("/", 2)[-2] not in current:
            continue
        if uri.endswith("/" + reports.SUMMARY_JSON):
            summaries.append(json.loads(storage.read_text(uri)))
        elif uri.endswith("/" + reports.FAILURES):
            for line in storage.read_text(uri).splitlines():
                if line.strip():
                    rec = json.loads(line)
                    report.fail(rec.pop("item"), rec.pop("reason"), **rec)
    for key in ("inputs", "done", "skipped_done"):
        setattr(report, key, sum(s[key] for s in summaries))
    if summaries:
        report.settings_key = summaries[0]["settings_key"]
        report.settings = summaries[0]["settings"]
        report.model_set = "; ".join(sorted({s["model_set"] or "" for s in summaries} - {""}))
        labels = {s["model_set_label"] or "" for s in summaries} - {""}
        report.model_set_label = "; ".join(sorted(labels)) or None
    report.details = {"shards": len(summaries), "records": len(records)}
    return StageResult(output_dir, report.write())


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


def _fail(report: StageReport, item: Item, phase: str, exc: Exception) -> None:
    log.warning("%s: %s failed: %s", item.id, phase, exc)
    report.fail(item.id, f"{phase}: {type(exc).__name__}: {exc}")


# --- CLI ------------------------------------------------------------------------------


def register(subparsers) -> None:
    register_stage(
        subparsers,
        STAGE,
        "repaint lane markings: FluxFill first frame + judge, VideoPainter propagation",
        __doc__,
        EditConfig,
        _add_io,
        _run,
    )


def _add_io(parser) -> None:
    parser.add_argument("--data-dir", required=True, help="VideoPainter layout (from segment)")
    parser.add_argument("--output-dir", required=True, help="where the edits go")
    parser.add_argument("--model-root", required=True, help="model root (path or gs://)")
    parser.add_argument(
        "--lora",
        default="",
        help="FluxFill LoRA folder (train-lora output, path or gs://); a rerun is keyed by "
        "the adapter file's SHA-256, not its path",
    )


def _run(args) -> int:
    config = from_args(EditConfig, args)
    result = edit_videos(args.data_dir, args.output_dir, args.model_root, config, lora=args.lora)
    s = result.summary
    print(
        f"edited {s['done']} of {s['inputs']} (video, instruction) items "
        f"({s['skipped_done']} already done, {s['failed']} failed) -> {args.output_dir}"
    )
    return 0 if s["failed"] == 0 else 1
