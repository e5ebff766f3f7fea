"""Speed presets (lanepaint.models.presets): names, the FP8 user error on machines without a
Hopper/Ada GPU, and the cache presets on the smoke models (first frame, propagation with the
branch hooks and ID resampling, the edit stage's records and settings key)."""

import numpy as np
import pytest
import torch

from lanepaint.models import presets
from lanepaint.models.smoke import SMOKE_EDIT_SETTINGS

STEPS = 14  # > warm-up + cool-down, so some steps are predicted: 2 of 14 with 8/3/3


def test_names_and_schedule():
    assert presets.parse("exact").exact and presets.parse("fp8+cache").fp8
    assert presets.parse("cache").cache and not presets.parse("cache").fp8
    with pytest.raises(ValueError, match="exact, fp8, cache, fp8\\+cache"):
        presets.parse("fast")
    assert presets.computed_steps(50) == 24  # 8 warm-up, 13 on the interval, 3 cool-down
    assert presets.computed_steps(STEPS) == 12
    assert presets.computed_steps(5) == 5  # too short to predict anything
    presets.check_supported("cache")  # runs anywhere


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU machine")
def test_fp8_without_a_hopper_gpu_is_a_one_line_user_error(tmp_path, caplog):
    from lanepaint.cli import main
    from lanepaint.data.videopainter import VideoPainterLayout

    with pytest.raises(ValueError, match="compute capability >= 8.9"):
        presets.check_supported("fp8+cache")
    VideoPainterLayout(str(tmp_path / "vp")).write_meta([])
    io = ["--data-dir", str(tmp_path / "vp"), "--output-dir", str(tmp_path / "out")]
    # The model root does not exist: the preset is refused before it is even looked at.
    assert main(["edit", *io, "--model-root", str(tmp_path / "none"), "--preset", "fp8"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert errors[0].startswith("speed preset 'fp8' needs a CUDA GPU")
    assert not (tmp_path / "out").exists()


def _count_computed(block) -> list[int]:
    """Calls that really ran the block (its attention runs only when the block computes)."""
    calls = [0]
    block.attn1.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _painter():
    from lanepaint.models.smoke import tiny_cogvideox_i2v, tiny_videopainter_branch
    from lanepaint.videopainter.pipeline import VideoPainterPipeline

    pipe = tiny_cogvideox_i2v()
    return VideoPainterPipeline(pipe, tiny_videopainter_branch(pipe.transformer))


@pytest.mark.slow
def test_cache_preset_propagates_with_branch_and_id_resampling():
    from lanepaint.data.synth import SceneSpec, render_clip

    painter = _painter()
    cfg = painter.pipe.transformer.config
    f = painter.pipe.vae_scale_factor_spatial
    spec = SceneSpec(width=cfg.sample_width * f, height=cfg.sample_height * f)
    video, road = render_clip(spec, 9, 8.0)
    first = 255 - video[0]

    def call():
        kwargs = dict(num_inference_steps=STEPS, window=5, overlap=1, seed=0, mask_dilation=2)
        return painter(video, road, "a road", first, **kwargs)

    exact = call()
    assert presets.apply("cache", [painter.pipe.transformer, painter.branch], STEPS)["cache"]
    calls = _count_computed(painter.pipe.transformer.transformer_blocks[0])
    cached, again = call(), call()
    windows = len(cached.window_starts)
    assert windows == 2 and cached.id_tokens  # two windows, ID resampling between them
    # The cache state starts afresh in every window: the schedule holds per window and a
    # rerun gives the same result.
    assert calls[0] == 2 * windows * presets.computed_steps(STEPS)
    assert torch.equal(cached.latents, again.latents)
    assert not torch.equal(cached.latents, exact.latents) and torch.isfinite(cached.latents).all()
    for block in painter.pipe.transformer.transformer_blocks:  # the branch hooks were removed
        assert not block._forward_hooks and not block._forward_pre_hooks


@pytest.mark.slow
def test_cache_preset_first_frame():
    from lanepaint.edit.first_frame import FirstFrameConfig, FirstFramePainter
    from lanepaint.edit.instructions import parse_instruction
    from lanepaint.models.smoke import tiny_flux_fill

    pipe = tiny_flux_fill()
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[12:, :] = 1
    painter = FirstFramePainter(pipe, None, FirstFrameConfig(size=32, steps=STEPS, dilation=0))
    instruction = parse_instruction("lane single white solid")
    exact = painter.run(frame, mask, instruction).best.image
    presets.apply("cache", [pipe.transformer], STEPS)
    cached = painter.run(frame, mask, instruction).best.image
    assert np.array_equal(cached, painter.run(frame, mask, instruction).best.image)
    assert not np.array_equal(cached, exact)
    assert pipe.transformer.is_cache_enabled


def test_evaluate_names_the_presets_of_the_edits():
    from lanepaint.evaluate.edits import model_set_line

    records = [
        {"model_set": "real", "model_set_label": "real weights", "speed_preset": "cache"},
        {"model_set": "real", "model_set_label": "real weights"},  # before presets: exact
    ]
    line, smoke = model_set_line(records)
    assert line == "Made with: real weights (speed preset: cache, exact)" and not smoke


@pytest.mark.slow
def test_compare_presets_edits_and_evaluates_each_preset(tmp_path):
    """One command: an edit and an evaluation per preset, side by side; a rerun redoes
    nothing; an unrunnable preset stops it before anything is written."""
    import json

    from lanepaint.data.synth import SceneSpec, render_clip
    from lanepaint.data.videopainter import VideoPainterLayout, VideoRecord
    from lanepaint.evaluate.presets import compare_presets
    from lanepaint.io.video import write_video
    from lanepaint.models.smoke import build_smoke
    from lanepaint.stages.edit import EditConfig

    root = str(build_smoke(tmp_path / "models"))
    layout = VideoPainterLayout(str(tmp_path / "vp"))
    video, road = render_clip(SceneSpec(width=96, height=64), 6, 8.0)
    rel = layout.raw_video_rel("chunk_0000", "v")
    (tmp_path / "vp" / rel).parent.mkdir(parents=True)
    write_video(layout.raw_video("chunk_0000", "v"), video, 8.0)
    layout.write_masks("v", road)
    layout.write_meta([VideoRecord("v", rel, "v", 8.0, 6, 96, 64, 0, 5)])
    config = EditConfig(judge=False, **SMOKE_EDIT_SETTINGS)
    out = tmp_path / "cmp"
    comparison = compare_presets(str(tmp_path / "vp"), str(out), root, ["exact", "cache"], config)
    assert comparison["presets"] == ["exact", "cache"]
    table = (out / "comparison.md").read_text()
    assert "| | exact | cache |" in table and "seconds per edit: propagate" in table
    records = {
        p: json.loads((out / p / "v" / "single_white_solid" / "record.json").read_text())
        for p in ("exact", "cache")
    }
    assert {p: r["speed_preset"] for p, r in records.items()} == {
        "exact": "exact",
        "cache": "cache",
    }
    assert records["exact"]["settings_key"] != records["cache"]["settings_key"]
    first = (out / "cache" / "_evaluation" / "summary.md").read_text().splitlines()[0]
    assert first.endswith("(speed preset: cache)")
    again = compare_presets(str(tmp_path / "vp"), str(out), root, ["exact", "cache"], config)
    assert again["rows"]["cache"]["metrics"] == comparison["rows"]["cache"]["metrics"]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="compute capability"):
            compare_presets(str(tmp_path / "vp"), str(tmp_path / "new"), root, ["fp8"], config)
        assert not (tmp_path / "new").exists()
