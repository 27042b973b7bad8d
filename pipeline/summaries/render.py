"""The text, pictures and page of a summary: the text summary (one line per segment), contact sheet (PIL),
timeline (matplotlib, Agg, no pyplot state) and a self-contained report.html with every image inlined as a
data URI.

All are pure functions of the summary dict (and the keyframe pictures): the same summary renders to the same
bytes. Outputs of untrained models say so on the picture itself.
"""

from __future__ import annotations

import base64
import html
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.records import UNTRAINED_NOTE, TrackAction
from pipeline.storage.codecs import encode_jpeg
from pipeline.summaries.timecode import format_time

_BG = (246, 246, 244)
_INK = (28, 28, 30)
_MUTED = (95, 95, 100)
_WARN = (185, 20, 20)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _fit(text: str, font, width: int, draw: ImageDraw.ImageDraw) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _name(summary: dict) -> str:
    source = summary["source"]
    return Path(source["source"]).name if source["kind"] == "file" else source["source"]


def _hours(summary: dict) -> bool:
    return summary["range"]["end"] >= 3600


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summary_text(summary: dict) -> str:
    """What happened when, as text: a line for the whole range, then one per segment
    ("00:00-01:12 parking lot: car, person; 3 alerts 'person at the gate'")."""
    hours = _hours(summary)
    name = _name(summary)
    r = summary["range"]
    lines = []
    if summary["untrained"]:
        lines.append(UNTRAINED_NOTE)
    events = summary["events"]
    lines.append(
        f"{name} {format_time(r['start'], hours)}-{format_time(r['end'], hours)}: "
        f"{_plural(len(summary['shots']), 'shot')}, {_plural(len(summary['keyframes']), 'keyframe')}"
        + (f", {_plural(len(events), 'event')}" if events else "")
        + (f", {_plural(len(summary['tracks']['tracks']), 'track')}" if "tracks" in summary else "")
    )
    for seg in summary["segments"]:
        head = f"{format_time(seg['start'], hours)}-{format_time(seg['end'], hours)}"
        body = f" {seg['heading']}" if seg["heading"] else ""
        if seg["tags"]:
            body += (": " if body else " ") + ", ".join(seg["tags"])
        notes = [f"{_plural(e['count'], e['kind'])} '{e['label']}'" for e in seg["events"]]
        lines.append(head + body + ("; " + "; ".join(notes) if notes else ""))
    return "\n".join(lines)


def contact_sheet_png(summary: dict, thumbs: dict[int, np.ndarray], width: int = 240, columns: int = 6) -> bytes:
    """Keyframes in time order on a grid, each with its time, shot and leading tags."""
    keyframes = summary["keyframes"]
    n = max(1, len(keyframes))
    cols = min(columns, n)
    rows = -(-n // cols)
    sample = next(iter(thumbs.values()), None)
    aspect = sample.shape[0] / sample.shape[1] if sample is not None else 9 / 16
    cell_h = max(16, int(round(width * aspect)))
    pad, label_h = 8, 34
    header_h = 50 if summary["untrained"] else 32
    sheet_w = pad + cols * (width + pad)
    sheet_h = header_h + pad + rows * (cell_h + label_h + pad)
    sheet = Image.new("RGB", (sheet_w, sheet_h), _BG)
    draw = ImageDraw.Draw(sheet)
    title, small = _font(16), _font(12)
    hours = _hours(summary)
    r = summary["range"]
    heading = (
        f"{_name(summary)}  {format_time(r['start'], hours)}-{format_time(r['end'], hours)}  "
        f"{len(summary['shots'])} shots, {len(keyframes)} keyframes"
    )
    draw.text((pad, 7), _fit(heading, title, sheet_w - 2 * pad, draw), fill=_INK, font=title)
    if summary["untrained"]:
        draw.text((pad, 28), _fit(UNTRAINED_NOTE, small, sheet_w - 2 * pad, draw), fill=_WARN, font=small)
    shots = summary["shots"]
    for i, keyframe in enumerate(keyframes):
        x = pad + (i % cols) * (width + pad)
        y = header_h + pad + (i // cols) * (cell_h + label_h + pad)
        image = thumbs.get(i)
        if image is not None:
            picture = Image.fromarray(image).convert("RGB")
            picture.thumbnail((width, cell_h), Image.Resampling.LANCZOS)
            sheet.paste(picture, (x + (width - picture.width) // 2, y + (cell_h - picture.height) // 2))
        else:
            draw.rectangle((x, y, x + width - 1, y + cell_h - 1), fill=(210, 210, 210))
            draw.text((x + 8, y + cell_h // 2 - 6), "no picture stored", fill=_MUTED, font=small)
        shot = shots[keyframe["shot"]]
        draw.text(
            (x, y + cell_h + 3),
            f"{format_time(keyframe['t'], hours)}   shot {keyframe['shot'] + 1}",
            fill=_INK,
            font=small,
        )
        tags = ", ".join(shot["tags"][:3]) or "-"
        draw.text((x, y + cell_h + 18), _fit(tags, small, width, draw), fill=_MUTED, font=small)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def timeline_png(summary: dict, width_inches: float = 12.0) -> bytes:
    """Shots (coloured by scene, keyframes marked), query scores over time if any, events if any."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    lanes = [("shots", 1.2)]
    if summary["queries"]:
        lanes.append(("queries", 2.0))
    if summary["events"]:
        labels = list(dict.fromkeys(e["label"] for e in summary["events"]))[:8]
        lanes.append(("events", 0.45 * len(labels) + 0.6))
    height = 1.1 + sum(h for _, h in lanes)
    fig = Figure(figsize=(width_inches, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(
        len(lanes), 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": [h for _, h in lanes]}
    )[:, 0]
    r = summary["range"]
    hours = _hours(summary)
    span = max(r["end"] - r["start"], 1e-6)
    colours = [tuple(c) for c in __import__("matplotlib").colormaps["tab20"](np.linspace(0, 1, 20))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing glyphs for labels in scripts the default font lacks
        for (lane, _), ax in zip(lanes, axes):
            ax.set_facecolor("#fafafa")
            if lane == "shots":
                ax.broken_barh(
                    [(shot["start"], shot["end"] - shot["start"]) for shot in summary["shots"]],
                    (0.1, 0.8),
                    facecolors=[colours[shot["scene"] % 20] for shot in summary["shots"]],
                    edgecolors="white",
                    linewidth=0.6,
                )
                for shot in summary["shots"]:
                    if shot["tags"] and (shot["end"] - shot["start"]) / span > 0.07:
                        ax.text(
                            (shot["start"] + shot["end"]) / 2,
                            0.5,
                            shot["tags"][0],
                            ha="center",
                            va="center",
                            fontsize=7,
                            clip_on=True,
                        )
                t = [k["t"] for k in summary["keyframes"]]
                ax.plot(t, [0.97] * len(t), "v", color="#222", markersize=5, clip_on=False)
                ax.set_ylim(0, 1)
                ax.set_yticks([])
                ax.set_ylabel("shots", rotation=0, ha="right", va="center")
            elif lane == "queries":
                for query in summary["queries"]:
                    text = query["text"] if len(query["text"]) <= 40 else query["text"][:39] + "…"
                    ax.plot(query["times"], query["scores"], linewidth=1.0, label=text)
                ax.legend(loc="upper right", fontsize=7, frameon=False)
                ax.set_ylabel("query\nscore", rotation=0, ha="right", va="center")
                ax.grid(alpha=0.3)
            else:
                labels = list(dict.fromkeys(e["label"] for e in summary["events"]))[:8]
                row = {label: i for i, label in enumerate(labels)}
                for event in summary["events"]:
                    y = row.get(event["label"], len(labels) - 1)
                    width = max(event["t_end"] - event["t_start"], span / 400)
                    ax.broken_barh([(event["t_start"], width)], (y - 0.35, 0.7), facecolors="#d62728")
                ax.set_yticks(range(len(labels)))
                ax.set_yticklabels([lab if len(lab) <= 28 else lab[:27] + "…" for lab in labels], fontsize=7)
                ax.set_ylim(-0.6, len(labels) - 0.4)
                ax.invert_yaxis()
                ax.set_ylabel("events", rotation=0, ha="right", va="center")
        axes[-1].set_xlim(r["start"], r["end"])
        axes[-1].xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_time(v, hours)))
        axes[-1].set_xlabel("media time")
        title = f"{_name(summary)}: {len(summary['shots'])} shots, {len(summary['keyframes'])} keyframes"
        if summary["events"]:
            title += f", {len(summary['events'])} events"
        fig.suptitle(title, fontsize=10, x=0.01, ha="left")
        if summary["untrained"]:
            fig.text(0.99, 0.985, UNTRAINED_NOTE, color="#b91414", fontsize=9, ha="right", va="top")
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _thumb_jpeg(image: np.ndarray, width: int = 200) -> bytes:
    picture = Image.fromarray(image).convert("RGB")
    picture.thumbnail((width, width), Image.Resampling.LANCZOS)
    return encode_jpeg(np.asarray(picture), quality=80)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1240px;\
color:#1c1c1e;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.meta{color:#555;font-size:12.5px} .warn{background:#fde8e8;border:1px solid #e4a0a0;color:#8b1111;\
padding:8px 12px;border-radius:6px;margin:12px 0;font-weight:600}
pre{background:#f4f4f2;padding:12px 14px;border-radius:6px;white-space:pre-wrap;font-size:13px}
img.wide{max-width:100%;border:1px solid #ddd;border-radius:4px}
table{border-collapse:collapse;font-size:12.5px;width:100%} th,td{border-bottom:1px solid #e4e4e4;\
padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f2} .grid{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0;width:200px;font-size:12px}
figure img{width:200px;border-radius:3px;border:1px solid #ddd} figcaption{color:#444}
"""


def report_html(
    summary: dict,
    contact_sheet: bytes,
    timeline: bytes,
    thumbs: dict[int, np.ndarray],
    track_thumbs: dict[int, np.ndarray],
) -> str:
    """One HTML file holding the text summary, the timeline, the contact sheet, keyframes, shots, events and
    tracks (`track_thumbs`: their pictures by track id)."""
    e = html.escape
    hours = _hours(summary)
    r = summary["range"]
    span = lambda a, b: f"{format_time(a, hours)}-{format_time(b, hours)}"  # noqa: E731
    models = summary["models"]
    features = summary["features"]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Summary: {e(_name(summary))}</title><style>{_CSS}</style></head><body>",
        f"<h1>Summary of {e(_name(summary))}</h1>",
        f'<div class="meta">{e(summary["source"]["source"])} &middot; {span(r["start"], r["end"])} '
        f"of {format_time(r['duration'], hours)} &middot; features: {e(features['kind'])} every "
        f"{features['interval']:g} s ({features['count']}) &middot; models: {e(models['siglip'])}, "
        f"{e(models['dinov2'])}"
        + (f" &middot; captions: {e(summary['captioner'])}" if summary["captioner"] else "")
        + f" &middot; schema_version {summary['schema_version']}</div>",
    ]
    if summary["untrained"]:
        parts.append(f'<div class="warn">{e(UNTRAINED_NOTE)}</div>')
    parts += [
        f"<h2>What happened when</h2><pre>{e(summary['text'])}</pre>",
        f'<h2>Timeline</h2><img class="wide" alt="timeline" src="{_data_uri(timeline, "image/png")}">',
        f'<h2>Contact sheet</h2><img class="wide" alt="contact sheet" src="{_data_uri(contact_sheet, "image/png")}">',
        '<h2>Keyframes</h2><div class="grid">',
    ]
    for i, keyframe in enumerate(summary["keyframes"]):
        shot = summary["shots"][keyframe["shot"]]
        image = thumbs.get(i)
        img = (
            f'<img alt="keyframe at {format_time(keyframe["t"], hours)}" '
            f'src="{_data_uri(_thumb_jpeg(image), "image/jpeg")}">'
            if image is not None
            else "<div>(no picture)</div>"
        )
        caption = f"<br><em>{e(keyframe['caption'])}</em>" if keyframe["caption"] else ""
        parts.append(
            f"<figure>{img}<figcaption><b>{format_time(keyframe['t'], hours)}</b> "
            f"shot {keyframe['shot'] + 1}: {e(', '.join(shot['tags'][:3]))}{caption}</figcaption></figure>"
        )
    parts.append(
        "</div><h2>Shots</h2><table><tr><th>#</th><th>time</th><th>scene</th><th>change</th><th>tags (cosine)</th></tr>"
    )
    for shot in summary["shots"]:
        tags = ", ".join(f"{e(t['label'])} ({t['score']:.3f})" for t in shot["tag_scores"])
        change = "" if shot["change"] is None else f"{shot['change']:.3f}"
        parts.append(
            f"<tr><td>{shot['index'] + 1}</td><td>{span(shot['start'], shot['end'])}</td>"
            f"<td>{shot['scene'] + 1}</td><td>{change}</td><td>{tags}</td></tr>"
        )
    parts.append("</table>")
    if summary["events"]:
        parts.append("<h2>Events</h2><table><tr><th>time</th><th>kind</th><th>label</th><th>score</th></tr>")
        for event in summary["events"]:
            score = "" if event["score"] is None else f"{event['score']:.3f}"
            if "track" in event:  # an instant, told of its one track
                when, label = format_time(event["t_start"], hours), TrackAction.from_json(event["track"]).sentence()
            else:
                when, label = span(event["t_start"], event["t_end"]), event["label"]
            parts.append(f"<tr><td>{when}</td><td>{e(event['kind'])}</td><td>{e(label)}</td><td>{score}</td></tr>")
        parts.append("</table>")
    if "tracks" in summary:
        tracking = summary["tracks"]
        counts = ", ".join(_plural(n, e(name)) for name, n in tracking["classes"].items()) or "none in this range"
        untrained = " (untrained models: plumbing, never accuracy)" if tracking["untrained"] else ""
        parts.append(
            f'<h2>Tracks</h2><p>{counts}{untrained} &middot; <span class="meta">{e(tracking["key"])}</span></p>'
            "<table><tr><th>picture</th><th>track</th><th>class</th><th>seen</th></tr>"
        )
        for tracked in tracking["tracks"]:
            image = track_thumbs.get(tracked["id"])
            img = (
                f'<img alt="track {tracked["id"]}" src="{_data_uri(_thumb_jpeg(image, 96), "image/jpeg")}">'
                if image is not None
                else "(no picture)"
            )
            parts.append(
                f"<tr><td>{img}</td><td>#{tracked['id']}</td><td>{e(tracked['class_name'])}</td>"
                f"<td>{span(tracked['first_pts'], tracked['last_pts'])}</td></tr>"
            )
        parts.append("</table>")
    if summary["queries"]:
        parts.append("<h2>Queries</h2><ul>")
        for query in summary["queries"]:
            best = int(np.argmax(query["scores"])) if query["scores"] else None
            peak = (
                f" (peak {query['scores'][best]:.3f} at {format_time(query['times'][best], hours)})"
                if best is not None
                else ""
            )
            parts.append(f"<li>{e(query['text'])}{peak}</li>")
        parts.append("</ul>")
    parts.append(
        '<p class="meta">Made by <code>vigil summarize</code>; the data is in summary.json beside this file.</p>'
    )
    parts.append("</body></html>\n")
    return "\n".join(parts)
