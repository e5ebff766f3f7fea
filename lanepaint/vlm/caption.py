"""Captioning road images: the VLM's lane attributes, cross-checked by the lane analyzer.

Shared by the caption stage (image files into a JSONL) and build-dataset (video frames into
dataset rows), so both load the model the same way and write the same record per image:
the attributes, how the answer was parsed, and where the weights-free analyzer disagrees.
The caption stage's output file (one record a line) is read, saved and counted here too.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import numpy as np

from lanepaint.data.vocab import UNKNOWN, LaneAttributes, parse_caption
from lanepaint.io import storage

#: Caption answers are short JSON objects; 48 tokens hold one with room to spare.
MAX_NEW_TOKENS = 48
#: Pixel budget per image (28x28 pixels make one visual token): 1280 tokens.
MAX_PIXELS = 1280 * 28 * 28

Phase = Callable[[str], AbstractContextManager]


def _no_phase(name: str) -> AbstractContextManager:
    return nullcontext()


def load_captioner(
    model_root: str,
    *,
    vlm_size: str,
    batch_size: int,
    device: str,
    max_new_tokens: int = MAX_NEW_TOKENS,
    max_pixels: int = MAX_PIXELS,
):
    """The Captioner over the model root's Qwen2.5-VL (loaded once per stage run).

    ``auto`` puts the VLM on the last GPU, so a second card keeps it off the painter's;
    ``max_pixels`` 0 keeps the processor's own budget."""
    from lanepaint.models.device import dtype_for, resolve_device
    from lanepaint.models.loaders import load_qwen_vl
    from lanepaint.vlm.judge import Captioner
    from lanepaint.vlm.qwen import VLMGenerator

    device = resolve_device(device, last_gpu=True)
    model, processor = load_qwen_vl(model_root, vlm_size, dtype=dtype_for(device), device=device)
    generator = VLMGenerator(model, processor, max_pixels=max_pixels or None)
    return Captioner(generator, max_new_tokens, batch_size)


def analyzer_reading(image: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """The weights-free lane analyzer's view of one image (inside ``mask`` if given)."""
    from lanepaint.lanes.analyze import analyze_image

    return analyze_image(image, mask).as_dict()


def caption_record(image_id: str, answer, analysis: dict | None) -> dict:
    """One image's record: the VLM's attributes, how they were parsed, the analyzer's view
    and, per attribute, whether the two agree (None where either is unknown, or where the
    analyzer is not confident enough: ``lanes.analyze.trusted_attributes``)."""
    from lanepaint.lanes.analyze import trusted_attributes

    attrs = answer.attributes
    record = {
        "image": image_id,
        "caption": attrs.caption,
        **attrs.as_dict(),
        "parse_method": answer.method,
        "answer": answer.raw[:2000],
    }
    if analysis is not None:
        agree = attrs.agreement(trusted_attributes(analysis))
        record["analyzer"] = analysis
        record["agree"] = agree
        record["disagree"] = any(v is False for v in agree.values())
    return record


def analyzer_record(image_id: str, analysis: dict) -> dict:
    """A record whose attributes come from the analyzer alone (no VLM)."""
    attrs = parse_caption(analysis["caption"])
    return {
        "image": image_id,
        "caption": attrs.caption,
        **attrs.as_dict(),
        "parse_method": "analyzer",
        "analyzer": analysis,
    }


def unreadable_record(image_id: str, exc: BaseException) -> dict:
    """The record of an image that could not be read: unknown attributes and the error."""
    attrs = LaneAttributes()
    return {
        "image": image_id,
        "caption": attrs.caption,
        **attrs.as_dict(),
        "parse_method": "none",
        "error": str(exc),
    }


def vlm_records(
    captioner,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None] | None = None,
    ids: Sequence[str] | None = None,
    analyzer_check: bool = True,
    phase: Phase = _no_phase,
) -> list[dict]:
    """Caption records of ``images`` by the VLM (one batched call), each cross-checked by
    the analyzer inside its mask unless ``analyzer_check`` is off. ``phase`` times the
    ``vlm`` and ``analyzer`` steps (e.g. ``StageReport.phase``)."""
    masks = masks if masks is not None else [None] * len(images)
    ids = ids if ids is not None else [""] * len(images)
    with phase("vlm"):
        answers = captioner.caption(list(images))
    records = []
    for image_id, image, mask, answer in zip(ids, images, masks, answers, strict=True):
        analysis = None
        if analyzer_check:
            with phase("analyzer"):
                analysis = analyzer_reading(image, mask)
        records.append(caption_record(image_id, answer, analysis))
    return records


def analyzer_records(
    images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None] | None = None
) -> list[dict]:
    """Caption records of ``images`` by the lane analyzer alone (weights-free)."""
    masks = masks if masks is not None else [None] * len(images)
    return [
        analyzer_record("", analyzer_reading(image, mask))
        for image, mask in zip(images, masks, strict=True)
    ]


# --- the records file (caption stage) -------------------------------------------------


def read_records(output: str) -> list[dict]:
    """The records already in the output, one per image (the last one of an image that an
    older run captioned twice); a line that is not a record is an error naming it."""
    if not storage.exists(output):
        return []
    by_image: dict[str, dict] = {}
    for number, line in enumerate(storage.read_text(output).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            by_image[record["image"]] = record
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{output} line {number} is not a caption record ({exc}); "
                "fix or remove that line, or write to another output"
            ) from None
    return list(by_image.values())


def save_records(output: str, records: list[dict]) -> None:
    storage.write_text(output, "".join(json.dumps(r) + "\n" for r in records))


def caption_counts(records: list[dict]) -> dict:
    """What the output holds: parse methods, unknowns, disagreements, captions."""
    return {
        "captioned": len(records),
        "unknown_any": sum(1 for r in records if UNKNOWN in (r[f] for f in LaneAttributes.FIELDS)),
        "parse_methods": dict(Counter(r.get("parse_method", "none") for r in records)),
        "disagreements": sum(1 for r in records if r.get("disagree")),
        "captions": dict(Counter(r["caption"] for r in records).most_common()),
    }


def output_stem(output: str) -> tuple[str, str]:
    """(folder, stem) of the output: the summaries are ``<stem>.summary.json`` beside it."""
    folder, name = posixpath.split(output)
    return folder or ".", name[: -len(".jsonl")] if name.endswith(".jsonl") else name
