"""A chart's layout drawn as PNG with Pillow (its bundled font; no system library).

The same `Drawing` as the SVG (domain/chart.py), scaled up for a sharp picture.
"""

from __future__ import annotations

import io
from functools import cache

from PIL import Image, ImageDraw, ImageFont

from services.reports.domain.chart import Drawing, Line, Rect, Text

SCALE = 2
_ANCHORS = {"start": "ls", "middle": "ms", "end": "rs"}  # Pillow: horizontal + baseline


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _vertical_text(image: Image.Image, shape: Text) -> None:
    """Text reading bottom to top, its baseline on x, centred (or anchored) on y."""
    font = _font(shape.size * SCALE)
    left, top, right, bottom = font.getbbox(shape.text, anchor="ls")
    strip = Image.new("L", (int(right - left) + 2, int(bottom - top) + 2), 0)
    ImageDraw.Draw(strip).text((-left + 1, -top + 1), shape.text, fill=255, font=font, anchor="ls")
    turned = strip.rotate(90, expand=True)  # counter-clockwise: reads bottom to top
    x = int(shape.x * SCALE + top - 1)  # the ascent lies left of the baseline
    length = turned.height
    offset = {"start": 0, "middle": length // 2, "end": length}[shape.anchor]
    y = int(shape.y * SCALE) - length + offset
    image.paste((0, 0, 0), (x, y), turned)


def drawing_png(drawing: Drawing) -> bytes:
    """`drawing` as PNG bytes."""
    image = Image.new("RGB", (drawing.width * SCALE, drawing.height * SCALE), "white")
    draw = ImageDraw.Draw(image)
    for shape in drawing.shapes:
        if isinstance(shape, Rect):
            if shape.w > 0 and shape.h > 0:
                box = (shape.x, shape.y, shape.x + shape.w, shape.y + shape.h)
                draw.rectangle([v * SCALE for v in box], fill=shape.fill)
        elif isinstance(shape, Line):
            ends = (shape.x1, shape.y1, shape.x2, shape.y2)
            draw.line([v * SCALE for v in ends], fill=shape.stroke, width=SCALE)
        elif shape.vertical:
            _vertical_text(image, shape)
        else:
            draw.text(
                (shape.x * SCALE, shape.y * SCALE),
                shape.text,
                fill="black",
                font=_font(shape.size * SCALE),
                anchor=_ANCHORS[shape.anchor],
            )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
