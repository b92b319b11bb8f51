"""The machine a benchmark ran on, printed beside its figures: ratios hold across machines, absolute
rates do not, and a loaded machine explains a wide spread."""

from __future__ import annotations

import os
import platform
from typing import Any

from harness.provision.postgres import server_settings

SETTINGS = ("server_version", "max_connections", "fsync", "synchronous_commit")


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def load_average() -> float:
    """One-minute load average: other work competing for the cores."""
    return round(os.getloadavg()[0], 2)


async def describe(admin_dsn: str) -> dict[str, Any]:
    """Cores, CPU, memory, load, Python, and the PostgreSQL server's version and durability settings."""
    server = await server_settings(admin_dsn, *SETTINGS)
    return {
        "cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(), "load_at_start": load_average(), "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "server_version": server.get("server_version"),
        "server_max_connections": int(server["max_connections"]) if "max_connections" in server else None,
        "server_settings": {k: server[k] for k in SETTINGS[2:] if k in server},
    }
