"""Issue 21: hard synthetic conditions, abstention, and the analyzer's confidence downstream.

The accuracy checks run on scenes of ``TEST_SEED``: neither the seed the thresholds were
tuned on nor the one of the table in docs/quality.md.
"""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from lanepaint.data.synth import SceneSpec, render_frame
from lanepaint.data.synth_hard import HARD_CONDITIONS, hard_spec
from lanepaint.data.vocab import LaneAttributes
from lanepaint.lanes import analyze, classify, detect
from lanepaint.lanes.accuracy import (
    GOAL,
    MAX_ABSTENTION,
    SCORED,
    TEST_SEED,
    Case,
    hard_specs,
    run_synthetic_images,
    tally,
)
from lanepaint.lanes.analyze import (
    MIN_CONFIDENCE,
    LaneAnalysis,
    SideResult,
    _vote,
    analyze_image,
    trusted_attributes,
)

SHORTFALLS = {("worn", "pattern"): 0.85, ("occluded", "pattern"): 0.85}
#: Abstention above the goal's 25 % on these scenes (measured: 4 of 12 lines each, 33 %).
ABSTENTION_SHORTFALLS = {("worn", "pattern"): 0.34, ("occluded", "pattern"): 0.34}
YELLOW_SOLID = LaneAttributes("single", "yellow", "solid")
WHITE_DASHED = LaneAttributes("single", "white", "dashed")


@pytest.fixture(scope="module")
def hard_cases() -> list[Case]:
    specs = hard_specs(6, HARD_CONDITIONS, ((320, 192),), TEST_SEED)
    return run_synthetic_images(specs, (1.5,))


@pytest.mark.slow
@pytest.mark.parametrize("condition", HARD_CONDITIONS)
def test_hard_condition_answers_are_right(hard_cases, condition):
    # Goal, first half: >= 95 % of the answers right, per attribute (abstentions aside).
    # Pattern under worn paint and under occluding traffic are the known shortfalls
    # (docs/quality.md): a solid line worn to a third of its paint, or hidden by cars,
    # can still read as dashed (7 of 8 answers right for each on these scenes). They are
    # held at those levels here so that they cannot get worse unnoticed.
    t = tally([c for c in hard_cases if c.group == condition])
    assert t.cases == 6
    for name in SCORED:
        floor = SHORTFALLS.get((condition, name), GOAL)
        assert t.answered_accuracy(name) >= floor, (condition, name, t.wrong_answers)


@pytest.mark.slow
@pytest.mark.parametrize("condition", HARD_CONDITIONS)
def test_hard_conditions_answer_most_lines(hard_cases, condition):
    # Goal, second half: at most 25 % of the lines unanswered per attribute, but for the
    # known shortfalls (pattern: occluded, and worn on these few lines), held at their
    # measured level.
    t = tally([c for c in hard_cases if c.group == condition])
    for name in SCORED:
        limit = ABSTENTION_SHORTFALLS.get((condition, name), MAX_ABSTENTION)
        assert t.abstention(name) <= limit, (condition, name, t.abstention(name))


def test_hard_specs_are_seeded_and_labelled():
    a = [spec for _, _, spec in hard_specs(2, HARD_CONDITIONS, ((320, 192),), 5)]
    b = [spec for _, _, spec in hard_specs(2, HARD_CONDITIONS, ((320, 192),), 5)]
    c = [spec for _, _, spec in hard_specs(2, HARD_CONDITIONS, ((320, 192),), 6)]
    assert a == b and a != c
    by: dict[str, list[SceneSpec]] = {}
    for _, condition, spec in hard_specs(2, HARD_CONDITIONS, ((320, 192),), 5):
        by.setdefault(condition, []).append(spec)
    assert all(len(spec.absent) == 1 and spec.curb for spec in by["curb_parked"])
    assert all(spec.left.count == "double" and spec.oncoming for spec in by["double_oncoming"])
    assert all(spec.confound for spec in by["single_dashed"])
    with pytest.raises(ValueError, match="unknown hard condition"):
        hard_spec("fog", np.random.default_rng(0), YELLOW_SOLID, WHITE_DASHED, 320, 192)


def test_curb_side_is_never_reported_as_a_line():
    # parked cars and a curb where the ego lane has no right line
    for seed in (1, 2, 3):
        spec = SceneSpec(left=YELLOW_SOLID, absent=("right",), curb=True, lanes_right=0, seed=seed)
        rgb, _, lane = render_frame(spec, 1.0)
        assert not (lane == 2).any()  # no right ego line painted
        result = analyze_image(rgb)
        assert result.right.presence in ("absent", "unknown"), result.right
        assert result.right.attributes == LaneAttributes()
        assert result.left.presence == "present"


def _evidence(coverage: float, gaps: int, longest: float = 1.5, **extra):
    base = dict(
        a0=-1.5,
        rows_visible=250,
        coverage=coverage,
        long_gaps=gaps,
        visible_range=4.0,
        chroma_delta=0.0,
        profile_peaks=1,
        peak_separation=0.0,
        dip_ratio=1.0,
        lift=1.8,
        balance=0.01,
        width=0.125,
        longest_gap=longest,
    )
    return classify.LineEvidence(**(base | extra))


def test_weak_evidence_abstains():
    # between dashed and solid coverage: neither answer is confident
    assert classify.decide_pattern(_evidence(0.64, 2)).confidence < MIN_CONFIDENCE
    # holes of a metre (worn paint), not dash gaps
    assert classify.decide_pattern(_evidence(0.4, 3, longest=0.4)).confidence < MIN_CONFIDENCE
    assert classify.decide_pattern(_evidence(0.35, 3)).value == "dashed"
    # colour on the yellow threshold
    edge = _evidence(0.95, 0, chroma_delta=classify.YELLOW_DELTA)
    assert classify.decide_color(edge).confidence == pytest.approx(0.5)
    # too wide, one-sided or no lighter than the road: not paint
    assert classify.not_paint(_evidence(1.0, 0, width=0.3))
    assert classify.not_paint(_evidence(1.0, 0, balance=0.7))
    assert classify.not_paint(_evidence(1.0, 0, lift=1.0))
    assert not classify.not_paint(_evidence(1.0, 0))
    line = classify.Line(-1.3, 0.0, 0.0, rows=200, extent=4.0)
    assert classify.decide_presence(line, _evidence(1.0, 0)).confidence > 0.9
    assert classify.decide_presence(line, _evidence(1.0, 0, width=0.24)).confidence < 0.55


def test_paint_narrow_in_each_row_is_paint_where_the_fit_drifts():
    # a stripe 0.125 camera heights wide whose centre drifts 0.3 off the line's fit over
    # 40 rows (cars hid the horizon): one shift for all rows smears it, each row does not
    rows, cols, half = 40, 61, int(round(0.35 / classify.DA))
    centre = np.full(rows, 30)
    drift = np.linspace(-6, 6, rows).round().astype(int)
    strength = np.zeros((rows, cols))
    for r, d in enumerate(drift):
        strength[r, 28 + d : 33 + d] = 1.0
    smeared = classify._half_width(strength[:, 30 - half : 30 + half + 1].mean(axis=0))
    shifts = {r: float(d) for r, d in enumerate(drift)}
    narrow = classify._row_width(strength, centre, shifts, half)
    assert smeared > 0.24 and narrow == pytest.approx(0.125)
    # a car's flank or a gutter pan is wide in every row
    strength[:, 22:40] = 1.0
    assert classify._row_width(strength, centre, shifts, half) > classify.MAX_WIDTH[0]
    # too few rows to tell
    assert classify._row_width(strength, centre, {0: 0.0, 1: 0.0}, half) == math.inf
    line = classify.Line(-1.3, 0.0, 0.0, rows=200, extent=4.0)
    drifted = _evidence(1.0, 0, width=smeared, row_width=narrow)
    assert classify.decide_presence(line, drifted).confidence > 0.9
    wide = _evidence(1.0, 0, width=smeared, row_width=smeared)
    assert classify.decide_presence(line, wide).confidence < MIN_CONFIDENCE


def test_a_line_read_white_with_much_yellow_in_it_is_in_doubt():
    white = classify.decide_color(_evidence(1.0, 0, chroma_delta=0.02, yellow_share=0.0))
    assert white.value == "white" and white.confidence > 0.9
    # a yellow line whose fit runs onto a light car: the median is white, a third is yellow
    mixed = classify.decide_color(_evidence(1.0, 0, chroma_delta=0.06, yellow_share=0.35))
    assert mixed.confidence < MIN_CONFIDENCE
    yellow = classify.decide_color(_evidence(1.0, 0, chroma_delta=0.3, yellow_share=0.9))
    assert yellow.value == "yellow" and yellow.confidence > 0.9


def test_double_line_dip_band_abstains():
    # two peaks at a double line's spacing: a clear dip is double, a faint one (worn or
    # glared paint) is neither answer, only a nearly flat top is single
    def count(dip: float) -> classify.Decision:
        ev = _evidence(1.0, 0, profile_peaks=2, peak_separation=0.15, dip_ratio=dip)
        return classify.decide_count(ev)

    assert count(0.6).value == "double" and count(0.6).confidence > 0.9
    assert count(0.76).value == "double" and count(0.76).confidence >= MIN_CONFIDENCE
    assert count(0.84).confidence < MIN_CONFIDENCE
    assert count(0.97).value == "single" and count(0.97).confidence >= MIN_CONFIDENCE


def test_second_stripe_is_a_worn_stripe_not_a_ghost():
    # rows x columns centred on a line; a second stripe 0.2 camera heights to its right
    rows, cols, gap = 40, 29, int(round(0.2 / classify.DA))
    profiles = np.full((rows, cols), 0.02)
    profiles[:, 13:16] = 1.0
    worn = profiles.copy()
    worn[::3, 13 + gap : 16 + gap] = 0.9  # paint left in a third of the rows
    assert classify.second_stripe(worn) == pytest.approx(14 / 40)
    ghost = profiles.copy()
    ghost[:, 13 + gap : 16 + gap] = 0.3  # faint all along: old paint
    assert classify.second_stripe(ghost) == 0.0
    assert classify.second_stripe(profiles) == 0.0
    plateau = profiles.copy()  # a wide bright edge: no dip, no second stripe
    plateau[:, 13 : 16 + gap] = 1.0
    plateau[::3, 14 + gap] = 1.2
    assert classify.second_stripe(plateau) == 0.0


def test_a_worn_double_line_is_not_called_single():
    # one peak, but a second stripe with paint in a third of the rows: no answer
    one_peak = _evidence(1.0, 0, second_stripe=0.35)
    assert classify.decide_count(one_peak).confidence < MIN_CONFIDENCE
    assert classify.decide_count(_evidence(1.0, 0, second_stripe=0.1)).value == "single"
    assert classify.decide_count(_evidence(1.0, 0, second_stripe=0.1)).confidence > 0.8

    # two peaks at a double line's spacing with a flat top, over paint wider than one
    # stripe: the stripes merged, not a single line
    def flat(width: float) -> classify.Decision:
        ev = _evidence(1.0, 0, profile_peaks=2, peak_separation=0.15, dip_ratio=0.98)
        return classify.decide_count(replace(ev, width=width))

    assert flat(0.125).value == "single" and flat(0.125).confidence >= MIN_CONFIDENCE
    assert flat(0.275).confidence < MIN_CONFIDENCE


def test_a_candidate_only_too_wide_is_no_doubt_about_an_absent_line():
    wide = _evidence(1.0, 0, width=0.35)
    assert classify.not_paint(wide) and not classify.may_be_paint(wide)
    # a narrow edge between unlike grounds or yellow paint may be a line half hidden
    assert classify.may_be_paint(_evidence(1.0, 0, balance=0.7))
    assert classify.may_be_paint(_evidence(1.0, 0, width=0.35, chroma_delta=0.2))
    # a wide one, not yellow, is the edge of a snow bank or a sidewalk
    assert not classify.may_be_paint(_evidence(1.0, 0, width=0.35, balance=0.7))
    # no paint near the camera though the road is in view: a car's edge far ahead, unless
    # there is little of it (what is left of a worn line)
    far = _evidence(0.4, 1, near_view=120, near_paint=0, paint_rows=80)
    assert classify.not_paint(far) and not classify.may_be_paint(far)
    assert classify.may_be_paint(_evidence(0.4, 1, near_view=120, near_paint=0, paint_rows=30))


def test_the_farther_line_of_a_lane_too_wide_is_in_doubt():
    near, usual, far = (classify.Line(a0, 0.0, 0.0) for a0 in (1.3, -1.5, -2.7))
    # a lane of usual width: neither line in doubt
    assert classify.outer_line_doubt(usual, near) > 0.99
    assert classify.outer_line_doubt(near, usual) == 1.0
    # 4 camera heights wide: the far one may be a curb or a parked car's edge, not the near
    assert classify.outer_line_doubt(far, near) < 0.05
    assert classify.outer_line_doubt(near, far) == 1.0
    assert classify.outer_line_doubt(far, None) == 1.0


def test_beside_worn_paint_a_missing_line_is_not_surely_absent():
    # short gaps holding a trace of paint on a line not fully painted: worn paint
    worn = _evidence(0.5, 3, longest=0.9, gap_paint=0.15, mean_gap=0.7)
    assert classify.worn_paint(worn)
    assert not classify.worn_paint(replace(worn, gap_paint=0.02))  # clean gaps: dashes
    assert not classify.worn_paint(replace(worn, mean_gap=2.0))  # long gaps: dashes
    assert not classify.worn_paint(replace(worn, coverage=0.95))  # nearly whole
    sure = analyze._absent_confidence([], [], 1, found=1)
    doubtful = analyze._absent_confidence([], [], 1, found=1, worn_beside=True)
    assert sure >= MIN_CONFIDENCE > doubtful


def test_road_without_markings_is_absent_on_both_sides():
    spec = SceneSpec(absent=("left", "right"), lanes_left=0, lanes_right=0, seed=1)
    result = analyze_image(render_frame(spec, 1.0)[0])
    assert "no lane line found" in result.notes
    for side in (result.left, result.right):
        assert side.presence == "absent" and side.attributes == LaneAttributes()
        assert MIN_CONFIDENCE <= side.confidence["presence"] < 0.7  # answered, not trusted


def test_side_result_carries_presence_and_unknowns_have_zero_confidence():
    blank = analyze_image(np.zeros((192, 320, 3), np.uint8))
    for side in (blank.left, blank.right):
        assert side.presence == "unknown"
        assert set(side.confidence) == {"presence", "count", "color", "pattern"}
        assert not any(side.confidence.values())
    d = blank.as_dict()["left"]
    assert d["presence"] == "unknown"


def test_vote_over_frames_keeps_presence():
    conf = {"presence": 0.9, "count": 0.9, "color": 0.9, "pattern": 0.9}
    line = SideResult("single", "white", "dashed", conf, "present")
    none = SideResult(confidence={**conf, "presence": 0.8}, presence="absent")
    assert _vote([line, line, none], 1).presence == "present"
    gone = _vote([none, none, line], 1)
    assert gone.presence == "absent" and gone.attributes == LaneAttributes()


def _analysis(conf_color: float) -> dict:
    def side(color: str) -> dict:
        return {
            "presence": "present",
            "count": "single",
            "color": color,
            "pattern": "solid",
            "confidence": {"presence": 0.9, "count": 0.9, "color": conf_color, "pattern": 0.9},
        }

    left, right = side("yellow"), side("yellow")
    attrs = LaneAttributes.combine(
        LaneAttributes("single", "yellow", "solid"), LaneAttributes("single", "yellow", "solid")
    )
    return {"left": left, "right": right, "caption": attrs.caption}


def test_low_confidence_attributes_are_no_disagreement():
    from lanepaint.vlm.caption import caption_record

    white = LaneAttributes("single", "white", "solid")
    answer = SimpleNamespace(attributes=white, method="json", raw="{}")
    sure = caption_record("a", answer, _analysis(0.95))
    assert sure["agree"]["color"] is False and sure["disagree"]
    unsure = caption_record("a", answer, _analysis(0.6))  # answered, but below 0.7
    assert unsure["agree"]["color"] is None and not unsure["disagree"]
    assert unsure["agree"]["count"] is True
    assert trusted_attributes(_analysis(0.6)).color == "unknown"
    assert trusted_attributes(_analysis(0.95)).color == "yellow"


def test_evaluate_counts_an_abstention_as_not_correct(monkeypatch):
    from lanepaint.evaluate import metrics
    from lanepaint.lanes import analyze

    def fake_video(*args, **kwargs):
        conf = {"presence": 0.9, "count": 0.9, "color": 0.6, "pattern": 0.9}
        side = SideResult("single", "yellow", "solid", conf, "present")
        return LaneAnalysis(side, side)

    monkeypatch.setattr(analyze, "analyze_video", fake_video)
    wanted = LaneAttributes("single", "yellow", "solid")
    out = metrics.lane_attributes(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8)), wanted)
    assert out["attribute_correct"] == {"count": True, "color": False, "pattern": True}
    assert out["analyzer_abstained"] == ["color"]


def test_worn_solid_and_dashed_lines_are_told_apart_by_their_gaps():
    decide = classify.decide_pattern
    # paint on half the rows, short gaps with a trace of paint left in them: worn solid
    worn = decide(_evidence(0.5, 3, longest=0.9, gap_paint_high=0.2, mean_gap=0.6))
    assert worn.value == "solid" and worn.confidence >= MIN_CONFIDENCE
    # worn paint is patchy: a trace in a quarter of the gap rows will do (median bare)
    patchy = decide(
        _evidence(0.3, 4, longest=1.2, gap_paint=0.03, gap_paint_high=0.14, mean_gap=0.8)
    )
    assert patchy.value == "solid" and patchy.confidence >= MIN_CONFIDENCE
    # ... of faded paint only: bright dashes on concrete keep its seams' trace in their gaps
    fresh = decide(_evidence(0.5, 3, longest=0.9, gap_paint_high=0.2, mean_gap=0.6, lift=2.4))
    assert fresh.confidence < MIN_CONFIDENCE
    # the same gaps of clean asphalt: dashed
    clean = decide(_evidence(0.5, 3, longest=0.9, gap_paint_high=0.01, mean_gap=0.6))
    assert clean.value == "dashed" and clean.confidence >= MIN_CONFIDENCE
    # a faint trace between clean and worn: no answer
    faint = decide(_evidence(0.4, 3, longest=0.9, gap_paint_high=0.085, mean_gap=0.6))
    assert faint.confidence < MIN_CONFIDENCE
    # gaps metres long stay dash gaps even with a faint trace (seams, tyre marks on concrete)
    concrete = decide(_evidence(0.4, 1, longest=2.0, gap_paint_high=0.3, mean_gap=2.0))
    assert concrete.value == "dashed" and concrete.confidence >= MIN_CONFIDENCE
    # only short holes over a long stretch: solid; over a dash's length: no answer
    holed = decide(_evidence(0.65, 2, longest=0.5, mean_gap=0.45))
    assert holed.value == "solid" and holed.confidence >= MIN_CONFIDENCE
    near = decide(_evidence(0.65, 1, longest=0.5, mean_gap=0.5, visible_range=1.4))
    assert near.confidence < MIN_CONFIDENCE


def test_dashes_are_painted_at_one_period_worn_holes_are_not():
    decide = classify.decide_pattern
    # long gaps with a trace of faded paint: alike in length, dashes (worn or on concrete)
    even = _evidence(0.3, 3, longest=1.6, gap_paint_high=0.25, mean_gap=1.5, gap_ratio=0.9)
    assert decide(even).value == "dashed" and decide(even).confidence >= MIN_CONFIDENCE
    # of unlike length: holes in a worn solid line, or a dash worn through: no answer
    uneven = decide(replace(even, gap_ratio=0.45))
    assert uneven.confidence < MIN_CONFIDENCE
    # clean gaps of unlike length: dashes seen through a hole in the view, or a worn dash
    clean = decide(replace(even, gap_ratio=0.45, gap_paint_high=0.02))
    assert clean.value == "dashed" and clean.confidence >= MIN_CONFIDENCE
    # fresh paint: a trace is the road's (concrete seams), not worn paint
    fresh = decide(replace(even, gap_ratio=0.45, lift=2.4))
    assert fresh.value == "dashed" and fresh.confidence >= MIN_CONFIDENCE
    # one gap only: nothing to compare
    single = decide(replace(even, long_gaps=1, gap_ratio=float("nan")))
    assert single.value == "dashed" and single.confidence >= MIN_CONFIDENCE


def test_gap_ratio_compares_the_two_longest_inner_gaps():
    z = np.linspace(6.0, 0.0, 301)  # 0.02 z units a row, far to near
    seen = np.ones(301, bool)
    on = np.ones(301, bool)
    on[20:120] = on[150:200] = on[220:230] = False  # gaps of 2.0, 1.0 and 0.2 (a hole)
    coverage, gaps, _, longest, inner = classify._coverage(on, seen, z, None)
    assert gaps == 2 and longest == pytest.approx(2.0) and len(inner) == 2
    assert sorted(inner) == pytest.approx([1.0, 2.0])
    assert classify.gap_ratio(inner) == pytest.approx(0.5)
    assert classify.gap_ratio([1.0, 0.5, 0.96]) == pytest.approx(0.96)
    assert math.isnan(classify.gap_ratio([2.0]))


def test_the_length_judged_leaves_out_rows_a_car_hides():
    z = np.linspace(6.0, 0.0, 301)  # 0.02 z units a row, far to near
    seen = np.ones(301, bool)
    on = np.ones(301, bool)
    on[20:120] = False
    assert classify._coverage(on, seen, z, None)[2] == pytest.approx(6.0)
    seen[240:290] = False  # a car over the line: the pattern is judged on what is seen
    assert classify._coverage(on, seen, z, None)[2] == pytest.approx(5.0)


def test_paint_unbroken_for_longer_than_a_dash_is_a_solid_line():
    decide = classify.decide_pattern
    # a solid line in view near the camera, then a car it is not told from, then paint:
    # one long gap reads as a dash gap ...
    hidden = _evidence(0.46, 1, longest=2.6, mean_gap=2.6, visible_range=5.7, near_run=1.0)
    assert decide(hidden).value == "dashed" and decide(hidden).confidence >= MIN_CONFIDENCE
    # ... unless the near paint runs on for longer than any dash
    long_run = decide(replace(hidden, near_run=1.9))
    assert long_run.value == "solid" and long_run.confidence >= MIN_CONFIDENCE
    # a trace in the gaps (a ghost stripe, worn paint) may join dashes into one run: no answer
    traced = decide(replace(hidden, near_run=1.9, gap_paint_high=0.3))
    assert traced.confidence < MIN_CONFIDENCE
    # paint over most of the rows already reads solid; the run makes it sure
    covered = _evidence(0.73, 1, longest=1.4, visible_range=5.7, near_run=1.0)
    assert decide(covered).value == "solid" and decide(covered).confidence < MIN_CONFIDENCE
    assert decide(replace(covered, near_run=3.1)).confidence >= MIN_CONFIDENCE
    # the longest dash seen on the Udacity frames keeps its answer
    dash = decide(replace(hidden, near_run=1.3))
    assert dash.value == "dashed" and dash.confidence >= MIN_CONFIDENCE


def test_near_run_is_the_longest_unbroken_paint_reaching_the_near_stretch():
    z = np.linspace(7.0, 1.0, 301)  # 0.02 z units a row, far to near
    on = np.zeros(301, bool)
    on[0:150] = True  # 3.0 z units, far: ends at z = 4.02 (blurred dashes may join there)
    on[160:200] = True  # 0.8, ends at z = 3.02
    on[210:216] = on[217:260] = True  # 0.12 and 0.86: one row without paint breaks a run
    assert classify.near_run(on, z) == pytest.approx(0.86)
    on[150] = True  # the far run now reaches z = 4.0
    assert classify.near_run(on, z) == pytest.approx(3.02)
    assert classify.near_run(np.zeros(301, bool), z) == 0.0


def test_a_gap_that_starts_at_a_cars_dark_base_is_out_of_view():
    rows, cols = 120, 40
    centre = np.full(rows, 20)
    on = np.zeros(rows, bool)
    on[:20] = on[60:] = True  # far paint, a gap (rows 20-59), near paint
    seen = np.ones(rows, bool)
    surface = np.full((rows, cols), 100.0)
    maps = detect.MarkingMaps(
        *(np.zeros((rows, cols)),) * 3,
        on[:, None] & np.ones((1, cols), bool),
        np.ones((rows, cols), bool),
        surface,
    )
    ref = np.full(rows, 100.0)
    # a dash gap: asphalt all along
    assert not classify._gaps_under_cars(centre, maps, ref, seen, on).any()
    # where the near paint stops, ground at 0.4 of the asphalt: a car's base over the line
    surface[55:60] = 40.0
    under = classify._gaps_under_cars(centre, maps, ref, seen, on)
    assert under[20:60].all() and not under[:20].any() and not under[60:].any()
    # as dark at the gap's far end only: a dash gap with a car (or shadow) beyond it
    surface[55:60], surface[20:25] = 100.0, 40.0
    assert not classify._gaps_under_cars(centre, maps, ref, seen, on).any()
    # a tree shadow at 0.6 of the asphalt is not a car's base
    surface[20:25], surface[50:60] = 100.0, 60.0
    assert not classify._gaps_under_cars(centre, maps, ref, seen, on).any()


def test_gap_trace_measures_paint_left_in_the_gaps():
    rows, cols = 60, 80
    centre = np.full(rows, 40)
    on = np.zeros(rows, bool)
    on[::4] = on[1::4] = True  # paint on half the rows
    seen, valid = np.ones(rows, bool), np.ones((rows, cols), bool)
    paint_cols = np.array([-1, 0, 1])
    for left in (0.0, 0.3):
        strength = np.full((rows, cols), 0.05)
        strength[:, 39:42] = np.where(on, 1.0, 0.05 + left)[:, None]
        trace = classify.gap_trace(strength, centre, paint_cols, on, seen, valid)
        assert trace == pytest.approx((left / 0.95, left / 0.95), abs=0.01)
    # paint left in a third of the gap rows only: the median is bare, the upper quartile not
    strength[:, 39:42] = np.where(on, 1.0, 0.05)[:, None]
    patches = ~on & (np.arange(rows) % 12 < 4)
    strength[patches, 39:42] = 0.35
    median, high = classify.gap_trace(strength, centre, paint_cols, on, seen, valid)
    assert median == pytest.approx(0.0, abs=0.01) and high == pytest.approx(0.3 / 0.95, abs=0.01)
    assert np.isnan(classify.gap_trace(strength, centre, paint_cols, on & False, seen, valid)).all()


@pytest.mark.parametrize("gate", [True, False])
def test_tail_lights_and_red_cars_are_not_paint(monkeypatch, gate):
    # long stripes on grey asphalt, as a bird's-eye view shows a line or a tail light's streak
    bev = np.full((120, 160, 3), 100, np.uint8)
    stripes = {"white": (30, (230, 230, 230)), "yellow": (70, (228, 172, 38))}
    stripes["red"] = (110, (235, 30, 30))
    for col, rgb in stripes.values():
        bev[:, col : col + 4] = rgb
    if not gate:  # without the rule the red streak passes for paint: the test can tell
        monkeypatch.setattr(detect, "RED_GREEN", 0.0)
    mask = detect.marking_maps(bev, np.ones(bev.shape[:2], bool)).mask
    marked = {name: mask[10:-10, col : col + 4].mean() > 0.5 for name, (col, _) in stripes.items()}
    assert marked == {"white": True, "yellow": True, "red": not gate}
