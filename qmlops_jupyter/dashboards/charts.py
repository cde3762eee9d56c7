"""The dashboards' figures as SVG text: bars, a distribution of durations, curves over steps.

Like the counts histogram of :mod:`qmlops_jupyter.notebook.histogram`, no plotting library:
the figures render in Voila, JupyterLab and a saved notebook alike, follow JupyterLab's themes
through its CSS variables, and weigh a few kilobytes. Every figure carries
``data-figure="<name>"`` and every mark ``data-label`` / ``data-value``, so what a figure says
can be read back from the page (the browser tests compare it with the ledger).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape

from ..notebook.display import STATE_COLOURS
from ..notebook.histogram import _FONT, _GRID, _MUTED, _TEXT, grid_line

__all__ = [
    "STATE_COLOURS", "bar_chart", "column_chart", "duration_histogram", "line_chart", "meter",
    "short_backend",
]  # fmt: skip

#: One colour per series or bar group (JupyterLab's palette where it has one).
PALETTE = (
    "var(--jp-brand-color1, #1976d2)",
    "var(--jp-warn-color1, #f57c00)",
    "var(--jp-success-color1, #388e3c)",
    "var(--jp-error-color1, #d32f2f)",
    "#7b1fa2",
    "#00838f",
    "#5d4037",
    "#c2185b",
)


def _svg_open(name: str, width: int, height: int, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="qmlops-chart" role="img" '
        f'data-figure="{escape(name)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" style="font-family:{_FONT};font-size:11px">'
        f"<title>{escape(title)}</title>"
        f'<text x="0" y="13" fill="{_TEXT}" font-weight="600">{escape(title)}</text>'
    )


def _empty(name: str, width: int, height: int, title: str, message: str) -> str:
    return (
        _svg_open(name, width, height, title)
        + f'<text x="{width / 2}" y="{height / 2 + 4}" fill="{_MUTED}" text-anchor="middle" '
        f'data-empty="true">{escape(message)}</text></svg>'
    )


def bar_chart(
    name: str,
    title: str,
    items: Sequence[tuple[str, float]],
    *,
    fmt: Callable[[float], str] = lambda v: f"{v:,.0f}",
    colours: Mapping[str, str] | None = None,
    width: int = 360,
    empty: str = "nothing yet",
) -> str:
    """Horizontal bars, one per ``(label, value)``, in the order given, each with its value."""
    bar_h, gap, top, label_w = 16, 6, 22, 120
    height = top + max(1, len(items)) * (bar_h + gap) + 4
    if not items:
        return _empty(name, width, 60, title, empty)
    peak = max(v for _, v in items) or 1.0
    plot_w = width - label_w - 70
    parts = [_svg_open(name, width, height, title)]
    for i, (label, value) in enumerate(items):
        y = top + i * (bar_h + gap)
        w = max(1.0, plot_w * value / peak) if value else 0.0
        colour = (colours or {}).get(label, PALETTE[0])
        text = fmt(value)
        parts.append(
            f'<g class="qmlops-bar" data-label="{escape(label)}" data-value="{value}">'
            f'<text x="{label_w - 6}" y="{y + 12}" fill="{_TEXT}" text-anchor="end">'
            f"{escape(_clip(short_backend(label), 19))}</text>"
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}">'
            f"<title>{escape(label)}: {escape(text)}</title></rect>"
            f'<text x="{label_w + w + 4:.1f}" y="{y + 12}" fill="{_MUTED}">{escape(text)}</text>'
            "</g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def short_backend(name: str) -> str:
    """A backend's name to show where room is short: a Braket device ARN as ``braket:``
    and its provider's device (``braket:ionq/Aria-1``); the full name stays in titles."""
    if ":device/" in name:
        parts = name.split(":device/", 1)[1].split("/")
        return "braket:" + "/".join(parts[-2:])
    return name


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


#: Bucket edges (seconds) of the duration distributions: from instant to days.
DURATION_EDGES = (0.0, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0, 6 * 3600.0, 86400.0, math.inf)
_EDGE_LABELS = (
    "< 0.1 s", "0.1-1 s", "1-10 s", "10 s-1 min", "1-10 min", "10 min-1 h", "1-6 h", "6-24 h",
    "> 1 day",
)  # fmt: skip


def duration_buckets(seconds: Sequence[float]) -> list[tuple[str, int]]:
    """How many durations fall in each of :data:`DURATION_EDGES`' buckets."""
    counts = [0] * (len(DURATION_EDGES) - 1)
    for s in seconds:
        for i in range(len(counts)):
            if DURATION_EDGES[i] <= s < DURATION_EDGES[i + 1]:
                counts[i] += 1
                break
    return list(zip(_EDGE_LABELS, counts, strict=True))


def column_chart(
    name: str,
    title: str,
    items: Sequence[tuple[str, float]],
    *,
    fmt: Callable[[float], str] = lambda v: f"{v:,.0f}",
    unit: str = "",
    width: int = 360,
    height: int = 170,
    empty: str = "nothing yet",
) -> str:
    """Vertical bars, one per ``(label, value)`` in the order given (days, buckets), labels
    slanted under them; the value of each shows on hover."""
    if not items:
        return _empty(name, width, height, title, empty)
    left, right, top, bottom = 62, 6, 24, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(v for _, v in items) or 1
    slot = plot_w / len(items)
    every = max(1, math.ceil(len(items) / 16))  # at most 16 labels under the bars
    parts = [_svg_open(name, width, height, title)]
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h - frac * plot_h
        parts.append(grid_line(left, width - right, y, fmt(frac * peak) if frac else "0"))
    for i, (label, value) in enumerate(items):
        h = plot_h * value / peak
        x = left + i * slot + slot * 0.1
        cx = left + i * slot + slot / 2
        ly = top + plot_h + 10
        text = f"{label}: {fmt(value)}{unit}"
        parts.append(
            f'<g class="qmlops-bar" data-label="{escape(label)}" data-value="{value}">'
            f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{slot * 0.8:.1f}" '
            f'height="{h:.1f}" fill="{PALETTE[0]}"><title>{escape(text)}</title></rect>'
        )
        if i % every == 0:
            parts.append(
                f'<text x="{cx:.1f}" y="{ly}" fill="{_MUTED}" text-anchor="end" font-size="9" '
                f'transform="rotate(-35 {cx:.1f} {ly})">{escape(label)}</text>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def duration_histogram(
    name: str, title: str, seconds: Sequence[float], *, width: int = 360, height: int = 170
) -> str:
    """How many durations fall in each bucket, instant to days on one axis."""
    return column_chart(
        name, title, duration_buckets(seconds) if seconds else [], unit=" job(s)",
        width=width, height=height, empty="no jobs with these times yet",
    )  # fmt: skip


def line_chart(
    name: str,
    title: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    width: int = 520,
    height: int = 220,
    x_label: str = "step",
) -> str:
    """One curve per series (``{name: [(x, y), ...]}``) with a legend."""
    points = [p for values in series.values() for p in values]
    if not points:
        return _empty(name, width, height, title, "no values logged")
    left, right, top, bottom = 48, 10, 24, 36 + 14 * min(len(series), 8)
    plot_w, plot_h = width - left - right, height - top - bottom
    if plot_h < 60:
        height += 60 - plot_h
        plot_h = 60
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def sx(x: float) -> float:
        return left + plot_w * (x - x0) / (x1 - x0)

    def sy(y: float) -> float:
        return top + plot_h - plot_h * (y - y0) / (y1 - y0)

    parts = [_svg_open(name, width, height, title)]
    for frac in (0.0, 0.5, 1.0):
        value = y0 + frac * (y1 - y0)
        parts.append(grid_line(left, width - right, sy(value), f"{value:.4g}"))
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{top + plot_h + 14}" fill="{_MUTED}" '
        f'text-anchor="middle">{escape(x_label)}: {x0:g} … {x1:g}</text>'
    )
    for i, (label, values) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        ordered = sorted(values)
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in ordered)
        last = ordered[-1][1] if ordered else None
        parts.append(
            f'<g class="qmlops-series" data-label="{escape(label)}" data-value="{last}" '
            f'data-points="{len(ordered)}"><polyline points="{path}" fill="none" '
            f'stroke="{colour}" stroke-width="1.8"/>'
        )
        if len(ordered) == 1:
            x, y = ordered[0]
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>')
        parts.append("</g>")
        if i < 8:
            ly = top + plot_h + 30 + 14 * i
            parts.append(
                f'<rect x="{left}" y="{ly - 8}" width="10" height="3" fill="{colour}"/>'
                f'<text x="{left + 14}" y="{ly}" fill="{_TEXT}">{escape(_clip(label, 60))}'
                f" (last {last:.4g})</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def meter(name: str, label: str, used: float, limit: float, text: str, width: int = 320) -> str:
    """A budget's use against its limit: a bar that turns orange past 80 % and red at 100 %."""
    frac = 0.0 if limit <= 0 else min(1.0, used / limit)
    colour = PALETTE[2] if frac < 0.8 else PALETTE[1] if frac < 1.0 else PALETTE[3]
    return (
        f'<div class="qmlops-meter" data-figure="{escape(name)}" data-label="{escape(label)}" '
        f'data-value="{used}" data-limit="{limit}" style="margin:4px 0;font-family:{_FONT}">'
        f'<div style="font-size:12px;color:{_TEXT}">{escape(label)}: {escape(text)}</div>'
        f'<div style="width:{width}px;height:10px;background:{_GRID};border-radius:3px">'
        f'<div style="width:{frac * width:.0f}px;height:10px;background:{colour};'
        f'border-radius:3px"></div></div></div>'
    )
