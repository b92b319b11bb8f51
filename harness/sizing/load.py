"""The load engine: a locust master and its local workers, locust's own distributed mode.

Each process is a ``python -m locust`` subprocess in its own session, registered with the guard
(killed by pid even if the harness is SIGKILLed) and stopped by pid: SIGUSR1 to the master ends the
shape test the normal way (every commit reported, reports complete), the master then tells its
workers to quit; whatever is still alive after that gets SIGINT, then SIGKILL. Remote workers (other
hosts, ``--master-host``) join the same master; they are the user's processes, not stopped here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.provision import guard
from harness.provision.ports import free_port

LOCUSTFILE = Path(__file__).resolve().parent.parent / "locustfile.py"


@dataclass(frozen=True)
class Engine:
    """How many load processes, and where the master listens for workers."""

    local_workers: int = 1
    remote_workers: int = 0  # workers started by the user on other hosts (--master-host)
    bind_host: str = "127.0.0.1"
    bind_port: int = 0  # 0: a free port (only sensible without remote workers)

    @property
    def workers(self) -> int:
        return self.local_workers + self.remote_workers


def master_command(point_dir: Path, engine: Engine, port: int, *, wait_s: float) -> list[str]:
    """Headless master: the step shape, CSV with full history and the HTML report into ``point_dir``."""
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--master", "--headless", "--only-summary",
            "--expect-workers", str(engine.workers), "--expect-workers-max-wait", f"{wait_s:g}",
            "--master-bind-host", engine.bind_host, "--master-bind-port", str(port), "--stop-timeout", "5",
            "--csv", str(point_dir / "locust"), "--csv-full-history", "--html", str(point_dir / "locust.html")]


def worker_command(master_host: str, port: int) -> list[str]:
    """What every local worker runs: it gets every ``--outbox-*`` setting from the master."""
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host", master_host,
            "--master-port", str(port)]


def remote_worker_command(port: int) -> list[str]:
    """What a worker on another host runs, from a checkout of this project (docs/sizing.md)."""
    return ["locust", "-f", "harness/locustfile.py", "--worker", "--master-host", "<this host>", "--master-port",
            str(port)]


def environment(extra: Mapping[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}


@dataclass
class LoadGroup:
    master: subprocess.Popen[bytes]
    port: int
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def running(self) -> bool:
        return self.master.poll() is None

    def stop(self, *, grace: float = 20.0) -> None:
        """Every process by pid: the master first (SIGUSR1, SIGINT, SIGKILL), then the workers it did not end."""
        _stop(self.master, (signal.SIGUSR1, signal.SIGINT), grace)
        for proc in self.workers:  # the master's quit message normally ended them already
            _stop(proc, (signal.SIGINT,), min(grace, 5.0))


def _stop(proc: subprocess.Popen[bytes], signals: tuple[int, ...], grace: float) -> None:
    for sig in signals:
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    guard.kill_and_forget(proc.pid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=1)


def _spawn(cmd: list[str], log: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dict(env),
                                start_new_session=True)
    guard.protect(proc.pid)
    return proc


def start(point_dir: Path, engine: Engine, env: Mapping[str, str], *, wait_s: float = 60.0) -> LoadGroup:
    """The master, then ``engine.local_workers`` workers on loopback; every pid with the guard."""
    port = engine.bind_port or free_port()
    group = LoadGroup(_spawn(master_command(point_dir, engine, port, wait_s=wait_s), point_dir / "locust.log", env),
                      port)
    try:
        time.sleep(0.2)  # workers retry until the master listens; this only saves them a retry
        for i in range(engine.local_workers):
            group.workers.append(_spawn(worker_command("127.0.0.1", port), point_dir / f"locust-w{i + 1}.log", env))
    except BaseException:
        group.stop(grace=2)
        raise
    return group
