"""The one SVG toolkit of the harness's reports: plots written by hand, inline, no plotting library.

Chaos reports (:mod:`harness.report.plots`) and sizing reports (:mod:`harness.sizing.report`) draw
with the same pieces, so every chart looks and reads alike: a :class:`Frame` maps values to pixels
(linear x; linear or logarithmic y) and draws the axes, :func:`chart` wraps a plot with its title
and legend, :func:`grouped_bars` is a whole bar chart, and the marks (:func:`dot`, :func:`polyline`,
:func:`hline`) are a line each. Everything is escaped here; callers pass plain text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

FONT = 'font-family="system-ui,sans-serif" font-size="11"'
#: Series colours, in order.
PALETTE = ("#2b5fa8", "#e0620d", "#2f9e44", "#9c36b5", "#d6332a", "#0c8599", "#5c940d", "#c2255c", "#495057")
#: Background bands (fault windows), in order.
SHADES = ("#c9b3d9", "#f7cf9f", "#b7dca9", "#c9c9c9", "#f4b3c9", "#a9cfe6")
GRID = "#e6e8ea"
AXIS = "#888"
ALERT = "#d6332a"  # bounds and targets
CHAR_PX = 6.5  # about one character of the 11 px font

LegendItem = tuple[str, str, str]  # (shape: "dot" | "line" | "box", colour, text)


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def ticks(hi: float, n: int = 6) -> list[float]:
    """Round tick values from 0 up to the first one at or above ``hi``."""
    hi = hi if hi > 0 else 1.0
    raw = hi / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [round(i * step, 10) for i in range(math.ceil(hi / step - 1e-9) + 1)]


def decades(lo: float, hi: float) -> list[float]:
    """Powers of ten from the one at or below ``lo`` to the one at or above ``hi`` (at least two)."""
    a = math.floor(math.log10(lo) + 1e-9)
    b = max(math.ceil(math.log10(hi) - 1e-9), a + 1)
    return [10.0**k for k in range(a, b + 1)]


def fmt_num(v: float) -> str:
    """A tick or bar value: ``1500`` → ``1.5k`` (whole hundreds from a thousand on)."""
    return f"{v / 1000:g}k" if v >= 1000 and v % 100 == 0 else f"{v:g}"


def fmt_seconds(v: float) -> str:
    if v < 1e-3:
        return f"{v * 1e6:g}µs"
    if v < 1:
        return f"{v * 1e3:g}ms"
    return f"{v:g}s"


class Frame:
    """The plot area of a ``width`` × ``height`` chart inside its margins, and the mapping into it.

    x is linear from ``x_ticks[0]`` to ``x_max`` (default: the last tick); y runs from the first to
    the last of ``y_ticks``, on a log scale with ``log_y``. Values outside are clamped to the edge,
    so an infinite latency sits on the top line.
    """

    def __init__(self, width: int, height: int, margins: tuple[int, int, int, int], *, y_ticks: Sequence[float],
                 x_ticks: Sequence[float] = (0.0, 1.0), x_max: float | None = None, log_y: bool = False) -> None:
        left, right, top, bottom = margins
        self.width, self.height = width, height
        self.x0, self.x1, self.y0, self.y1 = left, width - right, height - bottom, top
        self.x_lo = x_ticks[0]
        self.x_max = x_max if x_max is not None else x_ticks[-1]
        if self.x_max <= self.x_lo:
            self.x_max = self.x_lo + 1.0
        self.x_ticks = [t for t in x_ticks if t <= self.x_max * (1 + 1e-9)]
        self.y_ticks = list(y_ticks)
        self.log_y = log_y

    def x(self, v: float) -> float:
        frac = (min(max(v, self.x_lo), self.x_max) - self.x_lo) / (self.x_max - self.x_lo)
        return self.x0 + (self.x1 - self.x0) * frac

    def y(self, v: float) -> float:
        lo, hi = self.y_ticks[0], self.y_ticks[-1]
        v = min(max(v, lo), hi) if not math.isnan(v) else lo
        if self.log_y:
            frac = (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        else:
            frac = (v - lo) / (hi - lo)
        return self.y0 - (self.y0 - self.y1) * frac

    def axes(self, *, x_label: str = "", y_label: str = "", x_fmt: Callable[[float], str] | None = None,
             y_fmt: Callable[[float], str] = fmt_num, box: bool = False) -> list[str]:
        """Grid lines and labels of the y ticks, x tick marks and labels (without ``x_fmt``: none), the
        axis titles, and a frame (``box``) or a base line."""
        out = [f'<rect x="{self.x0}" y="{self.y1}" width="{self.x1 - self.x0}" height="{self.y0 - self.y1}" '
               f'fill="none" stroke="{AXIS}"/>' if box else
               f'<line x1="{self.x0}" x2="{self.x1}" y1="{self.y0}" y2="{self.y0}" stroke="{AXIS}"/>']
        for t in self.y_ticks:
            py = self.y(t)
            out.append(f'<line x1="{self.x0}" y1="{py:.1f}" x2="{self.x1}" y2="{py:.1f}" stroke="{GRID}"/>'
                       f'<text x="{self.x0 - 6}" y="{py + 4:.1f}" text-anchor="end">{escape(y_fmt(t))}</text>')
        if x_fmt is not None:
            for t in self.x_ticks:
                px = self.x(t)
                out.append(f'<line x1="{px:.1f}" y1="{self.y0}" x2="{px:.1f}" y2="{self.y0 + 4}" stroke="{AXIS}"/>'
                           f'<text x="{px:.1f}" y="{self.y0 + 16}" text-anchor="middle">{escape(x_fmt(t))}</text>')
        if x_label:
            out.append(f'<text x="{(self.x0 + self.x1) / 2:.0f}" y="{self.height - 8}" text-anchor="middle">'
                       f'{escape(x_label)}</text>')
        if y_label:
            cy = (self.y0 + self.y1) / 2
            out.append(f'<text transform="translate(14 {cy:.0f}) rotate(-90)" text-anchor="middle">'
                       f'{escape(y_label)}</text>')
        return out

    def hline(self, value: float, label: str, stroke: str = ALERT, *, label_at: str = "end") -> str:
        """A dashed horizontal line (a bound, a target) labelled just above it, at the ``label_at`` end."""
        py = self.y(value)
        lx, anchor = (self.x1 - 2, "end") if label_at == "end" else (self.x0 + 4, "start")
        return (f'<line x1="{self.x0}" x2="{self.x1}" y1="{py:.1f}" y2="{py:.1f}" stroke="{stroke}" '
                f'stroke-dasharray="5 3"/><text x="{lx}" y="{py - 4:.1f}" text-anchor="{anchor}" '
                f'fill="{stroke}">{escape(label)}</text>')

    def empty(self, message: str) -> str:
        return (f'<text x="{(self.x0 + self.x1) / 2:.0f}" y="{(self.y0 + self.y1) / 2:.0f}" text-anchor="middle" '
                f'fill="{AXIS}">{escape(message)}</text>')


def dot(x: float, y: float, fill: str, *, r: float = 2.0, opacity: float | None = None, hollow: bool = False,
        tooltip: str | None = None) -> str:
    """A point; ``hollow`` ones are white with a coloured ring; ``tooltip`` shows on hover."""
    style = (f'fill="#fff" stroke="{fill}" stroke-width="1.4"' if hollow else f'fill="{fill}"'
             + (f' fill-opacity="{opacity:g}"' if opacity is not None else ""))
    head = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:g}" {style}'
    return f"{head}><title>{escape(tooltip)}</title></circle>" if tooltip else f"{head}/>"


def polyline(points: Sequence[tuple[float, float]], stroke: str, width: float = 1.5) -> str:
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return f'<polyline points="{coords}" fill="none" stroke="{stroke}" stroke-width="{width:g}"/>'


def _swatch(shape: str, fill: str, x: float, y: float) -> str:
    """A legend mark 12 px wide whose left edge is ``x``, centred on the text line at ``y``."""
    if shape == "dot":
        return f'<circle cx="{x + 6:.0f}" cy="{y - 4:.0f}" r="3.5" fill="{fill}"/>'
    if shape == "line":
        return (f'<line x1="{x:.0f}" y1="{y - 4:.0f}" x2="{x + 12:.0f}" y2="{y - 4:.0f}" stroke="{fill}" '
                'stroke-width="2"/>')
    return f'<rect x="{x:.0f}" y="{y - 9:.0f}" width="10" height="10" fill="{fill}"/>'


def legend_row(items: Sequence[LegendItem], right: float, y: float) -> list[str]:
    """Items side by side, the last one ending at ``right``."""
    out: list[str] = []
    x = right
    for shape, fill, text in reversed(items):
        x -= CHAR_PX * len(text)
        out.append(f'<text x="{x:.0f}" y="{y:.0f}">{escape(text)}</text>')
        x -= 16
        out.append(_swatch(shape, fill, x, y))
        x -= 12
    return out


def legend_column(items: Sequence[LegendItem], x: float, y: float, step: float = 16) -> list[str]:
    """Items one under the other, from ``y`` down."""
    out: list[str] = []
    for i, (shape, fill, text) in enumerate(items):
        ly = y + i * step
        out.append(_swatch(shape, fill, x, ly) + f'<text x="{x + 16:.0f}" y="{ly:.0f}">{escape(text)}</text>')
    return out


def chart(frame: Frame, title: str, body: Sequence[str], legend: Sequence[LegendItem] = (), *,
          legend_y: float = 16) -> str:
    """The ``<svg>`` element: title top left (also its accessible name), legend on the right (beside
    the title, or on a line of its own below it with a larger ``legend_y``), ``body``."""
    parts = [f'<svg viewBox="0 0 {frame.width} {frame.height}" width="{frame.width}" height="{frame.height}" '
             f'role="img" {FONT}><title>{escape(title)}</title>',
             f'<text x="{frame.x0}" y="16" font-size="13" font-weight="600">{escape(title)}</text>',
             *legend_row(legend, frame.x1, legend_y), *body, "</svg>"]
    return "\n".join(parts)


Bars = tuple[str, Sequence[float | None], Sequence[bool]]  # (name, values, lower_bounds)


def grouped_bars(title: str, labels: Sequence[str], series: Sequence[Bars], *, y_label: str,
                 line: tuple[float, str] | None = None) -> str:
    """Bars per label, one per series: ``(name, values, lower_bounds)``; a lower bound is drawn lighter
    and marked ``≥``, an infinite value reaches the top marked ``∞``, a missing or NaN one is left out.
    ``line``: a dashed (value, label) across, such as a target."""
    values = [v for _, vs, _ in series for v in vs if v is not None and math.isfinite(v)]
    frame = Frame(680, 310, (62, 14, 46, 78), y_ticks=ticks(max(values + ([line[0]] if line else []) + [1.0]) * 1.1, 5))
    body = frame.axes(y_label=y_label)
    group = (frame.x1 - frame.x0) / max(1, len(labels))
    width = group * 0.8 / max(1, len(series))
    for i, label in enumerate(labels):
        gx = frame.x0 + i * group + group * 0.1
        for j, (name, vs, lower) in enumerate(series):
            v = vs[i]
            if v is None or math.isnan(v):
                continue
            x, top = gx + j * width, frame.y(v)
            text = ("≥" if lower[i] else "") + (fmt_num(round(v)) if math.isfinite(v) else "∞")
            body.append(f'<rect x="{x:.1f}" y="{top:.1f}" width="{width - 2:.1f}" height="{frame.y0 - top:.1f}" '
                        f'fill="{colour(j)}" fill-opacity="{"0.45" if lower[i] else "1"}"><title>{escape(name)} '
                        f'{escape(label)}: {text}</title></rect><text x="{x + width / 2 - 1:.1f}" y="{top - 3:.1f}" '
                        f'text-anchor="middle" font-size="10">{text}</text>')
        lx = gx + group * 0.4
        body.append(f'<text x="{lx:.1f}" y="{frame.y0 + 14}" text-anchor="end" '
                    f'transform="rotate(-30 {lx:.1f} {frame.y0 + 14})">{escape(label)}</text>')
    if line is not None:
        body.append(frame.hline(line[0], line[1]))
    return chart(frame, title, body, [("box", colour(j), name) for j, (name, _, _) in enumerate(series)], legend_y=34)
