"""``python -m bench.two_gpu --size full|smoke``: whole edits per hour and training samples
per second on one GPU against two (issue 22).

Every run is the stage's own CLI in a fresh process, so what is timed is what a user runs:

- edit, three layouts on the same videos and settings, each into its own output:
  ``one_gpu`` (``CUDA_VISIBLE_DEVICES`` = the first card, ``--parallel-items 1``),
  ``judge_gpu1`` (both cards, ``--parallel-items 1``: the placement plan puts the judge on
  GPU 1 beside CogVideoX and FluxFill on GPU 0, all resident) and ``two_items`` (both cards,
  ``--parallel-items 2``: one worker process per card, each with every model, a share of
  the videos each; on the CPU ``judge_gpu1`` is ``one_gpu``'s command and is not rerun).
  Edits per hour = items / the stage's own time without model loading (for ``two_items``:
  the slower worker's). The edited videos of the two-GPU layouts are
  compared with ``one_gpu``'s (relative L2 of the decoded frames, largest over the items)
  against performance.md's 1e-2 error bar.
- train-lora, one process with 2 micro-steps per optimizer step (``--grad-accum 2``)
  against two processes (``--num-processes 2``, torchrun + accelerate, batch 1 each): the
  same global batch of 2 and the same rows and noise per step (docs/training.md), so their
  loss curves must agree; samples per second from the trainer's ``train`` phase. The
  two-process run is also stopped halfway and resumed; its loss curve must equal the
  uninterrupted one's.

Full size: the released architectures with random bf16 weights written once as a model
root (``--work-dir``, ~68 GB: FluxFill, CogVideoX-5B-I2V + branch, Qwen2.5-VL-7B), the
edit's work unit of performance.md (49 frames at 480x720 per video, 1024² first frame,
50 + 50 steps, one attempt and one judge call: random weights never pass the judge), and
1024² training for ``--train-steps`` steps. Needs two GPUs: with fewer it exits 2 saying
so. Smoke size runs the same commands on the smoke models with CPU workers (no timing is
meaningful there; CI checks that the paths run). Writes ``--out`` (default
docs/perf/two_gpu.json, two_gpu.smoke.json for smoke) with ``edit_speedup`` and
``train_speedup``: each the better two-GPU figure over the one-GPU figure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench.common import bench_parser, card, commit, rel_l2

TOLERANCE = 1e-2  # performance.md's error bar for bf16 outputs on random weights
EDIT_LAYOUTS = {"one_gpu": ("0", 1), "judge_gpu1": ("0,1", 1), "two_items": ("0,1", 2)}

SIZES = {
    "full": {"videos": 4, "frames": 49, "width": 720, "height": 480, "rows": 64, "image": 1024},
    "smoke": {"videos": 2, "frames": 4, "width": 96, "height": 64, "rows": 6, "image": 64},
}


def edit_config(size: str):
    from lanepaint.models.smoke import SMOKE_EDIT_SETTINGS
    from lanepaint.stages.edit import EditConfig

    if size == "full":  # the stage's defaults; one attempt (random weights never pass)
        return EditConfig(max_attempts=1)
    return EditConfig(max_attempts=1, **SMOKE_EDIT_SETTINGS)


def train_config(size: str, steps: int, work: Path):
    from lanepaint.training.config import TrainConfig

    common = {"max_train_steps": steps, "checkpointing_steps": max(1, steps // 2)}
    common |= {"work_dir": str(work / "train-work"), "warmup_steps": min(100, steps // 4)}
    if size == "full":
        return TrainConfig(**common)
    small = {"rank": 4, "alpha": 8.0, "resolution": 48, "mixed_precision": "no"}
    small |= {"max_sequence_length": 16, "eval_rows": 2, "workers": 2, "learning_rate": 3e-3}
    return TrainConfig(**common, **small)


def gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _cli(args: list[str], env: dict | None = None) -> float:
    """Run ``lanepaint ARGS`` in a fresh process; its wall time (it must succeed)."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "lanepaint.cli", *args]
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} exited with {proc.returncode}: {cmd}")
    return time.perf_counter() - t0


# --- inputs ---------------------------------------------------------------------------


def model_root(size: str, work: Path) -> Path:
    """The smoke set, or full-size random weights written once (kept for later runs)."""
    from lanepaint.models.smoke import build_smoke

    root = work / f"models-{size}"
    if (root / ".complete").is_file():
        return root
    if size == "smoke":
        build_smoke(root, overwrite=True)
    else:
        write_random_root(root)
    (root / ".complete").write_text("")
    return root


def write_random_root(dest: Path, device: str = "cuda:0") -> None:
    """The released architectures with random bf16 weights, built on ``device``, in the
    model root's layout, marked as random weights (``RANDOM_WEIGHTS.json``: the stages
    load it like real weights and label their outputs ``random``)."""
    from lanepaint.models import fullsize, root
    from lanepaint.models.smoke import tiny_videopainter_branch

    fullsize.save_flux_fill_root(fullsize.build_flux_fill_pipeline(device), dest)
    cog = fullsize.build_cogvideox_i2v_pipeline(device)
    cog.save_pretrained(dest / root.COGVIDEOX_I2V_DIR)
    branch = tiny_videopainter_branch(cog.transformer)  # from_transformer: any size
    branch.save_pretrained(dest / root.VIDEOPAINTER_BRANCH_DIR)
    del cog, branch
    qwen, processor = fullsize.build_qwen_vl(device)
    qwen.save_pretrained(dest / root.QWEN_VL_DIRS["7B"])
    processor.save_pretrained(dest / root.QWEN_VL_DIRS["7B"])
    fullsize.mark_random_weights(dest, "bench.two_gpu")


def edit_inputs(size: str, work: Path, videos: int) -> Path:
    """A VideoPainter layout of synthetic drives (their road masks as the segments)."""
    from lanepaint.data.synth import SceneSpec, render_clip
    from lanepaint.data.videopainter import VideoPainterLayout, VideoRecord
    from lanepaint.data.vocab import LaneAttributes
    from lanepaint.io.video import write_video

    s = SIZES[size]
    folder = work / f"videos-{size}-{videos}"
    if (folder / "meta.csv").is_file():
        return folder
    layout, records = VideoPainterLayout(str(folder)), []
    for k in range(videos):
        spec = SceneSpec(
            left=LaneAttributes("single", "yellow", "solid"),
            right=LaneAttributes("single", "white", "dashed"),
            width=s["width"],
            height=s["height"],
            seed=k,
        )
        video, road = render_clip(spec, s["frames"], 8.0)
        vid = f"drive_{k:02d}"
        Path(layout.raw_video("chunk_0000", vid)).parent.mkdir(parents=True, exist_ok=True)
        write_video(layout.raw_video("chunk_0000", vid), video, 8.0)
        layout.write_masks(vid, road)
        rel = layout.raw_video_rel("chunk_0000", vid)
        n, w, h = s["frames"], s["width"], s["height"]
        records.append(VideoRecord(vid, rel, vid, 8.0, n, w, h, 0, n - 1))
    layout.write_meta(records)
    return folder


def train_inputs(size: str, work: Path) -> Path:
    from lanepaint.data.synth import write_dataset

    s, folder = SIZES[size], work / f"train-data-{size}"
    if not (folder / "train.csv").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        write_dataset(str(folder), s["rows"], s["image"], s["image"] * 9 // 16, seed=0)
    return folder


# --- edit -----------------------------------------------------------------------------


def steady_s(summary: dict) -> float:
    """The stage's own time without loading models: the slower worker's in a parallel run."""
    workers = summary["details"].get("workers")
    timings = [w["timings_s"] for w in workers] if workers else [summary["timings_s"]]
    return max(t["total"] - t.get("load_models", 0.0) for t in timings)


def run_edit(size: str, layout: str, data: Path, root: Path, out: Path, n_gpus: int) -> dict:
    """One layout's edit run: its wall time, steady time, edits per hour and placement."""
    from lanepaint.kit import to_argv

    visible, parallel = EDIT_LAYOUTS[layout]
    config = replace(edit_config(size), parallel_items=parallel)
    env = {"CUDA_VISIBLE_DEVICES": visible} if n_gpus else {}
    shutil.rmtree(out, ignore_errors=True)
    io = ["--data-dir", str(data), "--output-dir", str(out), "--model-root", str(root)]
    wall = _cli(["edit", *io, *to_argv(config)], env)
    summary = json.loads((out / "summary.json").read_text())
    steady = steady_s(summary)
    return {
        "items": summary["done"],
        "failed": summary["failed"],
        "wall_s": round(wall, 2),
        "steady_s": round(steady, 2),
        "edits_per_hour": round(summary["done"] * 3600 / steady, 2) if steady else None,
        "edits_per_hour_with_loading": round(summary["done"] * 3600 / wall, 2),
        "placement": summary["details"].get("placement"),
        "workers": len(summary["details"].get("workers") or []) or 1,
    }


def edited_difference(reference: Path, other: Path) -> float:
    """Largest relative L2 between the two runs' decoded edited videos, over the items."""
    from lanepaint.io.video import read_frames

    worst = 0.0
    for ref in sorted(reference.glob("*/*/edited.mp4")):
        mine = other / ref.relative_to(reference)
        worst = max(worst, rel_l2(read_frames(ref), read_frames(mine)))
    return worst


def bench_edit(size: str, work: Path, n_gpus: int, videos: int) -> dict:
    root, data = model_root(size, work), edit_inputs(size, work, videos)
    # Without GPUs judge_gpu1 is one_gpu's very command (everything on the CPU): not rerun.
    layouts = [k for k in EDIT_LAYOUTS if n_gpus or k != "judge_gpu1"]
    rows = {k: run_edit(size, k, data, root, work / f"edit-{k}", n_gpus) for k in layouts}
    for name in layouts[1:]:
        diff = edited_difference(work / "edit-one_gpu", work / f"edit-{name}")
        rows[name]["rel_err_vs_one_gpu"] = diff
        rows[name]["outputs_match"] = diff <= TOLERANCE
    return rows


# --- train ----------------------------------------------------------------------------


def run_train(data: Path, root: Path, out: Path, config, processes: int) -> dict:
    from lanepaint.kit import to_argv

    io = ["--train-data", str(data), "--model-root", str(root), "--output-dir", str(out)]
    wall = _cli(["train-lora", *io, "--num-processes", str(processes), *to_argv(config)])
    d = json.loads((out / "summary.json").read_text())
    seconds = d["timings_s"]["train"]
    return {
        "processes": processes,
        "samples": d["details"]["samples_seen"],
        "train_s": round(seconds, 2),
        "wall_s": round(wall, 2),
        "samples_per_s": round(d["details"]["samples_seen"] / seconds, 4),
        "status": d["details"]["status"],
    }


def losses(out: Path) -> list[float]:
    """The training loss per step from loss.csv (evaluation rows left out)."""
    rows = [line.split(",") for line in (out / "loss.csv").read_text().splitlines()[1:]]
    return [float(r[1]) for r in rows if len(r) > 1 and r[1]]


def curve_difference(a: list[float], b: list[float]) -> float:
    if len(a) != len(b) or not a:
        return float("inf")
    return max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b, strict=True))


def bench_train(size: str, work: Path, steps: int) -> dict:
    """One process with 2 micro-steps against two processes (same global batch), and the
    two-process run stopped halfway and resumed."""
    root, data = model_root(size, work), train_inputs(size, work)
    config = train_config(size, steps, work)
    outs = {k: work / f"train-{k}" for k in ("one", "two", "two_resumed")}
    for out in outs.values():
        shutil.rmtree(out, ignore_errors=True)
    one = run_train(data, root, outs["one"], replace(config, grad_accum=2), 1)
    two = run_train(data, root, outs["two"], config, 2)
    run_train(data, root, outs["two_resumed"], replace(config, stop_after_steps=steps // 2), 2)
    resumed = run_train(data, root, outs["two_resumed"], config, 2)
    two["loss_rel_diff_vs_one"] = curve_difference(losses(outs["one"]), losses(outs["two"]))
    two["losses_match_one"] = two["loss_rel_diff_vs_one"] <= TOLERANCE
    resume_diff = curve_difference(losses(outs["two"]), losses(outs["two_resumed"]))
    two["resume_loss_rel_diff"] = resume_diff
    two["resume_matches"] = resume_diff <= TOLERANCE and resumed["status"] == "complete"
    return {"one_process": one, "two_processes": two}


# --- main -----------------------------------------------------------------------------


def run(size: str, work: Path, steps: int, parts: set[str], videos: int = 0) -> dict:
    n_gpus = gpus()
    result: dict = {"stage": "two_gpu", "size": size, "card": card(), "gpus": n_gpus}
    result |= {"commit": commit(), "date": time.strftime("%Y-%m-%d"), "tolerance": TOLERANCE}
    if "edit" in parts:
        edit = bench_edit(size, work, n_gpus, videos or SIZES[size]["videos"])
        best = max(edit[k]["edits_per_hour"] for k in edit if k != "one_gpu")
        result["edit"] = edit
        result["edit_speedup"] = round(best / edit["one_gpu"]["edits_per_hour"], 3)
    if "train" in parts:
        train = bench_train(size, work, steps)
        one, two = train["one_process"], train["two_processes"]
        result["train"] = train
        result["train_speedup"] = round(two["samples_per_s"] / one["samples_per_s"], 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--out", type=Path, default=None, help="the JSON (default: see doc)")
    parser.add_argument("--work-dir", type=Path, default=None, help="models, inputs, outputs")
    parser.add_argument("--train-steps", type=int, default=None, help="200 full, 4 smoke")
    parser.add_argument("--parts", default="edit,train", help="edit, train or both")
    parser.add_argument("--videos", type=int, default=0, help="videos to edit (0: 4 full, 2 smoke)")
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - {"edit", "train"}:
        parser.error(f"--parts takes edit and/or train, not {args.parts!r}")
    if args.videos < 0 or (args.train_steps is not None and args.train_steps < 2):
        parser.error("--videos must be >= 0 and --train-steps >= 2 (it stops halfway)")
    if args.size == "full" and gpus() < 2:
        print(f"bench.two_gpu --size full needs 2 GPUs; this machine has {gpus()}")
        return 2
    default_work = Path(os.environ.get("LANEPAINT_WORK_DIR", "/tmp")) / "lanepaint-two-gpu"
    work = args.work_dir or default_work
    work.mkdir(parents=True, exist_ok=True)
    steps = args.train_steps or (200 if args.size == "full" else 4)
    result = run(args.size, work, steps, parts, args.videos)
    name = "two_gpu.json" if args.size == "full" else "two_gpu.smoke.json"
    out = args.out or args.out_dir / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"two_gpu {result['card']} x{result['gpus']}: edit_speedup "
        f"{result.get('edit_speedup')}, train_speedup {result.get('train_speedup')} -> {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
