"""Stage edit: repaint the lane markings of videos, one or more instructions per video.

Input is a VideoPainter layout (what segment writes). For each video and instruction:
1. first frame — FluxFill (+ optional LoRA) paints the dilated, feathered road mask of frame
   0 from the instruction's caption, on a crop around it at the source's resolution; the
   Qwen2.5-VL judge checks it (3-panel image) and on FAIL the caption is revised and
   FluxFill retried (at most 5 attempts, best kept);
2. propagation — CogVideoX-5B-I2V with the VideoPainter branch carries the edited first
   frame through the video (49-frame windows, overlapping, with ID resampling), on a view of
   the source made by the ``geometry`` setting (lanepaint.edit.geometry), and its output is
   composited back into the source's own frames inside the dilated, feathered road mask
   (lanepaint.edit.composite): the edit has the source's size and every other pixel;
3. outputs — edited video, side-by-side video, repainted masks, every first-frame attempt,
   the judge's verdicts and a record with settings, geometry, model versions and timings
   (lanepaint.edit.layout).

Models are loaded once per run and placed by the placement plan; all first frames are
painted (phase 1: FluxFill + judge) before any video is propagated (phase 2: CogVideoX), so
phase-1 models can be released when memory requires it. With ``parallel_items`` > 1 the
items run in worker processes instead, one per GPU, each this stage's CLI on a share of the
videos (lanepaint.edit.workers), and their reports are merged into this run's. A rerun
skips every item whose record carries the same settings key (output settings, model set
and the LoRA's content hash); an item that fails (bad mask, out of memory, ...) is recorded
in failures.jsonl and the batch goes on. Bad input (layout, meta.csv, instruction, LoRA)
stops the run before anything is written or loaded; the output is claimed and locked (a
shard locks its own).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
from tqdm import tqdm

from lanepaint.data.videopainter import VideoPainterLayout, VideoRecord
from lanepaint.edit import outputs, workers
from lanepaint.edit.composite import Repaint, composite_video, scaled_first_frame, view_inputs
from lanepaint.edit.first_frame import (
    FirstFrameConfig,
    FirstFramePainter,
    FirstFrameResult,
    mirrored_setting,
)
from lanepaint.edit.geometry import MODES
from lanepaint.edit.inputs import (
    EditInputs,
    Item,
    check_inputs,
    load_item,
    make_items,
    parse_ids,
    select_videos,
)
from lanepaint.edit.instructions import parse_instructions
from lanepaint.edit.layout import EditLayout, EditLedger, default_output_dir
from lanepaint.edit.models import LoraAdapter, Models, load_models, model_size
from lanepaint.kit import (
    StageReport,
    StageResult,
    WriteBehind,
    check_apart,
    check_finite,
    from_args,
    guard_output,
    output_settings,
    require_input,
    setting,
    settings_key,
    to_argv,
)
from lanepaint.kit.cli import register_stage
from lanepaint.kit.lock import output_lock
from lanepaint.models.device import gpu_count
from lanepaint.models.kernels import BACKENDS, sdpa_context
from lanepaint.models.presets import PRESETS
from lanepaint.models.presets import check_supported as check_preset
from lanepaint.models.presets import parse as parse_preset
from lanepaint.videopainter.modes import DEFAULT_MODE, MODE_NAMES

# default_output_dir: still imported from here by pipeline specs compiled before it moved.
__all__ = ["EditConfig", "default_output_dir", "edit_videos", "load_models", "merge_edits"]

log = logging.getLogger(__name__)

STAGE = "edit"
MERGE_WAIT_S = 600.0  # a merge (or a shard claiming the output) waits for the one before

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
    first_frame_size: int = mirrored_setting("size")
    first_frame_steps: int = mirrored_setting("steps")
    first_frame_guidance: float = mirrored_setting("guidance")
    first_frame_dilation: int = mirrored_setting("dilation")
    first_frame_feather: int = mirrored_setting("feather")
    max_attempts: int = mirrored_setting("max_attempts")
    lora_scale: float = mirrored_setting("lora_scale")
    judge_retries: int = mirrored_setting("judge_retries")
    judge_backoff_s: float = mirrored_setting("backoff_s")
    steps: int = setting(50, help="propagation denoising steps (CogVideoX + branch)")
    guidance: float = setting(6.0, help="propagation guidance scale (dynamic CFG)")
    conditioning_scale: float = setting(1.0, help="strength of the VideoPainter branch")
    mask_dilation: int = setting(
        16,
        help="dilation of the propagation masks: a kernel this many pixels wide at 480 rows "
        "(half on each side; scaled with the source's height)",
    )
    mask_feather: int = setting(
        8,
        help="width of the feathered rim that blends the propagated region into the source's "
        "frames, pixels at 480 rows (scaled with the source's height)",
    )
    geometry: str = setting(
        "fit",
        choices=MODES,
        help="how the video model's view is made from the source: fit (whole frame, one "
        "scale, padded: lane geometry undistorted), crop (around the road, one scale) or "
        "stretch (resized to the model's aspect, VideoPainter's own; distorts 16:9 footage)",
    )
    overlap: int = setting(5, help="frames shared by consecutive propagation windows")
    id_resample: bool = setting(True, help="target-region ID resampling between windows")
    prev_clip_weight: float = setting(
        1.0, help="weight of the previous window's tokens in ID resampling (0 = off)"
    )
    propagation: str = setting(
        DEFAULT_MODE,
        choices=MODE_NAMES,
        help="how propagation holds the known region: reference = as the released "
        "VideoPainter (replacement noise = the initial noise, known video with the mask "
        "blacked out, only frame 0 kept); lanepaint = our earlier variant "
        "(docs/videopainter.md)",
    )
    max_frames: int = setting(0, help="edit the first N frames of each video (0 = all)")
    seed: int = setting(
        42, help="seed of the propagation and of first-frame attempt 0 (attempt k: seed + k)"
    )
    preset: str = setting(
        "exact",
        choices=PRESETS,
        help="speed preset: exact (bf16), fp8 (torchao float8, CUDA compute capability >= 8.9), "
        "cache (diffusers TaylorSeer-lite step cache) or fp8+cache; not bit-exact, so part of "
        "the settings key. Measured on an H100, first frame / propagation: exact 6.95 / 77.8 "
        "s, cache 3.58 / 42.2 s, fp8+cache 2.80 / 37.3 s (drift in docs/performance.md)",
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
        (),
        parse=parse_ids,
        output=False,
        help="edit only these videos, comma-separated (empty = all)",
    )
    num_shards: int = setting(1, output=False, help="split the videos into this many shards")
    shard_index: int = setting(0, output=False, help="the shard this run edits (0-based)")
    parallel_items: int = setting(
        1,
        output=False,
        help="items edited at once, one worker process per GPU, each with its own models and "
        "a share of the videos (0 = one per visible GPU; 1 = this process alone; without a "
        "GPU the workers share the CPU); outputs as one process's (docs/performance.md)",
    )

    def __post_init__(self) -> None:
        check_finite(self)  # nan/inf, however the Config is built
        parse_instructions(self.instructions)  # ValueError with the reason
        object.__setattr__(self, "video_ids", tuple(self.video_ids))
        self.first_frame  # noqa: B018 - FirstFrameConfig validates its fields
        if self.vlm_size not in ("7B", "72B"):
            raise ValueError(f"vlm size must be 7B or 72B, not {self.vlm_size!r}")
        parse_preset(self.preset)  # ValueError naming the presets
        if self.propagation not in MODE_NAMES:
            raise ValueError(f"propagation must be one of {MODE_NAMES}, not {self.propagation!r}")
        if self.attention not in BACKENDS:
            raise ValueError(f"attention must be one of {BACKENDS}, not {self.attention!r}")
        for name in ("steps", "judge_max_new_tokens", "judge_visual_tokens", "num_shards"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1")
        if self.geometry not in MODES:
            raise ValueError(f"geometry must be one of {', '.join(MODES)}, not {self.geometry!r}")
        for name in (
            "mask_dilation",
            "mask_feather",
            "overlap",
            "max_frames",
            "seed",
            "judge_backoff_s",
            "parallel_items",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', '-')} must be >= 0")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"shard index {self.shard_index} not in [0, {self.num_shards})")

    @property
    def first_frame(self) -> FirstFrameConfig:
        """The first-frame painter's settings (pixel sizes still at 480 rows)."""
        values = {ff: getattr(self, name) for name, ff in FIRST_FRAME_FIELDS.items()}
        return FirstFrameConfig(seed=self.seed, **values)


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
    first_frame: FirstFrameConfig = field(default_factory=FirstFrameConfig)  # at 480 rows


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
    ``models`` (from :func:`load_models`, with the same ``lora``) skips loading.

    Every input is checked, and the output is refused when it lies inside or around one,
    before anything is written or loaded."""
    config = config or EditConfig()
    check_apart([data_dir, model_root, lora], [output_dir, summary_dir])
    check_preset(config.preset)  # FP8 on a machine that cannot run it: before anything loads
    inputs = check_inputs(data_dir, model_root, lora, config.vlm_size if config.judge else None)
    gpus = gpu_count()
    workers.worker_count(config.parallel_items, gpus, 1)  # too many for the GPUs: refused now
    with hold_output(output_dir, summary_dir):
        run = plan_run(inputs, output_dir, config)
        videos = len({item.record.video_id for item in run.todo})
        n = workers.worker_count(config.parallel_items, gpus, videos)
        if run.todo and n > 1 and models is None:
            io = {"data_dir": data_dir, "model_root": model_root, "lora": lora}
            edit_in_workers(run, io, n, gpus, summary_dir or output_dir)
        elif run.todo:
            models = prepare_models(run, model_root, models)
            firsts = paint_first_frames(run, models)
            models.release_phase_one()
            propagate(run, models, firsts)
        summary = run.report.write(summary_dir or output_dir)
        if summary_dir is None:
            outputs.write_manifest(output_dir)
    return StageResult(output_dir, summary)


def edit_in_workers(run: EditRun, io: dict, n: int, gpus: int, summary_root: str) -> None:
    """The run's items in ``n`` worker processes, one per GPU (lanepaint.edit.workers): each
    is this stage's CLI on the same output with its share of the videos and a summary folder
    of its own; their counts and failures become this run's, then their folders go."""
    crew = workers.plan_workers(run.todo, n, gpus, summary_root)
    output_dir = run.out.root

    def command(w: workers.Worker) -> list[str]:
        config = replace(
            run.config, parallel_items=1, num_shards=1, shard_index=0, video_ids=w.video_ids
        )
        paths = ["--data-dir", io["data_dir"], "--output-dir", output_dir]
        paths += ["--model-root", io["model_root"], "--lora", io["lora"] or ""]
        argv = [*paths, *to_argv(config), "--summary-dir", w.summary_dir]
        return [sys.executable, "-m", "lanepaint.cli", STAGE, *argv]

    with run.report.phase("workers"):
        workers.run_all(crew, command)

    def committed() -> set[str]:
        return set(EditLedger(output_dir, run.report.settings_key).current())

    lines = workers.collect(run.report, crew, committed)
    run.report.details["workers"] = lines
    run.report.details["placement"] = [
        f"worker {line['worker']} ({line['device']}): {p}"
        for line in lines
        for p in line.get("placement") or []
    ]
    workers.remove_worker_dirs(crew)


@contextlib.contextmanager
def hold_output(output_dir: str, summary_dir: str | None) -> Iterator[None]:
    """Claim the output and hold its lock for the run. A shard (its own ``summary_dir``:
    the shards of one output run in parallel, on disjoint videos) locks only its summary
    folder, after claiming the output folder under that folder's lock, one shard at a time."""
    if summary_dir is None:
        with guard_output(STAGE, output_dir):
            yield
        return
    with guard_output(STAGE, output_dir, wait_s=MERGE_WAIT_S):
        pass
    with output_lock(STAGE, summary_dir):
        yield


def plan_run(inputs: EditInputs, output_dir: str, config: EditConfig) -> EditRun:
    """The items of this shard, which of them are done under the current settings key, and
    the identity records carry; nothing heavy is loaded."""
    from lanepaint.models.device import resolve_device

    instructions = parse_instructions(config.instructions)
    adapter, model_set = inputs.lora, inputs.model_set
    sha = _sha(adapter)
    report = StageReport(STAGE, output_dir)
    report.set_models(model_set)
    report.settings = output_settings(config)
    report.settings_key = settings_key(config, models=model_set, lora_sha256=sha)
    ledger = EditLedger(output_dir, report.settings_key)
    videos = select_videos(inputs.videos, config)
    items, unsafe = make_items(videos, instructions)
    for item, problem in unsafe:
        report.fail(item.id, f"bad meta.csv row: {problem}")
    todo, done = ledger.split(items, key=lambda it: it.id)
    report.inputs, report.skipped_done = len(videos) * len(instructions), len(done)
    report.details = {
        "data_dir": inputs.source.root,
        "videos": len(videos),
        "instructions": [i.text for i in instructions],
        "lora": adapter.uri if adapter else None,
        "lora_sha256": sha,
        "placement": None,
    }
    counts = (len(videos), len(instructions), len(done), len(todo))
    log.info("%d videos x %d instructions; %d done, %d to do", *counts)
    report.details["speed_preset"] = config.preset
    identity = {**model_set, "lora": report.details["lora"], "lora_sha256": sha}
    identity["speed_preset"] = config.preset
    out = EditLayout(output_dir)
    run = EditRun(config, inputs.source, out, ledger, report, todo, identity, adapter)
    run.device = resolve_device("auto")
    return run


def prepare_models(run: EditRun, model_root: str, models: Models | None) -> Models:
    """Load the models unless given (then they must hold the run's LoRA) and note the video
    model's frame size."""
    if models is None:
        with run.report.phase("load_models"):
            models = load_models(model_root, run.config, run.lora)
            models.owned = True
    elif _sha(models.lora) != _sha(run.lora):
        raise ValueError("the models given were loaded with another LoRA than this run's")
    elif models.preset != run.config.preset:
        raise ValueError(f"the models given were loaded with speed preset {models.preset!r}")
    run.size = model_size(models.painter)
    run.first_frame = run.config.first_frame
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
                if video_id not in frame0:  # frame 0 alone: full-resolution videos are large
                    frames, masks = load_item(run.source, item.record, max_frames=1)
                    frame0[video_id] = (frames[0], masks[0])
                # Pixel sizes at the source's own resolution (given at 480 rows).
                painter.config = scaled_first_frame(run.first_frame, frame0[video_id][0].shape[0])
                with sdpa_context(run.config.attention, run.device):  # single use: one per call
                    result = painter.run(*frame0[video_id], item.instruction)
                outputs.write_first_frame(run.out, item, result)
                firsts[item.id] = (result, time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - recorded; the batch goes on
                _fail(run.report, item, "first frame", exc)
    return firsts


def propagate(
    run: EditRun, models: Models, firsts: dict[str, tuple[FirstFrameResult, float]]
) -> None:
    """Phase 2, CogVideoX + branch from each edited first frame. An item's outputs and
    record are written on a thread while the GPU propagates the next item (two items'
    frames in memory at most); a failed write loses only that item."""
    cfg = run.config
    options = {
        "num_inference_steps": cfg.steps,
        "guidance_scale": cfg.guidance,
        "conditioning_scale": cfg.conditioning_scale,
        "overlap": cfg.overlap,
        "id_resample": cfg.id_resample,
        "prev_clip_weight": cfg.prev_clip_weight,
        "mode": cfg.propagation,
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
                frames, masks = load_source(run, item.record)
                view = source_view(run, frames, masks, first[0].best.image)
                with sdpa_context(cfg.attention, run.device):  # single use: one per call
                    result = models.painter(
                        view.frames,
                        view.masks,
                        item.instruction.prompt_2,
                        view.first_frame,
                        mask_dilation=view.dilation,  # covers the composite's region
                        **options,
                    )
                t_prop = time.perf_counter() - t0
            except Exception as exc:  # noqa: BLE001 - recorded; the batch goes on
                from lanepaint.models.device import free_gpu_memory

                free_gpu_memory()
                _fail(run.report, item, "propagation", exc)
                continue
            source = (frames, masks, view)
            writer.submit(item, write_item, run, item, source, result, first, t0, t_prop)


def _count_done(report: StageReport) -> None:
    report.done += 1


def source_view(run: EditRun, frames: np.ndarray, masks: np.ndarray, first: np.ndarray):
    """The video model's inputs in its view of this source (the run's geometry setting)."""
    cfg = run.config
    repaint = Repaint.for_rows(cfg.mask_dilation, cfg.mask_feather, frames.shape[1])
    return view_inputs(cfg.geometry, run.size, frames, masks, first, repaint)


def write_item(run: EditRun, item: Item, source, result, first, t0, t_prop) -> dict:
    """The model's output composited into the source's frames at their size (``source``:
    frames, masks and view inputs), the videos and the repainted masks; the record last
    (the item's commit point)."""
    (frames, masks, view), (ff, ff_seconds) = source, first
    t1 = time.perf_counter()
    edited = composite_video(
        frames, result.frames, masks, ff.best.image, view.geometry, view.repaint
    )
    t_composite = time.perf_counter() - t1
    ff_config = scaled_first_frame(run.first_frame, frames.shape[1])
    files, t_enc = outputs.write_item_files(
        run.out,
        run.source,
        item,
        frames,
        edited,
        outputs.repainted_masks(view, masks[0], ff_config),
    )
    timings = {
        "first_frame": ff_seconds,
        "propagate": t_prop,
        **{f"propagate_{k}": v for k, v in result.timings.items()},
        "composite": t_composite,
        "encode": t_enc,
        "total": ff_seconds + time.perf_counter() - t0,
    }
    record = outputs.item_record(item, run.identity, files, ff, result, timings)
    record.update(size=list(edited.shape[1:3]), geometry=view.geometry.as_dict())
    return run.ledger.commit(item.id, record)


def load_source(run: EditRun, record: VideoRecord) -> tuple[np.ndarray, np.ndarray]:
    """Frames and masks of one video, checked, at the source's own size."""
    return load_item(run.source, record, run.config.max_frames)


def merge_edits(output_dir: str, num_shards: int = 0) -> StageResult:
    """Combine the shards' summaries and failures and write the manifest (after a fan-out).

    With ``num_shards`` (0 = every shard folder) only this run's shards count: an earlier
    run into the same folder may have left more. Merges of one output wait for each other
    (shards that finish together may each merge)."""
    require_input(output_dir, "edit output (the shards' folder)")
    with guard_output(STAGE, output_dir, wait_s=MERGE_WAIT_S):
        records = outputs.write_manifest(output_dir)
        report = StageReport(STAGE, output_dir)
        shards = outputs.add_shards(report, output_dir, num_shards)
        report.details = {"shards": shards, "records": len(records)}
        return StageResult(output_dir, report.write())


def _fail(report: StageReport, item: Item, phase: str, exc: Exception) -> None:
    log.warning("%s: %s failed: %s", item.id, phase, exc)
    report.fail(item.id, f"{phase}: {type(exc).__name__}: {exc}")


# --- CLI ------------------------------------------------------------------------------


def register(subparsers) -> None:
    register_stage(subparsers, STAGE, __doc__, EditConfig, _add_io, _run)


def _add_io(parser) -> None:
    parser.add_argument("--data-dir", required=True, help="VideoPainter layout (from segment)")
    parser.add_argument("--output-dir", required=True, help="where the edits go")
    parser.add_argument("--model-root", required=True, help="model root (path or gs://)")
    # A worker of a parallel run (lanepaint.edit.workers) or a shard: its own summary folder.
    parser.add_argument("--summary-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--lora",
        default="",
        help="FluxFill LoRA folder (train-lora output, path or gs://); a rerun is keyed by "
        "the adapter file's SHA-256, not its path",
    )


def _run(args) -> int:
    config = from_args(EditConfig, args)
    result = edit_videos(
        args.data_dir,
        args.output_dir,
        args.model_root,
        config,
        lora=args.lora,
        summary_dir=args.summary_dir,
    )
    s = result.summary
    print(
        f"edited {s['done']} of {s['inputs']} (video, instruction) items "
        f"({s['skipped_done']} already done, {s['failed']} failed, speed preset "
        f"{config.preset}) -> {args.output_dir}"
    )
    return result.exit_code  # like every stage: 1 only when every item failed
