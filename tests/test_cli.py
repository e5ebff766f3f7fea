"""The `lanepaint` command: every stage is a subcommand, and --help stays light."""

import os
import subprocess
import sys

import pytest

from lanepaint.cli import main

STAGES = [
    "segment",
    "caption",
    "build-dataset",
    "filter-dataset",
    "train-lora",
    "edit",
    "evaluate",
    "lanes",
    "synth",
    "models",
    "kfp",
    "run-local",
]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in STAGES:
        assert f"    {name}" in out, name


def test_help_does_not_import_torch_or_kfp():
    code = (
        "import sys; from lanepaint.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'kfp', 'diffusers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_edit_cli_on_smoke(tmp_path, capsys):
    from test_edit import add_video

    from lanepaint.models.smoke import build_smoke

    smoke = build_smoke(tmp_path / "smoke")
    add_video(tmp_path / "vp", "v1", 5)
    code = main(
        [
            "edit",
            "--data-dir",
            str(tmp_path / "vp"),
            "--instruction",
            "lane single white solid",
            "--output-dir",
            str(tmp_path / "out"),
            "--model-root",
            str(smoke),
            "--no-judge",
            "--steps",
            "2",
            "--first-frame-steps",
            "2",
            "--first-frame-size",
            "32",
        ]
    )
    assert code == 0
    assert "edited 1 of 1" in capsys.readouterr().out
    assert (tmp_path / "out" / "v1" / "single_white_solid" / "edited.mp4").exists()


def test_cpu_blas_threads_are_fixed_for_reproducible_runs() -> None:
    """MKL_DYNAMIC=FALSE before torch loads MKL (a load-dependent thread count changed an
    edit's pixels between two CPU runs); an exported value is kept."""
    code = "import lanepaint, os; print(os.environ['MKL_DYNAMIC'])"
    env = {k: v for k, v in os.environ.items() if k != "MKL_DYNAMIC"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.stdout.strip() == "FALSE"
    env["MKL_DYNAMIC"] = "TRUE"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.stdout.strip() == "TRUE"
