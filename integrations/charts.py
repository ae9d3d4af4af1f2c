"""Small SVG charts drawn on the server (no JavaScript, no build step): every label goes
through format_html, so a workflow, step or branch named `<script>` is text, never markup."""

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH = 720
# Room on the right for the last day's label.
MARGIN = 40
BAR_GAP = 2


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: int
    part: int  # the highlighted part of the bar (converted, succeeded), ≤ value
    title: str  # the tooltip


def _scale(values: Sequence[int]) -> int:
    return max([1, *values])


def day_bars_svg(bars: Sequence[Bar], *, caption: str) -> SafeString:
    """Vertical bars, one per day: the whole bar `value` (enrolled), its lower part `part`
    (converted). A label under every few bars so they do not overlap."""
    height, top, bottom, left = 180, 14, 22, 34
    plot = height - top - bottom
    n = max(1, len(bars))
    slot = (WIDTH - left) / n
    width = max(1.0, slot - BAR_GAP)
    peak = _scale([bar.value for bar in bars])
    every = max(1, round(n / 10))
    shapes = []
    for i, bar in enumerate(bars):
        x = left + i * slot
        whole = plot * bar.value / peak
        part = plot * bar.part / peak
        shapes.append(
            format_html(
                '<g><title>{}</title><rect class="cf-bar" x="{}" y="{}" width="{}" height="{}"/>'
                '<rect class="cf-bar-part" x="{}" y="{}" width="{}" height="{}"/></g>',
                bar.title,
                f"{x:.1f}",
                f"{top + plot - whole:.1f}",
                f"{width:.1f}",
                f"{whole:.1f}",
                f"{x:.1f}",
                f"{top + plot - part:.1f}",
                f"{width:.1f}",
                f"{part:.1f}",
            )
        )
        if i % every == 0:
            shapes.append(
                format_html(
                    '<text class="cf-axis" x="{}" y="{}">{}</text>',
                    f"{x:.1f}",
                    height - 6,
                    bar.label,
                )
            )
    return format_html(
        '<svg class="cf-chart" viewBox="0 0 {} {}" role="img" aria-label="{}">'
        '<text class="cf-axis" x="0" y="{}">{}</text>'
        '<line class="cf-baseline" x1="{}" y1="{}" x2="{}" y2="{}"/>{}</svg>',
        WIDTH + MARGIN,
        height,
        caption,
        top + 4,
        peak,
        left,
        top + plot,
        WIDTH,
        top + plot,
        format_html_join("", "{}", ((shape,) for shape in shapes)),
    )


def horizontal_bars_svg(bars: Sequence[Bar], *, caption: str) -> SafeString:
    """One labelled row per bar (a funnel's steps, the variants): the bar `value` long, its
    first part `part` highlighted, the numbers written after it."""
    row, label_width, pad = 28, 260, 6
    height = max(1, len(bars)) * row + pad
    room = WIDTH - label_width - 150
    peak = _scale([bar.value for bar in bars])
    rows = []
    for i, bar in enumerate(bars):
        y = pad + i * row
        whole = room * bar.value / peak
        part = room * bar.part / peak
        rows.append(
            format_html(
                '<g><title>{}</title><text class="cf-label" x="0" y="{}">{}</text>'
                '<rect class="cf-bar" x="{}" y="{}" width="{}" height="18"/>'
                '<rect class="cf-bar-part" x="{}" y="{}" width="{}" height="18"/>'
                '<text class="cf-value" x="{}" y="{}">{} / {}</text></g>',
                bar.title,
                y + 13,
                bar.label[:40],
                label_width,
                y,
                f"{whole:.1f}",
                label_width,
                y,
                f"{part:.1f}",
                f"{label_width + whole + 6:.1f}",
                y + 13,
                bar.part,
                bar.value,
            )
        )
    return format_html(
        '<svg class="cf-chart" viewBox="0 0 {} {}" role="img" aria-label="{}">{}</svg>',
        WIDTH,
        height,
        caption,
        format_html_join("", "{}", ((r,) for r in rows)),
    )
