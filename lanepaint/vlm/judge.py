"""The captioner and the judge: VLM prompts in, vocabulary and verdicts out."""

from __future__ import annotations

from collections.abc import Sequence

from lanepaint.vlm.panels import DEFAULT_TOKENS, judge_panels
from lanepaint.vlm.parse import CaptionAnswer, Verdict, parse_caption_answer, parse_verdict
from lanepaint.vlm.prompts import CAPTION_PROMPT, judge_prompt
from lanepaint.vlm.qwen import VLMGenerator


class Captioner:
    """Lane attributes of road images, batched."""

    def __init__(self, generator: VLMGenerator, max_new_tokens: int = 32, batch_size: int = 8):
        self.generator = generator
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def caption(self, images: Sequence) -> list[CaptionAnswer]:
        answers = self.generator.generate(
            images,
            [CAPTION_PROMPT] * len(images),
            self.max_new_tokens,
            batch_size=self.batch_size,
        )
        return [parse_caption_answer(a) for a in answers]


class Judge:
    """PASS/FAIL of a repainted frame against the requested caption, with a revised caption."""

    def __init__(
        self, generator: VLMGenerator, max_new_tokens: int = 128, tokens: int = DEFAULT_TOKENS
    ):
        self.generator = generator
        self.max_new_tokens = max_new_tokens
        self.tokens = tokens

    def judge(self, original, mask, result, caption: str) -> Verdict:
        return self.judge_many([(original, mask, result, caption)])[0]

    def judge_many(self, items: Sequence[tuple]) -> list[Verdict]:
        panels = [judge_panels(o, m, r, self.tokens) for o, m, r, _ in items]
        prompts = [judge_prompt(c) for *_, c in items]
        answers = self.generator.generate(panels, prompts, self.max_new_tokens)
        return [parse_verdict(a) for a in answers]
