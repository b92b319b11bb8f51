"""Running sizing: one grid point end to end (fresh server, consumers, locust, samples), the grid,
and consumers alone for driving locust by hand. Every process started is stopped by its pid."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg

from harness import business
from harness.adapters.reference import TABLE
from harness.history import HistoryWriter
from harness.names import HARNESS_APP_LIKE, SAMPLER_APP
from harness.provision import guard
from harness.provision.postgres import provision, server_settings
from harness.sampler import sample_connections
from harness.sizing.analysis import HEADROOM, NO_KNEE, PointResult, Recommendation, check_budget
from harness.sizing.data import analyse_point
from harness.sizing.plan import ADAPTER, IMPL, QUEUE, GridPoint, Handler, LoadPlan, backlog_limit, consumer_config
from harness.sizing.report import fmt_ms
from harness.supervisor import Supervisor

LOCUSTFILE = Path(__file__).resolve().parent.parent / "locustfile.py"
SAMPLE_EVERY_S = 0.2


@dataclass
class SizingRun:
    run_id: str
    out_dir: Path
    grid: list[GridPoint]
    plan: LoadPlan
    handler: Handler
    bound_s: float
    target: float | None
    headroom: float = HEADROOM
    dsn: str | None = None  # the server to size on (a fresh database per point); None: DATABASE_URL, else embedded
    results: list[PointResult] = field(default_factory=list)
    started: str = ""
    duration_s: float = 0.0
    recommendation: Recommendation | None = None
    interrupted: bool = False


async def start_consumers(dsn: str, point: GridPoint, handler: Handler, workdir: Path,
                          history: HistoryWriter) -> Supervisor:
    """The schema (dropped first), the business table, and ``point.processes`` workers under a
    supervisor; returns once every worker has started."""
    config = consumer_config(point)
    await ADAPTER.create_schema(dsn, config)
    await business.create(dsn)
    supervisor = Supervisor(impl=IMPL, dsn=dsn, workdir=workdir, config=config.to_dict(), handler=asdict(handler),
                            history=history)
    try:
        for i in range(point.processes):
            supervisor.add(f"w{i + 1}")
        supervisor.start_monitor()
        if not await supervisor.wait_started(30):
            raise RuntimeError("worker processes did not start within 30 s (see their .log files)")
    except BaseException:
        await supervisor.stop_all(timeout=10)
        raise
    return supervisor


async def _server_limits(dsn: str) -> tuple[int, int, str]:
    """max_connections, the slots reserved from it (``reserved_connections`` from PostgreSQL 16), version."""
    s = await server_settings(dsn, "max_connections", "superuser_reserved_connections", "reserved_connections",
                              "server_version")
    reserved = int(s["superuser_reserved_connections"]) + int(s.get("reserved_connections", 0))
    return int(s["max_connections"]), reserved, s["server_version"]


async def _pending(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM {TABLE}", timeout=5))


async def _watch_load(locust: subprocess.Popen[bytes], monitor: asyncpg.Connection, plan: LoadPlan, bound_s: float,
                      history: HistoryWriter) -> str | None:
    """Waits for locust to finish; returns why it was stopped early (None: it ran its plan or timed out)."""
    limit = backlog_limit(plan, bound_s)
    deadline = time.monotonic() + plan.duration + 60
    while locust.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        pending = await _pending(monitor)
        if pending > limit:
            history.record("info", "locust", event="stopped_early", pending=pending, limit=limit)
            return f"backlog of {pending} rows > {limit:.0f} (2 × bound × highest offered rate): later steps cannot pass"
    return None


def _stop_pid(proc: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    """Stops locust by pid: SIGUSR1 (the locustfile ends the test the normal way: complete reports),
    then SIGINT (HTML and CSV still written; SIGTERM would skip the HTML), then SIGKILL."""
    for sig, wait in ((signal.SIGUSR1, grace), (signal.SIGINT, grace)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
    guard.kill_and_forget(proc.pid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=1)


def locust_command(point_dir: Path) -> list[str]:
    """Headless, the locustfile's step shape, CSV with full history and the HTML report into ``point_dir``."""
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary", "--stop-timeout",
            "5", "--csv", str(point_dir / "locust"), "--csv-full-history", "--html", str(point_dir / "locust.html")]


async def run_point(point: GridPoint, plan: LoadPlan, handler: Handler, point_dir: Path, *, bound_s: float,
                    settle_s: float, drain_timeout: float, dsn: str | None = None) -> PointResult:
    """One grid point end to end, on a fresh database (on ``dsn``'s server, else DATABASE_URL's, else a fresh
    embedded server); every process it starts is stopped by pid before it returns."""
    t_start = time.monotonic()
    point_dir.mkdir(parents=True, exist_ok=True)
    samples: list[dict[str, int]] = []
    server = provision(url=dsn)
    supervisor: Supervisor | None = None
    sampler: asyncio.Task[None] | None = None
    monitor: asyncpg.Connection | None = None
    locust: subprocess.Popen[bytes] | None = None
    stopped_early: str | None = None
    history = HistoryWriter(point_dir / "history-runner.jsonl", "sizing")
    try:
        dsn = await server.create_database(f"sizing_{point.slug.replace('-', '_')}")
        max_connections, reserved, version = await _server_limits(dsn)
        supervisor = await start_consumers(dsn, point, handler, point_dir, history)
        sampler = asyncio.create_task(sample_connections(dsn, history, like=HARNESS_APP_LIKE, every=SAMPLE_EVERY_S,
                                                         sink=samples.append))
        env = {**os.environ, **plan.env(), "OUTBOX_LOCUST_DSN": dsn, "OUTBOX_LOCUST_QUEUE": QUEUE,
               "OUTBOX_LOCUST_HISTORY_DIR": str(point_dir), "OUTBOX_LOCUST_LOG": str(point_dir / "commits.jsonl"),
               "OUTBOX_LOCUST_DELIVER_TIMEOUT": str(max(10.0, plan.duration))}
        with open(point_dir / "locust.log", "wb") as out:
            locust = subprocess.Popen(locust_command(point_dir), stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        guard.protect(locust.pid)
        history.record("info", "locust", event="spawned", pid=locust.pid)
        monitor = await asyncpg.connect(dsn, timeout=5, server_settings={"application_name": SAMPLER_APP})
        stopped_early = await _watch_load(locust, monitor, plan, bound_s, history)
        timed_out = locust.poll() is None and stopped_early is None
        _stop_pid(locust)
        history.record("info", "locust", event="exited", code=locust.returncode, timed_out=timed_out)
        drain_until = time.monotonic() + drain_timeout
        while time.monotonic() < drain_until and await _pending(monitor) > 0:
            await asyncio.sleep(0.2)
        if timed_out:
            raise RuntimeError(f"locust did not finish within {plan.duration + 60:.0f} s (see {point_dir / 'locust.log'})")
    finally:
        if monitor is not None:
            await monitor.close()
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        if locust is not None:
            _stop_pid(locust)
        if supervisor is not None:
            await supervisor.stop_all(timeout=10)
        history.close()
        server.stop()
    if not (point_dir / "commits.jsonl").exists():
        raise RuntimeError(f"locust published nothing (see {point_dir / 'locust.log'})")
    result = analyse_point(point, point_dir, samples, max_connections=max_connections, reserved=reserved,
                           bound_s=bound_s, settle_s=settle_s)
    result.locust["server_version"] = version
    result.stopped_early = stopped_early
    result.duration_s = time.monotonic() - t_start
    _compress(point_dir)
    result.files = {p.name: str(p) for p in sorted(point_dir.iterdir()) if p.is_file()}
    return result


def _compress(point_dir: Path) -> None:
    """Raw histories are large on full grids; gzip them once analysed."""
    for path in [point_dir / "commits.jsonl", *point_dir.glob("worker-*.jsonl")]:
        if path.exists():
            with open(path, "rb") as src, gzip.open(path.with_name(path.name + ".gz"), "wb", compresslevel=3) as dst:
                shutil.copyfileobj(src, dst)
            path.unlink()


async def run_grid(run: SizingRun, *, settle_s: float, drain_timeout: float, log: Callable[[str], None] = print) -> None:
    t0 = time.monotonic()
    task = asyncio.current_task()
    if task is not None:  # SIGTERM unwinds like Ctrl-C: every finally block stops its processes by pid
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    for n, point in enumerate(run.grid, 1):
        log(f"[{n}/{len(run.grid)}] {point.label}: {run.plan.steps} steps × {run.plan.step_seconds:g} s, "
            f"offered {', '.join(f'{r:g}' for r in run.plan.offered())} msg/s")
        try:
            result = await run_point(point, run.plan, run.handler, run.out_dir / "points" / point.slug,
                                     bound_s=run.bound_s, settle_s=settle_s, drain_timeout=drain_timeout,
                                     dsn=run.dsn)
        except Exception as exc:  # noqa: BLE001 - one broken point is reported, the grid goes on
            result = PointResult(point, [], NO_KNEE, check_budget(point, [], max_connections=None),
                                 error=f"{type(exc).__name__}: {exc}")
            log(f"    error: {result.error}")
        else:
            if result.stopped_early:
                log(f"    load stopped early: {result.stopped_early}")
            log(f"    sustainable {result.knee.rate_text} msg/s ({result.knee.limited_by}), p95 "
                f"{fmt_ms(result.knee.e2e_p95_ms)}, peak conns {result.budget.total_peak}/{result.budget.total_formula}, "
                f"{result.duration_s:.0f} s")
        run.results.append(result)
        run.duration_s = time.monotonic() - t0


async def run_consumers(point: GridPoint, handler: Handler, history_dir: Path, dsn: str | None) -> None:
    """Schema + ``point.processes`` consumer workers until SIGINT or SIGTERM, for running the locustfile by
    hand; on ``dsn`` (its outbox tables are re-created), else on a fresh embedded server."""
    history_dir.mkdir(parents=True, exist_ok=True)
    server = None
    if dsn is None:
        server = provision()
        dsn = await server.create_database("sizing_manual")
    history = HistoryWriter(history_dir / "history-runner.jsonl", "sizing")
    supervisor: Supervisor | None = None
    try:
        supervisor = await start_consumers(dsn, point, handler, history_dir, history)
        print(f"{point.processes} consumer(s) running ({point.label}); budget {point.total_budget} connections.\n"
              f"export OUTBOX_LOCUST_DSN='{dsn}' OUTBOX_LOCUST_HISTORY_DIR='{history_dir.resolve()}'\n"
              "then run locust in another shell; Ctrl-C (or SIGTERM) here stops the consumers (and the embedded "
              "server).", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        if supervisor is not None:
            await supervisor.stop_all(timeout=10)
        history.close()
        if server is not None:
            server.stop()
