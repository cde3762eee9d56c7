"""Counts as a bar chart (SVG text) and a table (HTML): the notebook's result display.

Plain text, no plotting library: it renders in JupyterLab, Voila and saved notebooks alike,
follows JupyterLab's light and dark themes through its CSS variables (with fallbacks outside
JupyterLab), and weighs a few kilobytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

#: Bars shown at most; the rest are summed into one "other" bar.
MAX_BARS = 32
_BAR = "var(--jp-brand-color1, #1976d2)"
_TEXT = "var(--jp-ui-font-color1, #222)"
_MUTED = "var(--jp-ui-font-color2, #666)"
_GRID = "var(--jp-border-color2, #ddd)"
_FONT = "var(--jp-ui-font-family, system-ui, sans-serif)"


def _ordered(counts: Mapping[str, int], max_bars: int) -> list[tuple[str, int]]:
    """Outcomes in bit-string order when they fit, else the most frequent, plus "other"."""
    items = [(str(k), int(v)) for k, v in counts.items() if int(v) > 0]
    if len(items) <= max_bars:
        return sorted(items)
    top = sorted(items, key=lambda kv: (-kv[1], kv[0]))[: max_bars - 1]
    rest = sum(v for _, v in items) - sum(v for _, v in top)
    return [*sorted(top), ("other", rest)]


def grid_line(x0: float, x1: float, y: float, label: str) -> str:
    """A horizontal grid line of a chart from ``x0`` to ``x1`` at ``y``, its value at the left."""
    return (
        f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="{_GRID}" stroke-width="1"/>'
        f'<text x="{x0 - 4}" y="{y + 4:.1f}" fill="{_MUTED}" text-anchor="end">'
        f"{escape(label)}</text>"
    )


def histogram_svg(
    counts: Mapping[str, int],
    *,
    max_bars: int = MAX_BARS,
    width: int = 480,
    height: int = 220,
    title: str | None = None,
) -> str:
    """An SVG bar chart of ``counts`` (outcome -> count), bars labelled with probabilities."""
    bars = _ordered(counts, max_bars)
    total = sum(v for _, v in bars) or 1
    left, right, top, bottom = 40, 10, 24 if title else 10, 54
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((v for _, v in bars), default=1) / total or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="qmlops-histogram" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'style="font-family:{_FONT};font-size:11px">'
    ]
    label = title or "measurement outcomes"
    parts.append(f"<title>{escape(label)}</title>")
    if title:
        parts.append(
            f'<text x="{left}" y="15" fill="{_TEXT}" font-weight="600">{escape(title)}</text>'
        )
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h - frac * plot_h
        parts.append(grid_line(left, width - right, y, f"{frac * peak:.2f}"))
    if not bars:
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" fill="{_MUTED}" '
            f'text-anchor="middle">no counts</text></svg>'
        )
        return "".join(parts)
    slot = plot_w / len(bars)
    bar_w = max(2.0, slot * 0.7)
    rotate = len(bars) > 8 or max(len(k) for k, _ in bars) > 6
    for i, (outcome, value) in enumerate(bars):
        p = value / total
        h = plot_h * (p / peak)
        x = left + i * slot + (slot - bar_w) / 2
        y = top + plot_h - h
        cx = x + bar_w / 2
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
            f'fill="{_BAR}"><title>{escape(outcome)}: {value} ({p:.1%})</title></rect>'
        )
        if len(bars) <= 16:
            parts.append(
                f'<text x="{cx:.1f}" y="{y - 3:.1f}" fill="{_TEXT}" text-anchor="middle">'
                f"{p:.3f}</text>"
            )
        ly = top + plot_h + 12
        if rotate:
            parts.append(
                f'<text x="{cx:.1f}" y="{ly:.1f}" fill="{_TEXT}" text-anchor="end" '
                f'transform="rotate(-60 {cx:.1f} {ly:.1f})">{escape(outcome)}</text>'
            )
        else:
            parts.append(
                f'<text x="{cx:.1f}" y="{ly:.1f}" fill="{_TEXT}" text-anchor="middle">'
                f"{escape(outcome)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def counts_table_html(counts: Mapping[str, int], *, max_rows: int = 64) -> str:
    """Outcome, count and probability per row, most frequent first."""
    items = sorted(((str(k), int(v)) for k, v in counts.items()), key=lambda kv: (-kv[1], kv[0]))
    total = sum(v for _, v in items) or 1
    rows = "".join(
        f"<tr><td><code>{escape(k)}</code></td><td style='text-align:right'>{v}</td>"
        f"<td style='text-align:right'>{v / total:.4f}</td></tr>"
        for k, v in items[:max_rows]
    )
    more = (
        f"<tr><td colspan='3'>… {len(items) - max_rows} more outcomes</td></tr>"
        if len(items) > max_rows
        else ""
    )
    return (
        "<table class='qmlops-counts'><thead><tr><th>outcome</th><th>count</th>"
        f"<th>probability</th></tr></thead><tbody>{rows}{more}</tbody></table>"
    )


def counts_text(counts: Mapping[str, int], *, max_rows: int = 16) -> str:
    """Plain-text counts, most frequent first: ``11: 503 (50.3%)`` per line."""
    items = sorted(((str(k), int(v)) for k, v in counts.items()), key=lambda kv: (-kv[1], kv[0]))
    total = sum(v for _, v in items) or 1
    lines = [f"{k}: {v} ({v / total:.1%})" for k, v in items[:max_rows]]
    if len(items) > max_rows:
        lines.append(f"... {len(items) - max_rows} more outcomes")
    return "\n".join(lines)
