"""A server-rendered SVG bar chart for the officers' report (no script, no library).

Horizontal bars, one a row, each with its label and its value in words; a bar may have a
limit drawn behind it (budget used against the monthly budget). A suppressed cell is not
drawn: its row says so, as the table does. The chart is an image to assistive technology
(`role="img"`), named by its `<title>` and described by a `<desc>` that reads every bar,
so a screen reader hears what a sighted reader sees. Only presentation attributes, no
`style`: the portal's CSP allows no inline styles.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

WIDTH = 720
LEFT = 2  # bars start here; each row's label sits above its bar, so long names fit
BAR_W = 460  # the longest bar (the value's words go to its right)
TITLE_H = 36
ROW_H = 54
LABEL_Y = 18  # a row's label baseline, from the row's top
BAR_Y, BAR_H = 26, 20  # a row's bar, from the row's top
BOTTOM = 8
INK = "#1b1b1b"
BAR = "#0b4f9c"  # the portal's link colour: 8:1 on white
LIMIT_FILL = "#f3f2f1"
_CHART_ID = re.compile(r"[a-z][a-z0-9-]{0,40}")


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar: its label, its value (None when suppressed: not drawn) and the words for
    it; optionally a limit drawn behind it and the limit's words."""

    label: str
    value: int | None
    value_text: str
    limit: int | None = None
    limit_text: str = ""

    @property
    def spoken(self) -> str:
        """'swimming: £7.50', 'Youth leisure: £7.50 of £5,000.00'."""
        text = self.value_text
        if self.value is not None and self.limit is not None and self.limit_text:
            text = f"{text} of {self.limit_text}"
        return f"{self.label}: {text}"


def _attr(text: str) -> str:
    return escape(text, {'"': "&quot;"})


def _length(value: int, top: int) -> float:
    """A bar's length; a positive value is never thinner than 2 pixels, so it shows."""
    if top <= 0 or value <= 0:
        return 0.0
    return max(BAR_W * value / top, 2.0)


def bar_chart_svg(chart_id: str, title: str, bars: Sequence[Bar], *, empty: str = "") -> str:
    """An inline SVG element: `title` above horizontal `bars`, scaled to the largest value
    or limit; `empty` is written in place of the bars when there are none."""
    if not _CHART_ID.fullmatch(chart_id):
        raise ValueError(f"chart id must be a short lower-case id, got {chart_id!r}")
    top = max(
        [b.value for b in bars if b.value is not None] + [b.limit for b in bars if b.limit],
        default=0,
    )
    rows = max(len(bars), 1)
    height = TITLE_H + rows * ROW_H + BOTTOM
    desc = "; ".join(b.spoken for b in bars) or empty
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{chart_id}" '
        f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>',
        f'<text x="{LEFT}" y="20" font-family="sans-serif" font-size="17" font-weight="bold" '
        f'fill="{INK}">{escape(title)}</text>',
    ]
    if not bars:
        out.append(
            f'<text x="{LEFT}" y="{TITLE_H + LABEL_Y}" font-family="sans-serif" '
            f'font-size="15" fill="{INK}">{escape(empty)}</text>'
        )
    for n, bar in enumerate(bars):
        out.append(_bar(bar, TITLE_H + n * ROW_H, top))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _bar(bar: Bar, y: int, top: int) -> str:
    """One row: its label, then the limit (if any) with the bar over it, and its words."""
    parts = [
        f'<g class="bar" aria-label="{_attr(bar.spoken)}">',
        f'<text x="{LEFT}" y="{y + LABEL_Y}" font-family="sans-serif" font-size="15" '
        f'font-weight="bold" fill="{INK}">{escape(bar.label)}</text>',
        f'<line x1="{LEFT}" y1="{y + BAR_Y - 2}" x2="{LEFT}" y2="{y + BAR_Y + BAR_H + 2}" '
        f'stroke="{INK}"/>',
    ]
    end = LEFT
    if bar.limit is not None and bar.limit > 0:
        width = _length(bar.limit, top)
        parts.append(
            f'<rect class="limit" x="{LEFT}" y="{y + BAR_Y}" width="{width:.1f}" '
            f'height="{BAR_H}" fill="{LIMIT_FILL}" stroke="{INK}"/>'
        )
        end = max(end, round(LEFT + width))
    if bar.value is not None:
        width = _length(bar.value, top)
        inset = 4 if bar.limit else 0  # inside the limit's outline
        parts.append(
            f'<rect class="value" x="{LEFT}" y="{y + BAR_Y + inset}" width="{width:.1f}" '
            f'height="{BAR_H - 2 * inset}" fill="{BAR}"><title>{escape(bar.spoken)}</title>'
            "</rect>"
        )
        end = max(end, round(LEFT + width))
        words = bar.spoken.removeprefix(f"{bar.label}: ")
    else:
        words = bar.value_text
    parts.append(
        f'<text x="{end + 8}" y="{y + BAR_Y + BAR_H - 5}" font-family="sans-serif" '
        f'font-size="14" fill="{INK}">{escape(words)}</text>'
    )
    parts.append("</g>")
    return "".join(parts)
