"""The benchmark run: the floor once, then every implementation, each phase in a fresh database."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.adapter import load_adapter
from harness.bench.config import DEFAULTS, BenchConfig, PhaseError, consumer_config
from harness.bench.consumer import measure_drain, measure_probes
from harness.bench.db import publish, vacuum
from harness.bench.floor import floor
from harness.history import HistoryWriter
from harness.names import TEMP_PREFIX
from harness.payload import numbered
from harness.provision.postgres import PostgresServer, plain_dsn, server_settings


async def _measure(server: PostgresServer, spec: str, index: int, config: BenchConfig, workdir: Path,
                   history: HistoryWriter, say: Callable[[str], None]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "impl": spec, "throughput_msgs_per_s": None, "ratio_to_floor": None, "ratio_to_reference": None,
        "notify_p50_ms": None, "notify_p99_ms": None, "peak_rss_mb": None, "wakeup": None, "error": None,
        "notes": [],
    }
    try:
        adapter = load_adapter(spec)
    except Exception as exc:  # noqa: BLE001 - a row with the error, never a figure
        row["error"] = f"{type(exc).__name__}: {exc}"
        return row
    caps = adapter.capabilities
    row["wakeup"] = "notify" if caps.notify else "polling"
    row["capabilities_notes"] = caps.notes
    if not caps.notify:
        row["notes"].append(f"no wake-up mechanism: latency is its polling (max_fetch_interval="
                            f"{config.max_fetch_interval:g} s)")
    cc = consumer_config(config)

    async def drain(dsn: str, phase_dir: Path) -> None:
        t0 = time.perf_counter()
        payloads = [numbered(s, config.payload_bytes) for s in range(config.messages)]
        await asyncio.wait_for(publish(adapter, dsn, payloads, config.publish_chunk), timeout=config.timeout_seconds)
        row["publish_msgs_per_s"] = round(config.messages / (time.perf_counter() - t0), 1)
        await vacuum(dsn)
        say(f"{spec}: published {config.messages} at {row['publish_msgs_per_s']:,.0f} msg/s; draining")
        await measure_drain(adapter, spec, dsn, config, row, phase_dir, history)
        say(f"{spec}: drained at {row['throughput_msgs_per_s']:,.0f} msg/s")

    async def probe(dsn: str, phase_dir: Path) -> None:
        await measure_probes(adapter, spec, dsn, config, row, phase_dir, history)
        say(f"{spec}: wake-up p50 {row['notify_p50_ms']} ms, p99 {row['notify_p99_ms']} ms")

    errors: list[str] = []
    for phase, run in (("drain", drain), ("probes", probe)):  # each in a fresh database of its own
        name = f"bench_{index}_{phase}_{uuid.uuid4().hex[:8]}"
        try:
            dsn = await server.create_database(name)
            await asyncio.wait_for(adapter.create_schema(dsn, cc), timeout=120)
            await run(dsn, workdir / f"{index}-{phase}")
        except PhaseError as exc:
            errors.append(str(exc) if str(exc).startswith(phase) else f"{phase}: {exc}")
        except asyncio.TimeoutError:
            errors.append(f"{phase}: timed out")
        except Exception as exc:  # noqa: BLE001 - whatever the library raised is the row's finding
            errors.append(f"{phase}: {type(exc).__name__}: {exc}"[:600])
        finally:
            await server.drop_database(name)
    if errors:
        row["error"] = "; ".join(errors)
        say(f"{spec}: {row['error']}")
    return row


async def arun_bench(dsn: str, *, impls: Sequence[str] = ("reference",), log: Callable[[str], None] | None = None,
                     **options: Any) -> dict[str, Any]:
    """The benchmark, on the running event loop; see :func:`run_bench`."""
    config = BenchConfig(**{**asdict(DEFAULTS), **options})
    impls = list(impls)
    if not impls:
        raise ValueError("impls must name at least one implementation")
    say = log or (lambda _m: None)
    admin = plain_dsn(dsn)
    server = PostgresServer(dsn=admin, host="", port=0, embedded=False)  # create_database needs the admin DSN only
    settings = await server_settings(admin, "server_version", "max_connections")
    info = {"server_version": settings["server_version"], "server_max_connections": int(settings["max_connections"])}
    floor_row: dict[str, Any] = {"floor_msgs_per_s": None, "floor_seconds": None}
    try:
        floor_row = await floor(server, config, say)
    except Exception as exc:  # noqa: BLE001 - reported; the implementations are still measured
        floor_row["floor_error"] = f"{type(exc).__name__}: {exc}"[:600]
    workdir = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}bench-"))  # the consumers' specs, logs and histories
    history = HistoryWriter(workdir / "history-bench.jsonl", "bench")
    try:
        rows = [await _measure(server, spec, i, config, workdir, history, say) for i, spec in enumerate(impls)]
    finally:
        history.close()
        shutil.rmtree(workdir, ignore_errors=True)
    reference = next((r["throughput_msgs_per_s"] for r in rows
                      if r["impl"] == "reference" and r["throughput_msgs_per_s"]), None)
    for r in rows:
        if r["throughput_msgs_per_s"]:
            if floor_row["floor_msgs_per_s"]:
                r["ratio_to_floor"] = round(r["throughput_msgs_per_s"] / floor_row["floor_msgs_per_s"], 3)
            if reference:
                r["ratio_to_reference"] = round(r["throughput_msgs_per_s"] / reference, 3)
    cc = consumer_config(config)
    return {
        **rows[0],
        **floor_row,
        "messages": config.messages,
        "impls": rows,
        "config": {
            "max_workers": cc.max_workers, "fetch_batch_size": cc.fetch_batch_size,
            "lease_ttl_seconds": cc.lease_ttl_seconds, "max_fetch_interval": cc.max_fetch_interval,
            "min_fetch_interval": cc.min_fetch_interval, "dlq": cc.dlq, "pool_size": "adapter budget",
            "probes": config.probes, "floor_loops": config.floor_loops, "floor_batch": config.floor_batch_size,
            "publish_chunk": config.publish_chunk, "payload_bytes": config.payload_bytes,
            "probe_timeout_seconds": config.probe_timeout_seconds, "cpus": os.cpu_count(), **info,
        },
    }


def run_bench(dsn: str, *, messages: int = 100_000, impls: Sequence[str] = ("reference",),
              log: Callable[[str], None] | None = None, **options: Any) -> dict[str, Any]:
    """Runs the benchmark on the server of ``dsn`` (an admin ``postgresql://`` DSN: it creates and
    drops one database per implementation) and returns the figures. Options are
    :class:`BenchConfig` fields (``probes``, ``max_workers``, ``fetch_batch_size``, ``floor_loops``,
    ...). Works from plain code (its own event loop) and from inside a running loop (then on a
    helper thread)."""
    coro_factory: Callable[[], Awaitable[dict[str, Any]]] = lambda: arun_bench(  # noqa: E731
        dsn, impls=impls, log=log, messages=messages, **options)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_factory())
    result: dict[str, Any] = {}
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.update(asyncio.run(coro_factory()))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name="outbox-bench")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result
