"""Running sizing: one grid point end to end (fresh server, consumers, locust, samples), the grid,
and consumers alone for driving locust by hand. Every process started is stopped by its pid."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from harness import business
from harness.adapters.reference import TABLE
from harness.history import HistoryWriter
from harness.names import HARNESS_APP_LIKE, SAMPLER_APP
from harness.provision.postgres import PostgresServer, provision, server_settings
from harness.sampler import sample_connections
from harness.sizing import clock, cpu, load
from harness.sizing.analysis import HEADROOM, NO_KNEE, PointResult, Recommendation, check_budget, fmt_ms
from harness.sizing.data import MASTER_LOG, analyse_point
from harness.sizing.plan import ADAPTER, IMPL, QUEUE, GridPoint, Handler, LoadPlan, backlog_limit, consumer_config
from harness.supervisor import Supervisor

SAMPLE_EVERY_S = 0.2
CPU_EVERY_S = 0.5
ANCHOR_EVERY_S = 2.0


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
    engine: load.Engine = field(default_factory=load.Engine)  # the locust master and its workers

    @property
    def need(self) -> float:
        """What a recommended point must sustain: the target plus its headroom (0 without a target)."""
        return self.target * (1 + self.headroom) if self.target else 0.0


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


async def _anchor(conn: asyncpg.Connection, history: HistoryWriter) -> clock.Anchor:
    """This host's monotonic clock against the database's (see :mod:`harness.sizing.clock`), recorded."""
    before = time.monotonic()
    db = await conn.fetchval(clock.SQL, timeout=5)
    anchor = clock.Anchor(clock.boot_id(), before, float(db), time.monotonic())
    history.record("info", "clock", **{k: v for k, v in anchor.to_record().items() if k != "k"})
    return anchor


class StepTail:
    """The step switches the locust master has logged so far: (index, offered msg/s)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.steps: list[tuple[int, float]] = []

    def read(self) -> list[tuple[int, float]]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:
            return self.steps
        complete = chunk[: chunk.rfind("\n") + 1]
        self.offset += len(complete.encode())
        for line in complete.splitlines():
            if '"k":"step"' in line:
                rec = json.loads(line)
                self.steps.append((int(rec["step"]), float(rec["offered"])))
        return self.steps


async def _watch_load(group: load.LoadGroup, monitor: asyncpg.Connection, plan: LoadPlan, bound_s: float,
                      floor: float, master_log: Path, anchors: list[clock.Anchor], history: HistoryWriter, *,
                      deadline_s: float) -> str | None:
    """Waits for locust to finish, taking clock anchors; returns why it stopped the load early (None:
    the plan ran out, or the deadline passed).

    The load stops once the backlog has grown for a second while above bound × the rate offered
    now (:func:`~harness.sizing.plan.backlog_limit`): the consumer side is the limit and no later
    step can pass. With ``floor`` (what a recommendation must sustain: the target plus its headroom)
    not before a step offering at least ``floor`` has run to its end (when the plan offers that much
    at all), so the run shows whether the publisher could offer it whatever the consumer did.
    """
    deadline = time.monotonic() + deadline_s
    if floor > max(plan.offered(), default=0.0):  # the plan never offers it (a --steps given): nothing to wait for
        floor = 0.0
    steps = StepTail(master_log)
    over = 0
    before = 0
    anchored = time.monotonic()
    while group.running() and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        if time.monotonic() - anchored >= ANCHOR_EVERY_S:
            anchored = time.monotonic()
            with contextlib.suppress(asyncpg.PostgresError, OSError, asyncio.TimeoutError):
                anchors.append(await _anchor(monitor, history))
        seen = steps.read()
        if not seen or seen[-1][1] <= 0:
            continue
        offered = seen[-1][1]
        limit = backlog_limit(offered, bound_s)
        pending = await _pending(monitor)
        over = over + 1 if pending > limit and pending > before else 0
        before = pending
        floor_done = not floor or any(o >= floor for _, o in seen[:-1])
        if over >= 2 and floor_done:
            history.record("info", "locust", event="stopped_early", pending=pending, limit=limit, step=seen[-1][0])
            return (f"a growing backlog of {pending} rows > {limit:.0f} (bound × {offered:.0f} msg/s offered): the "
                    "consumer side is the limit, later steps cannot pass")
    return None


async def _database_pid(server: PostgresServer, monitor: asyncpg.Connection) -> int | None:
    """The postmaster's pid when PostgreSQL runs on this host (embedded, or DATABASE_URL here)."""
    if server.pid is not None:
        return server.pid
    data_dir = None
    with contextlib.suppress(asyncpg.PostgresError):
        data_dir = await monitor.fetchval("SHOW data_directory")
    return cpu.local_postmaster(int(await monitor.fetchval("SELECT pg_backend_pid()")), data_dir)


async def _sample_cpu(supervisor: Supervisor, database_pid: int | None, sink: list[dict[str, Any]],
                      history: HistoryWriter) -> None:
    database = cpu.TreeMeter(database_pid) if database_pid is not None else None
    while True:
        pids = [slot.proc.pid for slot in supervisor.slots.values() if slot.proc is not None]
        sample = cpu.sample(consumers=pids, database=database)
        sink.append(sample)
        history.record("info", "cpu", **sample)
        await asyncio.sleep(CPU_EVERY_S)


async def run_point(point: GridPoint, plan: LoadPlan, handler: Handler, point_dir: Path, *, bound_s: float,
                    settle_s: float, drain_timeout: float, dsn: str | None = None,
                    engine: load.Engine = load.Engine(), floor: float = 0.0,
                    log: Callable[[str], None] = print) -> PointResult:
    """One grid point end to end, on a fresh database (on ``dsn``'s server, else DATABASE_URL's, else a fresh
    embedded server); every process it starts is stopped by pid before it returns."""
    t_start = time.monotonic()
    point_dir.mkdir(parents=True, exist_ok=True)
    samples: list[dict[str, int]] = []
    cpu_samples: list[dict[str, Any]] = []
    anchors: list[clock.Anchor] = []
    # provision() probes a given server with asyncio.run: in a thread, not on this loop
    server = await asyncio.to_thread(provision, url=dsn)
    supervisor: Supervisor | None = None
    tasks: list[asyncio.Task[None]] = []
    monitor: asyncpg.Connection | None = None
    group: load.LoadGroup | None = None
    stopped_early: str | None = None
    history = HistoryWriter(point_dir / "history-runner.jsonl", "sizing")
    try:
        dsn = await server.create_database(f"sizing_{point.slug.replace('-', '_')}")
        max_connections, reserved, version = await _server_limits(dsn)
        supervisor = await start_consumers(dsn, point, handler, point_dir, history)
        tasks.append(asyncio.create_task(sample_connections(dsn, history, like=HARNESS_APP_LIKE, every=SAMPLE_EVERY_S,
                                                            sink=samples.append)))
        monitor = await asyncpg.connect(dsn, timeout=5, server_settings={"application_name": SAMPLER_APP})
        anchors += [await _anchor(monitor, history) for _ in range(3)]
        tasks.append(asyncio.create_task(_sample_cpu(supervisor, await _database_pid(server, monitor), cpu_samples,
                                                     history)))
        env = {**plan.env(), "OUTBOX_LOCUST_DSN": dsn, "OUTBOX_LOCUST_QUEUE": QUEUE,
               "OUTBOX_LOCUST_HISTORY_DIR": str(point_dir), "OUTBOX_LOCUST_LOG": str(point_dir / MASTER_LOG),
               "OUTBOX_LOCUST_DELIVER_TIMEOUT": str(max(10.0, plan.duration))}
        wait_s = 120.0 if engine.remote_workers else 60.0
        deadline_s = wait_s + plan.duration + 60  # workers connecting, the plan, the master's close
        group = load.start(point_dir, engine, load.environment(env), wait_s=wait_s)
        history.record("info", "locust", event="spawned", master=group.master.pid, port=group.port,
                       workers=[w.pid for w in group.workers], remote_workers=engine.remote_workers)
        if engine.remote_workers:
            log(f"    waiting for {engine.remote_workers} remote worker(s) on port {group.port}: "
                + " ".join(load.remote_worker_command(group.port)))
        stopped_early = await _watch_load(group, monitor, plan, bound_s, floor, point_dir / MASTER_LOG, anchors,
                                          history, deadline_s=deadline_s)
        timed_out = group.running() and stopped_early is None
        await asyncio.to_thread(group.stop)
        history.record("info", "locust", event="exited", code=group.master.returncode, timed_out=timed_out,
                       workers=[w.returncode for w in group.workers])
        drain_until = time.monotonic() + drain_timeout
        while time.monotonic() < drain_until and await _pending(monitor) > 0:
            await asyncio.sleep(0.2)
        anchors.append(await _anchor(monitor, history))
        if timed_out:
            raise RuntimeError(f"locust did not finish within {deadline_s:.0f} s (see {point_dir / 'locust.log'})")
    finally:
        if monitor is not None:
            await monitor.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if group is not None:
            await asyncio.to_thread(group.stop, grace=2.0)
        if supervisor is not None:
            await supervisor.stop_all(timeout=10)
        history.close()
        server.stop()
    if not (point_dir / MASTER_LOG).exists():
        raise RuntimeError(f"locust published nothing (see {point_dir / 'locust.log'})")
    result = analyse_point(point, point_dir, samples, max_connections=max_connections, reserved=reserved,
                           bound_s=bound_s, settle_s=settle_s, cpu_samples=cpu_samples, anchors=anchors,
                           boot=clock.boot_id())
    result.locust["server_version"] = version
    result.stopped_early = stopped_early
    result.duration_s = time.monotonic() - t_start
    _compress(point_dir)
    result.files = {p.name: str(p) for p in sorted(point_dir.iterdir()) if p.is_file()}
    return result


def _compress(point_dir: Path) -> None:
    """Raw histories are large on full grids; gzip them once analysed."""
    for path in [*point_dir.glob("commits*.jsonl"), *point_dir.glob("worker-*.jsonl")]:
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
                                     dsn=run.dsn, engine=run.engine, floor=run.need, log=log)
        except Exception as exc:  # noqa: BLE001 - one broken point is reported, the grid goes on
            result = PointResult(point, [], NO_KNEE, check_budget(point, [], max_connections=None),
                                 error=f"{type(exc).__name__}: {exc}")
            log(f"    error: {result.error}")
        else:
            if result.stopped_early:
                log(f"    load stopped early: {result.stopped_early}")
            log(f"    sustainable {result.knee.rate_text} msg/s ({result.knee.limited_by}), p95 "
                f"{fmt_ms(result.knee.e2e_p95_ms)}, peak conns {result.budget.total_peak}/{result.budget.total_formula}, "
                f"offered up to {result.knee.max_offered:.0f}, published up to {result.knee.max_published:.0f} msg/s, "
                f"{result.duration_s:.0f} s")
            log(f"    limited by {result.knee.limited_by}: {result.knee.evidence}")
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
