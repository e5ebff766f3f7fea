"""Stage caption: lane attributes of road images from Qwen2.5-VL, cross-checked.

Each image gets the VLM's answer parsed into the lane vocabulary (``unknown`` where the
answer says nothing usable) and, unless disabled, the weights-free lane analyzer's reading
of the same image; rows where both are sure and disagree are flagged. Output is one JSON
line per image (each image once, however often it is named); a rerun skips images already
in the output and keeps the earlier failures in the failures file. Beside the output go
``<stem>.summary.json``, ``<stem>.summary.md``, ``<stem>.failures.jsonl`` and the marker
``.<name>.lanepaint.json`` (only an output with this marker is written to).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from lanepaint.data.sources import expand_images
from lanepaint.io import reports, storage
from lanepaint.io.images import try_read_rgb
from lanepaint.kit import (
    StageReport,
    StageResult,
    check_apart,
    check_finite,
    from_args,
    guard_output,
    output_settings,
    require_input,
    setting,
    settings_key,
)
from lanepaint.kit.cli import register_stage
from lanepaint.models.device import DEVICE_HELP
from lanepaint.vlm import caption as vlm_caption
from lanepaint.vlm.caption import caption_counts, output_stem, read_records, save_records

log = logging.getLogger(__name__)

STAGE = "caption"
VLM_SIZES = ("7B", "72B")
CHECKPOINT_S = 30.0
BATCHES_PER_CALL = 4
READ_WORKERS = 8


@dataclass(frozen=True)
class CaptionConfig:
    vlm_size: str = setting("7B", help="Qwen2.5-VL size", choices=VLM_SIZES)
    batch_size: int = setting(
        32, help="images per VLM batch (~35 GiB for the 7B at 1280x720)", output=False
    )
    max_new_tokens: int = setting(vlm_caption.MAX_NEW_TOKENS, help="longest VLM answer, in tokens")
    analyzer_check: bool = setting(True, help="cross-check every caption with the lane analyzer")
    max_pixels: int = setting(
        vlm_caption.MAX_PIXELS,
        help="pixel budget per image for the VLM (28x28 pixels = one token; 0 = the "
        "processor's default)",
    )
    device: str = setting("auto", help=DEVICE_HELP + " (auto: the last GPU)", output=False)

    def __post_init__(self) -> None:
        check_finite(self)  # nan/inf, however the Config is built
        if self.vlm_size not in VLM_SIZES:
            raise ValueError(f"vlm size must be one of {VLM_SIZES}")
        if self.batch_size < 1:
            raise ValueError("batch size must be >= 1")
        if self.max_new_tokens < 1:
            raise ValueError("max new tokens must be >= 1")
        if self.max_pixels < 0:
            raise ValueError("max pixels must be >= 0 (0 = the processor's default)")


def caption_images(
    images: Sequence[str],
    output: str,
    model_root: str,
    config: CaptionConfig | None = None,
    captioner=None,
) -> StageResult:
    """Caption every image into ``output`` (JSONL); see the module doc.

    ``captioner`` may be passed in by a caller that already holds the model loaded."""
    config = config or CaptionConfig()
    folder, stem = output_stem(output)
    summary = storage.join(folder, f"{stem}.{reports.SUMMARY_JSON}")
    check_apart([*images, model_root], [output])
    uris = expand_images(images)
    if captioner is None:  # before the output is claimed
        require_input(model_root, "model root (--model-root)")
    with guard_output(STAGE, output, file=True, summary=summary):
        return _caption(uris, output, model_root, config, captioner)


def _caption(
    images: list[str], output: str, model_root: str, config: CaptionConfig, captioner
) -> StageResult:
    """The run itself, with the output locked and claimed (see :func:`caption_images`)."""
    from lanepaint.models.root import as_model_root

    models = as_model_root(model_root).metadata()
    report = StageReport(STAGE, output)
    report.set_models(models)
    report.settings = output_settings(config)
    report.settings_key = settings_key(
        config, model_set=models["model_set"], model_root=models["model_root"]
    )
    records = read_records(output)
    captioned = {r["image"] for r in records}
    todo = [i for i in images if i not in captioned]
    report.inputs, report.skipped_done = len(images), len(images) - len(todo)
    log.info(
        "%d images, %d already captioned, %d to do", len(images), report.skipped_done, len(todo)
    )
    if todo and captioner is None:
        with report.phase("load_model"):
            captioner = vlm_caption.load_captioner(
                model_root,
                vlm_size=config.vlm_size,
                batch_size=config.batch_size,
                device=config.device,
                max_new_tokens=config.max_new_tokens,
                max_pixels=config.max_pixels,
            )
    caption_all(todo, records, output, captioner, config, report)
    report.done = len(todo) - len(report.failures)
    folder, stem = output_stem(output)
    ok = {r["image"] for r in records if "error" not in r}
    earlier = report.keep_earlier_failures(
        storage.join(folder, f"{stem}.{reports.FAILURES}"), lambda item: item not in ok
    )
    report.details = {**caption_counts(records), "earlier_failures": earlier}
    return StageResult(output, report.write(folder, stem=stem))


def caption_all(
    todo: list[str],
    records: list[dict],
    output: str,
    captioner,
    config: CaptionConfig,
    report: StageReport,
) -> None:
    """Read, caption and append ``todo`` in chunks of several VLM batches (the generator
    prepares the next batch on a CPU thread while the GPU generates this one), saving the
    output as it goes."""
    chunk = config.batch_size * BATCHES_PER_CALL
    bar = tqdm(total=len(todo), desc="caption", unit="img")
    last_save = time.perf_counter()
    with ThreadPoolExecutor(max_workers=READ_WORKERS) as reader:
        for start in range(0, len(todo), chunk):
            uris = todo[start : start + chunk]
            with report.phase("read"):
                loaded = read_chunk(reader, uris, records, report)
            if loaded:
                records += vlm_caption.vlm_records(
                    captioner,
                    [img for _, img in loaded],
                    ids=[uri for uri, _ in loaded],
                    analyzer_check=config.analyzer_check,
                    phase=report.phase,
                )
            bar.update(len(uris))
            # Progress survives a crash: the file is rewritten atomically, at most every
            # CHECKPOINT_S seconds (a rewrite per chunk would grow quadratically with the run).
            if time.perf_counter() - last_save > CHECKPOINT_S:
                save_records(output, records)
                last_save = time.perf_counter()
    bar.close()
    save_records(output, records)


def read_chunk(
    reader: ThreadPoolExecutor, uris: list[str], records: list[dict], report: StageReport
) -> list[tuple[str, np.ndarray]]:
    """The chunk's images, read in parallel (gs://) and in order; an unreadable one becomes
    a failure and an ``unknown`` record (so a rerun does not retry it)."""
    loaded = []
    for uri, (img, exc) in zip(uris, reader.map(try_read_rgb, uris), strict=True):
        if img is not None:
            loaded.append((uri, img))
            continue
        report.fail(uri, f"unreadable image: {type(exc).__name__}: {exc}")
        records.append(vlm_caption.unreadable_record(uri, exc))
    return loaded


# --- CLI ------------------------------------------------------------------------------


def register(subparsers) -> None:
    register_stage(subparsers, STAGE, __doc__, CaptionConfig, _add_io, _run)


def _add_io(parser) -> None:
    parser.add_argument(
        "--images",
        nargs="+",
        required=True,
        help="image files or folders/prefixes (local or gs://)",
    )
    parser.add_argument("--output", required=True, help="JSONL output (local or gs://)")
    parser.add_argument("--model-root", required=True, help="model root (folder or gs://)")


def _run(args) -> int:
    config = from_args(CaptionConfig, args)
    result = caption_images(args.images, args.output, args.model_root, config)
    s, d = result.summary, result.summary["details"]
    print(
        f"captioned {d['captioned']} images ({s['done']} new, {s['failed']} unreadable, "
        f"{d['disagreements']} disagreements) -> {args.output}"
    )
    return result.exit_code
