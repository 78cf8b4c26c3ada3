"""Inline SVG charts rendered on the server: no JavaScript, no CDN, readable in any browser."""

from __future__ import annotations

from django import template
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

register = template.Library()


@register.simple_tag
def bar_chart(
    series: list[dict], value_key: str, label_key: str = "hour", height: int = 120
) -> SafeString:
    """A bar chart of series[i][value_key], labeled by series[i][label_key]."""
    if not series:
        return format_html('<p class="muted">No data yet.</p>')
    width = 640
    gap = 2
    n = len(series)
    top = max(float(row[value_key] or 0) for row in series) or 1.0
    bar = max(1.0, (width - gap * n) / n)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height + 20}" role="img" '
        f'aria-label="{escape(value_key)} per {escape(label_key)}">'
    ]
    for i, row in enumerate(series):
        value = float(row[value_key] or 0)
        h = (value / top) * height
        x = i * (bar + gap)
        title = escape(f"{row[label_key]}: {value:g}")
        parts.append(
            f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bar:.1f}" height="{h:.1f}">'
            f"<title>{title}</title></rect>"
        )
    parts.append(f'<text x="0" y="{height + 15}">{escape(str(series[0][label_key])[11:16])}</text>')
    parts.append(
        f'<text x="{width}" y="{height + 15}" text-anchor="end">'
        f"{escape(str(series[-1][label_key])[11:16])} · max {top:g}</text></svg>"
    )
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated value is escaped above


@register.filter
def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"
