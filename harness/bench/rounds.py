"""Interleaved rounds and what is reported of them.

Throughput on a shared machine moves by tens of percent from one minute to the next, so a floor
measured once and an implementation measured later do not give a stable ratio. Each drain of an
implementation runs between two floor drains (F I F I ... F: each floor serves the rounds on both
sides of it), its ratio is taken against the mean of those two, and an implementation is reported
by the median of its rounds' ratios with their spread. Every percentile is :func:`harness.stats.percentile`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from harness.stats import percentile

#: Figures of a round reported as the median over the rounds.
MEDIANS = ("throughput_msgs_per_s", "floor_msgs_per_s", "ratio_to_floor", "drain_seconds", "delivery_msgs_per_s",
           "startup_ms", "ack_tail_ms", "cpu_us_per_msg")


class FloorChain:
    """The floor drains of a run, in order: ``next()`` measures one more; an error ends the chain."""

    def __init__(self, measure: Callable[[], Awaitable[float]]) -> None:
        self._measure = measure
        self.figures: list[float] = []  # msg/s, in the order measured
        self.error: str | None = None
        self.last: float | None = None

    async def next(self) -> float | None:
        if self.error is None:
            try:
                self.last = await self._measure()
                self.figures.append(self.last)
                return self.last
            except Exception as exc:  # noqa: BLE001 - reported; implementations are still measured
                self.error = f"{type(exc).__name__}: {exc}"[:600]
        self.last = None
        return None


def bracket(figures: dict[str, Any], before: float | None, after: float | None) -> None:
    """A round's floor (the mean of the floors either side of it) and its ratio to it."""
    if before is None or after is None:
        return
    figures["floor_msgs_per_s"] = round((before + after) / 2, 1)
    figures["ratio_to_floor"] = round(figures["throughput_msgs_per_s"] / figures["floor_msgs_per_s"], 3)


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and range of one figure over the rounds."""
    return {"median": percentile(values, 50), "p25": percentile(values, 25), "p75": percentile(values, 75),
            "min": min(values), "max": max(values)}


def summarise(rounds: list[dict[str, Any]], messages: int) -> dict[str, Any]:
    """An implementation's row from its rounds: medians, the ratio's spread, memory of the round whose
    peak was highest, duplicates summed, every distinct note once."""
    out: dict[str, Any] = {"rounds": len(rounds), "capped": any(r["capped"] for r in rounds)}
    for key in MEDIANS:
        values = [r[key] for r in rounds if r.get(key) is not None]
        out[key] = percentile(values, 50) if values else None
    ratios = [r["ratio_to_floor"] for r in rounds if r.get("ratio_to_floor") is not None]
    out["ratio_spread"] = spread(ratios) if ratios else None
    out["floor_seconds"] = round(messages / out["floor_msgs_per_s"], 3) if out["floor_msgs_per_s"] else None
    worst = max(rounds, key=lambda r: r["rss_mb"]["peak"])
    out["rss_mb"] = worst["rss_mb"]
    out["peak_rss_mb"] = worst["rss_mb"]["peak"]
    dupes = [r["duplicates"] for r in rounds if "duplicates" in r]
    out["duplicates"] = sum(dupes) if dupes else None
    out["notes"] = list(dict.fromkeys(n for r in rounds for n in r["notes"]))
    return out
