"""Stage caption: lane attributes of road images from Qwen2.5-VL, cross-checked.

Each image gets the VLM's answer parsed into the lane vocabulary (``unknown`` where the
answer says nothing usable) and, unless disabled, the weights-free lane analyzer's reading
of the same image; rows where both are sure and disagree are flagged. Output is one JSON
line per image; a rerun skips images already in the output.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from lanepaint.data.vocab import UNKNOWN, LaneAttributes
from lanepaint.io import reports, storage
from lanepaint.io.images import read_rgb

log = logging.getLogger(__name__)

ATTRS = ("count", "color", "pattern")
CHECKPOINT_S = 30.0
BATCHES_PER_CALL = 4
READ_WORKERS = 8


def _try_read(uri: str) -> tuple[np.ndarray | None, Exception | None]:
    """(image, None), or (None, the error): one bad file is a recorded failure."""
    try:
        return read_rgb(uri), None
    except Exception as exc:  # noqa: BLE001 - any decode error is one bad file
        return None, exc


@dataclass(frozen=True)
class CaptionConfig:
    vlm_size: str = "7B"
    batch_size: int = 32  # ~35 GiB for the 7B at 1280x720; lower it on smaller cards
    max_new_tokens: int = 48
    analyzer_check: bool = True
    max_pixels: int | None = 1280 * 28 * 28
    device: str = "auto"


def pick_device(device: str = "auto") -> str:
    """``auto``: the placement plan's VLM device when GPUs exist, else the CPU."""
    if device != "auto":
        return device
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    # The VLM goes to the last GPU so that a second card keeps it off the painter's card.
    return f"cuda:{torch.cuda.device_count() - 1}"


def load_captioner(model_root: str, config: CaptionConfig):
    """The Captioner over the model root's Qwen2.5-VL (loaded once per stage run)."""
    import torch

    from lanepaint.models.loaders import load_qwen_vl
    from lanepaint.vlm.judge import Captioner
    from lanepaint.vlm.qwen import VLMGenerator

    device = pick_device(config.device)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model, processor = load_qwen_vl(model_root, config.vlm_size, dtype=dtype, device=device)
    generator = VLMGenerator(model, processor, max_pixels=config.max_pixels)
    return Captioner(generator, config.max_new_tokens, config.batch_size)


def agreement(vlm: LaneAttributes, analyzer: LaneAttributes) -> dict[str, bool | None]:
    """Per attribute: True/False where both sides are known, None where either is unknown."""
    out = {}
    for attr in ATTRS:
        a, b = getattr(vlm, attr), getattr(analyzer, attr)
        out[attr] = None if UNKNOWN in (a, b) else a == b
    return out


def analyzer_reading(image: np.ndarray, mask: np.ndarray | None = None) -> dict:
    from lanepaint.lanes.analyze import analyze_image

    return analyze_image(image, mask).as_dict()


def caption_record(image_id: str, answer, analysis: dict | None) -> dict:
    """One output row: the VLM's attributes, how they were parsed, the analyzer's view."""
    attrs = answer.attributes
    record = {
        "image": image_id,
        "caption": attrs.caption,
        **attrs.as_dict(),
        "parse_method": answer.method,
        "answer": answer.raw[:2000],
    }
    if analysis is not None:
        from lanepaint.data.vocab import parse_caption

        analyzer_attrs = parse_caption(analysis["caption"])
        agree = agreement(attrs, analyzer_attrs)
        record["analyzer"] = analysis
        record["agree"] = agree
        record["disagree"] = any(v is False for v in agree.values())
    return record


def expand_images(items: Sequence[str]) -> list[str]:
    """Image files named directly, or every image under a named folder/prefix."""
    from lanepaint.data.sources import IMAGE_EXTS, list_images

    out: list[str] = []
    for item in items:
        if item.lower().endswith(IMAGE_EXTS):
            out.append(item)
        else:
            out += list_images(item)
    return out


def _read_existing(output: str) -> list[dict]:
    if not storage.exists(output):
        return []
    return [json.loads(line) for line in storage.read_text(output).splitlines() if line.strip()]


def caption_images(
    images: Sequence[str],
    output: str,
    model_root: str,
    config: CaptionConfig | None = None,
    captioner=None,
) -> dict:
    """Caption every image into ``output`` (JSONL); returns the summary.

    ``captioner`` may be passed in by a caller that already holds the model loaded.
    """
    config = config or CaptionConfig()
    started = time.perf_counter()
    timings = reports.Timings()
    failures = reports.Failures()
    images = expand_images(images)
    records = _read_existing(output)
    done = {r["image"] for r in records}
    todo = [i for i in images if i not in done]
    log.info("%d images, %d already captioned, %d to do", len(images), len(done), len(todo))

    from lanepaint.models.root import as_model_root

    root = as_model_root(model_root)
    if todo and captioner is None:
        with timings.phase("load_model"):
            captioner = load_captioner(model_root, config)

    out_stem = output[: -len(".jsonl")] if output.endswith(".jsonl") else output
    bar = tqdm(total=len(todo), desc="caption", unit="img")
    last_flush = time.perf_counter()
    # Several batches per VLM call, so the generator prepares the next batch on a CPU
    # thread while the GPU generates the current one.
    chunk = config.batch_size * BATCHES_PER_CALL
    with ThreadPoolExecutor(max_workers=READ_WORKERS) as reader:
        for start in range(0, len(todo), chunk):
            batch_ids = todo[start : start + chunk]
            loaded: list[tuple[str, np.ndarray]] = []
            with timings.phase("read"):
                read = list(reader.map(_try_read, batch_ids))  # gs:// reads in parallel, in order
                for uri, (img, exc) in zip(batch_ids, read, strict=True):
                    if img is not None:
                        loaded.append((uri, img))
                        continue
                    failures.add(uri, f"unreadable image: {type(exc).__name__}: {exc}")
                    records.append(
                        {
                            "image": uri,
                            "caption": LaneAttributes().caption,
                            **LaneAttributes().as_dict(),
                            "parse_method": "none",
                            "error": str(exc),
                        }
                    )
            if loaded:
                with timings.phase("vlm"):
                    answers = captioner.caption([img for _, img in loaded])
                for (uri, img), answer in zip(loaded, answers, strict=True):
                    analysis = None
                    if config.analyzer_check:
                        with timings.phase("analyzer"):
                            analysis = analyzer_reading(img)
                    records.append(caption_record(uri, answer, analysis))
            bar.update(len(batch_ids))
            # Progress survives a crash: the file is rewritten atomically, at most every
            # CHECKPOINT_S seconds (a rewrite per batch would grow quadratically with the run).
            if time.perf_counter() - last_flush > CHECKPOINT_S:
                storage.write_text(output, "".join(json.dumps(r) + "\n" for r in records))
                last_flush = time.perf_counter()
    bar.close()
    storage.write_text(output, "".join(json.dumps(r) + "\n" for r in records))

    methods = Counter(r.get("parse_method", "none") for r in records)
    summary = {
        "stage": "caption",
        "output": output,
        **root.metadata(),
        "config": asdict(config),
        "images": len(images),
        "captioned": len(records),
        "new": len(todo),
        "failed": len(failures),
        "unknown_any": sum(1 for r in records if UNKNOWN in (r["count"], r["color"], r["pattern"])),
        "parse_methods": dict(methods),
        "disagreements": sum(1 for r in records if r.get("disagree")),
        "captions": dict(Counter(r["caption"] for r in records).most_common()),
        "timings_s": {**timings.as_dict(), "total": round(time.perf_counter() - started, 3)},
        "finished_at": reports.now_iso(),
    }
    storage.write_text(out_stem + ".summary.json", json.dumps(summary, indent=2) + "\n")
    storage.write_text(
        out_stem + ".summary.md",
        reports.render_markdown("caption", summary, notes=[root.model_set_label()]),
    )
    storage.write_text(out_stem + ".failures.jsonl", failures.to_jsonl())
    return summary


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "caption",
        help="lane attributes of road images with Qwen2.5-VL (+ analyzer cross-check)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--images",
        nargs="+",
        required=True,
        help="image files or folders/prefixes (local or gs://)",
    )
    parser.add_argument("--output", required=True, help="JSONL output (local or gs://)")
    parser.add_argument("--model-root", required=True, help="model root (folder or gs://)")
    parser.add_argument("--vlm-size", default="7B", choices=("7B", "72B"))
    parser.add_argument(
        "--batch-size", type=int, default=32, help="images per VLM batch (~35 GiB for the 7B)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument(
        "--no-analyzer-check", action="store_true", help="skip the lane-analyzer cross-check"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda:N")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    config = CaptionConfig(
        vlm_size=args.vlm_size,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        analyzer_check=not args.no_analyzer_check,
        device=args.device,
    )
    summary = caption_images(args.images, args.output, args.model_root, config)
    print(
        f"captioned {summary['captioned']} images ({summary['new']} new, {summary['failed']} "
        f"unreadable, {summary['disagreements']} disagreements) -> {args.output}"
    )
    return 0
