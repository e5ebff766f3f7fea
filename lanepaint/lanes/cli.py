"""`lanepaint lanes analyze IMAGE_OR_VIDEO [--mask MASK] [--json]`."""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_analyze(args: argparse.Namespace) -> int:
    from lanepaint.kit.cli import user_errors
    from lanepaint.lanes.analyze import analyze_path

    try:
        if args.max_frames < 1:
            raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
        with _local(args.input) as path, _local(args.mask) as mask:
            result = analyze_path(path, mask, max_frames=args.max_frames)
    except user_errors() as exc:
        print(f"lanepaint lanes analyze: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    print(result.caption)
    for side in ("left", "right"):
        s = getattr(result, side)
        conf = " ".join(f"{k}={v:.2f}" for k, v in s.confidence.items())
        print(f"  {side:5s}: {s.count} {s.color} {s.pattern}  ({conf})")
    for note in result.notes:
        print(f"  note: {note}")
    return 0


def _local(uri: str | None):
    """A local file for a local path or a gs:// object (downloaded for the call)."""
    import contextlib

    from lanepaint.io import storage

    return storage.local_path(uri) if uri else contextlib.nullcontext(None)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lanes", help="weights-free lane-marking analysis (count, color, pattern)"
    )
    sub = parser.add_subparsers(dest="lanes_command", required=True, metavar="WHAT")
    analyze = sub.add_parser(
        "analyze", help="lane attributes of the ego lane in an image or a video"
    )
    analyze.add_argument("input", metavar="IMAGE_OR_VIDEO")
    analyze.add_argument(
        "--mask", help="road mask: PNG (nonzero = road) or .npz with arr_0 ([H,W] or [T,H,W])"
    )
    analyze.add_argument("--json", action="store_true", help="print JSON (left, right, caption)")
    analyze.add_argument(
        "--max-frames", type=int, default=24, help="frames sampled from a video (default 24)"
    )
    analyze.set_defaults(func=_cmd_analyze)
