"""Bar charts of the reports: one layout, drawn as SVG here (no dependency) and as PNG by
adapters/png.py, so both pictures show the same bars.

Only shown cells are drawn: a chart shows nothing a CSV hides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

# Okabe-Ito, colour-blind safe (yellow left out: too pale on white).
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999999", "#000000")
LEFT, TOP, BOTTOM = 90, 70, 60
MIN_PLOT_W, PLOT_H = 560, 300
MAX_BAR_W = 70
TICK_FONT, LABEL_FONT, TITLE_FONT, SUBTITLE_FONT = 11, 13, 16, 12
CHAR_W = 0.62  # a sans-serif character's width, in font sizes (for laying out labels)

Anchor = Literal["start", "middle", "end"]


@dataclass(frozen=True, slots=True)
class BarChart:
    """Bars per category (x), one per series (grouped, or stacked), of shown cells only."""

    name: str  # the files' stem
    title: str
    subtitle: str
    x_label: str
    y_label: str
    categories: tuple[str, ...]
    series: tuple[str, ...]
    values: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (category, series)
    stacked: bool = False
    minor_units: bool = False  # values are money in minor units: shown as 12.50
    legend: bool = True  # False when the one series needs no name (it is the y axis)
    empty_text: str = "No cell large enough to show"


@dataclass(frozen=True, slots=True)
class Rect:
    """A filled rectangle; `tip` is its tooltip (SVG only)."""

    x: float
    y: float
    w: float
    h: float
    fill: str
    tip: str = ""


@dataclass(frozen=True, slots=True)
class Line:
    """A straight line."""

    x1: float
    y1: float
    x2: float
    y2: float
    stroke: str = "#000000"


@dataclass(frozen=True, slots=True)
class Text:
    """Text whose baseline passes through (x, y); `vertical` reads bottom to top."""

    x: float
    y: float
    text: str
    size: int
    anchor: Anchor = "start"
    vertical: bool = False


Shape = Rect | Line | Text


@dataclass(frozen=True, slots=True)
class Drawing:
    """A chart laid out: its size, its title (for SVG's <title>) and its shapes in order."""

    width: int
    height: int
    title: str
    shapes: tuple[Shape, ...]


def format_value(value: int, minor_units: bool) -> str:
    """`value` as a label: money in minor units as 1234.50, counts as they are."""
    if not minor_units:
        return str(value)
    whole, minor = divmod(value, 100)
    return f"{whole}.{minor:02d}"


def _nice_step(top: int, ticks: int = 5) -> int:
    """A step of 1, 2 or 5 x 10^k giving about `ticks` intervals up to `top`."""
    raw = max(1, -(-top // ticks))
    magnitude: int = 10 ** (len(str(raw)) - 1)
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def _text_width(text: str, size: int) -> float:
    return len(text) * size * CHAR_W


def _axis_top(chart: BarChart) -> int:
    if chart.stacked:
        heights = [sum(chart.values.get((c, s), 0) for s in chart.series) for c in chart.categories]
    else:
        heights = list(chart.values.values())
    return max(heights, default=0)


def layout(chart: BarChart) -> Drawing:
    """Where every bar, axis, label and legend entry of `chart` goes."""
    present = {c: [s for s in chart.series if (c, s) in chart.values] for c in chart.categories}
    bars_per_group = 1 if chart.stacked else max((len(p) for p in present.values()), default=1)
    label_w = max((_text_width(c, TICK_FONT) for c in chart.categories), default=0)
    group_w = max(bars_per_group * 14 + 10, label_w + 10, 28)
    legend_w = 30
    if chart.legend:
        legend_w = max((int(_text_width(s, 12)) + 58 for s in chart.series), default=30)
    heading_w = max(
        _text_width(chart.title, TITLE_FONT), _text_width(chart.subtitle, SUBTITLE_FONT)
    )
    plot_w = max(MIN_PLOT_W, group_w * len(chart.categories), heading_w + 20 - LEFT - legend_w)
    group_w = plot_w / max(len(chart.categories), 1)
    width = int(LEFT + plot_w + legend_w)
    height = TOP + PLOT_H + BOTTOM
    base = TOP + PLOT_H
    top_value = _axis_top(chart)
    step = _nice_step(top_value)
    axis_max = max(step * -(-top_value // step), step)
    shapes: list[Shape] = [
        Text(width / 2, 26, chart.title, TITLE_FONT, "middle"),
        Text(width / 2, 46, chart.subtitle, SUBTITLE_FONT, "middle"),
        Line(LEFT, base, LEFT + plot_w, base),
        Line(LEFT, TOP, LEFT, base),
        Text(LEFT + plot_w / 2, height - 14, chart.x_label, LABEL_FONT, "middle"),
        Text(20, TOP + PLOT_H / 2, chart.y_label, LABEL_FONT, "middle", vertical=True),
    ]
    for tick in range(0, axis_max + 1, step):
        y = base - PLOT_H * tick / axis_max
        shapes.append(Line(LEFT - 4, y, LEFT, y))
        shapes.append(
            Text(LEFT - 7, y + 4, format_value(tick, chart.minor_units), TICK_FONT, "end")
        )
    if not chart.values:
        shapes.append(
            Text(LEFT + plot_w / 2, TOP + PLOT_H / 2, chart.empty_text, LABEL_FONT, "middle")
        )
    colour = {s: COLOURS[i % len(COLOURS)] for i, s in enumerate(chart.series)}
    bar_w = min(group_w * 0.8 / bars_per_group, MAX_BAR_W)
    for c_index, category in enumerate(chart.categories):
        middle = LEFT + (c_index + 0.5) * group_w
        shapes.append(Text(middle, base + 16, category, TICK_FONT, "middle"))
        bars = 1 if chart.stacked else len(present[category])
        x = middle - bar_w * bars / 2
        stack = 0
        for series in present[category]:
            value = chart.values[(category, series)]
            h = PLOT_H * value / axis_max
            y = base - PLOT_H * stack / axis_max - h
            tip = f"{category}, {series}: {format_value(value, chart.minor_units)}"
            shapes.append(Rect(x, y, bar_w, h, colour[series], tip))
            if chart.stacked:
                stack += value
            else:
                x += bar_w
    if chart.legend:
        for s_index, series in enumerate(chart.series):
            y = TOP + s_index * 20
            shapes.append(Rect(LEFT + plot_w + 20, y, 12, 12, colour[series]))
            shapes.append(Text(LEFT + plot_w + 38, y + 11, series, 12))
    return Drawing(width, height, f"{chart.title}. {chart.subtitle}", tuple(shapes))


def _svg_shape(shape: Shape) -> str:
    if isinstance(shape, Rect):
        tip = f"<title>{escape(shape.tip)}</title>" if shape.tip else ""
        return (
            f'<rect x="{shape.x:.1f}" y="{shape.y:.1f}" width="{shape.w:.1f}" '
            f'height="{shape.h:.1f}" fill="{shape.fill}">{tip}</rect>'
        )
    if isinstance(shape, Line):
        return (
            f'<line x1="{shape.x1:.1f}" y1="{shape.y1:.1f}" x2="{shape.x2:.1f}" '
            f'y2="{shape.y2:.1f}" stroke="{shape.stroke}"/>'
        )
    turn = f' transform="rotate(-90 {shape.x:.1f} {shape.y:.1f})"' if shape.vertical else ""
    return (
        f'<text x="{shape.x:.1f}" y="{shape.y:.1f}" text-anchor="{shape.anchor}" '
        f'font-family="sans-serif" font-size="{shape.size}"{turn}>{escape(shape.text)}</text>'
    )


def drawing_svg(drawing: Drawing) -> str:
    """`drawing` as a standalone SVG document, titled for screen readers."""
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{drawing.width}" '
        f'height="{drawing.height}" viewBox="0 0 {drawing.width} {drawing.height}" '
        f'role="img" aria-label={quoteattr(drawing.title)}>',
        f"<title>{escape(drawing.title)}</title>",
        f'<rect width="{drawing.width}" height="{drawing.height}" fill="#ffffff"/>',
        *(_svg_shape(s) for s in drawing.shapes),
        "</svg>",
    ]
    return "\n".join(out) + "\n"


def bar_chart_svg(chart: BarChart) -> str:
    """`chart` as SVG."""
    return drawing_svg(layout(chart))
