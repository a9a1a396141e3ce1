"""A hand-written SVG bar chart of ridership by operator and hour (no dependency).

Suppressed cells are not drawn: the chart shows only what the CSV shows in figures.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from clearway.disclosure import SUPPRESSED
from services.reports.domain.usage import Table

WIDTH, HEIGHT = 800, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 160, 50, 60
COLOURS = ("#1b6ca8", "#e07b00", "#2e8540", "#b5179e", "#6c757d", "#d62828", "#7f5539")


def ridership_svg(table: Table, period: str) -> str:
    """Grouped bars: boardings per local hour, one bar per operator; suppressed cells left out."""
    shown = [(op, hour, int(n)) for op, hour, n, _cards in table.rows if n != SUPPRESSED]
    operators = sorted({op for op, _, _ in shown})
    hours = sorted({hour for _, hour, _ in shown})
    top = max((n for _, _, n in shown), default=0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    title = f"Boardings by operator and hour, {period} (cells under 10 cards not shown)"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="title">',
        f'<title id="title">{escape(title)}</title>',
        f'<text x="{WIDTH // 2}" y="24" text-anchor="middle" font-family="sans-serif" '
        f'font-size="15">{escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" '
        'stroke="#000"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#000"/>',
        f'<text x="{LEFT + plot_w // 2}" y="{HEIGHT - 15}" text-anchor="middle" '
        'font-family="sans-serif" font-size="13">Hour of entry (local time)</text>',
        f'<text x="18" y="{TOP + plot_h // 2}" text-anchor="middle" font-family="sans-serif" '
        f'font-size="13" transform="rotate(-90 18 {TOP + plot_h // 2})">Boardings</text>',
    ]
    if not shown:
        out.append(
            f'<text x="{LEFT + plot_w // 2}" y="{TOP + plot_h // 2}" text-anchor="middle" '
            'font-family="sans-serif" font-size="13">No cell with 10 or more cards</text>'
        )
    for tick in range(5):
        value = top * tick / 4
        y = TOP + plot_h - (plot_h * tick / 4)
        out.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-family="sans-serif" '
            f'font-size="11">{value:.0f}</text>'
        )
    group_w = plot_w / max(len(hours), 1)
    bar_w = group_w * 0.8 / max(len(operators), 1)
    values = {(op, hour): n for op, hour, n in shown}
    for h_index, hour in enumerate(hours):
        x0 = LEFT + h_index * group_w + group_w * 0.1
        out.append(
            f'<text x="{x0 + group_w * 0.4:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle" '
            f'font-family="sans-serif" font-size="11">{escape(hour)}:00</text>'
        )
        for o_index, op in enumerate(operators):
            n = values.get((op, hour))
            if n is None:
                continue
            h = plot_h * n / top if top else 0
            out.append(
                f'<rect x="{x0 + o_index * bar_w:.1f}" y="{TOP + plot_h - h:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}" fill="{COLOURS[o_index % len(COLOURS)]}">'
                f"<title>{escape(op)} {escape(hour)}:00: {n} boardings</title></rect>"
            )
    for o_index, op in enumerate(operators):
        y = TOP + 10 + o_index * 20
        out.append(
            f'<rect x="{WIDTH - RIGHT + 20}" y="{y}" width="12" height="12" '
            f'fill="{COLOURS[o_index % len(COLOURS)]}"/>'
            f'<text x="{WIDTH - RIGHT + 38}" y="{y + 11}" font-family="sans-serif" '
            f'font-size="12">{escape(op)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"
