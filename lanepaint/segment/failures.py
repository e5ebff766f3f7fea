"""Why one video of a segment run failed, as the ``kind: detail`` line failures.jsonl holds
(the kind is what the summary tallies)."""

from __future__ import annotations

from lanepaint.segment.stream import TooSmallError


def failure_reason(exc: BaseException, step: str = "segment") -> str:
    """``kind: detail`` for failures.jsonl; ``step`` names the kind of an unexpected error."""
    from lanepaint.io.video import VideoError
    from lanepaint.segment.base import EmptyVideoError

    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        return text if text.startswith("missing input") else f"missing input: {text}"
    if isinstance(exc, TooSmallError):
        return text
    if isinstance(exc, VideoError):
        return f"unreadable video: {text}"
    if isinstance(exc, EmptyVideoError):
        return f"no frames: {text}"
    if type(exc).__name__ == "OutOfMemoryError":
        return f"out of memory: {text.splitlines()[0]}"
    return f"{step} error: {type(exc).__name__}: {text}"
