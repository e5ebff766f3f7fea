"""``python -m bench.train_run --size full|smoke``: a whole train-lora run, killed and resumed.

Issue 20 asks for train-lora at full size (random weights) for at least 200 steps with a
checkpoint, a kill and a resume: samples per second, peak memory, and the resumed loss
curve against the uninterrupted one. This runs the real CLI (``python -m lanepaint.cli
train-lora``) in subprocesses, as a user or a KFP task would:

- **A**: uninterrupted, ``--steps`` steps, a checkpoint every ``--checkpoint-every``;
- **B**: the same command, SIGKILLed (its whole process group, inductor's compile workers
  included) as soon as a complete checkpoint at or after ``--kill-at`` is published (the
  script watches ``checkpoints/``), then the same command again, which resumes from the
  newest complete checkpoint and finishes.

A and B have separate work dirs (feature cache), so each starts cold like a fresh machine;
B's rerun reuses B's cache, as a rerun on the same machine does. Recorded: per run the
median step time and samples/s (``summary.json`` details), the training loop's own samples/s,
peak GPU memory, the phases; B's resumed-from step, the steps it did twice, the wall time
the kill cost (B killed + B resumed - A); and the agreement of B with A: the ``loss.csv``
columns step by step (equal at the CSV's 6 digits, max abs difference of loss and
evaluation loss) and the final LoRA tensors (bitwise equal, max abs difference, relative
L2). On the CPU (smoke) B equals A exactly; on a GPU nondeterministic kernels (attention
backward, atomics) may move the curves slightly, so they are reported, not asserted.

Full size: FLUX.1-Fill-dev with random bf16 weights written once as a model root (about
33 GB: transformer, T5-XXL, CLIP-L, VAE; reuse it with ``--model-root``), 8 synthetic road
frames at 1024x1024 (``lanepaint.data.synth``), rank 128, the fastest measured step
(``--compile --attention-backend cudnn --activation-memory-budget 0.5``, docs/training.md).
Smoke size: the tiny FluxFill on the CPU, 64x48 rows at 48 px, 12 steps, in seconds.

Finished parts are kept in ``--work-dir`` (state.json): the root, the data, run A, run B.
A rerun of this command skips what finished and restarts a run that was cut off (a run
that was interrupted otherwise would not be "uninterrupted"), so a 10-minute command limit
can be met with two calls. Prints a table last; writes docs/perf/train_run.json
(train_run.smoke.json for smoke).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import bench_parser, perf_record, write_json

REPO = Path(__file__).resolve().parents[1]
STEP_LOG = re.compile(r"step (\d+)/\d+ loss")
FULL_ROOT_GB = 40  # free disk needed to write the full-size root (about 33 GB)


@dataclass(frozen=True)
class Size:
    steps: int
    every: int
    kill_at: int
    rows: int
    width: int
    height: int
    train_args: tuple[str, ...] = field(default=())


SIZES = {
    "full": Size(
        steps=200,
        every=40,
        kill_at=120,
        rows=8,
        width=1024,
        height=1024,
        train_args=(
            *("--rank", "128", "--alpha", "128", "--resolution", "1024"),
            *("--mixed-precision", "bf16", "--max-sequence-length", "512"),
            *("--compile", "--attention-backend", "cudnn", "--activation-memory-budget", "0.5"),
            *("--eval-rows", "2", "--checkpoints-total-limit", "2", "--workers", "8"),
        ),
    ),
    "smoke": Size(
        steps=12,
        every=2,
        kill_at=3,
        rows=4,
        width=64,
        height=48,
        train_args=(
            *("--rank", "4", "--alpha", "8", "--resolution", "48", "--learning-rate", "3e-3"),
            *("--warmup-steps", "2", "--mixed-precision", "no", "--max-sequence-length", "16"),
            *("--eval-rows", "2", "--checkpoints-total-limit", "2", "--workers", "2"),
        ),
    ),
}


# --------------------------------------------------------------------------- inputs


def build_root(size: str, dest: Path) -> Path:
    """FLUX.1-Fill-dev as a model root: random bf16 weights at full size (built on the GPU),
    the tiny smoke FluxFill otherwise; written aside, then renamed into place."""
    from lanepaint.models.fullsize import mark_random_weights, save_flux_fill_root
    from lanepaint.models.root import SMOKE_LABEL, SMOKE_MARKER

    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if size == "full":
        _check_disk(dest.parent, FULL_ROOT_GB)
    work = dest.with_name(f".{dest.name}.building")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        pipe = _full_pipeline() if size == "full" else _smoke_pipeline()
        save_flux_fill_root(pipe, work)
        del pipe
        _free_cuda()
        if size == "full":
            mark_random_weights(work, "bench.train_run", seed=0)
        else:
            (work / SMOKE_MARKER).write_text(json.dumps({"smoke": True, "label": SMOKE_LABEL}))
        work.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def _smoke_pipeline():
    from lanepaint.models.smoke import tiny_flux_fill

    return tiny_flux_fill(0)


def _full_pipeline():
    import torch

    from lanepaint.models.fullsize import build_flux_fill_pipeline

    if not torch.cuda.is_available():
        raise SystemExit("--size full needs a CUDA GPU (use --size smoke on a CPU)")
    return build_flux_fill_pipeline("cuda", torch.bfloat16, seed=0)


def _free_cuda() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _check_disk(folder: Path, need_gb: float) -> None:
    free = shutil.disk_usage(folder).free / 1e9
    if free < need_gb:
        raise SystemExit(
            f"{folder}: {free:.0f} GB free, the full-size model root needs about {need_gb} GB; "
            "free some space or pass --model-root"
        )


def build_data(sz: Size, dest: Path) -> Path:
    """Synthetic road frames with their road masks and lane captions (a FluxFill dataset)."""
    from lanepaint.data.synth import write_dataset

    if not (dest / "train.csv").is_file():
        write_dataset(str(dest), sz.rows, sz.width, sz.height, seed=0)
    return dest


# --------------------------------------------------------------------------- runs


def train_argv(sz: Size, data: Path, root: Path, out: Path, work: Path, steps: int, every: int):
    return [
        sys.executable,
        "-m",
        "lanepaint.cli",
        "train-lora",
        *("--train-data", str(data), "--model-root", str(root), "--output-dir", str(out)),
        *("--max-train-steps", str(steps), "--checkpointing-steps", str(every)),
        *("--log-every", "1", "--work-dir", str(work)),
        *sz.train_args,
    ]


def run_env(compile_cache: Path) -> dict[str, str]:
    """This environment, with the compile caches (inductor's, Triton's) in ``compile_cache``:
    each run compiles cold like a fresh machine, a rerun reuses its own, as on one machine."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["TORCHINDUCTOR_CACHE_DIR"] = str(compile_cache / "inductor")
    env["TRITON_CACHE_DIR"] = str(compile_cache / "triton")
    return env


def _start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        f.write(f"$ {' '.join(argv)}\n".encode())
        f.flush()
        # its own process group, so a kill reaches inductor's compile workers too
        return subprocess.Popen(
            argv, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def run_plain(argv: list[str], log: Path, env: dict[str, str]) -> float:
    """Run to completion; wall seconds. A failure ends the bench (see the log)."""
    t0 = time.perf_counter()
    proc = _start(argv, log, env)
    rc = proc.wait()
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"train-lora exited with {rc}; see {log}")
    return wall


def run_killed(
    argv: list[str], out: Path, kill_at: int, log: Path, env: dict[str, str], poll_s: float = 0.02
) -> dict:
    """Run until a complete checkpoint at or after ``kill_at`` is published, then SIGKILL
    the process group. Returns the wall seconds, that checkpoint and the last logged step."""
    from lanepaint.training import checkpoint as ckpt

    offset = log.stat().st_size if log.is_file() else 0  # earlier attempts stay above
    t0 = time.perf_counter()
    proc = _start(argv, log, env)
    seen = None
    try:
        while seen is None and proc.poll() is None:
            done = [i.step for i in ckpt.list_checkpoints(str(out)) if i.complete]
            seen = next((s for s in done if s >= kill_at), None)
            if seen is None:
                time.sleep(poll_s)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    wall = time.perf_counter() - t0
    if seen is None or rc != -signal.SIGKILL:
        raise SystemExit(
            f"train-lora ended (rc {rc}) before a checkpoint at step >= {kill_at} could be "
            f"killed after; lower --kill-at or see {log}"
        )
    with open(log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    steps = [int(m.group(1)) for m in STEP_LOG.finditer(text)]
    return {
        "wall_s": round(wall, 3),
        "killed_after_checkpoint": seen,
        "last_logged_step": max(steps, default=seen),
    }


# --------------------------------------------------------------------------- comparison


def _curve(out: Path) -> dict[int, dict[str, str]]:
    rows = csv.DictReader(io.StringIO((out / "loss.csv").read_text()))
    return {int(r["step"]): r for r in rows}


def compare_curves(a: Path, b: Path) -> dict:
    """B's loss.csv against A's, step by step (step_s, a timing, left out)."""
    ca, cb = _curve(a), _curve(b)
    columns = ("loss", "eval_loss", "lr", "grad_norm", "samples_seen")
    equal = ca.keys() == cb.keys() and all(ca[s][c] == cb[s][c] for s in ca for c in columns)

    def max_diff(column: str) -> float | None:
        pairs = [(ca[s][column], cb[s][column]) for s in ca.keys() & cb.keys()]
        diffs = [abs(float(x) - float(y)) for x, y in pairs if x and y]
        return max(diffs) if diffs else None

    return {
        "steps_a": len(ca),
        "steps_b": len(cb),
        "equal": equal,
        "loss_max_abs_diff": max_diff("loss"),
        "eval_loss_max_abs_diff": max_diff("eval_loss"),
    }


def compare_lora(a: Path, b: Path) -> dict:
    """The final LoRA tensors of B against A's."""
    import torch
    from safetensors.torch import load_file

    from lanepaint.training.lora import WEIGHT_NAME

    ta, tb = (load_file(str(p / "lora" / WEIGHT_NAME)) for p in (a, b))
    same_keys = ta.keys() == tb.keys()
    keys = sorted(ta.keys() & tb.keys())
    diff = [float((ta[k].float() - tb[k].float()).abs().max()) for k in keys]
    num = sum(float((ta[k].float() - tb[k].float()).norm() ** 2) for k in keys) ** 0.5
    den = sum(float(ta[k].float().norm() ** 2) for k in keys) ** 0.5
    return {
        "tensors": len(keys),
        "equal": same_keys and all(torch.equal(ta[k], tb[k]) for k in keys),
        "max_abs_diff": max(diff) if diff else None,
        "rel_l2": num / den if den else None,
    }


# --------------------------------------------------------------------------- the bench


def run_summary(out: Path, wall_s: float) -> dict:
    """One run's numbers from its summary.json (samples/s from the median step time, and
    from the training loop's own time, checkpoints and evaluations included)."""
    summary = json.loads((out / "summary.json").read_text())
    d, t = summary["details"], summary["timings_s"]
    per_step = d["samples_seen"] / max(1, d["steps_done"])
    steps_run = d["steps_done"] - (d["resumed_from_step"] or 0)
    median = d["step_time_median_s"]
    return {
        "status": d["status"],
        "wall_s": round(wall_s, 3),
        "steps_run": steps_run,
        "resumed_from_step": d["resumed_from_step"],
        "step_time_median_s": median,
        "samples_per_s": round(per_step / median, 4) if median else None,
        "loop_samples_per_s": round(steps_run * per_step / t["train"], 4)
        if t.get("train")
        else None,
        "peak_memory_gib": d.get("peak_memory_gib"),
        "checkpoints_published": d["checkpoints_published"],
        "timings_s": t,
    }


class State:
    """What finished, in ``WORK/state.json``; other settings start over."""

    def __init__(self, work: Path, settings: dict):
        self.path = work / "state.json"
        saved = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.data = saved if saved.get("settings") == settings else {"settings": settings}

    def get(self, key: str) -> dict | None:
        return self.data.get(key)

    def put(self, key: str, value: dict | None) -> None:
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        tmp.replace(self.path)


def _fresh(work: Path, name: str) -> None:
    """Remove a run's output and work dir (both made by this bench) before it starts."""
    for folder in (work / name, work / f"{name}-work"):
        shutil.rmtree(folder, ignore_errors=True)


def run_a_and_b(state: State, work: Path, argv_of, kill_at: int, only_a: bool = False) -> None:
    """Run A, then B (killed, resumed; not with ``only_a``), skipping what ``state`` says
    finished."""
    logs = work / "logs"
    if state.get("a") is None:
        _fresh(work, "a")
        wall = run_plain(argv_of("a"), logs / "a.log", run_env(work / "a-work" / "compile"))
        state.put("a", run_summary(work / "a", wall))
    print(f"A done: {state.get('a')['wall_s']} s", flush=True)
    if only_a:
        return
    if state.get("b_resumed") is None:
        _fresh(work, "b")
        state.put("b_killed", None)
        env = run_env(work / "b-work" / "compile")
        killed = run_killed(argv_of("b"), work / "b", kill_at, logs / "b-killed.log", env)
        state.put("b_killed", killed)
        print(f"B killed after checkpoint {killed['killed_after_checkpoint']}", flush=True)
        wall = run_plain(argv_of("b"), logs / "b-resumed.log", env)
        state.put("b_resumed", run_summary(work / "b", wall))
    print(f"B resumed: {state.get('b_resumed')['wall_s']} s", flush=True)


def schedule(size: str, steps: int | None, every: int | None, kill_at: int | None):
    """(steps, checkpoint interval, kill step), the size's defaults filled in; a combination
    that cannot kill after a checkpoint and still resume is a ValueError."""
    sz = SIZES[size]
    steps, every, kill_at = steps or sz.steps, every or sz.every, kill_at or sz.kill_at
    if not 0 < every <= kill_at < steps:
        raise ValueError(
            f"need 0 < --checkpoint-every ({every}) <= --kill-at ({kill_at}) < --steps ({steps})"
        )
    return steps, every, kill_at


def run(
    size: str,
    out_dir: Path,
    work: Path,
    steps: int | None = None,
    every: int | None = None,
    kill_at: int | None = None,
    model_root: Path | None = None,
    stop_after: str = "",
) -> dict | None:
    """The whole bench; ``stop_after`` "root" or "a" ends early (None), for a command time
    limit: the next call goes on from there."""
    sz = SIZES[size]
    steps, every, kill_at = schedule(size, steps, every, kill_at)
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    root = model_root.resolve() if model_root else build_root(size, work / f"models-{size}")
    data = build_data(sz, work / f"data-{size}")
    if stop_after == "root":
        return None
    settings = {"size": size, "steps": steps, "every": every, "kill_at": kill_at, "root": str(root)}
    state = State(work, settings)

    def argv_of(name: str) -> list[str]:
        return train_argv(sz, data, root, work / name, work / f"{name}-work", steps, every)

    run_a_and_b(state, work, argv_of, kill_at, only_a=stop_after == "a")
    if stop_after == "a":
        return None
    record = make_record(size, state, work, ["lanepaint", *argv_of("b")[3:]])
    write_json([record], out_dir, size)
    return record


def make_record(size: str, state: State, work: Path, command: list[str]) -> dict:
    a, killed, resumed = state.get("a"), state.get("b_killed"), state.get("b_resumed")
    s = state.data["settings"]
    b_wall = killed["wall_s"] + resumed["wall_s"]
    lora = compare_lora(work / "a", work / "b")
    peaks = [r["peak_memory_gib"] for r in (a, resumed) if r["peak_memory_gib"] is not None]
    extra = {
        "size": size,
        "unit": f"train-lora CLI, {s['steps']} steps, checkpoint every {s['every']}, "
        f"SIGKILL after the checkpoint at/after step {s['kill_at']}, then rerun (resume)",
        "weights": _weights(Path(s["root"])),
        # paths under the repository as a user's checkout would have them
        "command": " ".join(command).replace(f"{REPO}/", ""),
        "ours_is": "B wall: killed run + resumed run",
        "reference_is": "A wall: the uninterrupted run",
        "rel_err_is": "relative L2 of B's final LoRA tensors against A's",
        "a": a,
        "b_killed": killed,
        "b_resumed": resumed,
        "resumed_from_step": resumed["resumed_from_step"],
        "steps_done_twice": killed["last_logged_step"] - (resumed["resumed_from_step"] or 0),
        "wall_lost_to_kill_s": round(b_wall - a["wall_s"], 3),
        "loss_curve": compare_curves(work / "a", work / "b"),
        "lora": lora,
    }
    return perf_record(
        "train_run",
        ours_s=b_wall,
        reference_s=a["wall_s"],
        rel_err=lora["rel_l2"],
        floor_s=None,
        peak_gib=max(peaks) if peaks else None,
        extra=extra,
    )


def _weights(root: Path) -> str:
    """What the trained model's weights are, for the record's table."""
    from lanepaint.models.root import RANDOM_MARKER, SMOKE_MARKER

    if (root / SMOKE_MARKER).is_file():
        return "smoke (tiny random FluxFill)"
    if (root / RANDOM_MARKER).is_file():
        return "random bf16 FLUX.1-Fill-dev (full-size architecture, built by bench.train_run)"
    return f"the weights at {root}"


def format_table(record: dict) -> str:
    x = record["extra"]
    lines = [
        f"{'run':<10} {'wall_s':>8} {'steps':>6} {'step_s':>8} {'samples/s':>10} {'peak_gib':>9}"
    ]
    for name in ("a", "b_killed", "b_resumed"):
        r = x[name]
        lines.append(
            f"{name:<10} {r['wall_s']:>8.1f} {r.get('steps_run', r.get('last_logged_step')):>6} "
            f"{_cell(r.get('step_time_median_s'), '.4f'):>8} "
            f"{_cell(r.get('samples_per_s'), '.3f'):>10} "
            f"{_cell(r.get('peak_memory_gib'), '.1f'):>9}"
        )
    curve, lora = x["loss_curve"], x["lora"]
    lines.append(
        f"resumed from step {x['resumed_from_step']} (killed after checkpoint "
        f"{x['b_killed']['killed_after_checkpoint']}, {x['steps_done_twice']} steps done twice); "
        f"wall lost to the kill {x['wall_lost_to_kill_s']:.1f} s"
    )
    lines.append(
        f"loss curve equal: {curve['equal']} "
        f"(max |dloss| {_cell(curve['loss_max_abs_diff'], '.2e')}); "
        f"LoRA equal: {lora['equal']} (max |d| {_cell(lora['max_abs_diff'], '.2e')}, "
        f"rel L2 {_cell(lora['rel_l2'], '.2e')})"
    )
    return "\n".join(lines)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--steps", type=int, default=None, help="default 200 full, 12 smoke")
    parser.add_argument(
        "--checkpoint-every", type=int, default=None, help="default 40 full, 2 smoke"
    )
    parser.add_argument(
        "--kill-at", type=int, default=None, help="kill after the checkpoint at/after this step"
    )
    parser.add_argument(
        "--model-root",
        type=Path,
        default=None,
        help="a model root holding FLUX.1-Fill-dev to train on (default: one built once "
        "into WORK/models-SIZE, random weights)",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="default .cache/train_run/<size>"
    )
    parser.add_argument(
        "--stop-after",
        choices=("root", "a"),
        default="",
        help="stop once the model root and data (root) or run A (a) are done; run again "
        "without it to go on (for a per-command time limit)",
    )
    args = parser.parse_args(argv)
    work = args.work_dir or REPO / ".cache" / "train_run" / args.size
    try:
        schedule(args.size, args.steps, args.checkpoint_every, args.kill_at)
    except ValueError as exc:  # user errors: one line, exit 2, before anything is built
        parser.error(str(exc))
    from lanepaint.models.root import FLUX_FILL_DIR

    if args.model_root and not (args.model_root / FLUX_FILL_DIR).is_dir():
        parser.error(f"--model-root {args.model_root} has no {FLUX_FILL_DIR} folder")
    if args.size == "full" and not _has_cuda():
        parser.error("--size full needs a CUDA GPU (use --size smoke on a CPU)")
    record = run(
        args.size,
        args.out_dir,
        work,
        args.steps,
        args.checkpoint_every,
        args.kill_at,
        args.model_root,
        args.stop_after,
    )
    if record is None:
        print(f"stopped after {args.stop_after}; run again without --stop-after to go on")
        return 0
    print(json.dumps({k: v for k, v in record.items() if k != "extra"}))
    print(format_table(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
