"""Jepsen-style performance plots of one scenario, as inline SVG.

Verdicts say whether a promise held; these plots show how the system behaved
while the faults were on: delivery latency (commit -> handler) as points and
deliver throughput per second as a line, with fault windows shaded and labelled
so a latency cliff or a stall can be read against its cause. SVG is written
by hand so the report needs no plotting library and stays self-contained.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html import escape

from harness.history import Event

#: Above this many points a plot is downsampled (min and max per x bucket survive).
MAX_POINTS = 5000
#: Latency is drawn on a log axis; smaller values (including deliveries seen just
#: before the publisher logged its commit) sit on this floor.
LATENCY_FLOOR_S = 1e-4

_W, _H = 640, 290
_LEFT, _RIGHT, _TOP, _BOTTOM = 62, 14, 34, 44
_SHADES = ("#c9b3d9", "#f7cf9f", "#b7dca9", "#c9c9c9", "#f4b3c9", "#a9cfe6")
_FIRST, _REDELIVERY, _LINE = "#2b5fa8", "#e0620d", "#2b5fa8"
_FONT = 'font-family="system-ui,sans-serif" font-size="11"'


@dataclass(frozen=True)
class Window:
    """A fault from its start (invoke, or ok without invoke) to its heal (info), in seconds since start."""

    kind: str
    start: float
    end: float
    healed: bool


@dataclass(frozen=True)
class Series:
    """What the plots need from one history, with x in seconds since the first event."""

    duration: float
    windows: list[Window]
    latencies: list[tuple[float, float, bool]]  # (x, seconds since commit, is a redelivery)
    delivered: list[float]  # x of every deliver ok


def publish_outcomes(events: list[Event]) -> Iterator[tuple[Event, list[str]]]:
    """Each publish completion with its mids; a completion without mids takes its invoke's (one op per process)."""
    pending: dict[str, list[str]] = {}
    for e in events:
        if e.f != "publish":
            continue
        if e.type == "invoke":
            pending[e.process] = list(e.value.get("mids") or [])
        else:
            yield e, list(e.value.get("mids") or pending.get(e.process, []))
            pending.pop(e.process, None)


def _commits(events: list[Event]) -> dict[str, float]:
    """mid -> t of the publish ok that committed it."""
    committed: dict[str, float] = {}
    for e, mids in publish_outcomes(events):
        if e.type == "ok":
            for mid in mids:
                committed.setdefault(mid, e.t)
    return committed


def _windows(events: list[Event], t0: float, end: float) -> list[Window]:
    open_: list[tuple[str, float]] = []
    done: list[Window] = []
    for e in (e for e in events if e.f == "fault"):
        kind = str(e.value.get("kind", "fault"))
        same = [w for w in open_ if w[0] == kind]
        if e.type == "invoke" or (e.type == "ok" and not same):
            open_.append((kind, e.t - t0))
        elif e.type == "fail" and same:
            open_.remove(same[-1])  # never took effect
        elif e.type == "info" and (same or open_):
            w = same[0] if same else open_[0]
            open_.remove(w)
            done.append(Window(w[0], w[1], e.t - t0, True))
    done += [Window(kind, start, end, False) for kind, start in open_]
    return sorted(done, key=lambda w: w.start)


def series(events: list[Event]) -> Series:
    if not events:
        return Series(0.0, [], [], [])
    t0 = events[0].t
    duration = events[-1].t - t0
    committed = _commits(events)
    seen: set[str] = set()
    latencies: list[tuple[float, float, bool]] = []
    delivered: list[float] = []
    for e in events:
        if e.f != "deliver":
            continue
        if e.type == "ok":
            delivered.append(e.t - t0)
        mid = e.mid
        if e.type != "invoke" or mid is None:
            continue
        again = mid in seen or int(e.value.get("delivery") or 1) > 1
        seen.add(mid)
        if mid in committed:
            latencies.append((e.t - t0, e.t - committed[mid], again))
    return Series(duration, _windows(events, t0, duration), latencies, delivered)


def downsample(points: list[tuple[float, float, bool]], cap: int = MAX_POINTS) -> list[tuple[float, float, bool]]:
    """Keeps the lowest and highest point of each x bucket, so outliers and the envelope survive."""
    if len(points) <= cap:
        return points
    ordered = sorted(points)
    size = math.ceil(len(ordered) / (cap // 2))
    kept: list[tuple[float, float, bool]] = []
    for i in range(0, len(ordered), size):
        chunk = ordered[i : i + size]
        lo, hi = min(chunk, key=lambda p: p[1]), max(chunk, key=lambda p: p[1])
        kept += [lo] if lo is hi else sorted([lo, hi])
    return kept


def _ticks(hi: float, n: int = 6) -> list[float]:
    """Round tick values from 0 up to the first one at or above hi."""
    hi = hi if hi > 0 else 1.0
    raw = hi / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [round(i * step, 10) for i in range(math.ceil(hi / step - 1e-9) + 1)]


def _fmt_s(v: float) -> str:
    if v < 1e-3:
        return f"{v * 1e6:g}µs"
    if v < 1:
        return f"{v * 1e3:g}ms"
    return f"{v:g}s"


class _Frame:
    """Pixel mapping and chrome (axes, ticks, fault shading) shared by both plots."""

    def __init__(self, duration: float, y_ticks: list[float], log: bool) -> None:
        # The x axis ends at the last event, not at a round tick, so an unhealed fault visibly runs to the end.
        self.x_max = duration if duration > 0 else 1.0
        self.x_ticks = [t for t in _ticks(self.x_max) if t <= self.x_max * (1 + 1e-9)]
        self.y_ticks = y_ticks
        self.log = log
        self.x0, self.x1 = _LEFT, _W - _RIGHT
        self.y0, self.y1 = _H - _BOTTOM, _TOP

    def x(self, v: float) -> float:
        return self.x0 + (self.x1 - self.x0) * min(max(v, 0.0), self.x_max) / self.x_max

    def y(self, v: float) -> float:
        lo, hi = self.y_ticks[0], self.y_ticks[-1]
        if self.log:
            frac = (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        else:
            frac = (v - lo) / (hi - lo)
        return self.y0 - (self.y0 - self.y1) * frac

    def axes(self, x_label: str, y_label: str, y_fmt: Callable[[float], str]) -> list[str]:
        out = [f'<rect x="{self.x0}" y="{self.y1}" width="{self.x1 - self.x0}" height="{self.y0 - self.y1}" '
               'fill="none" stroke="#888"/>']
        for t in self.x_ticks:
            px = self.x(t)
            out.append(f'<line x1="{px:.1f}" y1="{self.y0}" x2="{px:.1f}" y2="{self.y0 + 4}" stroke="#888"/>')
            out.append(f'<text x="{px:.1f}" y="{self.y0 + 16}" text-anchor="middle">{t:g}</text>')
        for t in self.y_ticks:
            py = self.y(t)
            out.append(f'<line x1="{self.x0}" y1="{py:.1f}" x2="{self.x1}" y2="{py:.1f}" stroke="#eee"/>')
            out.append(f'<text x="{self.x0 - 6}" y="{py + 4:.1f}" text-anchor="end">{escape(y_fmt(t))}</text>')
        cx, cy = (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2
        out.append(f'<text x="{cx:.0f}" y="{_H - 8}" text-anchor="middle">{escape(x_label)}</text>')
        out.append(f'<text transform="translate(14 {cy:.0f}) rotate(-90)" text-anchor="middle">{escape(y_label)}</text>')
        return out

    def faults(self, windows: list[Window]) -> list[str]:
        """Shaded bands, each labelled with its kind; labels take the first free lane so they do not overlap."""
        out: list[str] = []
        lanes: list[float] = []  # right edge of the last label in each lane
        colours: dict[str, str] = {}
        for w in windows:
            colour = colours.setdefault(w.kind, _SHADES[len(colours) % len(_SHADES)])
            a, b = self.x(w.start), max(self.x(w.end), self.x(w.start) + 2)
            label = w.kind if w.healed else f"{w.kind} (not healed)"
            lane = next((i for i, edge in enumerate(lanes) if edge < a), len(lanes))
            lanes[lane:lane + 1] = [a + 6.5 * len(label) + 8]
            out.append(f'<rect class="fault" data-kind="{escape(w.kind)}" x="{a:.1f}" y="{self.y1}" '
                       f'width="{b - a:.1f}" height="{self.y0 - self.y1}" fill="{colour}" fill-opacity="0.55">'
                       f'<title>{escape(label)}: {w.start:.1f}s to {w.end:.1f}s</title></rect>')
            out.append(f'<text class="fault-label" x="{a + 3:.1f}" y="{self.y1 + 13 + 13 * lane}" '
                       f'fill="#444">{escape(label)}</text>')
        return out


def _svg(title: str, legend: list[tuple[str, str, str]], body: list[str]) -> str:
    """Wraps a plot: title top-left, legend (shape, colour, text) top-right."""
    parts = [f'<svg viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" '
             f'role="img" {_FONT}><title>{escape(title)}</title>',
             f'<text x="{_LEFT}" y="16" font-size="13" font-weight="600">{escape(title)}</text>']
    x = _W - _RIGHT
    for shape, colour, text in reversed(legend):
        x -= 6.5 * len(text) + 4
        parts.append(f'<text x="{x:.0f}" y="16">{escape(text)}</text>')
        x -= 12
        parts.append(f'<circle cx="{x + 4:.0f}" cy="12" r="3.5" fill="{colour}"/>' if shape == "dot" else
                     f'<line x1="{x - 4:.0f}" y1="12" x2="{x + 8:.0f}" y2="12" stroke="{colour}" stroke-width="2"/>')
        x -= 14
    return "\n".join(parts + body + ["</svg>"])


def latency_svg(s: Series) -> str:
    shown = downsample(s.latencies)
    lats = [lat for _, lat, _ in s.latencies]
    lo = max(LATENCY_FLOOR_S, min(lats, default=1e-3))
    hi = max(max(lats, default=1.0), lo * 10)
    y_ticks = [10.0**k for k in range(math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9) + 1)]
    frame = _Frame(s.duration, y_ticks, log=True)
    body = frame.faults(s.windows) + frame.axes("seconds since scenario start", "latency (commit to handler)", _fmt_s)
    for x, lat, again in shown:
        body.append(f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(lat):.1f}" r="2" '
                    f'fill="{_REDELIVERY if again else _FIRST}" fill-opacity="0.7"/>')
    if not shown:
        body.append(f'<text x="{(frame.x0 + frame.x1) / 2:.0f}" y="{(frame.y0 + frame.y1) / 2:.0f}" '
                    'text-anchor="middle" fill="#888">no delivery of a committed message</text>')
    title = f"Delivery latency ({len(s.latencies)} deliveries"
    title += f", {len(shown)} drawn)" if len(shown) < len(s.latencies) else ")"
    floored = sum(lat <= LATENCY_FLOOR_S for lat in lats)
    legend = [("dot", _FIRST, "first delivery"), ("dot", _REDELIVERY, "redelivery")]
    if floored:
        title += f", {floored} at ≤{_fmt_s(LATENCY_FLOOR_S)}"
    return _svg(title, legend, body)


def throughput_svg(s: Series) -> str:
    """deliver ok per 1 s bucket; buckets widen (rate stays per second) when there would be too many."""
    width = max(1, math.ceil(s.duration / MAX_POINTS))
    n = max(1, math.ceil(s.duration / width))
    counts = [0] * n
    for x in s.delivered:
        counts[min(int(x // width), n - 1)] += 1
    rates = [c / width for c in counts]
    frame = _Frame(s.duration, _ticks(max(rates, default=0.0) or 1.0, 5), log=False)
    body = frame.faults(s.windows) + frame.axes("seconds since scenario start", "deliveries / s", lambda v: f"{v:g}")
    pts = " ".join(f"{frame.x((i + 0.5) * width):.1f},{frame.y(r):.1f}" for i, r in enumerate(rates))
    body.append(f'<polyline points="{pts}" fill="none" stroke="{_LINE}" stroke-width="1.5"/>')
    bucket = "1 s" if width == 1 else f"{width} s"
    return _svg(f"Throughput ({len(s.delivered)} deliver ok, {bucket} buckets)",
                [("line", _LINE, "deliver ok / s")], body)
