"""VLM answer parsing against a corpus of recorded real-style answers."""

import json
from pathlib import Path

import pytest

from lanepaint.vlm.parse import extract_json, parse_caption_answer, parse_verdict

CORPUS = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "vlm_answers.jsonl").read_text().splitlines()
]


@pytest.mark.parametrize(
    "case", [c for c in CORPUS if c["kind"] == "caption"], ids=lambda c: c["answer"][:40]
)
def test_caption_answers(case):
    answer = parse_caption_answer(case["answer"])
    assert answer.attributes.caption == case["expect"]
    assert answer.method == case["method"]


@pytest.mark.parametrize(
    "case", [c for c in CORPUS if c["kind"] == "judge"], ids=lambda c: c["answer"][:40]
)
def test_judge_answers(case):
    verdict = parse_verdict(case["answer"])
    assert verdict.passed is case["passed"]
    assert verdict.parsed is case["parsed"]
    if "revised" in case:
        assert verdict.revised_caption == case["revised"]
    if not verdict.parsed:
        assert verdict.reasons, "an unreadable answer must say why it failed"


def test_over_long_answer_is_bounded():
    answer = '{"verdict": "FAIL", "reasons": ["' + "x" * 5000 + '"], "revised_caption": "'
    answer += "road " * 1000 + '"}'
    verdict = parse_verdict(answer)
    assert len(verdict.reasons[0]) <= 500 and len(verdict.revised_caption) <= 300


def test_extract_json_skips_non_objects():
    assert extract_json('first [1,2] then {"a": 1}') == {"a": 1}
    assert extract_json("no json here") is None
