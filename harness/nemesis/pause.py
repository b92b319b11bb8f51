"""Pause a worker: SIGSTOP, then SIGCONT after the hold, as a long GC pause or a frozen VM would.

The paused process keeps its connections and its leases' tokens, and its clocks jump when it resumes: a
zombie that comes back mid-handler, after another worker has taken its rows over. Whatever it writes then
must be refused or harmless (D6, D3, D1).
"""

from __future__ import annotations

import os
import signal
from typing import Any

from harness.nemesis.base import Env, Fault, FaultNotApplied
from harness.supervisor import Supervisor

STALL = "stall"  # a process stops running without dying


class Pause(Fault):
    kind = "pause"
    category = STALL

    def __init__(self, supervisor: Supervisor, name: str) -> None:
        self.supervisor = supervisor
        self.name = name
        self.pid: int | None = None

    @classmethod
    def build(cls, env: Env, name: str) -> Pause:
        return cls(env.supervisor, name)

    def start(self) -> dict[str, Any]:
        slot = self.supervisor.slots[self.name]
        self.supervisor.slots[self.name].held = True  # a stopped process is not a crashed one
        figures = self.supervisor.signal(self.name, signal.SIGSTOP)
        if not figures["delivered"]:
            slot.held = False
            raise FaultNotApplied(f"SIGSTOP of {self.name} not delivered: {figures.get('reason')}")
        self.pid = figures["pid"]
        return figures

    def stop(self) -> dict[str, Any]:
        slot = self.supervisor.slots[self.name]
        try:
            if self.pid is not None:
                os.kill(self.pid, signal.SIGCONT)
        except ProcessLookupError as exc:
            raise FaultNotApplied(f"{self.name} (pid {self.pid}) vanished while paused") from exc
        finally:
            slot.held = False
        return {"resumed": slot.process, "pid": self.pid}
