"""A tiny builder for hand-made histories, so checker tests read like the story they tell.

Times are seconds on the shared monotonic clock; lease times default to the same instant on a database clock
that sits at ``DB_EPOCH`` (so ``lease_at - DB_EPOCH == t``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from harness.adapter import Capabilities, ConsumerConfig, RetryConfig, Timings
from harness.checkers import CheckContext
from harness.history import Event, EventType
from harness.nemesis.database import ConnectionHog, CrashRestart, DlqDrift
from harness.nemesis.network import Bandwidth, BlackHole, Latency, Partition, ResetPeer
from harness.nemesis.process import Kill, Term
from harness.nemesis.worker_config import ClockSkew, ListenLoss, PoolBelowBudget

DB_EPOCH = 1_700_000_000.0
#: Each fault kind's category, as its nemesis declares it.
NEMESES = (Kill, Term, CrashRestart, ConnectionHog, DlqDrift, ClockSkew, PoolBelowBudget, ListenLoss, Partition,
           BlackHole, ResetPeer, Latency, Bandwidth)
CATEGORY = {n.kind: n.category for n in NEMESES}
ENDS_PROCESS = {n.kind for n in NEMESES if n.ends_process}
ALL_CAPS = Capabilities(dlq=True, max_deliveries=True, retry_schedule=True, lease_ttl=True, lease_times=True,
                        settle_outcomes=True, notify=True, graceful_drain=True, metrics=True, connection_budget=True)
CONFIG = ConsumerConfig(lease_ttl_seconds=3.0, max_fetch_interval=1.0, graceful_timeout=5.0,
                        retry=RetryConfig(kind="exponential", initial_delay_seconds=1.0, multiplier=2.0,
                                          max_attempts=3, jitter_factor=0.2))


def retry(**changes: Any) -> RetryConfig:
    return replace(CONFIG.retry, **changes)


def ctx(**overrides: Any) -> CheckContext:
    """A context where every capability is on, unless told otherwise."""
    caps = overrides.pop("caps", {})
    cfg = overrides.pop("cfg", {})
    base: dict[str, Any] = {
        "config": replace(CONFIG, **cfg),
        "capabilities": replace(ALL_CAPS, **caps),
        "connection_budget": 5,
        "timings": Timings(reclaim_seconds=CONFIG.lease_ttl_seconds, reconnect_seconds=5.0),
    }
    return CheckContext(**(base | overrides))


class H:
    """History builder: each method appends events and returns self."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._final: tuple[list[str], list[str]] = ([], [])
        self._drained = True
        self._end: float | None = None

    def final(self, *, pending: list[str] | None = None, dead: list[str] | None = None,
              drained: bool | None = None, at: float | None = None) -> H:
        """The final read of the tables and the drain outcome (at ``at``, else a second after the last event), as
        the runner records them after the run; by default nothing is left and the drain finished."""
        self._final = (pending or [], dead or [])
        if drained is not None:
            self._drained = drained
        self._end = at
        return self

    def add(self, t: float, writer: str, type_: EventType, f: str, /, **value: Any) -> H:
        self.events.append(Event(t, DB_EPOCH + t, writer, type_, f, value))
        return self

    def build(self) -> list[Event]:
        end = self._end if self._end is not None else max((e.t for e in self.events), default=0.0) + 1.0
        pending, dead = self._final
        tail = [Event(end, DB_EPOCH + end, "runner", "ok" if self._drained else "fail", "drain", {}),
                Event(end + 0.1, DB_EPOCH + end, "runner", "ok", "read", {"pending": pending, "dead": dead})]
        return sorted(self.events, key=lambda e: e.t) + tail

    def publish(self, t: float, *mids: str, outcome: EventType = "ok", probe: bool = False,
                poison: tuple[str, ...] = ()) -> H:
        self.add(t, "publisher", "invoke", "publish", mids=list(mids), rollback=outcome == "fail",
                 **({"poison": list(poison)} if poison else {}))
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

    def claim(self, t: float, process: str, *mids: str, lease_at: float | None = None) -> H:
        """The implementation reported a claim (``ctx.claimed``) of these rows."""
        return self.add(t, process, "ok", "claim", mids=list(mids), **({"lease_at": lease_at} if lease_at else {}))

    def settle(self, t: float, mid: str, process: str, outcome: str, type_: EventType = "ok") -> H:
        return self.add(t, process, type_, "settle", mid=mid, outcome=outcome)

    def fault(self, t: float, kind: str, type_: EventType, **value: Any) -> H:
        """A fault event tagged as the scheduler tags it: its nemesis's category, and ``ends_process`` on the ok
        of a fault that ends a process."""
        tags: dict[str, Any] = {"category": CATEGORY[kind]}
        if type_ == "ok" and kind in ENDS_PROCESS:
            tags["ends_process"] = True
        return self.add(t, "nemesis", type_, "fault", kind=kind, **tags, **value)

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
