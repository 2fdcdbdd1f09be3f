"""Simple charts drawn with Pillow (no plotting library needed): bars, lines, labelled image grids.

Each function returns a ``PIL.Image``; the caller saves it. Charts have a title, labelled
axes with "nice" ticks, a legend for several series, and "n/a" for missing values.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from ..images import make_grid

WIDTH, HEIGHT = 560, 360
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 34, 70
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
GRID = (225, 225, 225)
INK = (30, 30, 30)


def font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


# Pillow's bundled font lacks these glyphs; charts spell them out.
PLAIN = {"↓": "(lower is better)", "↑": "(higher is better)", "λ": "lambda", "×": "x", "–": "-", "→": "->",
         "≥": ">=", "≤": "<=", "Δ": "delta ", "ρ": "rho", "²": "^2", "…": "..."}


def plain(text: str) -> str:
    """``text`` with the symbols the default font cannot draw spelled out."""
    for symbol, words in PLAIN.items():
        text = text.replace(symbol, words)
    return text


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, *, fill=INK, font=None,
          anchor: str = "la") -> None:
    """Text placed by a two-letter anchor (l/m/r, t/m/b), computed here so bitmap fonts work too."""
    text = plain(text)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left, bottom - top
    x = xy[0] - {"l": 0, "m": w / 2, "r": w}[anchor[0]] - left
    y = xy[1] - {"a": 0, "t": 0, "m": h / 2, "b": h}[anchor[1]] - top
    draw.text((x, y), text, fill=fill, font=font)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [lo, hi] (steps of 1, 2 or 5 × 10^k).

    >>> nice_ticks(0, 0.93)
    [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("tick range must be finite")
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks, t = [], first
    while t < hi + step * 0.999:
        ticks.append(t)
        t = first + len(ticks) * step
    return ticks


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """Tick values with as many decimals as their spacing needs (0.1775, 0.178, … stay distinct).

    >>> tick_labels([0.0, 0.0005, 0.001])
    ['0.0000', '0.0005', '0.0010']
    """
    if len(ticks) < 2:
        return [_fmt(t) for t in ticks]
    step = abs(ticks[1] - ticks[0]) or 1.0
    if step >= 1e4 or step < 1e-4:
        return [f"{t:.2g}" for t in ticks]
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return [f"{t:.{decimals}f}" for t in ticks]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.2g}"
    return f"{v:.3g}"


class _Axes:
    """A plotting frame: data ranges mapped onto the chart's inner box."""

    def __init__(self, draw: ImageDraw.ImageDraw, x_range: tuple[float, float], y_range: tuple[float, float],
                 size: tuple[int, int] = (WIDTH, HEIGHT)) -> None:
        self.draw = draw
        self.x0, self.x1 = LEFT, size[0] - RIGHT
        self.y0, self.y1 = size[1] - BOTTOM, TOP
        self.xr, self.yr = x_range, y_range

    def px(self, x: float) -> float:
        lo, hi = self.xr
        return self.x0 + (x - lo) / ((hi - lo) or 1.0) * (self.x1 - self.x0)

    def py(self, y: float) -> float:
        lo, hi = self.yr
        return self.y0 - (y - lo) / ((hi - lo) or 1.0) * (self.y0 - self.y1)

    def frame(self, yticks: Sequence[float], xticks: Sequence[float] | None = None) -> None:
        f = font(11)
        for t, label in zip(yticks, tick_labels(yticks)):
            y = self.py(t)
            self.draw.line([(self.x0, y), (self.x1, y)], fill=GRID)
            _text(self.draw, (self.x0 - 6, y), label, fill=INK, font=f, anchor="rm")
        for t, label in zip(xticks or (), tick_labels(xticks or ())):
            x = self.px(t)
            self.draw.line([(x, self.y0), (x, self.y1)], fill=GRID)
            _text(self.draw, (x, self.y0 + 6), label, fill=INK, font=f, anchor="mt")
        self.draw.rectangle([self.x0, self.y1, self.x1, self.y0], outline=INK)


def _canvas(title: str, ylabel: str, xlabel: str = "") -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (WIDTH, HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    _text(draw, (WIDTH // 2, 8), title, fill=INK, font=font(14), anchor="mt")
    if xlabel:
        _text(draw, ((LEFT + WIDTH - RIGHT) // 2, HEIGHT - 8), xlabel, fill=INK, font=font(12), anchor="mb")
    if ylabel:
        label = Image.new("RGB", (HEIGHT - TOP - BOTTOM, 16), (255, 255, 255))
        _text(ImageDraw.Draw(label), (label.width // 2, 8), ylabel, fill=INK, font=font(12), anchor="mm")
        img.paste(label.rotate(90, expand=True), (2, TOP))
    return img, draw


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def bar_chart(labels: Sequence[str], values: Sequence[float | None], *, title: str, ylabel: str = "") -> Image.Image:
    """One bar per label; a missing (None/NaN) value is marked "n/a"."""
    img, draw = _canvas(title, ylabel)
    known = _finite(values) or [0.0]
    ticks = nice_ticks(min(0.0, min(known)), max(0.0, max(known)))
    axes = _Axes(draw, (0, max(len(labels), 1)), (ticks[0], ticks[-1]))
    axes.frame(ticks)
    f = font(11)
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        left, right = axes.px(i + 0.15), axes.px(i + 0.85)
        centre = (left + right) / 2
        if value is None or not math.isfinite(float(value)):
            _text(draw, (centre, axes.py(0) - 4), "n/a", fill=INK, font=f, anchor="mb")
        else:
            top, base = axes.py(float(value)), axes.py(0.0)
            draw.rectangle([left, min(top, base), right, max(top, base)], fill=PALETTE[i % len(PALETTE)])
            _text(draw, (centre, min(top, base) - 2), _fmt(float(value)), fill=INK, font=f, anchor="mb")
        _text(draw, (centre, axes.y0 + 6), _shorten(label, right - left + 20), fill=INK, font=f, anchor="mt")
    return img


def _shorten(text: str, width: float) -> str:
    limit = max(4, int(width / 6))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def line_chart(series: dict[str, tuple[Sequence[float], Sequence[float | None]]], *, title: str, xlabel: str = "",
               ylabel: str = "", x_range: tuple[float, float] | None = None,
               y_range: tuple[float, float] | None = None, legend: str = "upper right") -> Image.Image:
    """One polyline with markers per named series ``name → (xs, ys)``; points with a missing y are skipped.

    ``legend``: "upper right", "lower right", "upper left" or "lower left" (shown for two or more series).
    """
    img, draw = _canvas(title, ylabel, xlabel)
    xs_all = _finite([x for xs, _ in series.values() for x in xs]) or [0.0, 1.0]
    ys_all = _finite([y for _, ys in series.values() for y in ys]) or [0.0, 1.0]
    xticks = nice_ticks(*(x_range or (min(xs_all), max(xs_all))))
    yticks = nice_ticks(*(y_range or (min(ys_all), max(ys_all))))
    axes = _Axes(draw, (xticks[0], xticks[-1]), (yticks[0], yticks[-1]))
    axes.frame(yticks, xticks)
    for i, (name, (xs, ys)) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        points = [(axes.px(float(x)), axes.py(float(y))) for x, y in zip(xs, ys, strict=True)
                  if y is not None and math.isfinite(float(y))]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        if len(points) <= 40:
            for x, y in points:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    if len(series) > 1:  # a single series is named by the title
        _legend(draw, axes, list(series), legend)
    return img


def _legend(draw: ImageDraw.ImageDraw, axes: _Axes, names: list[str], where: str) -> None:
    f = font(11)
    names = [_shorten(plain(n), 260) for n in names]
    width = 32 + max(draw.textbbox((0, 0), n, font=f)[2] for n in names)
    height = 6 + 15 * len(names)
    left = axes.x1 - width - 6 if "right" in where else axes.x0 + 6
    top = axes.y1 + 6 if "upper" in where else axes.y0 - height - 6
    draw.rectangle([left, top, left + width, top + height], fill=(255, 255, 255), outline=GRID)
    for i, name in enumerate(names):
        y = top + 4 + 15 * i
        draw.line([(left + 6, y + 6), (left + 24, y + 6)], fill=PALETTE[i % len(PALETTE)], width=3)
        _text(draw, (left + 28, y), name, fill=INK, font=f)


def side_by_side(images: Sequence[Image.Image], *, background: int = 255) -> Image.Image:
    """Panels in one row, top-aligned."""
    if not images:
        raise ValueError("no panels")
    sheet = Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)), (background,) * 3)
    x = 0
    for panel in images:
        sheet.paste(panel, (x, 0))
        x += panel.width
    return sheet


def labelled_grid(rows: Sequence[tuple[str, Sequence[torch.Tensor | Image.Image]]], *, cell: int = 96,
                  label_width: int = 150, header: Sequence[str] | None = None) -> Image.Image:
    """Rows of images (``idinvert.images.make_grid``), each with its label on the left."""
    strips = [make_grid(list(images), columns=len(images), cell=cell) for _, images in rows]
    head = 18 if header else 0
    width = label_width + max(s.width for s in strips)
    sheet = Image.new("RGB", (width, head + sum(s.height for s in strips)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    f = font(12)
    for c, text in enumerate(header or ()):
        x = label_width + 2 + c * (cell + 2) + cell // 2
        _text(draw, (x, 3), _shorten(text, cell), fill=INK, font=f, anchor="mt")
    y = head
    for (label, _), strip in zip(rows, strips, strict=True):
        sheet.paste(strip, (label_width, y))
        _text(draw, (6, y + strip.height // 2), _shorten(label, label_width - 8), fill=INK, font=f, anchor="lm")
        y += strip.height
    return sheet
