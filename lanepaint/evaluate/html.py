"""A single self-contained HTML report (KFP's HTML artifact is one file).

Small media is embedded as data URIs (videos up to ``embed_limit`` bytes each, first-frame
attempts as JPEG thumbnails); larger videos are linked by their URI. Plots are inline SVG,
so the page needs no script and no network.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from PIL import Image

CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#1d1d1f;max-width:1200px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin-top:28px} h3{font-size:15px}
.banner{padding:8px 12px;border-radius:6px;background:#fff4d6;border:1px solid #e8c66a}
.banner.real{background:#e6f4ea;border-color:#7cc38d}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ccc;padding:4px 8px;
font-size:13px;text-align:left} th{background:#f3f3f3}
.players{display:flex;gap:12px;flex-wrap:wrap} video{width:720px;max-width:100%;background:#000}
.grid{display:flex;gap:10px;flex-wrap:wrap} .att{width:220px;font-size:12px}
.att img{width:100%;display:block;border:3px solid #bbb} .pass img{border-color:#2e9d4f}
.fail img{border-color:#c43c3c} .best{outline:2px dashed #345;outline-offset:2px}
.plots{display:flex;gap:20px;flex-wrap:wrap}
"""


_CONTROL = {c: None for c in range(32) if chr(c) not in "\n\t"}


def esc(value) -> str:
    """HTML-escaped text without control characters (model answers can contain any)."""
    return html.escape(str(value).translate(_CONTROL))


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def jpeg_uri(image: np.ndarray, max_side: int = 360) -> str:
    img = Image.fromarray(image)
    img.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return data_uri(buf.getvalue(), "image/jpeg")


def bar_chart(
    title: str,
    labels: list[str],
    values: list[float | None],
    unit: str = "",
    width: int = 420,
    bar_h: int = 18,
) -> str:
    """A horizontal bar chart as inline SVG."""
    vals = [v if v is not None else 0.0 for v in values]
    top = max(vals) if vals and max(vals) > 0 else 1.0
    label_w, pad = 150, 24
    height = pad + len(labels) * (bar_h + 6) + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{esc(title)}">',
        f'<text x="0" y="14" font-size="13" font-weight="bold">{esc(title)}</text>',
    ]
    for i, (label, value, raw) in enumerate(zip(labels, vals, values, strict=True)):
        y = pad + i * (bar_h + 6)
        w = (width - label_w - 70) * value / top
        parts.append(f'<text x="0" y="{y + 13}" font-size="11">{esc(label[:24])}</text>')
        parts.append(
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="#4a78c2"/>'
        )
        text = "n/a" if raw is None else f"{raw:.3g}{unit}"
        parts.append(
            f'<text x="{label_w + w + 4:.1f}" y="{y + 13}" font-size="11">{esc(text)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def table(rows: list[tuple]) -> str:
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def video_tag(video: bytes | None, link: str | None, poster: str | None, label: str) -> str:
    poster_attr = f' poster="{poster}"' if poster else ""
    if video is not None:
        src = data_uri(video, "video/mp4")
        return (
            f'<figure><video controls muted loop preload="metadata"{poster_attr} '
            f'src="{src}" title="{esc(label)}"></video><figcaption>{esc(label)}'
            "</figcaption></figure>"
        )
    img = f'<img src="{poster}" alt="{esc(label)}" width="480">' if poster else ""
    return f'<figure>{img}<figcaption><a href="{esc(link)}">{esc(label)}</a></figcaption></figure>'


def render_report(
    title: str,
    model_set_line: str,
    is_smoke: bool,
    overview: list[tuple],
    plots: list[str],
    items: list[dict],
) -> str:
    """The page. Each item: heading, metrics rows, players (html), attempts (list of dicts
    with uri/verdict/reasons/caption/best)."""
    banner_cls = "banner" if is_smoke else "banner real"
    out = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>',
        f"<style>{CSS}</style></head><body>",
        f'<p class="{banner_cls}" id="model-set">{esc(model_set_line)}</p>',
        f"<h1>{esc(title)}</h1>",
        "<h2>Overview</h2>",
        table(overview),
        '<div class="plots">' + "".join(plots) + "</div>",
    ]
    for item in items:
        out.append(f"<h2>{esc(item['heading'])}</h2>")
        out.append(table(item["metrics"]))
        out.append('<h3>Before / after</h3><div class="players">')
        out.append(item["players"])
        out.append('</div><h3>First-frame attempts</h3><div class="grid">')
        for att in item["attempts"]:
            verdict = att.get("verdict") or "no judge"
            cls = "pass" if verdict == "PASS" else "fail" if verdict == "FAIL" else ""
            best = " best" if att.get("best") else ""
            reasons = "; ".join(att.get("reasons") or [])
            out.append(
                f'<div class="att {cls}{best}"><img src="{att["uri"]}" '
                f'alt="attempt {att["index"]}"><b>#{att["index"]} {esc(verdict)}'
                f"{' (kept)' if att.get('best') else ''}</b><br>{esc(att.get('caption', ''))}"
                f"<br><i>{esc(reasons)}</i></div>"
            )
        out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out)


def edit_report(
    edit_dir: str,
    model_set_line: str,
    is_smoke: bool,
    items: list[dict],
    report_items: list[dict],
    agg: dict,
    flat: dict[str, float],
) -> str:
    """report.html of the evaluate stage: the overview, four plots and one section per edit."""
    labels = [f"{i['video_id'][:14]}/{i['instruction'][5:]}" for i in items]
    plots = [
        bar_chart("background PSNR (dB)", labels, [i["background_psnr_db"] for i in items]),
        bar_chart(
            "warp error ratio (edited/original)", labels, [i["warp_error_ratio"] for i in items]
        ),
        bar_chart("attempts", labels, [float(i["attempts"]) for i in items]),
        bar_chart(
            "mean time per stage (s)",
            list(agg["time_per_stage_s"]),
            list(agg["time_per_stage_s"].values()),
            " s",
        ),
    ]
    title = f"lanepaint edit report — {edit_dir}"
    return render_report(title, model_set_line, is_smoke, list(flat.items()), plots, report_items)
