"""First frame on the smoke FluxFill: instructions, blending, and the judge loop's rules."""

import numpy as np
import pytest

from lanepaint.edit.first_frame import FirstFrameConfig, FirstFramePainter
from lanepaint.edit.instructions import parse_instruction, parse_instructions
from lanepaint.vlm.parse import parse_verdict


@pytest.fixture(scope="module")
def flux():
    from lanepaint.models.smoke import tiny_flux_fill

    return tiny_flux_fill(seed=0)


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (40, 64, 3), dtype=np.uint8)
    mask = np.zeros((40, 64), np.uint8)
    mask[24:, 16:48] = 1
    return frame, mask


class ScriptedJudge:
    """Answers from a script, as the VLM would; records what it was asked."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = 0

    def judge(self, original, mask, result, caption):
        self.calls += 1
        return parse_verdict(self.answers.pop(0))


FAIL = '{"verdict": "FAIL", "reasons": ["dashed"], "revised_caption": "continuous white line"}'
PASS = '{"verdict": "PASS", "reasons": ["ok"], "revised_caption": ""}'
CONFIG = FirstFrameConfig(size=32, steps=2, dilation=2, feather=2, max_attempts=3, backoff_s=0)


def test_instructions():
    inst = parse_instruction("lane single white solid")
    assert inst.caption == "road with single white solid lane markings"
    assert inst.slug == "single_white_solid"
    assert parse_instruction("Lane Solid Yellow Double").slug == "double_yellow_solid"
    many = parse_instructions("lane single white solid || lane double yellow dashed||")
    assert [i.slug for i in many] == ["single_white_solid", "double_yellow_dashed"]
    for bad in ["lane single white", "lane triple white solid", "lane single white yellow solid"]:
        with pytest.raises(ValueError):
            parse_instruction(bad)


def test_paint_keeps_pixels_outside_the_feathered_mask(flux, scene):
    frame, mask = scene
    painter = FirstFramePainter(flux, None, CONFIG)
    out = painter.paint(frame, mask, "road with single white solid lane markings", "", seed=1)
    assert out.shape == frame.shape and out.dtype == np.uint8
    far = np.ones_like(mask, bool)
    far[24 - 6 :, 16 - 6 : 48 + 6] = False
    assert np.array_equal(out[far], frame[far])
    assert not np.array_equal(out[mask > 0], frame[mask > 0])


def test_loop_stops_at_pass(flux, scene):
    judge = ScriptedJudge([FAIL, PASS, PASS])
    result = FirstFramePainter(flux, judge, CONFIG).run(
        *scene, parse_instruction("lane single white solid")
    )
    assert len(result.attempts) == 2 and judge.calls == 2
    assert result.best.index == 1 and result.best.passed and not result.first_pass
    assert result.attempts[1].prompt_2 == "continuous white line"
    assert result.attempts[0].seed != result.attempts[1].seed


def test_loop_never_passing_keeps_best(flux, scene):
    judge = ScriptedJudge([FAIL] * 3)
    result = FirstFramePainter(flux, judge, CONFIG).run(
        *scene, parse_instruction("lane double yellow dashed")
    )
    assert len(result.attempts) == 3 and not result.best.passed
    best = max(result.attempts, key=lambda a: (a.analyzer_matches, -a.index))
    assert result.best is best
    assert result.as_dict()["passed"] is False


def test_unreadable_judge_answer_is_retried_with_backoff(flux, scene):
    slept = []
    judge = ScriptedJudge(["", "garbage", PASS])
    painter = FirstFramePainter(flux, judge, CONFIG, sleep=slept.append)
    result = painter.run(*scene, parse_instruction("lane single white solid"))
    assert result.first_pass and judge.calls == 3 and slept == [0, 0]


def test_fused_qkv_adds_no_weights_and_keeps_the_output():
    """compile_flux's fusion: same output, and the separate projections become views of
    the fused weights (diffusers would otherwise keep ~4 GiB of copies for full Flux)."""
    import torch

    from lanepaint.edit.first_frame import _share_fused_weights
    from lanepaint.models.smoke import tiny_flux_fill

    transformer = tiny_flux_fill().transformer
    g = torch.Generator().manual_seed(0)
    cfg = transformer.config
    x = torch.randn(1, 16, cfg.in_channels, generator=g)
    text = torch.randn(1, 8, cfg.joint_attention_dim, generator=g)
    pooled = torch.randn(1, cfg.pooled_projection_dim, generator=g)
    ids = dict(img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(8, 3))
    kwargs = dict(
        encoder_hidden_states=text,
        pooled_projections=pooled,
        timestep=torch.tensor([0.5]),
        guidance=torch.tensor([30.0]) if cfg.guidance_embeds else None,
        return_dict=False,
        **ids,
    )
    with torch.no_grad():
        before = transformer(x, **kwargs)[0]
        transformer.fuse_qkv_projections()
        _share_fused_weights(transformer)
        after = transformer(x, **kwargs)[0]
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    attn = transformer.transformer_blocks[0].attn
    fused = attn.to_qkv.weight
    for name in ("to_q", "to_k", "to_v"):
        part = getattr(attn, name).weight
        assert part.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr()
    added = attn.to_added_qkv.weight
    assert attn.add_q_proj.weight.untyped_storage().data_ptr() == added.untyped_storage().data_ptr()
