"""A tiny builder for hand-made histories, so checker tests read like the story they tell.

Times are seconds on the shared monotonic clock; lease times default to the same instant on a database clock
that sits at ``DB_EPOCH`` (so ``lease_at - DB_EPOCH == t``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from harness.adapter import Capabilities, ConsumerConfig, RetryConfig
from harness.checkers import CheckContext
from harness.history import Event, EventType

DB_EPOCH = 1_700_000_000.0
ALL_CAPS = Capabilities(dlq=True, max_deliveries=True, retry_schedule=True, lease_ttl=True, lease_times=True,
                        settle_outcomes=True, notify=True, graceful_drain=True, metrics=True, connection_budget=True)
CONFIG = ConsumerConfig(lease_ttl_seconds=3.0, max_fetch_interval=1.0, graceful_timeout=5.0,
                        retry=RetryConfig(kind="exponential", initial_delay_seconds=1.0, multiplier=2.0,
                                          max_attempts=3, jitter_factor=0.2))


def retry(**changes: Any) -> RetryConfig:
    return replace(CONFIG.retry, **changes)


def ctx(**overrides: Any) -> CheckContext:
    """A context where every capability is on and the drain finished, unless told otherwise."""
    caps = overrides.pop("caps", {})
    cfg = overrides.pop("cfg", {})
    base: dict[str, Any] = {
        "config": replace(CONFIG, **cfg),
        "capabilities": replace(ALL_CAPS, **caps),
        "final_pending": [],
        "final_dead": [],
        "drained": True,
        "poison": set(),
        "connection_budget": 5,
    }
    return CheckContext(**(base | overrides))


class H:
    """History builder: each method appends events and returns self."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, t: float, writer: str, type_: EventType, f: str, /, **value: Any) -> H:
        self.events.append(Event(t, DB_EPOCH + t, writer, type_, f, value))
        return self

    def build(self) -> list[Event]:
        return sorted(self.events, key=lambda e: e.t)

    def publish(self, t: float, *mids: str, outcome: EventType = "ok", probe: bool = False) -> H:
        self.add(t, "publisher", "invoke", "publish", mids=list(mids), rollback=outcome == "fail")
        extra = {"probe": True} if probe else {}
        return self.add(t + 0.001, "publisher", outcome, "publish", mids=list(mids), **extra)

    def deliver(self, t: float, mid: str | None, process: str = "w1", *, took: float | None = 0.1,
                end: EventType = "ok", settle: str | None = "acked", settle_type: EventType = "ok",
                lease_at: Any = "db", intact: bool = True, echo: bool = False) -> H:
        """One handler call; ``took=None`` leaves it unfinished (killed). ``echo`` repeats lease_at on completions
        as the runner does to tell concurrent calls of one mid in one process apart."""
        lease = DB_EPOCH + t if lease_at == "db" else lease_at
        key = {"lease_at": lease} if lease is not None else {}
        self.add(t, process, "invoke", "deliver", mid=mid, intact=intact, **key)
        if took is None:
            return self
        self.add(t + took, process, end, "deliver", mid=mid, **(key if echo else {}))
        if settle is not None:
            self.add(t + took + 0.005, process, settle_type, "settle", mid=mid, outcome=settle,
                     **(key if echo else {}))
        return self

    def settle(self, t: float, mid: str, process: str, outcome: str, type_: EventType = "ok") -> H:
        return self.add(t, process, type_, "settle", mid=mid, outcome=outcome)

    def fault(self, t: float, kind: str, type_: EventType, **value: Any) -> H:
        return self.add(t, "nemesis", type_, "fault", kind=kind, **value)

    def window(self, start: float, end: float | None, kind: str) -> H:
        """A fault that takes effect at ``start`` and heals at ``end`` (None: never heals)."""
        self.fault(start - 0.01, kind, "invoke").fault(start, kind, "ok")
        return self if end is None else self.fault(end, kind, "info")

    def kill(self, t: float, process: str) -> H:
        """As the runner records it: invoke names only the kind; the ok, once the process is dead, names it."""
        return self.fault(t - 0.001, "sigkill", "invoke").fault(t, "sigkill", "ok", process=process)

    def sigterm(self, t: float, process: str, ok_at: float | None = None) -> H:
        """SIGTERM sent at ``t``; the runner writes the ok (with the process) when the nemesis returns."""
        return self.fault(t, "sigterm", "invoke").fault(ok_at or t + 0.001, "sigterm", "ok", process=process)

    def worker(self, t: float, process: str, event: str, **value: Any) -> H:
        return self.add(t, "runner", "info", "worker", event=event, process=process, **value)

    def log(self, t: float, process: str, message: str, level: str = "WARNING") -> H:
        return self.add(t, process, "info", "log", level=level, logger="outbox", message=message)

    def metric(self, t: float, process: str, name: str, value: float) -> H:
        return self.add(t, process, "info", "metric", name=name, value=value, labels={"queue": "harness"})

    def sample(self, t: float, **backends: int) -> H:
        return self.add(t, "runner", "info", "sample", backends={f"harness-{p}": n for p, n in backends.items()})
