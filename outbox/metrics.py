"""Metrics (O1): counters reported through a recorder callback, also kept locally."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

MetricsRecorder = Callable[[str, float, dict[str, str]], None]
"""``recorder(name, increment, labels)``; labels carry at least ``queue``."""

NAMES = ("fetched", "acked", "nacked_retry", "nacked_terminal", "dlq_written", "lease_lost", "drain_timeout")


class Metrics:
    def __init__(self, queue: str, recorder: MetricsRecorder | None) -> None:
        self.counts: Counter[str] = Counter({n: 0 for n in NAMES})
        self._labels = {"queue": queue}
        self._recorder = recorder

    def add(self, name: str, n: int = 1) -> None:
        if n:
            self.counts[name] += n
            if self._recorder is not None:
                self._recorder(name, float(n), self._labels)
