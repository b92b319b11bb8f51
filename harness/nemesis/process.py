"""Process faults: SIGKILL a worker (a crash; the supervisor restarts it) or SIGTERM it (a drain)."""

from __future__ import annotations

import random
import signal
import time
from typing import Any

from harness.nemesis.base import CRASH, STOP, Env, Fault, FaultNotApplied, wait_until_busy
from harness.supervisor import Supervisor


class Kill(Fault):
    """SIGKILL one worker, preferably one with a handler in flight so the kill costs something."""

    kind = "sigkill"
    category = CRASH
    ends_process = True

    @classmethod
    def build(cls, env: Env, name: str | None = None, busy: bool = False) -> Kill:
        """``busy``: wait until the worker (``name``, else any) has a handler running, so the kill lands mid-handler
        whatever the timing."""
        return cls(env.supervisor, name, in_flight=env.in_flight, rng=env.rng, busy=busy)

    def __init__(self, supervisor: Supervisor, name: str | None = None, *, in_flight: Any = None,
                 rng: random.Random | None = None, busy: bool = False) -> None:
        self.rng = rng or random.Random()
        self.supervisor = supervisor
        self.name = name
        self.in_flight = in_flight  # callable(process) -> int: deliveries in flight on that incarnation
        self.busy = busy

    def _pick(self) -> str:
        """The named worker; else the first busy one (then the first alive) in an order the run's seed draws, one
        draw per kill whatever the run's state, so that a run with the same seed kills the same workers."""
        order = self.rng.sample(sorted(self.supervisor.slots), len(self.supervisor.slots))
        alive = [n for n in order if self.supervisor.alive(n)]
        if not alive:
            raise FaultNotApplied("no worker alive to kill")
        if self.name is not None:
            return self.name
        if self.in_flight is not None:
            busy = [n for n in alive if self.in_flight(self.supervisor.slots[n].process) > 0]
            if busy:
                return busy[0]
        return alive[0]

    def _any_busy(self) -> bool:
        if self.in_flight is None:
            return True  # nothing to wait on: kill as it comes
        names = [self.name] if self.name is not None else list(self.supervisor.slots)
        return any(self.supervisor.alive(n) and self.in_flight(self.supervisor.slots[n].process) > 0 for n in names)

    def start(self) -> dict[str, Any]:
        if self.busy:
            wait_until_busy(self._any_busy, f"sigkill of {self.name or 'a worker'}")
        name = self._pick()
        busy = self.in_flight(self.supervisor.slots[name].process) if self.in_flight else None
        proc = self.supervisor.slots[name].proc  # waited on directly: the monitor may clear the slot first
        figures = self.supervisor.signal(name, signal.SIGKILL)
        if not figures["delivered"] or proc is None:
            raise FaultNotApplied(f"SIGKILL of {name} not delivered: {figures.get('reason')}")
        code = proc.wait(timeout=5)
        if code != -signal.SIGKILL:
            raise FaultNotApplied(f"{figures['process']} did not die of SIGKILL (exit {code})")
        return {**figures, "in_flight": busy, "exit": code}  # the supervisor restarts the worker on its own


class Term(Fault):
    """SIGTERM one worker and keep it down until healed, to watch it drain (L1)."""

    kind = "sigterm"
    category = STOP

    @classmethod
    def build(cls, env: Env, name: str, *, graceful_timeout: float) -> Term:
        return cls(env.supervisor, name, graceful_timeout=graceful_timeout)

    def __init__(self, supervisor: Supervisor, name: str, *, graceful_timeout: float) -> None:
        self.supervisor = supervisor
        self.name = name
        self.graceful_timeout = graceful_timeout

    def start(self) -> dict[str, Any]:
        self.supervisor.slots[self.name].held = True
        figures = self.supervisor.signal(self.name, signal.SIGTERM)
        if not figures["delivered"]:
            raise FaultNotApplied(f"SIGTERM of {self.name} not delivered: {figures.get('reason')}")
        self._t0 = time.monotonic()
        return figures

    def stop(self) -> dict[str, Any]:
        """Waits for the drain to end (the checker judges how long it took), then starts a fresh worker."""
        slot = self.supervisor.slots[self.name]
        code = self.supervisor.wait_exit(self.name, timeout=self.graceful_timeout + 10)
        figures = {"stopped": slot.process, "exit": code, "exit_after_s": round(time.monotonic() - self._t0, 3)}
        slot.held = False
        self.supervisor.restart(self.name)
        return figures
