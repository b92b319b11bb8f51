"""Where the CPU went on this host: cumulative CPU seconds by role, read from ``/proc``.

The sizing run samples these every half second; per load step the analysis turns them into cores
used (Δ seconds / Δ time) and the share of time a process waited for a CPU. Roles: the consumer worker processes (each one, since an asyncio process
saturates at one core), the PostgreSQL server when it runs here (postmaster, its live backends and
the ones it has reaped), the harness itself, and the host's busy and total CPU, so that what no
role accounts for (other tenants of a shared machine) shows up as ``other``. Locust processes report
their own CPU through the load log (:mod:`harness.locustfile`), wherever they run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HZ = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()  # fields from 3 (state) on; the name may contain spaces


def process_seconds(pid: int, *, reaped: bool = False) -> float | None:
    """utime + stime of ``pid`` (+ its reaped children's with ``reaped``), None once it is gone."""
    f = _stat_fields(pid)
    if f is None:
        return None
    ticks = int(f[11]) + int(f[12]) + ((int(f[13]) + int(f[14])) if reaped else 0)
    return ticks / HZ


def wait_seconds(pid: int | str = "self") -> float | None:
    """Time the process's main thread spent runnable but waiting for a CPU (``/proc/PID/schedstat``):
    the direct measure of a process starved by others; None where the kernel does not say."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


class TreeMeter:
    """CPU seconds and seconds waiting for a CPU of a server and its children (PostgreSQL: the
    postmaster and its backends), never going down when a backend exits: CPU counts the children
    the server has reaped (kernel ``cutime``), and between a child's exit and its reaping the total
    holds its last value; run-queue wait is never handed to the parent, so each child that exits
    keeps its last reading."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.cpu = 0.0
        self.waits: dict[tuple[int, str], float] = {}  # (pid, start time) -> wait, live children
        self.gone_wait = 0.0
        self.wait = 0.0

    def read(self) -> tuple[float, float] | None:
        own = process_seconds(self.root, reaped=True)
        if own is None:
            return None
        cpu = own
        waits: dict[tuple[int, str], float] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                f = _stat_fields(int(entry.name))
                if f is not None and int(f[1]) == self.root:
                    cpu += (int(f[11]) + int(f[12])) / HZ
                    waits[(int(entry.name), f[19])] = wait_seconds(entry.name) or 0.0
        self.gone_wait += sum(w for key, w in self.waits.items() if key not in waits)
        self.waits = waits
        self.cpu = max(self.cpu, cpu)
        # a float sum in another order can come out a rounding error lower: held, like the CPU
        self.wait = max(self.wait, (wait_seconds(self.root) or 0.0) + self.gone_wait + sum(waits.values()))
        return self.cpu, self.wait


def host_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the host, summed over its cores, from ``/proc/stat``."""
    with open("/proc/stat", encoding="ascii") as fh:
        values = [int(v) for v in fh.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    total = sum(values)
    return (total - values[3] - values[4]) / HZ, total / HZ


def local_postmaster(backend_pid: int, data_directory: str | None) -> int | None:
    """The postmaster of a backend, if that backend runs on this host (checked by its data directory)."""
    f = _stat_fields(backend_pid)
    if f is None:
        return None
    parent = int(f[1])
    try:
        cwd = os.readlink(f"/proc/{parent}/cwd")
        cmdline = Path(f"/proc/{parent}/cmdline").read_bytes()
    except OSError:
        return None
    if b"postgres" not in cmdline or (data_directory and os.path.realpath(data_directory) != cwd):
        return None
    return parent


def sample(*, consumers: Iterable[int], database: TreeMeter | None) -> dict[str, Any]:
    """One sample: monotonic time, host busy/total, each consumer pid, the database tree, the harness."""
    busy, total = host_seconds()
    t = os.times()
    pids = list(consumers)
    db = database.read() if database is not None else None
    return {
        "t": time.monotonic(), "host_busy": busy, "host_total": total, "cores": os.cpu_count() or 1,
        "consumers": {str(pid): s for pid in pids if (s := process_seconds(pid)) is not None},
        "consumers_wait": {str(pid): w for pid in pids if (w := wait_seconds(pid)) is not None},
        "database": db[0] if db else None,
        "database_wait": db[1] if db else None,
        "harness": t.user + t.system,
    }
