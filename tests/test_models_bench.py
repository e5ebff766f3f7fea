"""Full-size builders (checked on the meta device, no memory) and ``bench.models``."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from pathlib import Path

import pytest
import torch

from bench import models as bench_models
from bench.models import bench_one
from bench.models import main as bench_main
from lanepaint.models import fullsize


def n_params(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


@pytest.mark.parametrize(
    ("build", "billions"),
    [
        (fullsize.build_flux_transformer, 11.90),
        (fullsize.build_cogvideox_transformer, 5.57),
        (lambda device: fullsize.build_qwen_vl(device)[0], 8.29),
    ],
)
def test_full_size_models_match_models_md(build, billions: float) -> None:
    model = build("meta")
    params = list(model.parameters())
    assert {p.device.type for p in params} == {"meta"}
    assert {p.dtype for p in params} == {torch.bfloat16}
    assert n_params(model) / 1e9 == pytest.approx(billions, abs=0.01)
    assert torch.get_default_dtype() == torch.float32  # restored after building


def test_full_size_pipelines_have_their_text_encoders() -> None:
    flux = fullsize.build_flux_fill_pipeline("meta")
    assert n_params(flux.text_encoder_2) / 1e9 == pytest.approx(4.76, abs=0.01)  # T5-XXL
    assert n_params(flux.text_encoder) / 1e6 == pytest.approx(123, abs=1)  # CLIP-L
    assert flux.vae_scale_factor == 8
    cog = fullsize.build_cogvideox_i2v_pipeline("meta")
    assert n_params(cog.text_encoder) == n_params(flux.text_encoder_2)


def test_allocate_on_restores_the_default_dtype() -> None:
    with pytest.raises(RuntimeError), fullsize.allocate_on("meta", torch.bfloat16):
        assert torch.empty(1).dtype == torch.bfloat16
        raise RuntimeError("boom")
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.slow
@pytest.mark.parametrize("name", ["flux_transformer", "cogvideox_transformer"])
def test_full_size_forward_inputs_fit_the_full_configs(name: str) -> None:
    """The inputs the GPU benchmark will use, shape-checked on the meta device."""
    record = bench_one(name, "full", "meta", torch.bfloat16, repeats=1)
    assert record["status"] == "ok", record


@pytest.mark.slow
def test_full_size_sam2_is_hiera_large() -> None:
    predictor = fullsize.build_sam2_video_predictor("cpu")
    assert n_params(predictor) / 1e6 == pytest.approx(224.4, abs=0.5)
    assert predictor.image_size == 1024


def test_bench_smoke_runs_every_model(tmp_path: Path, capsys) -> None:
    out = tmp_path / "perf" / "models.json"
    assert bench_main(["--size", "smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["size"] == "smoke" and report["card"] == "cpu"
    assert [r["model"] for r in report["results"]] == [
        "flux_transformer",
        "cogvideox_transformer",
        "qwen_vl_7b",
        "sam2_hiera_large",
    ]
    for record in report["results"]:
        assert record["status"] == "ok" and record["params"] > 0 and record["forward_s"] > 0
    table = capsys.readouterr().out
    assert "forward s" in table and "sam2_hiera_large" in table


def test_bench_records_an_oom_and_goes_on(tmp_path: Path, monkeypatch) -> None:
    def out_of_memory(size: str, device: str, dtype: torch.dtype):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 22.00 GiB")

    monkeypatch.setitem(bench_models.BUILDERS, "flux_transformer", out_of_memory)
    out = tmp_path / "models.json"
    models = "flux_transformer,cogvideox_transformer"
    assert bench_main(["--size", "smoke", "--models", models, "--out", str(out)]) == 1
    results = json.loads(out.read_text())["results"]
    assert [r["status"] for r in results] == ["oom", "ok"]
    assert "22.00 GiB" in results[0]["error"]


def test_bench_full_size_needs_a_gpu(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert bench_main(["--size", "full", "--out", str(tmp_path / "x.json")]) == 2
