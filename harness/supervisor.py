"""Runs consumer worker processes and restarts them when they die, as Kubernetes would.

Every incarnation gets its own process name (``w1#1``, ``w1#2`` ...) and its
own history file, so a delivery left in flight by a killed incarnation is never
confused with the next one's. Processes are stopped by pid, always.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness import seeds
from harness.adapter import AdapterLoadError, load_adapter
from harness.history import HistoryWriter, read_events
from harness.messages import mask_dsn
from harness.names import worker_app
from harness.nemesis.base import FaultNotApplied
from harness.provision import guard
from harness.worker import DSN_ENV, WorkerSpec


class FaketimeMissing(FaultNotApplied):
    """libfaketime is not installed: a clock-skew fault cannot be applied."""


FAKETIME_LIBS = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/faketime/libfaketime.so.1", "/usr/local/lib/faketime/libfaketime.so.1")


def faketime_library() -> str:
    """libfaketime's shared object; the Debian package is ``faketime``."""
    for path in (os.environ.get("FAKETIME_LIB"), *FAKETIME_LIBS):
        if path and Path(path).exists():
            return path
    raise FaketimeMissing("clock skew needs libfaketime: apt-get install faketime (or set FAKETIME_LIB)")


@dataclass
class Slot:
    """One logical worker (``w1``) and its current incarnation."""

    name: str
    config: dict[str, Any]
    dsn: str  # this worker's own path to PostgreSQL (its proxy, when there is one)
    handler: dict[str, Any]
    clock_offset: str | None = None  # libfaketime offset such as "+10s" or "-10s"
    incarnation: int = 0
    proc: subprocess.Popen[bytes] | None = None
    stopping: bool = False  # SIGTERM sent on purpose: do not count the exit as a crash
    held: bool = False  # a nemesis keeps it down; do not restart
    exits: list[int] = field(default_factory=list)

    @property
    def process(self) -> str:
        return f"{self.name}#{self.incarnation}"


class Supervisor:
    def __init__(self, *, impl: str, dsn: str, workdir: Path, config: dict[str, Any], handler: dict[str, Any],
                 history: HistoryWriter, restart_delay: float = 0.5, seed: int | None = None) -> None:
        self.impl = impl
        self.seed = seed  # the run's: each incarnation's handler timing is drawn from a stream of its own
        self.dsn = dsn
        self.workdir = workdir
        self.base_config = config
        self.handler = handler
        self.history = history  # the runner's own history, for lifecycle notes
        self.restart_delay = restart_delay
        self.slots: dict[str, Slot] = {}
        self._lock = threading.RLock()  # the monitor and nemesis threads both replace incarnations
        self._monitor: asyncio.Task[None] | None = None
        self._own_command: Callable[[Path], list[str]] | Literal[False] | None = None  # resolved on first spawn

    # -- processes -----------------------------------------------------------------
    def add(self, name: str, *, dsn: str | None = None, handler: dict[str, Any] | None = None,
            clock_offset: str | None = None, **config_overrides: Any) -> Slot:
        slot = Slot(name, {**self.base_config, **config_overrides}, dsn or self.dsn,
                    {**self.handler, **(handler or {})}, clock_offset)
        self.slots[name] = slot
        self._spawn(slot)
        return slot

    def _spawn(self, slot: Slot) -> None:
        slot.incarnation += 1
        slot.stopping = False
        spec = WorkerSpec(impl=self.impl, dsn=mask_dsn(slot.dsn), process=slot.process,
                          history=str(self.history_path(slot.process)), config=slot.config, handler=slot.handler,
                          deliveries=str(self.workdir / "deliveries"), application_name=worker_app(slot.process),
                          seed=None if self.seed is None else seeds.derive(self.seed, slot.process))
        spec_path = self.workdir / f"{slot.process}.spec.json"
        spec.dump(spec_path)
        cmd = self._command(spec_path)
        env = {**os.environ, DSN_ENV: slot.dsn}
        if slot.clock_offset:
            # libfaketime preloaded into the worker itself (not the `faketime` wrapper), so the pid we
            # signal is the worker's. Only the wall clock is faked; asyncio runs on the monotonic one.
            env.update(LD_PRELOAD=faketime_library(), FAKETIME=slot.clock_offset, FAKETIME_DONT_FAKE_MONOTONIC="1",
                       FAKETIME_NO_CACHE="1")
        log = open(self.log_path(slot.process), "wb")  # noqa: SIM115 - owned by the child
        slot.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True)
        log.close()
        guard.protect(slot.proc.pid)
        self.history.record("info", "worker", event="spawned", process=slot.process, pid=slot.proc.pid,
                            clock_offset=slot.clock_offset)

    def _command(self, spec_path: Path) -> list[str]:
        """The adapter's own program when it declares ``command(spec_path)`` (an implementation in another
        language, executed directly so that signals land on it), else ``python -m harness.worker``."""
        if self._own_command is None:
            try:
                own = getattr(load_adapter(self.impl), "command", None)
            except AdapterLoadError:
                own = None  # the worker reports why it cannot load the adapter
            self._own_command = own if callable(own) else False
        if self._own_command:
            return list(self._own_command(spec_path))
        return [sys.executable, "-m", "harness.worker", "--spec", str(spec_path)]

    def history_path(self, process: str) -> Path:
        return self.workdir / f"worker-{process.replace('#', '-')}.jsonl"

    def log_path(self, process: str) -> Path:
        """The incarnation's stdout and stderr."""
        return self.workdir / f"{process}.log"

    def history_paths(self) -> list[Path]:
        return sorted(self.workdir.glob("worker-*.jsonl"))

    async def wait_started(self, timeout: float) -> bool:
        """True once every current incarnation has written its "started" event (False on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._started(slot.process) for slot in self.slots.values()):
                return True
            await asyncio.sleep(0.05)
        return False

    def _started(self, process: str) -> bool:
        path = self.history_path(process)
        return path.exists() and any(e.f == "worker" and e.value.get("event") == "started" for e in read_events(path))

    def alive(self, name: str) -> bool:
        proc = self.slots[name].proc
        return proc is not None and proc.poll() is None

    def signal(self, name: str, sig: int) -> dict[str, Any]:
        """Sends ``sig`` to the current incarnation; the returned figures prove it landed."""
        slot = self.slots[name]
        proc = slot.proc
        if proc is None or proc.poll() is not None:
            return {"process": slot.process, "delivered": False, "reason": "not running"}
        if sig == signal.SIGTERM:
            slot.stopping = True
        os.kill(proc.pid, sig)
        return {"process": slot.process, "pid": proc.pid, "delivered": True}

    def wait_exit(self, name: str, timeout: float) -> int | None:
        proc = self.slots[name].proc
        if proc is None:
            return None
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def replace_config(self, name: str, **overrides: Any) -> None:
        slot = self.slots[name]
        slot.config = {**slot.config, **overrides}

    def restart(self, name: str) -> None:
        """Stops the current incarnation by pid (if alive) and starts the next one.

        Called by nemeses from their own thread, hence the lock shared with the monitor."""
        slot = self.slots[name]
        with self._lock:
            proc = slot.proc
            if proc is not None and proc.poll() is None:
                slot.stopping = True
                guard.kill_and_forget(proc.pid)
            self._spawn(slot)

    # -- monitoring ------------------------------------------------------------------
    def start_monitor(self) -> None:
        self._monitor = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        """Restarts crashed or refused workers after ``restart_delay`` (a crash loop backs off)."""
        while True:
            await asyncio.sleep(0.05)
            for slot in self.slots.values():
                with self._lock:
                    proc = slot.proc
                    if proc is None or proc.poll() is None:
                        continue
                    code = proc.returncode
                    guard.forget(proc.pid)
                    slot.exits.append(code)
                    self.history.record("info", "worker", event="died" if not slot.stopping else "stopped",
                                        process=slot.process, code=code)
                    slot.proc = None
                    if slot.held or slot.stopping:
                        continue
                crash_loop = len(slot.exits) >= 2 and slot.exits[-1] != 0 and slot.exits[-2] != 0
                await asyncio.sleep(self.restart_delay * (4 if crash_loop else 1))
                with self._lock:
                    if not slot.held and slot.proc is None:  # a nemesis may have restarted it meanwhile
                        self._spawn(slot)

    async def stop_all(self, timeout: float) -> dict[str, int | None]:
        """SIGTERM everyone, wait up to ``timeout``, then SIGKILL by pid whatever is left."""
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
        codes: dict[str, int | None] = {}
        for slot in self.slots.values():
            if slot.proc is not None and slot.proc.poll() is None:
                slot.stopping = True
                os.kill(slot.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for slot in self.slots.values():
            if slot.proc is None:
                continue
            try:
                codes[slot.process] = await asyncio.to_thread(slot.proc.wait, max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                codes[slot.process] = None
            guard.kill_and_forget(slot.proc.pid)
        return codes

