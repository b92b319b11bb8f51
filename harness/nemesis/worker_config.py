"""Faults applied by restarting a worker differently: clock skew and a pool below budget."""

from __future__ import annotations

import time
from typing import Any

from harness.history import read_events
from harness.names import WORKER_APP_LIKE, slot_app_like
from harness.nemesis.base import CAPACITY, CLOCK, WAKEUP, Env, Fault, FaultNotApplied
from harness.sampler import ListenerWatch
from harness.supervisor import Supervisor


def _started_event(supervisor: Supervisor, process: str, timeout: float = 15.0) -> Any:
    path = supervisor.history_path(process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            for e in read_events(path):
                if e.f == "worker" and e.value.get("event") == "started":
                    return e
        time.sleep(0.05)
    raise FaultNotApplied(f"{process} did not start within {timeout}s")


class ClockSkew(Fault):
    """Restarts a worker under libfaketime with its wall clock moved by ``offset_seconds`` (D4).

    Only the wall clock is faked (``FAKETIME_DONT_FAKE_MONOTONIC=1``); the
    measured skew of the new incarnation is the proof the fault is real.
    """

    kind = "clock_skew"
    category = CLOCK

    @classmethod
    def build(cls, env: Env, name: str, offset_seconds: float) -> ClockSkew:
        return cls(env.supervisor, name, offset_seconds)

    def __init__(self, supervisor: Supervisor, name: str, offset_seconds: float) -> None:
        self.supervisor = supervisor
        self.name = name
        self.offset = offset_seconds

    def start(self) -> dict[str, Any]:
        slot = self.supervisor.slots[self.name]
        slot.clock_offset = f"{self.offset:+.0f}s"
        self.supervisor.restart(self.name)
        started = _started_event(self.supervisor, slot.process)
        real_wall = started.t + (time.time() - time.monotonic())
        measured = started.wall - real_wall
        if abs(measured - self.offset) > max(2.0, abs(self.offset) * 0.1):
            raise FaultNotApplied(f"{slot.process} runs {measured:+.1f}s off, wanted {self.offset:+.0f}s")
        return {"process": slot.process, "offset_s": self.offset, "measured_skew_s": round(measured, 3)}

    def stop(self) -> dict[str, Any]:
        slot = self.supervisor.slots[self.name]
        slot.clock_offset = None
        self.supervisor.restart(self.name)
        return {"restarted": slot.process}


class PoolBelowBudget(Fault):
    """Restarts workers with an engine pool smaller than ``max_workers + 1`` (L3)."""

    kind = "pool_exhaustion"
    category = CAPACITY

    @classmethod
    def build(cls, env: Env, names: list[str], pool_size: int) -> PoolBelowBudget:
        return cls(env.supervisor, names, pool_size)

    def __init__(self, supervisor: Supervisor, names: list[str], pool_size: int) -> None:
        self.supervisor = supervisor
        self.names = names
        self.pool_size = pool_size

    def start(self) -> dict[str, Any]:
        for name in self.names:
            self.supervisor.replace_config(name, pool_size=self.pool_size)
            self.supervisor.restart(name)
        return {"workers": self.names, "pool_size": self.pool_size}

    def stop(self) -> dict[str, Any]:
        for name in self.names:
            self.supervisor.replace_config(name, pool_size=None)
            self.supervisor.restart(name)
        return {"workers": self.names, "pool_size": "budget"}


class ListenLoss(Fault):
    """Terminates the workers' LISTEN backends (D8): delivery must go on by polling.

    A LISTEN backend is one whose latest statement is LISTEN, or one the sampler saw issue LISTEN earlier and that
    still runs (same pid, same start): a listener that pings its connection no longer shows its LISTEN."""

    kind = "listen_loss"
    category = WAKEUP

    @classmethod
    def build(cls, env: Env, target: str = "all") -> ListenLoss:
        """Every worker's LISTEN backend, or one worker's (``target``: ``w1``)."""
        return cls(env.admin_dsn, WORKER_APP_LIKE if target == "all" else slot_app_like(target), env.listeners)

    def __init__(self, admin_dsn: str, like: str = WORKER_APP_LIKE, listeners: ListenerWatch | None = None) -> None:
        self.admin_dsn = admin_dsn
        self.like = like
        self.listeners = listeners or ListenerWatch()

    def start(self) -> dict[str, Any]:
        import asyncio  # noqa: PLC0415

        import asyncpg  # noqa: PLC0415

        pids, starts = self.listeners.backends()

        async def go() -> int:
            conn = await asyncpg.connect(self.admin_dsn)
            try:
                rows = await conn.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name LIKE $1 AND pid <> pg_backend_pid() AND (query ~* '^\\s*LISTEN\\M'"
                    " OR (pid, backend_start) IN (SELECT * FROM unnest($2::int[], $3::timestamptz[])))",
                    self.like, pids, starts)
                return len(rows)
            finally:
                await conn.close()

        killed = asyncio.run(go())
        if killed == 0:
            raise FaultNotApplied("no LISTEN backend found to terminate")
        return {"terminated": killed, "backends": self.like}
