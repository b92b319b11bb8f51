"""One timeline for processes on several hosts: the database's clock.

Every process that timestamps sizing data (locust workers at COMMIT, the locust master at step
switches, the consumers' host at handler start) does so with ``time.monotonic()``. Processes of one
host share that clock (Linux: one ``CLOCK_MONOTONIC`` per boot), processes of different hosts do not.
So each process also takes *anchors*: monotonic time before, ``clock_timestamp()`` read from
PostgreSQL, monotonic time after. The anchor with the shortest round trip of a boot maps that boot's
monotonic clock onto the database's clock, to within half that round trip. Processes of one boot
share one mapping, so latencies between them are exact differences of monotonic times, as on a
single host; only times from different boots pick up the (reported) mapping error.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

#: The statement an anchor runs: the database's wall clock now, in seconds since the epoch.
SQL = "SELECT extract(epoch FROM clock_timestamp())::float8"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_fallback: str | None = None


def boot_id() -> str:
    """Identifies this host's monotonic clock (a fresh random id where the kernel does not say)."""
    global _fallback
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        if _fallback is None:
            _fallback = f"process-{uuid.uuid4().hex}"
        return _fallback


@dataclass(frozen=True)
class Anchor:
    boot: str
    before: float  # monotonic, before the query was sent
    db: float  # clock_timestamp(), epoch seconds
    after: float  # monotonic, after the answer arrived

    @property
    def rtt(self) -> float:
        return self.after - self.before

    @property
    def offset(self) -> float:
        """database time − monotonic time, assuming the server read its clock half-way through."""
        return self.db - (self.before + self.after) / 2

    def to_record(self) -> dict[str, float | str]:
        return {"k": "clock", "boot": self.boot, "before": self.before, "db": self.db, "after": self.after}

    @classmethod
    def from_record(cls, rec: dict[str, object]) -> Anchor:
        return cls(str(rec["boot"]), float(rec["before"]), float(rec["db"]), float(rec["after"]))  # type: ignore[arg-type]


def take(query: Callable[[], float], boot: str | None = None) -> Anchor:
    """One anchor: ``query()`` must return the database's ``clock_timestamp()`` (see :data:`SQL`)."""
    before = time.monotonic()
    db = query()
    return Anchor(boot or boot_id(), before, float(db), time.monotonic())


class Clocks:
    """Maps each boot's monotonic times onto the database clock, through its best anchor so far."""

    def __init__(self, anchors: Iterable[Anchor] = ()) -> None:
        self.best: dict[str, Anchor] = {}
        self.spread: dict[str, tuple[float, float]] = {}  # boot -> (min, max) offset over good anchors
        for anchor in anchors:
            self.add(anchor)

    def add(self, anchor: Anchor) -> None:
        best = self.best.get(anchor.boot)
        if best is None or anchor.rtt < best.rtt:
            self.best[anchor.boot] = anchor
        if anchor.rtt <= 2 * self.best[anchor.boot].rtt + 0.001:
            lo, hi = self.spread.get(anchor.boot, (anchor.offset, anchor.offset))
            self.spread[anchor.boot] = (min(lo, anchor.offset), max(hi, anchor.offset))

    def known(self, boot: str) -> bool:
        return boot in self.best

    def to_db(self, boot: str, t: float) -> float:
        """``t`` (monotonic on ``boot``) as database time; KeyError when the boot has no anchor."""
        return t + self.best[boot].offset

    def uncertainty(self, boot: str) -> float:
        """Half the best round trip: how far the mapping of ``boot`` can be off, in seconds."""
        return self.best[boot].rtt / 2

    def drift(self, boot: str) -> float:
        """Spread of the offsets of the good anchors (round trip ≤ 2 × best + 1 ms): clock drift plus noise."""
        lo, hi = self.spread.get(boot, (0.0, 0.0))
        return hi - lo

    def summary(self) -> dict[str, dict[str, float]]:
        return {boot: {"offset_s": a.offset, "uncertainty_ms": a.rtt / 2 * 1000, "drift_ms": self.drift(boot) * 1000}
                for boot, a in self.best.items()}
