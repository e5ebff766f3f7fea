"""Judge primitives: the 3-panel image and a smoke-VLM judge that never crashes."""

import numpy as np
import pytest

from lanepaint.vlm.judge import Judge
from lanepaint.vlm.panels import PATCH, judge_panels, panel_size
from lanepaint.vlm.qwen import VLMGenerator


def test_panel_budget_matches_work_unit():
    h, w = panel_size(1080, 1920)
    tokens = 3 * (h // PATCH) * (w // PATCH)
    assert 900 <= tokens <= 1080 and h % PATCH == 0 and w % PATCH == 0


def test_panels_layout():
    original = np.full((90, 160, 3), 10, np.uint8)
    result = np.full((90, 160, 3), 200, np.uint8)
    mask = np.zeros((90, 160), np.uint8)
    mask[45:] = 1
    img = np.asarray(judge_panels(original, mask, result, tokens=300))
    h, w = panel_size(90, 160, tokens=300)
    assert img.shape[0] == h
    assert img[0, 0].tolist() == [10, 10, 10]
    assert img[-1, -1].tolist() == [200, 200, 200]
    mid = img[:, w + (img.shape[1] - 3 * w) // 2 + w // 2]
    assert mid[0].tolist() == [0, 0, 0] and mid[-1].tolist() == [255, 255, 255]
    with pytest.raises(ValueError):
        judge_panels(original, mask, result[:10])


def test_smoke_judge_is_deterministic_and_safe():
    from lanepaint.models.smoke import tiny_qwen_vl

    model, processor = tiny_qwen_vl(seed=0)
    judge = Judge(VLMGenerator(model, processor), max_new_tokens=8, tokens=60)
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (56, 84, 3), dtype=np.uint8)
    mask = np.zeros((56, 84), np.uint8)
    mask[28:] = 1
    a = judge.judge(frame, mask, frame[::-1].copy(), "road with single white solid lane markings")
    b = judge.judge(frame, mask, frame[::-1].copy(), "road with single white solid lane markings")
    assert a.raw == b.raw
    # Random weights answer garbage: a FAIL with a reason, not an exception.
    assert not a.passed and a.reasons
