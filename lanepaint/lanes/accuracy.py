"""Measuring the lane analysis: per-attribute accuracy on synthetic and labelled real data.

Shared by ``bench/lanes_accuracy.py`` (the full table in docs/quality.md) and the tests
(a subsample, with thresholds set from the measured numbers).
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lanepaint.data.vocab import LaneAttributes
from lanepaint.lanes.analyze import ATTRIBUTES, LaneAnalysis, analyze_image, analyze_video

CONDITIONS = ("plain", "shadows", "curve", "night")
#: Beyond the four: everything at once (shadows, a sharp curve, heavy sensor noise).
HARD = "shadows+curve+noise"
#: Per-line attributes scored: presence of the line, then what it looks like.
SCORED = ("presence", *ATTRIBUTES)
#: Seeds of the hard synthetic scenes: thresholds were tuned on TUNING_SEED scenes only;
#: docs/quality.md is measured on TABLE_SEED scenes and the tests on TEST_SEED scenes.
TUNING_SEED, TABLE_SEED, TEST_SEED = 1001, 2026, 3003
#: The goal (issue 21), per attribute and condition: at least GOAL of the answers right,
#: with at most MAX_ABSTENTION of the lines left unanswered (abstaining is not wrong, but
#: abstaining on everything is no analysis).
GOAL, MAX_ABSTENTION = 0.95, 0.25


@dataclass(frozen=True)
class Case:
    """One labelled input and what the analysis said about it."""

    name: str
    group: str
    left: LaneAttributes
    right: LaneAttributes
    result: LaneAnalysis
    absent: tuple[str, ...] = ()  # sides with no visible line (their attributes are unknown)

    @property
    def summary(self) -> LaneAttributes:
        return LaneAttributes.combine(self.left, self.right)

    def want(self, side: str, name: str) -> str | None:
        """The label of one line's attribute; None where it does not apply (no line)."""
        if name == "presence":
            return "absent" if side in self.absent else "present"
        return None if side in self.absent else getattr(getattr(self, side), name)


@dataclass
class Tally:
    """Correct / total per (scope, attribute); scope is left, right or summary."""

    correct: dict[tuple[str, str], int] = field(default_factory=dict)
    total: dict[tuple[str, str], int] = field(default_factory=dict)
    unknown: dict[tuple[str, str], int] = field(default_factory=dict)
    captions: int = 0
    cases: int = 0
    failures: list[str] = field(default_factory=list)
    #: per attribute (both lines pooled, presence included): labelled, answered, right
    lines: dict[str, list[int]] = field(default_factory=dict)
    wrong_answers: list[str] = field(default_factory=list)  # answered and wrong, per case

    def _add_lines(self, case: Case) -> list[str]:
        wrong = []
        for side in ("left", "right"):
            got = getattr(case.result, side)
            for name in SCORED:
                want = case.want(side, name)
                if want is None:
                    continue
                value = getattr(got, name)
                counts = self.lines.setdefault(name, [0, 0, 0])
                counts[0] += 1
                counts[1] += int(value != "unknown")
                counts[2] += int(value == want)
                if value not in ("unknown", want):
                    wrong.append(f"{side} {name} {value} (want {want})")
        return wrong

    def answered_accuracy(self, name: str) -> float:
        """Right among the answered (an abstention is neither right nor wrong here)."""
        _, answered, right = self.lines.get(name, [0, 0, 0])
        return right / answered if answered else float("nan")

    def abstention(self, name: str) -> float:
        total, answered, _ = self.lines.get(name, [0, 0, 0])
        return 1 - answered / total if total else float("nan")

    def strict_accuracy(self, name: str) -> float:
        """Right among all labelled (an abstention counts as wrong)."""
        total, _, right = self.lines.get(name, [0, 0, 0])
        return right / total if total else float("nan")

    def meets_goal(self, name: str) -> bool:
        answered = self.answered_accuracy(name)
        return answered >= GOAL and self.abstention(name) <= MAX_ABSTENTION

    def add(self, case: Case) -> None:
        self.cases += 1
        wrong_lines = self._add_lines(case)
        if wrong_lines:
            self.wrong_answers.append(f"{case.name}: " + ", ".join(wrong_lines))
        if case.absent:  # the summary caption has no word for a missing line
            return
        got = {
            "left": case.result.left.attributes,
            "right": case.result.right.attributes,
            "summary": case.result.summary,
        }
        want = {"left": case.left, "right": case.right, "summary": case.summary}
        wrong = []
        for scope in ("left", "right", "summary"):
            for name in ATTRIBUTES:
                key = (scope, name)
                g, w = getattr(got[scope], name), getattr(want[scope], name)
                self.total[key] = self.total.get(key, 0) + 1
                self.correct[key] = self.correct.get(key, 0) + int(g == w)
                self.unknown[key] = self.unknown.get(key, 0) + int(g == "unknown")
                if g != w and scope != "summary":
                    wrong.append(f"{scope} {name} {g} (want {w})")
        self.captions += int(got["summary"] == want["summary"])
        if wrong:
            self.failures.append(f"{case.name}: " + ", ".join(wrong))

    def accuracy(self, scope: str, name: str) -> float:
        total = self.total.get((scope, name), 0)
        return self.correct.get((scope, name), 0) / total if total else float("nan")

    def side_accuracy(self, name: str) -> float:
        """Both sides pooled: the per-line accuracy of one attribute."""
        c = self.correct.get(("left", name), 0) + self.correct.get(("right", name), 0)
        t = self.total.get(("left", name), 0) + self.total.get(("right", name), 0)
        return c / t if t else float("nan")

    @property
    def caption_accuracy(self) -> float:
        return self.captions / self.cases if self.cases else float("nan")


def _words(a: LaneAttributes) -> str:
    return f"{a.count} {a.color} {a.pattern}"


def synthetic_specs(
    pairs_per_condition: int | None = None,
    conditions: Iterable[str] = CONDITIONS,
    sizes: tuple[tuple[int, int], ...] = ((320, 192),),
    seed: int = 0,
) -> Iterator[tuple[str, str, object]]:
    """(name, condition, SceneSpec) over left x right attribute combinations.

    All 64 pairs per condition by default. With ``pairs_per_condition`` < 64 a subsample
    is drawn that still holds each of the 8 line combinations on each side (its first 8
    pairs are a shifted diagonal). Camera height, horizon, dash gap, extra lanes and the
    curve's direction vary at random; sizes cycle through ``sizes``.
    """
    from lanepaint.data.synth import SIDE_COMBOS, SceneSpec

    all_pairs = list(itertools.product(range(8), range(8)))
    rng = np.random.default_rng(seed)
    n = 0
    for ci, condition in enumerate(conditions):
        if pairs_per_condition is None or pairs_per_condition >= 64:
            pairs = all_pairs
        else:
            shift = int(rng.integers(1, 8))
            base = [(i, (i + shift + ci) % 8) for i in range(8)]
            extra = [all_pairs[i] for i in rng.permutation(64)]
            pairs = (base + [p for p in extra if p not in base])[:pairs_per_condition]
        for k, (li, ri) in enumerate(pairs):
            width, height = sizes[n % len(sizes)]
            n += 1
            curve = 0.0
            if condition in ("curve", HARD):
                curve = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.003, 0.006))
            spec = SceneSpec(
                left=SIDE_COMBOS[li],
                right=SIDE_COMBOS[ri],
                width=width,
                height=height,
                shadows=condition in ("shadows", HARD),
                noise=9.0 if condition == HARD else 3.0,
                night=condition == "night",
                curve=curve,
                speed=float(rng.uniform(8, 25)),
                lanes_left=int(rng.integers(0, 2)),
                lanes_right=int(rng.integers(0, 2)),
                camera_height=float(rng.uniform(1.25, 1.55)),
                horizon=float(rng.uniform(0.38, 0.46)),
                dash_length=float(rng.uniform(2.5, 3.5)),
                dash_gap=float(rng.uniform(5.0, 8.0)),
                seed=int(rng.integers(0, 2**31 - 1)),
            )
            name = (
                f"{condition}/{k:02d} {width}x{height} {_words(spec.left)} | {_words(spec.right)}"
            )
            yield name, condition, spec


def hard_specs(
    per_condition: int, conditions: Iterable[str], sizes: tuple[tuple[int, int], ...], seed: int
) -> Iterator[tuple[str, str, object]]:
    """(name, condition, SceneSpec) of the hard conditions (``synth_hard.HARD_CONDITIONS``).

    Left x right line combinations cycle through all 64 pairs in a seeded order (a recipe
    may replace one line, e.g. double yellow for oncoming traffic); everything else about
    the scene is drawn from ``seed``. Tuning and the published table use different seeds.
    """
    from lanepaint.data.synth import SIDE_COMBOS
    from lanepaint.data.synth_hard import hard_spec

    rng = np.random.default_rng(seed)
    pairs = list(itertools.product(range(8), range(8)))
    n = 0
    for condition in conditions:
        order = rng.permutation(64)
        for k in range(per_condition):
            li, ri = pairs[order[k % 64]]
            width, height = sizes[n % len(sizes)]
            n += 1
            spec = hard_spec(condition, rng, SIDE_COMBOS[li], SIDE_COMBOS[ri], width, height)
            left = "-" if "left" in spec.absent else _words(spec.left)
            right = "-" if "right" in spec.absent else _words(spec.right)
            yield f"{condition}/{k:02d} {width}x{height} {left} | {right}", condition, spec


def run_synthetic_images(specs, times: Iterable[float] = (2.0,)) -> list[Case]:
    """One case per scene and time: the analysis of that rendered frame (no road mask)."""
    from lanepaint.data.synth import render_frame

    cases = []
    times = tuple(times)
    for name, condition, spec in specs:
        for t in times:
            rgb, _, _ = render_frame(spec, t)
            label = f"{name} t={t:g}" if len(times) > 1 else name
            result = analyze_image(rgb)
            cases.append(Case(label, condition, spec.left, spec.right, result, spec.absent))
    return cases


def run_synthetic_videos(specs, frames: int = 12, fps: float = 8.0) -> list[Case]:
    from lanepaint.data.synth import render_clip

    cases = []
    for name, condition, spec in specs:
        video, _ = render_clip(spec, frames, fps)
        result = analyze_video(video)
        cases.append(Case(name, condition, spec.left, spec.right, result, spec.absent))
    return cases


def _side(text: str) -> LaneAttributes:
    return LaneAttributes(*text.split())


def run_labels(root: Path, max_frames: int = 24) -> list[Case]:
    """Every row of ``root/LABELS.csv`` (images and videos)."""
    from lanepaint.lanes.analyze import analyze_path

    cases = []
    with open(root / "LABELS.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            result = analyze_path(root / row["path"], max_frames=max_frames)
            group = "video" if row["path"].startswith("videos/") else "image"
            cases.append(Case(row["path"], group, _side(row["left"]), _side(row["right"]), result))
    return cases


def run_label_video_frames(root: Path, step: int = 1) -> list[Case]:
    """Every ``step``-th frame of each labelled video, analysed alone (no voting)."""
    from lanepaint.io.video import iter_frames

    cases = []
    with open(root / "LABELS.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["path"].startswith("videos/")]
    for row in rows:
        for i, frame in enumerate(iter_frames(root / row["path"])):
            if i % step == 0:
                result = analyze_image(frame)
                name = f"{row['path']}#{i}"
                cases.append(
                    Case(name, row["path"], _side(row["left"]), _side(row["right"]), result)
                )
    return cases


def tally(cases: Iterable[Case]) -> Tally:
    t = Tally()
    for case in cases:
        t.add(case)
    return t


@dataclass(frozen=True)
class Localization:
    """How far a found ego line lies from the labelled lane line (TuSimple pixel labels)."""

    image: str
    side: str
    found: bool
    median_error_px: float  # over the rows both cover, at the image's own resolution


def _gt_ego_lines(instance: np.ndarray) -> dict[str, dict[int, float]]:
    """Per side, the labelled ego line as {row: mean x}: nearest the centre at its bottom."""
    h, w = instance.shape
    lines = []
    for value in np.unique(instance):
        if value == 0:
            continue
        ys, xs = np.nonzero(instance == value)
        if len(ys) < 20:
            continue
        fit = np.polyfit(ys, xs, 1)
        x_ref = float(np.polyval(fit, 0.9 * h))
        rows = {int(y): float(xs[ys == y].mean()) for y in np.unique(ys)}
        lines.append((x_ref, rows))
    left = [ln for ln in lines if ln[0] < w / 2]
    right = [ln for ln in lines if ln[0] >= w / 2]
    out = {}
    if left:
        out["left"] = max(left, key=lambda ln: ln[0])[1]
    if right:
        out["right"] = min(right, key=lambda ln: ln[0])[1]
    return out


def run_tusimple(root: Path) -> list[Localization]:
    """Ego lines found on the TuSimple example frames vs their labelled lane pixels."""
    from PIL import Image

    from lanepaint.lanes.analyze import inspect_image

    results = []
    folder = root / "images" / "tusimple_train_example"
    for path in sorted((folder / "image").glob("*.png")):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        instance = np.asarray(Image.open(folder / "gt_instance_image" / path.name))
        gt = _gt_ego_lines(instance)
        det = inspect_image(rgb)
        for side in ("left", "right"):
            line = getattr(det, side)
            if line is None or side not in gt or det.bev is None:
                results.append(Localization(path.name, side, False, float("nan")))
                continue
            z = det.bev.z[det.bev.z <= 5.0]
            xs, ys = det.bev.to_image(line.at(z), z)
            xs, ys = xs / det.scale, ys / det.scale
            errors = [
                abs(x - gt[side][int(round(y))])
                for x, y in zip(xs, ys, strict=True)
                if int(round(y)) in gt[side]
            ]
            err = float(np.median(errors)) if errors else float("nan")
            results.append(Localization(path.name, side, bool(errors), err))
    return results
