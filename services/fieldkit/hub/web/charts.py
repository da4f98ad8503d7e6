"""Bar charts for the dashboard, laid out here and drawn by ``_charts.html`` as inline SVG.

Each chart has both axes, the value axis with round ticks (1, 2 or 5 × 10ⁿ) and a title, the
category axis with each bar's name and a title, and every bar's value written at its end, so a
reader (or a screen reader, from the description) gets the numbers, not just the shapes. Only
shapes and attributes: the hub's CSP allows no inline style.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Tick:
    """A value-axis tick: its grid line across the plot and its number."""

    x1: float
    y1: float
    x2: float
    y2: float
    text_x: float
    text_y: float
    text: str
    anchor: str


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value_x: float
    value_y: float
    label_x: float
    label_y: float
    label: str  # the whole category (the bar's tooltip)
    short: str  # what the axis shows under or beside the bar
    value: int


@dataclass(frozen=True)
class BarChart:
    width: float
    height: float
    bars: list[Bar]
    ticks: list[Tick]
    origin_x: float
    origin_y: float
    value_end_x: float
    value_end_y: float
    category_end_x: float
    category_end_y: float
    value_anchor: str
    label_anchor: str
    value_title: str
    value_title_x: float
    value_title_y: float
    value_title_anchor: str
    category_title: str
    category_title_x: float
    category_title_y: float
    category_title_anchor: str
    summary: str


def nice_ticks(peak: int, most: int = 5) -> list[int]:
    """0 up to the first round number at or above ``peak``, in at most ``most`` steps."""
    if peak <= 0:
        return [0, 1]
    magnitude = 10 ** max(0, int(math.log10(peak)) - 1)
    while True:
        for multiple in (1, 2, 5):
            step = multiple * magnitude
            if math.ceil(peak / step) <= most:
                top = step * math.ceil(peak / step)
                return list(range(0, top + 1, step))
        magnitude *= 10


def _scale(ticks: list[int]) -> int:
    return ticks[-1] or 1


def columns(
    points: Sequence[tuple[str, int]],
    *,
    value_title: str,
    category_title: str,
    short: Callable[[str], str] = str,
    summary: str = "",
) -> BarChart:
    """Vertical bars, one per category, left to right (days on a time axis)."""
    left, top, plot_h, bar_w, gap = 52.0, 24.0, 160.0, 20.0, 8.0
    plot_w = len(points) * (bar_w + gap)
    base = top + plot_h
    ticks = nice_ticks(max((v for _, v in points), default=0))
    scale = _scale(ticks)
    bars = []
    for i, (label, value) in enumerate(points):
        h = plot_h * value / scale
        x = left + gap / 2 + i * (bar_w + gap)
        middle = x + bar_w / 2
        bars.append(
            Bar(
                x,
                base - h,
                bar_w,
                h,
                middle,
                base - h - 4,
                middle,
                base + 16,
                label,
                short(label),
                value,
            )
        )
    return BarChart(
        width=left + plot_w + 16,
        height=base + 44,
        bars=bars,
        ticks=[
            Tick(left, y, left + plot_w, y, left - 6, y + 4, f"{v:,}", "end")
            for v in ticks
            for y in [base - plot_h * v / scale]
        ],
        origin_x=left,
        origin_y=base,
        value_end_x=left,
        value_end_y=top - 6,
        category_end_x=left + plot_w,
        category_end_y=base,
        value_anchor="middle",
        label_anchor="middle",
        value_title=value_title,
        value_title_x=left - 6,
        value_title_y=top - 12,
        value_title_anchor="start",
        category_title=category_title,
        category_title_x=left + plot_w,
        category_title_y=base + 36,
        category_title_anchor="end",
        summary=summary,
    )


def rows(
    points: Sequence[tuple[str, int]],
    *,
    value_title: str,
    category_title: str,
    summary: str = "",
) -> BarChart:
    """Horizontal bars, one per category, top to bottom (names that need room to be read)."""
    left, top, plot_w, bar_h, gap = 150.0, 28.0, 300.0, 16.0, 6.0
    plot_h = len(points) * (bar_h + gap)
    base = top + plot_h
    ticks = nice_ticks(max((v for _, v in points), default=0))
    scale = _scale(ticks)
    bars = []
    for i, (label, value) in enumerate(points):
        w = plot_w * value / scale
        y = top + gap / 2 + i * (bar_h + gap)
        middle = y + bar_h / 2 + 4
        bars.append(
            Bar(left, y, w, bar_h, left + w + 4, middle, left - 6, middle, label, label, value)
        )
    return BarChart(
        width=left + plot_w + 48,
        height=base + 40,
        bars=bars,
        ticks=[
            Tick(x, top, x, base, x, base + 14, f"{v:,}", "middle")
            for v in ticks
            for x in [left + plot_w * v / scale]
        ],
        origin_x=left,
        origin_y=base,
        value_end_x=left + plot_w + 6,
        value_end_y=base,
        category_end_x=left,
        category_end_y=top - 4,
        value_anchor="start",
        label_anchor="end",
        value_title=value_title,
        value_title_x=left + plot_w,
        value_title_y=base + 32,
        value_title_anchor="end",
        category_title=category_title,
        category_title_x=left - 6,
        category_title_y=top - 10,
        category_title_anchor="end",
        summary=summary,
    )
