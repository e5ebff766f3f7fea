"""``python -m bench.lanes_accuracy [--size full|smoke]``: accuracy of `lanepaint lanes`.

Per-attribute accuracy (count, color, pattern) of the weights-free lane analysis, per line
(left and right pooled) and for the summary caption, on:

- synthetic frames of every left x right combination (8 x 8) under each condition (plain,
  shadows, curve, night) at three sizes and two instants, plus a harder mix;
- synthetic clips (aggregated over frames);
- every row of ../shared/data/LABELS.csv (images alone, videos aggregated), and every
  frame of the labelled videos analysed alone;
- TuSimple example frames: distance of the found ego lines to the labelled lane pixels.

Full size writes docs/quality.md; smoke size (a subsample, about a minute) only prints.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import time
from pathlib import Path

from lanepaint.data.vocab import LaneAttributes
from lanepaint.lanes.accuracy import (
    CONDITIONS,
    GOAL,
    HARD,
    MAX_ABSTENTION,
    SCORED,
    TABLE_SEED,
    TUNING_SEED,
    Case,
    Localization,
    hard_specs,
    run_label_video_frames,
    run_labels,
    run_synthetic_images,
    run_synthetic_videos,
    run_tusimple,
    synthetic_specs,
    tally,
)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SIZES = ((320, 192), (256, 160), (640, 384))
SMALL_SIZES = ((160, 96), (128, 80))

# Rows whose label we believe is wrong, and why (shown only while the analysis disagrees).
DISPUTED = {
    "images/udacity_advanced_lane_lines/straight_lines2.jpg": (
        "the frame shows the car in the rightmost lane: a white dashed line on its left and "
        "the white solid edge line on its right (no yellow line near the ego lane); the "
        "label reads yellow solid | white dashed, like the other Udacity frames."
    ),
}


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.1f} %"


def _table(groups: dict[str, list[Case]]) -> list[str]:
    out = [
        "| set | n | count (line) | color (line) | pattern (line) | count (summary) "
        "| color (summary) | pattern (summary) | caption exact |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, cases in groups.items():
        t = tally(cases)
        out.append(
            f"| {name} | {t.cases} | {_pct(t.side_accuracy('count'))} "
            f"| {_pct(t.side_accuracy('color'))} | {_pct(t.side_accuracy('pattern'))} "
            f"| {_pct(t.accuracy('summary', 'count'))} | {_pct(t.accuracy('summary', 'color'))} "
            f"| {_pct(t.accuracy('summary', 'pattern'))} | {_pct(t.caption_accuracy)} |"
        )
    return out


def _by_group(cases: list[Case], order: tuple[str, ...] | None = None) -> dict[str, list[Case]]:
    names = order or tuple(dict.fromkeys(c.group for c in cases))
    groups = {name: [c for c in cases if c.group == name] for name in names}
    groups = {k: v for k, v in groups.items() if v}
    groups["all"] = list(cases)
    return groups


def _failures(cases: list[Case], limit: int = 25) -> list[str]:
    fails = tally(cases).failures
    lines = [f"- {f}" for f in fails[:limit]]
    if len(fails) > limit:
        lines.append(f"- … and {len(fails) - limit} more")
    return lines or ["- none"]


def _words(attrs) -> str:
    return f"{attrs.count} {attrs.color} {attrs.pattern}"


def _real_rows(cases: list[Case]) -> list[str]:
    out = [
        "| path | label left \\| right | analysis left \\| right | ok |",
        "| --- | --- | --- | --- |",
    ]
    for c in cases:
        got_l, got_r = c.result.left.attributes, c.result.right.attributes
        ok = got_l == c.left and got_r == c.right
        out.append(
            f"| {c.name} | {_words(c.left)} \\| {_words(c.right)} "
            f"| {_words(got_l)} \\| {_words(got_r)} | {'yes' if ok else '**no**'} |"
        )
    return out


def _goal_table(groups: dict[str, list[Case]]) -> list[str]:
    """Per attribute: answered accuracy / abstention, strict accuracy, and the goal."""
    head = " | ".join(f"{a} answered / abstained / strict" for a in SCORED)
    rule = "| --- | ---: |" + " ---: |" * len(SCORED) + " --- |"
    out = [f"| set | lines | {head} | goal met |", rule]
    for name, cases in groups.items():
        t = tally(cases)
        cells = [
            f"{_pct(t.answered_accuracy(a))} / {_pct(t.abstention(a))} "
            f"/ {_pct(t.strict_accuracy(a))}"
            for a in SCORED
        ]
        missed = [a for a in SCORED if not t.meets_goal(a)]
        verdict = "yes" if not missed else "no: " + ", ".join(missed)
        out.append(f"| {name} | {2 * t.cases} | {' | '.join(cells)} | {verdict} |")
    return out


def _wrong_answers(cases: list[Case], limit: int = 40) -> list[str]:
    wrong = tally(cases).wrong_answers
    lines = [f"- {w}" for w in wrong[:limit]]
    if len(wrong) > limit:
        lines.append(f"- … and {len(wrong) - limit} more")
    return lines or ["- none"]


def _ms_per_frame(frames: list[tuple[str, object]], repeat: int = 3) -> list[str]:
    """Milliseconds per analyze_image call, pinned to one CPU core and one OpenCV thread."""
    import os

    import cv2

    from lanepaint.lanes.analyze import analyze_image

    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[0]})
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    out = [f"| input | ms per frame (median of {repeat} runs) |", "| --- | ---: |"]
    try:
        for name, rgb in frames:
            analyze_image(rgb)  # warm-up
            runs = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                analyze_image(rgb)
                runs.append(1000 * (time.perf_counter() - t0))
            out.append(f"| {name} | {sorted(runs)[len(runs) // 2]:.0f} |")
    finally:
        cv2.setNumThreads(threads)
        os.sched_setaffinity(0, set(cpus))
    return out


def _machine() -> str:
    import platform

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"this machine ({model}, {platform.system()})"


def _speed_frames(data: Path) -> list[tuple[str, object]]:
    """Frames to time: synthetic at two sizes, a hard scene, and a real 1280x720 frame."""
    import numpy as np
    from PIL import Image

    from lanepaint.data.synth import SceneSpec, render_frame

    frames = [
        (f"synthetic {w}x{h}", render_frame(SceneSpec(width=w, height=h, seed=1), 1.0)[0])
        for w, h in ((320, 192), (640, 384))
    ]
    spec = SceneSpec(width=640, height=384, night=True, glare=True, oncoming=2, seed=2)
    frames.append(("synthetic 640x384, night glare", render_frame(spec, 1.0)[0]))
    real = data / "images" / "udacity_advanced_lane_lines" / "test1.jpg"
    if real.is_file():
        frames.append(("real 1280x720 (test1.jpg)", np.asarray(Image.open(real).convert("RGB"))))
    return frames


def _hard_section(smoke: bool, data: Path) -> tuple[list[str], list[Case], list[Case]]:
    """The hard conditions of issue 21 (held-out seed) and LABELS.csv in the goal's terms."""
    from lanepaint.data.synth_hard import HARD_CONDITIONS

    # 48 scenes, 192 lines per condition: with 64 (16 scenes) a rate near 95 % is known to
    # about +-2.7 points only, and a goal passed or missed by less than that says little.
    per = 4 if smoke else 48
    times = (0.7, 2.9)
    cases = run_synthetic_images(
        hard_specs(per, HARD_CONDITIONS, ((320, 192), (640, 384)), TABLE_SEED), times
    )
    groups = _by_group(cases, HARD_CONDITIONS)
    real: list[Case] = []
    if (data / "LABELS.csv").is_file():
        real = run_labels(data)
        groups["LABELS.csv (real)"] = real
    md = [
        "## Hard conditions (issue 21)",
        "",
        f"Scenes of `lanepaint.data.synth_hard` ({per} per condition, left x right line "
        f"combinations in a seeded order, 320x192 and 640x384, t = 0.7 and 2.9 s), drawn "
        f"from seed {TABLE_SEED}. The thresholds were tuned on scenes of seed {TUNING_SEED} "
        "only (and on LABELS.csv); the tests use a third seed. Until 2026-12-06 the table",
        "had 16 scenes per condition; 48 make a rate near 95 % known to about +-1.6 points",
        "(one standard error) instead of +-2.7.",
        "",
        "How to read it. Each ego-lane line (left and right) is scored on four attributes:",
        "*presence* (is there a line on that side: `present`/`absent`), and, where the",
        "label has a line, *count*, *color* and *pattern*. The analyzer may abstain",
        "(`unknown`, with its confidence below 0.55). *answered* is the share of answers",
        "that are right (abstentions left out); *abstained* the share of labelled lines",
        "without an answer; *strict* counts an abstention as wrong. **The goal** is met for",
        f"an attribute when answered ≥ {100 * GOAL:.0f} % **and** abstained ≤ "
        f"{100 * MAX_ABSTENTION:.0f} %: an abstention is not counted as wrong, but no more",
        "than a quarter of the lines may go unanswered.",
        "",
        *_goal_table(groups),
        "",
        "Wrong answers (abstentions not listed):",
        "",
        *_wrong_answers(cases + real),
        "",
    ]
    return md, cases, real


def _localization(rows: list[Localization]) -> list[str]:
    out = ["| frame | side | found | median error (px at 1280x720) |", "| --- | --- | --- | ---: |"]
    for r in rows:
        err = "–" if math.isnan(r.median_error_px) else f"{r.median_error_px:.1f}"
        out.append(f"| {r.image} | {r.side} | {'yes' if r.found else 'no'} | {err} |")
    return out


def _timed(timings: dict[str, float], name: str, fn):
    """fn(), its wall time recorded under ``name``."""
    t0 = time.perf_counter()
    result = fn()
    timings[name] = time.perf_counter() - t0
    return result


def _synthetic_section(size: str, smoke: bool, timings: dict[str, float]) -> tuple[list[str], dict]:
    """The synthetic scenes' tables and failures (docs/quality.md's first section)."""
    pairs = 8 if smoke else None
    times = (2.0,) if smoke else (0.7, 2.9)
    synth = _timed(
        timings,
        "synthetic images",
        lambda: run_synthetic_images(synthetic_specs(pairs, CONDITIONS, SIZES), times),
    )
    hard = _timed(
        timings,
        "synthetic hard",
        lambda: run_synthetic_images(synthetic_specs(8 if smoke else 24, (HARD,), SIZES, 7), times),
    )
    small = _timed(
        timings,
        "synthetic small",
        lambda: [
            Case(c.name, f"{w}x{h}", c.left, c.right, c.result)
            for w, h in SMALL_SIZES
            for c in run_synthetic_images(synthetic_specs(8, CONDITIONS, ((w, h),), seed=5))
        ],
    )
    clips = _timed(
        timings,
        "synthetic clips",
        lambda: run_synthetic_videos(
            synthetic_specs(4 if smoke else 8, CONDITIONS, ((320, 192),), seed=3), frames=12
        ),
    )
    coverage = "8 pairs covering all 8 per side" if smoke else "all 64 pairs"
    md = [
        "# Lane analysis quality (`lanepaint lanes`)",
        "",
        f"Measured {dt.date.today().isoformat()} by `python -m bench.lanes_accuracy --size {size}`"
        " (CPU only; the analysis needs no weights).",
        "",
        "An attribute counts as correct only when it equals the label; `unknown` counts as",
        "wrong. *line* pools the left and right ego-lane lines; *summary* is the combined",
        "caption attribute (`LaneAttributes.combine`: mixed where the sides differ);",
        "*caption exact* needs all three summary attributes right.",
        "",
        "## Synthetic scenes (`lanepaint.data.synth`)",
        "",
        "Every left x right combination of {single, double} x {white, yellow} x "
        f"{{solid, dashed}} ({coverage})"
        f" per condition, rendered at {', '.join(f'{w}x{h}' for w, h in SIZES)} (cycled) and "
        f"analysed at t = {', '.join(f'{t:g}' for t in times)} s, without the road mask. "
        "Camera height, horizon, dash gap, extra lanes and curve direction vary at random. "
        f"`{HARD}` combines shadows, a sharp curve and sensor noise of sigma 9.",
        "",
        *_table(_by_group(synth + hard, (*CONDITIONS, HARD))),
        "",
        "Below 256 px wide the analysis degrades: the two stripes of a double line are no",
        "longer resolved (count mostly turns `unknown` rather than wrong) and far dash gaps",
        "shrink to a pixel or two (8 pairs x 4 conditions per size):",
        "",
        *_table(_by_group(small)),
        "",
        f"Clips ({len(clips)} of 12 frames at 8 fps, 320x192; attributes voted over frames):",
        "",
        *_table(_by_group(clips, CONDITIONS)),
        "",
        "Synthetic failures:",
        "",
        *_failures(synth + hard + clips),
        "",
    ]
    summary = {"synthetic": tally(synth), "clips": tally(clips), "hard": tally(hard)}
    return md, summary


def _real_section(smoke: bool, data: Path, timings: dict[str, float]) -> tuple[list[str], dict]:
    """The LABELS.csv images and videos, every labelled video frame, and the TuSimple
    localization check."""
    real = _timed(timings, "real labels", lambda: run_labels(data))
    frames = _timed(
        timings, "real video frames", lambda: run_label_video_frames(data, step=4 if smoke else 1)
    )
    loc = _timed(timings, "tusimple", lambda: run_tusimple(data))
    disputed = [
        c
        for c in real
        if c.name in DISPUTED
        and (c.result.left.attributes != c.left or c.result.right.attributes != c.right)
    ]
    groups = _by_group(real, ("image", "video"))
    if disputed:
        names = {c.name for c in disputed}
        groups["all, disputed labels left out"] = [c for c in real if c.name not in names]
    md = [
        "## Real frames (`../shared/data/LABELS.csv`)",
        "",
        "Every labelled image analysed alone and every labelled video aggregated over up to"
        " 24 frames (no road masks). These frames were also used to tune the thresholds,"
        " so this is not a held-out measure.",
        "",
        *_table(groups),
        "",
        *_real_rows(real),
        "",
        "Every frame of the labelled videos analysed alone (no voting):",
        "",
        *_table(_by_group(frames)),
        "",
        "Failures on real data:",
        "",
        *_failures(real + frames, limit=30),
        "",
    ]
    if disputed:
        md += ["Disputed labels:", ""]
        md += [f"- `{c.name}`: {DISPUTED[c.name]}" for c in disputed]
        md.append("")
    md += [
        "## Line localization on TuSimple frames",
        "",
        "TuSimple example frames carry lane pixels, not attributes: this checks that the",
        "lines chosen as the ego lane's are the labelled ones (median horizontal distance",
        "over the rows both cover, in pixels of the 1280x720 frame; for scale, the labelled",
        "ego lane is about 1100 px wide at the bottom of these frames).",
        "",
        *_localization(loc),
        "",
    ]
    return md, {"real": tally(real), "frames": tally(frames)}


#: What the tables do not show (docs/quality.md, after the tables).
LIMITS = [
    "## Where it fails, and what it does not do",
    "",
    "- The synthetic scenes come from the renderer the analysis was developed against;",
    "  their near-perfect scores show the method is consistent, not that it generalizes.",
    "  The real numbers are the ones to trust, and they are thin: two Udacity cameras,",
    "  sunny California freeways, single lines only (no real double line, no real",
    "  night), and the same frames were used to tune the thresholds.",
    "- Seen while tuning on the real frames: foliage and guard rails out-voting the",
    "  lane lines for the vanishing point (now up to three candidates are tried and the",
    "  first that shows both ego lines is kept); shadow edges and concrete seams taken",
    "  for lines (lines must now be parallel to the others and long enough); a faded",
    "  yellow line on light concrete losing part of its length, which then reads as",
    "  dashed (still the case in the last frames of `udacity_vd_pr2_test_small1`; the",
    "  vote over the clip is right).",
    "- A frame that holds a single dash of a dashed line has no gap to measure unless",
    "  the other line shows where the road begins; pattern is then `unknown`.",
    "- Double lines need resolution: below 256 px wide, count turns `unknown` more and",
    "  more often (table above).",
    "- Night works where headlights light the markings; vertical headlight streaks on",
    "  a wet road are painted over first (frames with a dark sky only). A frame with",
    "  almost no light is reported as too dark.",
    "- Abstention (issue 21): each side also reports *presence* (`present`, `absent` or",
    "  `unknown`); a found line is `present` only when its paint is narrow, lighter than",
    "  the asphalt straight ahead and has road of the same kind on both sides (a gutter,",
    "  a curb, a parked car's flank or the edge of a snow cover has not); a chosen line",
    "  that is clearly not paint is dropped for the next one out; so is one without",
    "  paint on the near stretch (up to 4 bird's-eye units) while that stretch is in",
    "  view: a lane line, even dashed, shows paint there, the lower edge of a car far",
    "  ahead does not. A side is `absent`",
    "  when the other side's line was found and nothing line-like was seen there (a",
    "  candidate dropped for being too wide, and not yellow, is a gutter, a snow bank",
    "  or its edge, or a car's flank, not a doubt; nor is a weak candidate at an angle",
    "  to the found line, as slush and snow edges run, nor one with paint far ahead",
    "  only over 56 rows or more; a narrow edge between unlike grounds or a little far",
    "  paint may be a line half under snow or worn, and is; so is worn paint on the",
    "  line found, short gaps with a trace of paint in them: the missing line may be",
    "  worn away too); both sides are `absent`,",
    "  with confidence 0.6, when a road was seen without any line-like paint (a road",
    "  under snow).",
    "  The asphalt a line must outshine, per bird's-eye row, is the lower of the strip",
    "  straight ahead and the road across both ego lines (a light car ahead fills the",
    "  first). A line's width and the likeness of its two sides are measured on the",
    "  rows with road-like ground on both sides of it when those are most rows (a car",
    "  beside a line for a stretch does not make it wide or one-sided; a curb or a",
    "  snow bank runs along all of it); its count on all rows.",
    "  Two peaks in a line's cross-section at a double line's spacing read `double`",
    "  when the dip between them falls below 80 % of the lower peak and `single` only",
    "  above 88 % (worn or glared double lines dip that little); between: `unknown`.",
    "  A line with paint on fewer than 15 % of its rows is clutter, unless it is clearly",
    "  paint (yellow, or 1.45 times as light as the asphalt) spread over 3 units or more",
    "  (then 7 % will do: the few dashes left of a worn dashed line).",
    "  Paint is white or yellow: a pixel whose green is below 0.45 of its red (a tail or",
    "  brake light, a red car's body) is never paint (2026-12-06). Before that, behind a",
    "  row of cars the streaks of their lights in the bird's-eye view raised the clutter",
    "  level a line must stand out from, and plainly visible lines went unfound: occluded",
    "  presence on the tuning seed went from 91.2 / 23.4 to 93.0 / 18.2 % (answered /",
    "  abstained). On the table's seed more occluded lines are answered on every",
    "  attribute, but their pattern is right less often (92.7 -> 90.8 % answered; strict",
    "  66.1 -> 67.2 %), and curb_parked presence abstains a little more (14.6 -> 16.1 %).",
    "  Rows where a car covers the line's place count as out of view, not as gaps;",
    "  `dashed` needs paint on at most 56 % of the rows and a gap metres long; between",
    "  56 % and 72 % the pattern is `unknown`. Paint unbroken for 1.8 units or more",
    "  whose near end is within 4 units (`near_run`) is longer than any dash (about one",
    "  unit near the camera; 99 % under 1.3 on the real frames here, the longest 1.73):",
    "  such a line is not `dashed`, and with clean gaps it is `solid`, whatever gaps a",
    "  car it is not told from leaves further on (2026-12-06). Occluded pattern went from",
    "  94.4 / 34.4 to 95.5 / 31.2 % on the tuning seed and from 90.8 / 26.0 to 92.6 /",
    "  22.9 % on the table's (strict 67.2 -> 71.4 %); one rain line and one 160x96 night",
    "  dashed line went from an answer (wrong and right) to `unknown`. The length of",
    "  line a pattern is judged over (3 units for full confidence, 1.2 at least) leaves",
    "  out the rows a car hides (2026-12-06): a dashed line seen in pieces between cars",
    "  read `solid` from short gaps with a trace in them. Occluded pattern went from",
    "  95.5 / 31.2 to 96.2 / 31.8 % on the tuning seed and from 92.6 / 22.9 to 93.2 /",
    "  23.4 % on the table's; nothing else changed. A gap that starts where the nearer",
    "  paint stops at ground under half as light as the asphalt ahead (`CAR_BASE`, over",
    "  the gap's nearest 0.2 units) is out of view, not a gap (2026-12-06): a car's",
    "  shadow and dark base lie where a line goes under it, at 0.33-0.45 of the",
    "  asphalt, while a dash ends on asphalt (at 0.6, shadows on the tuning scenes",
    "  passed for cars). Occluded pattern went from 96.2 / 31.8 to 97.0 / 31.2 % on the",
    "  tuning seed and from 93.2 / 23.4 to 95.8 / 25.5 % on the table's (answers right",
    "  at last, one line too many unanswered); nothing else changed. On three seeds",
    "  used for neither tuning nor the table (4242, 5555, 7777) the three rules of",
    "  2026-12-06 above moved occluded pattern from 96.9 / 31.8, 88.1 / 25.5 and",
    "  94.2 / 27.6 % to 97.8 / 30.2, 93.8 / 25.0 and 96.5 / 26.0 %; on seed 5555 they",
    "  also turned three dashed lines `solid` (the lit lower edge of an oncoming car",
    "  along a double yellow line, dashes joined under snow) and one `unknown`, the",
    "  other conditions' pattern still 96 % right or more. A found line's width, for",
    "  its presence, is the narrower of its mean cross-section's and that of its rows",
    "  each centred on their own paint (`row_width`, 2026-12-06): where cars hide the",
    "  far road and the horizon, the line's fit drifts off the paint by more than the",
    "  paint's width, and one shift for all rows smeared the cross-section to 0.2-0.35",
    "  camera heights (a gutter pan or a car's flank is wide in every row; dropping a",
    "  candidate as too wide still takes the first width: on the tuning seed the",
    "  second cost curb and snow sides as much as it gained). A line read `white` with",
    "  a quarter or more of its near paint's pixels yellow is in doubt",
    "  (`MIXED_YELLOW`): answered, yellow lines whose fit runs onto a light car read",
    "  white (0.3-0.42 of yellow pixels; white lines on the tuning scenes: 1 of 954",
    "  over 0.15). On the tuning seed occluded pattern went from 97.0 / 31.2 to 97.1 /",
    "  27.6 % and presence from 93.0 / 18.2 to 93.4 / 13.5 %, with 63 answers gained,",
    "  one white line's colour `unknown` and no new wrong answer; on the table's seed",
    "  occluded pattern went from 95.8 / 25.5 to 95.8 / 25.0 % (the goal met, at its",
    "  edge) and one snow presence answer more is wrong. On seeds 4242, 5555 and 7777",
    "  (measured after the rules were fixed) occluded pattern went from 97.8 / 30.2,",
    "  93.8 / 25.0 and 96.5 / 26.0 to 97.8 / 28.6, 93.9 / 23.4 and 96.6 / 23.4 %, with",
    "  56, 58 and 74 answers gained; three went wrong (on 5555 a night yellow line",
    "  `white` and a snow dashed line `solid`, on 7777 an occluded single line",
    "  `double`), and seven yellow lines read white went `unknown`. Worn paint is",
    "  told from dashes by the gaps themselves (holes shorter than 0.35 bird's-eye",
    "  units left out of their mean): a",
    "  worn solid line leaves a trace of paint in its holes, in patches",
    "  (`gap_paint_high`: the upper quartile over the gap rows of the paint strength left",
    "  in them over that on the paint, the road beside the line subtracted from both; at",
    "  least 0.10), its gaps are short (mean below 1.0 units; dash gaps measure 0.8 to 3",
    "  on the real and synthetic frames) and its paint is faded (less than 2.0 times as",
    "  light as the asphalt: the fresh dashes on the light concrete of",
    "  `udacity_vd_pr2_test_small1` keep a trace of 0.1 to 0.4 of its seams in their",
    "  gaps); paint on 55 % of the rows with no gap longer than 0.65 units over a long",
    "  stretch is a solid line with holes too. Gaps under 0.9 units with a trace of 0.08",
    "  or more are not dash gaps, so such a line no longer reads `dashed` (it reads",
    "  `unknown` when the trace is under 0.10 or the paint fresh: frames 31-35 of that",
    "  clip); long gaps alike in length keep their say whatever lies in them. The upper",
    "  quartile replaced the median on 2026-12-06: worn paint is patchy, and half of a",
    "  worn line's holes may be bare. Dashes are painted at one period, so a dashed",
    "  line's gaps are alike in length, while worn holes are as long as the wear made",
    "  them: a faded line with a trace of 0.10 or more in gaps of unlike length (the",
    "  second longest under 0.7 of the longest, `gap_ratio`) does not read `dashed` but",
    "  `unknown` (2026-12-06); a line with one gap keeps its answer. A quarter of the",
    "  real dashed lines with two gaps or more here have gaps that unlike (a dash lost in",
    "  the distance joins two gaps), but clean ones; of the six with a trace, four are",
    "  fresh paint on concrete and two (frames 40 and 43 of that clip) go unanswered.",
    "  A double line with one stripe worn away in places is not surely `single`: a",
    "  single peak wider than one stripe, or two peaks at a double line's spacing with",
    "  a flat top over paint wider than one stripe, or a faint second stripe at that",
    "  spacing behind a clear dip (below 60 % of it) whose paint, where it is left, is",
    "  at least half as strong as the first stripe's in 18 % of the rows or more",
    "  (`second_stripe`) leave the count `unknown`. A ghost of old paint beside a single",
    "  line is such a bump too, but faint all along, so it does not count.",
    "  Still wrong: a solid line worn to a quarter of its paint with a clean gap of two",
    "  units, or with one long gap or gaps alike in length, looks like a worn dashed",
    "  line and reads `dashed` (since the gap-length rule worn pattern meets the goal on",
    "  the table's seed, at the cost of more lines unanswered: 18.2 -> 22.9 %; it also",
    "  leaves two concrete frames of `udacity_vd_pr2_test_small1` and a shadowed",
    "  synthetic dashed line unanswered); snow or slush in a dashed line's short",
    "  gaps leaves a trace like worn paint's, and on the table's seed some snow dashed",
    "  lines read `solid` with that rule (snow pattern 98.9 -> 96.6 % answered; none on",
    "  the tuning seed); a car close to the asphalt's grey (or",
    "  its shadow) is not seen as hiding the line, so the gap it leaves makes a solid",
    "  line `unknown` or `dashed` (marking rows 0.5 to 1.5 times the asphalt's lightness",
    "  as hidden made this worse on the tuning scenes: shadows then hid dash gaps too;",
    "  so did a vehicle-blob detector in the bird's-eye view, wide blobs unlike the",
    "  asphalt ahead with road below them, hiding the rows beside them unless the",
    "  line's paint shows through: the grey cars that matter pass as asphalt by",
    "  lightness, colour and grain, taking a car's dark base band for its footprint",
    "  caught tree shadows too, and on seed 1001 occluded pattern abstention rose",
    "  from 29.7 % to 31.2 % and Udacity test5 lost its right dashed line (unknown;",
    "  `solid` with the grain and base-band cues), so none of it was kept);",
    "  on the curb side, a parked car's lower edge or a curb beyond a missing line was",
    "  taken for the line now and then; the farther of two ego lines bounding a lane",
    "  wider than 3.5 camera heights (real lanes stay under 3.4) is now in doubt, the",
    "  wider the less sure, so such a side goes `unknown` instead of `present`; a car's",
    "  edge at a usual lane's distance with road-like ground on both sides of it",
    "  still passes for a line now and then (a median cross-section, robust to a",
    "  car's flank beside a real line, let more of those through, so it was not kept;",
    "  nor was lowering presence for a line hidden over much of its length: real lines",
    "  among traffic are hidden as much). Also tried on seed 1001 and not kept: no doubt",
    "  from weak candidates shorter than 0.4 units (parked cars' bumpers, but also the",
    "  last fragments of worn dashed lines: worn presence went wrong more often); a",
    "  worn double line told from a single by a second stripe as strong as the first in",
    "  some rows alone (ghost stripes and worn single lines show the same), or by a",
    "  faint bump (0.2-0.4 of the peak) with a dip before it alone (worn count 92.4 ->",
    "  94.8 % answered, but single_dashed count abstention 1 -> 17 %: a ghost stripe is",
    "  such a bump; the two together are the `second_stripe` rule above); an absent answer",
    "  only beside a line that is itself surely present (as many right answers lost as",
    "  wrong ones). Worn solid lines whose holes average 0.8-1.3 units still read",
    "  `dashed` (real dash gaps start at 0.8 units, so the gap length alone cannot",
    "  tell them), and a double line worn to one stripe all along reads `single`.",
    "- The caption cross-check (`lanepaint.vlm.caption.caption_record`) and evaluate",
    "  (`lanepaint.evaluate.metrics.lane_attributes`) count only attributes that both",
    "  ego lines support with confidence >= 0.7 (`lanes.analyze.trusted_attributes`):",
    "  a low-confidence reading is neither an agreement nor a disagreement, and an",
    "  edit is not marked wrong on it (evaluate lists the abstentions).",
    "- The hard scenes are synthetic, from a renderer written for them (boxes for cars,",
    "  discs for drops, a noise field for wear and snow): they show the failure modes",
    "  seen on real frames are handled, not that real frames of those kinds would score",
    "  the same. The frames kept apart by the issue (BDD100K, TuSimple, CULane,",
    "  comma2k19, a night clip) are not in this repository and were not measured here.",
    "- Not handled: roads without markings (reported `absent` on both sides, not",
    "  described), lane changes (the line under",
    "  the car is given to whichever side it is on), Botts' dots only, unpainted road",
    "  edges, and hills (the bird's-eye view assumes a flat road). A summary caption has",
    "  no word for a missing line: a side that is `absent` makes the summary `unknown`.",
    "",
]


def _speed_section(data: Path, timings: dict[str, float]) -> list[str]:
    """Milliseconds per frame on one core, and this run's own run times."""
    return [
        "## Speed",
        "",
        f"`analyze_image` on one core (pinned with `sched_setaffinity`, one OpenCV thread) of"
        f" {_machine()}; the input is scaled to at most 800 px wide first:",
        "",
        *_ms_per_frame(_speed_frames(data)),
        "",
        "Run times of this bench (2 CPU cores shared with other work): "
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + ".",
        "",
    ]


def run(size: str, data: Path) -> tuple[list[str], dict]:
    """The lines of docs/quality.md and the tallies main prints, section by section."""
    smoke = size == "smoke"
    timings: dict[str, float] = {}
    md, summary = _synthetic_section(size, smoke, timings)
    hard_md, hard_cases, _ = _timed(timings, "hard conditions", lambda: _hard_section(smoke, data))
    md += hard_md
    summary["issue21"] = tally(hard_cases)
    if (data / "LABELS.csv").is_file():
        real_md, real_summary = _real_section(smoke, data, timings)
        md += real_md
        summary.update(real_summary)
    else:
        md += [f"Real data not found at {data}: real-frame tables skipped.", ""]
    return md + LIMITS + _speed_section(data, timings), summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("full", "smoke"), default="full")
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--out", type=Path, help="markdown output (full size: docs/quality.md)")
    args = parser.parse_args(argv)
    md, summary = run(args.size, args.data)
    out = args.out or (REPO / "docs" / "quality.md" if args.size == "full" else None)
    for name, t in summary.items():
        acc = ", ".join(f"{a} {_pct(t.side_accuracy(a))}" for a in LaneAttributes.FIELDS)
        print(f"{name:10s} n={t.cases:4d}  per line: {acc}  caption {_pct(t.caption_accuracy)}")
    if out:
        out.write_text("\n".join(md), encoding="utf-8")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
