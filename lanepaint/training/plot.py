"""Loss log (``loss.csv``) and loss curve (``loss.png``, drawn with PIL).

matplotlib is not a dependency of the stage images, so the curve is drawn directly with
PIL: raw per-step loss in grey, an exponential moving average in blue, the fixed-noise
evaluation loss as orange dots, labelled axes.
The PNG carries the model-set label in its title and in a ``model_set`` text chunk.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

CSV_FIELDS = ("step", "loss", "eval_loss", "lr", "grad_norm", "samples_seen", "step_s")


def loss_csv(history: Sequence[dict], evals: Sequence[dict], model_set: str) -> str:
    """One row per optimizer step (step 0: the evaluation before training, if any).

    ``eval_loss`` is filled where the fixed-noise evaluation ran; ``model_set`` (smoke or
    real) repeats on every row so that no copied row loses it.
    """
    by_step = {e["step"]: e["eval_loss"] for e in evals}
    rows = [dict(h) for h in history]
    if 0 in by_step:
        rows.insert(0, {"step": 0})
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*CSV_FIELDS, "model_set"])
    for row in rows:
        row["eval_loss"] = by_step.get(row["step"])
        writer.writerow([_fmt(row.get(k)) for k in CSV_FIELDS] + [model_set])
    return buf.getvalue()


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def ema(values: Sequence[float], span: int) -> list[float]:
    alpha = 2.0 / (span + 1)
    out, acc = [], None
    for v in values:
        acc = v if acc is None else alpha * v + (1 - alpha) * acc
        out.append(acc)
    return out


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def loss_png(
    history: Sequence[dict],
    evals: Sequence[dict],
    title: str,
    model_set: str,
    size: tuple[int, int] = (900, 500),
) -> bytes:
    """The loss curve as PNG bytes; evaluation losses as orange dots."""
    width, height = size
    left, right, top, bottom = 80, 20, 50, 60
    im = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    # The bitmap default font has Latin-1 glyphs only (the smoke label has an em dash).
    drawn_title = title.replace("\u2014", "-").encode("latin-1", "replace").decode("latin-1")
    draw.text((left, 15), drawn_title, fill="black", font=font)
    points = [(h["step"], h["loss"]) for h in history if math.isfinite(h.get("loss", math.nan))]
    eval_points = [
        (e["step"], e["eval_loss"]) for e in evals if math.isfinite(e.get("eval_loss", math.nan))
    ]
    x0, y0, x1, y1 = left, top, width - right, height - bottom
    draw.rectangle((x0, y0, x1, y1), outline="black")
    if points or eval_points:
        steps = [p[0] for p in points]
        losses = [p[1] for p in points]
        every = points + eval_points
        smx, smn = max(p[0] for p in every), min(p[0] for p in every)
        lo, hi = min(p[1] for p in every), max(p[1] for p in every)
        pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
        span_x = max(smx - smn, 1)

        def xy(step: float, loss: float) -> tuple[float, float]:
            return (
                x0 + (step - smn) / span_x * (x1 - x0),
                y1 - (loss - lo) / (hi - lo) * (y1 - y0),
            )

        for t in _ticks(lo, hi):
            _, y = xy(smn, t)
            draw.line((x0 - 5, y, x0, y), fill="black")
            draw.line((x0, y, x1, y), fill=(235, 235, 235))
            draw.text((5, y - 6), f"{t:.4g}", fill="black", font=font)
        for t in _ticks(smn, smx):
            x, _ = xy(t, lo)
            draw.line((x, y1, x, y1 + 5), fill="black")
            draw.text((x - 10, y1 + 8), f"{t:g}", fill="black", font=font)
        if len(points) > 1:
            draw.line([xy(s, v) for s, v in points], fill=(170, 170, 170), width=1)
            smooth = ema(losses, span=max(2, len(losses) // 20))
            curve = [xy(s, v) for s, v in zip(steps, smooth, strict=True)]
            draw.line(curve, fill=(31, 90, 200), width=2)
        elif points:
            x, y = xy(*points[0])
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=(31, 90, 200))
        for s, v in eval_points:
            x, y = xy(s, v)
            draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=(230, 120, 20))
    else:
        draw.text((x0 + 10, y0 + 10), "no finite loss values", fill="black", font=font)
    draw.text(((x0 + x1) // 2 - 15, height - 25), "step", fill="black", font=font)
    draw.text((5, top - 20), "loss", fill="black", font=font)
    info = PngInfo()
    info.add_text("Title", title)
    info.add_text("model_set", model_set)
    buf = io.BytesIO()
    im.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()
