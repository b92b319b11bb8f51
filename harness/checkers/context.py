"""What a checker gets besides the history, and how a checker registers itself.

``CheckContext`` holds only what is declared, not observed: the consumer's knobs, the implementation's
capabilities, its declared connection budget. Every observation (the final read of the tables, whether the
drain finished, which messages were poison, which faults ran) is an event in the history, so a saved history
can be checked again (``outbox-harness check``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from harness.adapter import Capabilities, ConsumerConfig, Timings
from harness.checkers._index import History
from harness.history import Event
from harness.verdict import Verdict

#: A checker as written: it reads the history's index.
CheckFn = Callable[[History, "CheckContext"], list[Verdict]]
#: A checker as registered: it takes the index, or events it indexes on the way in.
Checker = Callable[[History | Iterable[Event], "CheckContext"], list[Verdict]]


@dataclass(frozen=True)
class CheckContext:
    config: ConsumerConfig
    capabilities: Capabilities
    connection_budget: int | None  # most backends one consumer process may hold (L2); None if undeclared
    timings: Timings = Timings()  # how long the implementation may take to recover, as it declares
    slack_seconds: float = 1.5  # scheduling slack on the monotonic clock

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "capabilities": asdict(self.capabilities),
                "connection_budget": self.connection_budget, "timings": asdict(self.timings),
                "slack_seconds": self.slack_seconds}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CheckContext:
        return cls(ConsumerConfig.from_dict(raw["config"]), Capabilities(**raw["capabilities"]),
                   raw.get("connection_budget"), Timings(**raw.get("timings", {})),
                   float(raw.get("slack_seconds", 1.5)))

    @property
    def reclaim_after(self) -> float | None:
        """How long a claim holds its row: the lease TTL, or the reclaim time the implementation declares (a
        heartbeat timeout, less one heartbeat interval); None when it declares neither (a row held by a dead worker
        is then not known to come back within any run)."""
        return self.config.lease_ttl_seconds if self.capabilities.lease_ttl else self.timings.reclaim_seconds

    @property
    def liveness_bound(self) -> float:
        """Seconds after which a healthy consumer must have delivered again: twice everything it may wait on (a
        dead holder's rows to be reclaimable, a hung statement to time out, its reconnect back-off, a fetch
        interval), plus the scheduling slack."""
        t, c = self.timings, self.config
        return 2 * ((t.reclaim_seconds or 0.0) + c.statement_timeout_seconds + t.reconnect_seconds
                    + c.max_fetch_interval) + self.slack_seconds

    def describe_liveness_bound(self) -> str:
        t, c = self.timings, self.config
        return (f"{self.liveness_bound:.1f} s = 2 × (reclaim {t.reclaim_seconds or 0:g} s + statement timeout"
                f" {c.statement_timeout_seconds:g} s + reconnect {t.reconnect_seconds:g} s + fetch interval"
                f" {c.max_fetch_interval:g} s) + slack {self.slack_seconds:g} s")


@dataclass(frozen=True)
class Registered:
    name: str
    decides: tuple[str, ...]  # guarantee ids, in the order the checker returns them
    run: Checker


#: Every checker, by name, in registration order; filled by :func:`checker` when its module is imported.
REGISTRY: dict[str, Registered] = {}


def checker(name: str, *, decides: tuple[str, ...]) -> Callable[[CheckFn], Checker]:
    """Registers a checker: the guarantee ids it decides. One module per checker; nothing else to edit.

    The function reads the history's :class:`History` index; the registered one also takes plain events and
    indexes them first, so a test can hand it a list."""

    def register(fn: CheckFn) -> Checker:
        @functools.wraps(fn)
        def run(history: History | Iterable[Event], ctx: CheckContext) -> list[Verdict]:
            return fn(History.of(history), ctx)

        if name in REGISTRY and getattr(REGISTRY[name].run, "__wrapped__", None) is not fn:
            raise ValueError(f"two checkers named {name!r}")
        REGISTRY[name] = Registered(name, decides, run)
        return run

    return register
