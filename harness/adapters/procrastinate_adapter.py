"""Adapter for procrastinate (PyPI ``procrastinate``), a PostgreSQL task queue on psycopg 3.

Public API only:

- schema: ``App.schema_manager.apply_schema_async()`` (what ``procrastinate schema --apply`` runs);
  procrastinate ships no uninstall, so its ``procrastinate_*`` tables, functions and types are dropped first;
- publish: ``configure(connection=..., queue=...).batch_defer_async(...)``, the documented "defer inside my
  transaction" API. It supports psycopg / psycopg2 connections only, and the harness's transaction is on
  asyncpg, so the publishing ``App`` gets a ``PsycopgConnector`` whose ``execute_query_all_async_with_connection``
  runs procrastinate's own defer query on the asyncpg connection (``_psycopg_bridge``): the job INSERT and its
  trigger's ``pg_notify`` commit or roll back with the business row;
- consume: ``App.run_worker_async`` (concurrency = ``max_workers``), stopped by cancelling its task (its
  documented way), with ``shutdown_graceful_timeout = graceful_timeout``;
- retries: a ``BaseRetryStrategy`` (procrastinate's extension point) applying ``RetryConfig``;
- dead workers: procrastinate never requeues a dead worker's ``doing`` jobs by itself (issue #740 is open in
  3.10). Its docs' recipe "Retry stalled jobs" (a periodic task calling ``job_manager.get_stalled_jobs`` and
  ``retry_job``) is registered here, every second, with ``seconds_since_heartbeat = lease_ttl_seconds`` and
  worker heartbeats every ``min(T/3, 1 s)``.

One task, ``harness.deliver``, carries the payload in base64 (job arguments are JSON).
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from harness.adapter import (
    Capabilities,
    ConsumerConfig,
    ConsumerContext,
    DeliveryInfo,
    OutboxState,
    PublishTx,
    RetryConfig,
    Timings,
    read_payloads,
)
from harness.adapters._psycopg_bridge import fetch_dicts, with_app_name
from procrastinate import App, BaseRetryStrategy, JobContext, PsycopgConnector, RetryDecision
from procrastinate.jobs import Job, Status

TASK = "harness.deliver"
SWEEP_TASK = "harness.retry_stalled_jobs"
SWEEP_QUEUE = "harness_maintenance"
SWEEP_TICK_S = 1.0  # the recipe's cron, "* * * * * *" (procrastinate reads a 6th field as seconds)
DEFERRER_MARGIN_S = 0.5  # procrastinate's periodic deferrer oversleeps each tick by this much
LISTEN_CONNECTIONS = 1  # its LISTEN connection is opened beside the pool, not from it


class AsyncpgJoiningConnector(PsycopgConnector):
    """``PsycopgConnector`` that also accepts an asyncpg connection as the external ``connection`` of a defer,
    running procrastinate's own query on it; everything else goes through psycopg as usual."""

    async def execute_query_all_async_with_connection(self, connection: Any, query: Any,
                                                      **arguments: Any) -> list[dict[str, Any]]:
        if isinstance(connection, asyncpg.Connection):
            return await fetch_dicts(connection, query, arguments)
        return await super().execute_query_all_async_with_connection(connection, query, **arguments)


def heartbeat(cfg: ConsumerConfig) -> tuple[float, float]:
    """(seconds without a heartbeat after which a worker's jobs are stalled, heartbeat interval)."""
    stalled = cfg.lease_ttl_seconds
    return stalled, min(stalled / 3, 1.0)


class HarnessRetry(BaseRetryStrategy):
    """``RetryConfig`` as a procrastinate retry strategy (``job.attempts`` = earlier calls of this job)."""

    def __init__(self, retry: RetryConfig, budget: int) -> None:
        self.retry = retry
        self.budget = budget

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        calls = job.attempts + 1
        if calls >= self.budget:
            return None
        delay = self.retry.delay(calls)
        if self.retry.kind == "exponential" and self.retry.jitter_factor:
            delay *= 1.0 + random.uniform(-self.retry.jitter_factor / 2, self.retry.jitter_factor / 2)  # noqa: S311
        return RetryDecision(retry_at=datetime.now(UTC) + timedelta(seconds=max(delay, 0.0)))


async def _drop_procrastinate(dsn: str) -> None:
    """procrastinate has no uninstall: drop what its schema created (tables, then functions and types)."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        like = r"procrastinate\_%"
        for (table,) in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                                         " AND tablename LIKE $1", like):
            await conn.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
        for (fn,) in await conn.fetch("SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n"
                                      " ON n.oid = p.pronamespace WHERE n.nspname = current_schema()"
                                      " AND p.proname LIKE $1", like):
            await conn.execute(f"DROP FUNCTION IF EXISTS {fn} CASCADE")
        for (typ,) in await conn.fetch("SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
                                       " WHERE n.nspname = current_schema() AND t.typname LIKE $1"
                                       " AND t.typtype IN ('e', 'c')", like):  # row types went with their tables
            await conn.execute(f'DROP TYPE IF EXISTS "{typ}" CASCADE')
    finally:
        await conn.close()


class ProcrastinateAdapter:
    name = "procrastinate"
    capabilities = Capabilities(
        dlq=True, max_deliveries=True, retry_schedule=True, lease_ttl=False, lease_times=False,
        settle_outcomes=False, notify=True, graceful_drain=True, metrics=False, connection_budget=True,
        prefetch=False,
        notes=("procrastinate 3.10 (psycopg 3). Transactional defer: configure(connection=...) accepts psycopg "
               "connections only; the harness's transaction is asyncpg, so the adapter's PsycopgConnector runs "
               "procrastinate's own defer query on that asyncpg connection (driver translation only). No lease: "
               "a dead worker's jobs stay 'doing' until something retries them (issue #740 open); the adapter "
               "registers the docs' 'Retry stalled jobs' periodic task (every 1 s; get_stalled_jobs with "
               "seconds_since_heartbeat = lease_ttl_seconds, heartbeats every min(T/3, 1 s); a stalled job on "
               "its last allowed call is finished 'failed' instead, so the cap counts reclaims). A live worker's "
               "jobs are never reclaimed however slow. Retries by a BaseRetryStrategy (retry_at = worker clock "
               "+ delay); attempts counts failures and stalled-job retries, so one budget = min(retry.max_attempts, "
               "max_deliveries). No DLQ table: terminal failures stay as status 'failed' (or 'aborted' for a "
               "job cut off at shutdown on its last call). finish_job is unfenced (UPDATE ... WHERE id and "
               "status in todo/doing): no lease_lost, no per-job outcome callback, no metrics, no DB-clock "
               "lease time. Fetches one job per free slot (no batch). Drain: stop fetching, wait "
               "shutdown_graceful_timeout, then cancel and retry (shutdown aborts are retryable). A lost "
               "LISTEN connection is reopened at once, silently; a failing side task (heartbeat, listener) "
               "stops the worker, and the adapter exits so the supervisor restarts it. Pool: psycopg pool "
               "max_size = max_workers + 1 (docs: concurrency plus one) and one LISTEN connection outside it."),
    )
    dlq_table: str | None = None  # terminal failures stay in procrastinate_jobs (status 'failed')

    def __init__(self) -> None:
        self._publisher: tuple[asyncio.AbstractEventLoop, App] | None = None

    def timings(self, config: ConsumerConfig) -> Timings:
        """Jobs of a worker dead at t come back once its last heartbeat (>= t - h) is older than T, at the
        sweep's next tick: from a lease start, after T - h at the earliest and about h + 1.5 s later at most."""
        stalled, beat = heartbeat(config)
        return Timings(reclaim_seconds=stalled - beat,
                       reclaim_window_seconds=beat + SWEEP_TICK_S + DEFERRER_MARGIN_S + 0.5)

    def connection_budget(self, config: ConsumerConfig) -> int:
        return config.max_workers + 1 + LISTEN_CONNECTIONS

    async def create_schema(self, dsn: str, config: ConsumerConfig) -> None:
        await _drop_procrastinate(dsn)
        app = App(connector=PsycopgConnector(conninfo=dsn, min_size=1, max_size=1))
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    def _publishing_app(self) -> App:
        """An App whose connector never opens a pool: defers run on the caller's connection only."""
        loop = asyncio.get_running_loop()
        if self._publisher is None or self._publisher[0] is not loop:
            app = App(connector=AsyncpgJoiningConnector())
            app.task(name=TASK)(_never_called)
            self._publisher = (loop, app)
        return self._publisher[1]

    async def publish(self, tx: PublishTx, payloads: Sequence[bytes], queue: str) -> None:
        if not payloads:
            return
        deferrer = self._publishing_app().configure_task(TASK, queue=queue, connection=tx.connection)
        await deferrer.batch_defer_async(*({"payload_b64": base64.b64encode(p).decode()} for p in payloads))

    async def consume(self, ctx: ConsumerContext) -> None:
        cfg = ctx.config
        stalled, beat = heartbeat(cfg)
        budget = cfg.call_budget  # attempts is bumped by every retry, stalled-job retries included
        pool_max = cfg.pool_size if cfg.pool_size is not None else cfg.max_workers + 1
        connector = PsycopgConnector(conninfo=with_app_name(ctx.dsn, ctx.application_name), min_size=1,
                                     max_size=max(1, pool_max))
        app = App(connector=connector)

        @app.task(name=TASK, queue=cfg.queue, retry=HarnessRetry(cfg.retry, budget), pass_context=True)
        async def deliver(context: JobContext, payload_b64: str) -> None:
            job = context.job
            await ctx.handler(base64.b64decode(payload_b64),
                              DeliveryInfo(lease_at=None, delivery=job.attempts + 1, key=str(job.id)))

        @app.periodic(cron="* * * * * *", periodic_id="harness")
        @app.task(name=SWEEP_TASK, queue=SWEEP_QUEUE, queueing_lock=SWEEP_TASK)
        async def retry_stalled_jobs(timestamp: int) -> None:
            """The docs' recipe; a job whose killed call was its last allowed one is finished 'failed'."""
            for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled):
                try:
                    if job.task_name == TASK and job.attempts + 1 >= budget:
                        await app.job_manager.finish_job(job, Status.FAILED, delete_job=not cfg.dlq)
                    else:
                        await app.job_manager.retry_job(job)
                except Exception:  # noqa: BLE001 - one job finished meanwhile; the others still need it
                    ctx.log.warning("retrying stalled job %s failed", job.id, exc_info=True)

        async with app.open_async():
            run = asyncio.create_task(app.run_worker_async(
                queues=[cfg.queue, SWEEP_QUEUE], name=ctx.application_name, concurrency=cfg.max_workers,
                fetch_job_polling_interval=cfg.max_fetch_interval, shutdown_graceful_timeout=cfg.graceful_timeout,
                listen_notify=True, delete_jobs="successful" if cfg.dlq else "always",
                install_signal_handlers=False, update_heartbeat_interval=beat, stalled_worker_timeout=stalled,
            ), name="procrastinate-worker")
            await _until_stopped(run, ctx.stopping)

    async def read_state(self, dsn: str) -> OutboxState:
        where = f"FROM procrastinate_jobs WHERE task_name = '{TASK}' AND status"
        return await read_payloads(dsn, f"SELECT args->>'payload_b64' {where} IN ('todo', 'doing')",
                                   f"SELECT args->>'payload_b64' {where} IN ('failed', 'aborted')", decode=_b64)


async def _until_stopped(run: asyncio.Task[None], stopping: asyncio.Event) -> None:
    """Cancelling the worker's task is procrastinate's documented stop (it drains, then aborts). A worker that
    stops by itself (a side task failed) is reported by raising, so the process exits and is restarted."""
    stop = asyncio.create_task(stopping.wait())
    done, _ = await asyncio.wait({run, stop}, return_when=asyncio.FIRST_COMPLETED)
    if run in done:
        stop.cancel()
        run.result()
        raise RuntimeError("procrastinate's worker stopped by itself (see its log above)")
    run.cancel()
    try:
        await run
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


async def _never_called(payload_b64: str) -> None:
    raise RuntimeError("the publishing App does not run jobs")


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


adapter = ProcrastinateAdapter()
