"""The edit, caption and attention benchmarks run at smoke size on the CPU."""

import json

import pytest

KEYS = {
    "stage",
    "card",
    "commit",
    "date",
    "ours_s",
    "reference_s",
    "ratio",
    "peak_gib",
    "floor_s",
    "rel_err",
}


@pytest.mark.slow
def test_edit_bench_smoke(tmp_path):
    from bench import edit

    assert (
        edit.main(
            [
                "--size",
                "smoke",
                "--out-dir",
                str(tmp_path),
                "--parts",
                "first_frame,propagate,whole_edit,composite",
            ]
        )
        == 0
    )
    for stage in ("first_frame", "propagate", "whole_edit", "composite"):
        record = json.loads((tmp_path / f"{stage}.smoke.json").read_text())
        assert KEYS <= set(record) and record["stage"] == stage and record["card"] == "cpu"
    propagate = json.loads((tmp_path / "propagate.smoke.json").read_text())
    assert propagate["rel_err"] == 0.0  # nothing is compiled on the CPU: identical path
    assert propagate["extra"]["one_step_rel_err"] == 0.0
    composite = json.loads((tmp_path / "composite.smoke.json").read_text())
    assert composite["extra"]["propagate_s"] == pytest.approx(propagate["ours_s"], abs=1e-3)
    assert set(composite["extra"]["phases_s"]) == {
        "view_inputs",
        "composite",
        "encode_edited_and_side_by_side",
    }
    assert propagate["extra"]["propagation"] == "reference"  # the edit stage's default
    written = [p.name for p in tmp_path.glob("*.json")]
    assert written and all(n.endswith(".smoke.json") for n in written), written


def test_edit_bench_whole_edit_with_a_speed_preset(tmp_path, capsys):
    """``--preset`` runs the whole edit with the preset on, as the stage loads its models,
    and writes beside the exact result; it measures nothing else."""
    from bench import edit

    out = ["--size", "smoke", "--out-dir", str(tmp_path)]
    assert edit.main([*out, "--parts", "whole_edit", "--preset", "cache"]) == 0
    record = json.loads((tmp_path / "whole_edit_cache.smoke.json").read_text())
    assert record["extra"]["speed_preset"] == "cache"
    assert [p.name for p in tmp_path.iterdir()] == ["whole_edit_cache.smoke.json"]
    steps = capsys.readouterr().err  # how far a run cut off by a time limit got
    for step in ("phase 1", "first call", "painter built", "warm-up done", "phase 2"):
        assert step in steps, steps
    for bad in (["--preset", "cache"], ["--parts", "whole_edit", "--preset", "fp8"]):
        with pytest.raises(SystemExit) as exc:
            edit.main([*out, *bad])
        assert exc.value.code == 2
    errors = capsys.readouterr().err
    assert "use --parts whole_edit" in errors and "compute capability >= 8.9" in errors


@pytest.mark.slow
def test_edit_bench_runs_the_other_propagation_mode(tmp_path):
    """``--propagation lanepaint`` times and compares our earlier variant the same way."""
    from bench import edit

    assert (
        edit.main(
            [
                "--size",
                "smoke",
                "--out-dir",
                str(tmp_path),
                "--parts",
                "propagate",
                "--propagation",
                "lanepaint",
            ]
        )
        == 0
    )
    propagate = json.loads((tmp_path / "propagate.smoke.json").read_text())
    assert propagate["extra"]["propagation"] == "lanepaint"
    assert propagate["rel_err"] == 0.0 and propagate["ours_s"] > 0
    with pytest.raises(SystemExit):
        edit.main(["--size", "smoke", "--out-dir", str(tmp_path), "--propagation", "official"])


@pytest.mark.slow
def test_caption_bench_smoke(tmp_path):
    from bench import caption

    assert caption.main(["--size", "smoke", "--out-dir", str(tmp_path), "--repeats", "1"]) == 0
    for stage in ("judge", "caption_batch"):
        record = json.loads((tmp_path / f"{stage}.smoke.json").read_text())
        assert KEYS <= set(record) and record["ours_s"] > 0 and record["reference_s"] > 0


def test_attention_bench_smoke(tmp_path):
    """The SDPA kernel table runs on the CPU (the backends that exist there) and every
    kernel it times matches the float32 reference."""
    from bench import attention

    assert attention.main(["--size", "smoke", "--out-dir", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "attention.smoke.json").read_text())
    row = record["sdpa"]["tiny"]
    timed = {k: v for k, v in row.items() if isinstance(v, dict) and "ms" in v}
    assert timed and row["fastest"] in timed
    assert all(v["rel_err_vs_fp32"] < 1e-5 for v in timed.values())  # fp32 on the CPU


@pytest.mark.slow
def test_presets_bench_smoke(tmp_path):
    """Every preset this machine runs is timed beside exact (same run); the FP8 ones are
    recorded as not run where torchao cannot run them (the CPU)."""
    from bench import presets

    assert presets.main(["--size", "smoke", "--out-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "presets_propagate.smoke.json").read_text())
    rows = {r["extra"]["preset"]: r for r in result["propagate"]}
    assert rows["exact"]["extra"]["latents_rel_l2"] == 0.0 and "cache" in rows
    assert all(KEYS <= set(r) for r in rows.values())
    ran_fp8 = any("fp8" in name for name in rows)
    assert ran_fp8 or set(result["not_run"]) == {"fp8", "fp8+cache"}
    assert (tmp_path / "presets_first_frame.smoke.json").exists()


@pytest.mark.slow
def test_train_run_bench_smoke_kills_resumes_and_matches(tmp_path, monkeypatch, capsys):
    """The train-lora CLI run uninterrupted (A) and SIGKILLed after a checkpoint, then rerun
    (B): B resumes from that checkpoint and ends with A's loss curve and LoRA, exactly."""
    from bench import train_run

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny tensors on a shared 2-core machine
    work, out = tmp_path / "work", tmp_path / "perf"
    argv = ["--size", "smoke", "--work-dir", str(work), "--out-dir", str(out)]
    argv += ["--steps", "12", "--checkpoint-every", "2", "--kill-at", "3"]
    assert train_run.main([*argv, "--stop-after", "a"]) == 0  # a command time limit: A only
    assert (work / "a" / "lora").is_dir() and not (work / "b").exists()
    assert not (out / "train_run.smoke.json").exists()
    assert train_run.main(argv) == 0  # goes on with B
    record = json.loads((out / "train_run.smoke.json").read_text())
    assert KEYS <= set(record) and record["stage"] == "train_run"
    assert record["extra"]["weights"].startswith("smoke")
    x = record["extra"]
    killed, resumed = x["b_killed"], x["b_resumed"]
    # the first complete checkpoint >= 3, or a later one if the watcher was slow to look
    assert killed["killed_after_checkpoint"] in (4, 6, 8, 10)
    assert killed["last_logged_step"] >= killed["killed_after_checkpoint"]
    assert resumed["resumed_from_step"] == x["resumed_from_step"] >= 4
    assert resumed["steps_run"] == 12 - resumed["resumed_from_step"]
    assert x["a"]["resumed_from_step"] is None and x["a"]["steps_run"] == 12
    assert x["a"]["status"] == resumed["status"] == "complete"
    assert x["loss_curve"]["equal"] and x["loss_curve"]["steps_a"] == 13  # step 0 = first eval
    assert x["lora"]["equal"] and x["lora"]["tensors"] > 0 and record["rel_err"] == 0.0
    assert "resumed from step" in capsys.readouterr().out

    # a rerun finds every run finished (state.json) and only compares and writes again
    (out / "train_run.smoke.json").unlink()
    assert train_run.main(argv) == 0
    again = json.loads((out / "train_run.smoke.json").read_text())
    assert again["extra"]["b_killed"] == killed and again["ours_s"] == record["ours_s"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kill-at", "1", "--checkpoint-every", "2"], "--checkpoint-every (2) <= --kill-at (1)"),
        (["--kill-at", "8", "--steps", "8"], "--kill-at (8) < --steps (8)"),
        (["--model-root", "/nonexistent"], "has no FLUX.1-Fill-dev folder"),
    ],
)
def test_train_run_bench_user_errors_are_one_line_exit_2(args, message, tmp_path, capsys):
    from bench import train_run

    with pytest.raises(SystemExit) as exc:
        train_run.main(["--size", "smoke", "--work-dir", str(tmp_path / "w"), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # nothing built


def test_train_run_full_size_command_is_what_the_trainer_parses(tmp_path):
    """The full-size command (never run on the CPU) parses into the intended settings."""
    from bench import train_run
    from lanepaint.cli import build_parser
    from lanepaint.kit import from_args
    from lanepaint.training.config import TrainConfig

    sz = train_run.SIZES["full"]
    argv = train_run.train_argv(
        sz, tmp_path / "d", tmp_path / "m", tmp_path / "o", tmp_path, 200, 40
    )
    assert argv[1:4] == ["-m", "lanepaint.cli", "train-lora"]
    config = from_args(TrainConfig, build_parser().parse_args(argv[3:]))
    assert (config.rank, config.resolution, config.mixed_precision) == (128, 1024, "bf16")
    assert config.compile and config.attention_backend == "cudnn"
    assert config.activation_memory_budget == 0.5 and not config.gradient_checkpointing
    assert (config.max_train_steps, config.checkpointing_steps) == (200, 40)
    assert train_run.schedule("full", None, None, None) == (200, 40, 120)


def test_train_run_full_size_root_layout(tmp_path, monkeypatch):
    """The full-size root is written like the smoke one (stock FluxFill folder, CLIP vocab
    files) but marked as random weights, not smoke; too little disk stops before writing."""
    from bench import train_run
    from lanepaint.models.root import FLUX_FILL_DIR, ModelRoot
    from lanepaint.models.smoke import tiny_flux_fill

    monkeypatch.setattr(train_run, "_full_pipeline", lambda: tiny_flux_fill(0))  # no GPU here
    monkeypatch.setattr(train_run, "FULL_ROOT_GB", 0)  # the tiny one needs no 40 GB
    root = train_run.build_root("full", tmp_path / "models-full")
    assert (root / FLUX_FILL_DIR / "transformer" / "config.json").is_file()
    assert (root / FLUX_FILL_DIR / "tokenizer" / "vocab.json").is_file()
    assert json.loads((root / "RANDOM_WEIGHTS.json").read_text())["random_weights"] is True
    assert ModelRoot.open(root).metadata()["model_set"] == "random"  # never "real"
    assert not list(tmp_path.glob(".*building"))
    monkeypatch.setattr(train_run, "FULL_ROOT_GB", 10**9)
    with pytest.raises(SystemExit, match="free"):
        train_run.build_root("full", tmp_path / "other")
    assert not (tmp_path / "other").exists() and not list(tmp_path.glob(".*building"))


def test_two_gpu_bench_smoke(tmp_path):
    """The two-GPU bench's commands on the smoke models with CPU workers: every edit layout
    and the 1- and 2-process trainings run, their outputs agree, and the JSON has both
    speedups (no timing is asserted). At full size without two GPUs it exits 2."""
    from bench import two_gpu

    out = tmp_path / "two_gpu.smoke.json"
    args = ["--size", "smoke", "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    assert two_gpu.main([*args, "--train-steps", "2"]) == 0
    result = json.loads(out.read_text())
    assert result["edit_speedup"] > 0 and result["train_speedup"] > 0
    edit = result["edit"]
    assert {r["items"] for r in edit.values()} == {2} and edit["two_items"]["workers"] == 2
    assert edit["two_items"]["rel_err_vs_one_gpu"] <= two_gpu.TOLERANCE
    assert all(edit[k]["outputs_match"] for k in edit if k != "one_gpu")
    assert ("judge_gpu1" in edit) == (two_gpu.gpus() >= 2)  # on the CPU: one_gpu's command
    two = result["train"]["two_processes"]
    assert two["processes"] == 2 and two["losses_match_one"] and two["resume_matches"]
    if two_gpu.gpus() < 2:
        assert two_gpu.main(["--size", "full", "--out", str(tmp_path / "full.json")]) == 2
        assert not (tmp_path / "full.json").exists()


def test_two_gpu_bench_random_root_loads_as_a_model_root(tmp_path, monkeypatch):
    """The full-size root writer's layout, with the smoke architectures standing in for the
    full-size builders (12 B parameters do not fit a CPU test): the edit stage's loader
    reads it back, labelled random weights (never "real")."""
    from bench import two_gpu
    from lanepaint.models import fullsize, smoke
    from lanepaint.models.root import as_model_root
    from lanepaint.stages.edit import EditConfig, load_models

    monkeypatch.setattr(fullsize, "build_flux_fill_pipeline", lambda d: smoke.tiny_flux_fill())
    monkeypatch.setattr(
        fullsize, "build_cogvideox_i2v_pipeline", lambda d: smoke.tiny_cogvideox_i2v()
    )
    monkeypatch.setattr(fullsize, "build_qwen_vl", lambda d: smoke.tiny_qwen_vl())
    two_gpu.write_random_root(tmp_path / "root", "cpu")
    assert not as_model_root(str(tmp_path / "root")).is_smoke
    models = load_models(str(tmp_path / "root"), EditConfig(compile=False))
    assert models.judge is not None and models.metadata["model_set"] == "random"
