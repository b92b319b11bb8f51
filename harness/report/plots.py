"""Jepsen-style performance plots of one scenario, as inline SVG.

Verdicts say whether a promise held; these plots show how the system behaved
while the faults were on: delivery latency (commit -> handler) as points and
deliver throughput per second as a line, with fault windows shaded and labelled
so a latency cliff or a stall can be read against its cause. Drawn with the
harness's one SVG toolkit (:mod:`harness.report.svg`), so the report needs no
plotting library and stays self-contained.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html import escape

from harness.history import Event
from harness.report import svg

#: Above this many points a plot is downsampled (min and max per x bucket survive).
MAX_POINTS = 5000
#: Latency is drawn on a log axis; smaller values (including deliveries seen just
#: before the publisher logged its commit) sit on this floor.
LATENCY_FLOOR_S = 1e-4

_W, _H = 640, 290
_MARGINS = (62, 14, 34, 44)  # left, right, top, bottom
_FIRST, _REDELIVERY, _LINE = svg.colour(0), svg.colour(1), svg.colour(0)


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


def publish_outcomes(events: Iterable[Event]) -> Iterator[tuple[Event, list[str]]]:
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


def _commits(events: Iterable[Event]) -> dict[str, float]:
    """mid -> t of the publish ok that committed it."""
    committed: dict[str, float] = {}
    for e, mids in publish_outcomes(events):
        if e.type == "ok":
            for mid in mids:
                committed.setdefault(mid, e.t)
    return committed


def _windows(events: Iterable[Event], t0: float, end: float) -> list[Window]:
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


def series(events: Iterable[Event]) -> Series:
    """The plots' data; ``events`` in time order, read in a few passes (a list, or a :class:`~harness.history.Saved`
    history re-read from its file, so a long run's is never held in memory)."""
    t0 = next((e.t for e in events), None)
    if t0 is None:
        return Series(0.0, [], [], [])
    committed = _commits(events)
    seen: set[str] = set()
    latencies: list[tuple[float, float, bool]] = []
    delivered: list[float] = []
    end = t0
    for e in events:
        end = e.t
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
    duration = end - t0
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


class _Frame(svg.Frame):
    """Time since the scenario started on x, to the last event (not to a round tick, so an unhealed
    fault visibly runs to the end); fault windows shaded behind the marks."""

    def __init__(self, duration: float, y_ticks: list[float], log: bool) -> None:
        x_max = duration if duration > 0 else 1.0
        super().__init__(_W, _H, _MARGINS, x_ticks=svg.ticks(x_max), x_max=x_max, y_ticks=y_ticks, log_y=log)

    def faults(self, windows: list[Window]) -> list[str]:
        """Shaded bands, each labelled with its kind; labels take the first free lane so they do not overlap."""
        out: list[str] = []
        lanes: list[float] = []  # right edge of the last label in each lane
        colours: dict[str, str] = {}
        for w in windows:
            colour = colours.setdefault(w.kind, svg.SHADES[len(colours) % len(svg.SHADES)])
            a, b = self.x(w.start), max(self.x(w.end), self.x(w.start) + 2)
            label = w.kind if w.healed else f"{w.kind} (not healed)"
            lane = next((i for i, edge in enumerate(lanes) if edge < a), len(lanes))
            lanes[lane:lane + 1] = [a + svg.CHAR_PX * len(label) + 8]
            out.append(f'<rect class="fault" data-kind="{escape(w.kind)}" x="{a:.1f}" y="{self.y1}" '
                       f'width="{b - a:.1f}" height="{self.y0 - self.y1}" fill="{colour}" fill-opacity="0.55">'
                       f'<title>{escape(label)}: {w.start:.1f}s to {w.end:.1f}s</title></rect>')
            out.append(f'<text class="fault-label" x="{a + 3:.1f}" y="{self.y1 + 13 + 13 * lane}" '
                       f'fill="#444">{escape(label)}</text>')
        return out


def latency_svg(s: Series) -> str:
    shown = downsample(s.latencies)
    lats = [lat for _, lat, _ in s.latencies]
    lo = max(LATENCY_FLOOR_S, min(lats, default=1e-3))
    hi = max(max(lats, default=1.0), lo * 10)
    frame = _Frame(s.duration, svg.decades(lo, hi), log=True)
    body = frame.faults(s.windows) + frame.axes(x_label="seconds since scenario start",
                                                y_label="latency (commit to handler)", x_fmt=_fmt_g,
                                                y_fmt=svg.fmt_seconds, box=True)
    for x, lat, again in shown:
        body.append(svg.dot(frame.x(x), frame.y(lat), _REDELIVERY if again else _FIRST, opacity=0.7))
    if not shown:
        body.append(frame.empty("no delivery of a committed message"))
    title = f"Delivery latency ({len(s.latencies)} deliveries"
    title += f", {len(shown)} drawn)" if len(shown) < len(s.latencies) else ")"
    floored = sum(lat <= LATENCY_FLOOR_S for lat in lats)
    if floored:
        title += f", {floored} at ≤{svg.fmt_seconds(LATENCY_FLOOR_S)}"
    return svg.chart(frame, title, body, [("dot", _FIRST, "first delivery"), ("dot", _REDELIVERY, "redelivery")])


def throughput_svg(s: Series) -> str:
    """deliver ok per 1 s bucket; buckets widen (rate stays per second) when there would be too many."""
    width = max(1, math.ceil(s.duration / MAX_POINTS))
    n = max(1, math.ceil(s.duration / width))
    counts = [0] * n
    for x in s.delivered:
        counts[min(int(x // width), n - 1)] += 1
    rates = [c / width for c in counts]
    frame = _Frame(s.duration, svg.ticks(max(rates, default=0.0) or 1.0, 5), log=False)
    body = frame.faults(s.windows) + frame.axes(x_label="seconds since scenario start", y_label="deliveries / s",
                                                x_fmt=_fmt_g, y_fmt=_fmt_g, box=True)
    body.append(svg.polyline([(frame.x((i + 0.5) * width), frame.y(r)) for i, r in enumerate(rates)], _LINE))
    bucket = "1 s" if width == 1 else f"{width} s"
    return svg.chart(frame, f"Throughput ({len(s.delivered)} deliver ok, {bucket} buckets)", body,
                     [("line", _LINE, "deliver ok / s")])


def _fmt_g(v: float) -> str:
    return f"{v:g}"
