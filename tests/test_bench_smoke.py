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
    reads it back, as real weights (no smoke marker)."""
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
    assert models.judge is not None and models.metadata["model_set"] == "real"
