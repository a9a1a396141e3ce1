"""The soak's plot: panels of lines over time (rate, lag, memory), laid out as the reports'
`Drawing` (services/reports/domain/chart.py) so the reports' Pillow code draws the PNG.

Pure layout; `plot_png` only hands the drawing to the reports' PNG adapter.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from services.reports.domain.chart import COLOURS, Drawing, Line, Rect, Shape, Text

WIDTH = 980
LEFT, RIGHT_LEGEND = 80, 190
PANEL_H, PANEL_GAP, TOP = 200, 70, 60
GRID = "#DDDDDD"
MARK = "#999999"

Points = Sequence[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class Panel:
    """One chart: a line per series, x in minutes, y in `unit`."""

    title: str
    unit: str
    series: Mapping[str, Points] = field(default_factory=dict)
    from_zero: bool = True  # False: the y axis starts near the lowest value (memory)


def nice_step(top: float, ticks: int = 4) -> float:
    """A step of 1, 2 or 5 x 10^k giving about `ticks` intervals up to `top`."""
    if top <= 0:
        return 1.0
    raw = top / ticks
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return float(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw))


def _label(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 or value == 0 else f"{value:g}"


def y_range(values: Sequence[float], from_zero: bool = True) -> tuple[float, float, float]:
    """(bottom, top, step) of a y axis showing `values` on about four gridlines: from 0,
    or (not `from_zero`) from a step below the lowest value, so small changes show."""
    high = max(values, default=0.0)
    low = 0.0 if from_zero else min(values, default=0.0)
    step = nice_step(max(high - low, high / 20 if not from_zero else 0.0, 1e-9))
    bottom = 0.0 if from_zero else max(0.0, step * (math.floor(low / step) - 1))
    top = step * math.ceil(high / step) if high > bottom else bottom + step
    return bottom, top, step


def _panel(panel: Panel, top_y: float, x_max: float, marks: Sequence[float]) -> list[Shape]:
    plot_w = WIDTH - LEFT - RIGHT_LEGEND
    values = [y for points in panel.series.values() for _, y in points]
    y_low, y_top, y_step = y_range(values, panel.from_zero)
    bottom = top_y + PANEL_H

    def at(x: float, y: float) -> tuple[float, float]:
        return LEFT + x / x_max * plot_w, bottom - (y - y_low) / (y_top - y_low) * PANEL_H

    shapes: list[Shape] = [Text(LEFT, top_y - 12, panel.title, 13)]
    tick = y_low
    while tick <= y_top + 1e-9:
        shapes.append(Line(*at(0, tick), *at(x_max, tick), GRID))
        shapes.append(Text(LEFT - 6, at(0, tick)[1] + 4, _label(tick), 11, "end"))
        tick += y_step
    x_step = nice_step(x_max, 6)
    tick = 0.0
    while tick <= x_max + 1e-9:
        x = at(tick, y_low)[0]
        shapes.append(Line(x, bottom, x, bottom + 4))
        shapes.append(Text(x, bottom + 16, _label(tick), 11, "middle"))
        tick += x_step
    shapes.append(Line(LEFT, bottom, LEFT + plot_w, bottom))
    shapes.append(Line(LEFT, top_y, LEFT, bottom))
    shapes.append(Text(LEFT - 50, top_y + PANEL_H / 2, panel.unit, 11, "middle", vertical=True))
    for x in marks:
        shapes.append(Line(*at(x, y_low), *at(x, y_top), MARK))
    for i, (name, points) in enumerate(panel.series.items()):
        colour = COLOURS[i % len(COLOURS)]
        for (x1, y1), (x2, y2) in itertools.pairwise(points):
            shapes.append(Line(*at(x1, y1), *at(x2, y2), colour))
        legend_y = top_y + 8 + i * 18
        shapes.append(Rect(WIDTH - RIGHT_LEGEND + 14, legend_y - 9, 12, 10, colour))
        shapes.append(Text(WIDTH - RIGHT_LEGEND + 32, legend_y, name, 11))
    return shapes


def timeseries_drawing(
    title: str, panels: Sequence[Panel], x_max_min: float, marks: Sequence[float] = ()
) -> Drawing:
    """`panels` one above the other over 0..`x_max_min` minutes, with a grey vertical line
    at each of `marks` (minutes: the end of the warm-up, the end of traffic)."""
    x_max = max(x_max_min, 1e-6)
    shapes: list[Shape] = [Text(LEFT, 28, title, 16)]
    for i, panel in enumerate(panels):
        shapes += _panel(panel, TOP + 20 + i * (PANEL_H + PANEL_GAP), x_max, marks)
    height = TOP + 20 + len(panels) * (PANEL_H + PANEL_GAP)
    shapes.append(Text(LEFT + (WIDTH - LEFT - RIGHT_LEGEND) / 2, height - 22, "minutes", 12))
    return Drawing(WIDTH, height, title, tuple(shapes))


def plot_png(drawing: Drawing) -> bytes:
    """The drawing as PNG, by the reports' Pillow adapter."""
    from services.reports.adapters.png import drawing_png  # noqa: PLC0415 - Pillow on demand

    return drawing_png(drawing)
