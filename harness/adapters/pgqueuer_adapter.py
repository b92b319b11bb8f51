"""Adapter for PgQueuer (PyPI ``pgqueuer``), a Postgres job queue driven by LISTEN/NOTIFY.

Public API only: ``Queries.uninstall()`` / ``install()`` for the schema; ``Queries(AsyncpgDriver(<the
harness's asyncpg connection>)).enqueue(...)`` inside the harness's transaction (the queue table's
trigger NOTIFYs, so the wake-up commits or rolls back with it); a ``QueueManager`` over an asyncpg
pool from ``pgqueuer.adapters.connections.create_asyncpg_pool`` (with ``ConnectionSettings`` carrying
``application_name``), one entrypoint per queue name and ``DatabaseRetryEntrypointExecutor`` for
retries, run by ``pgqueuer.run`` (what ``pgq run`` does) with ``restart_on_failure=True``: a manager
that fails (its database went away) is rebuilt after the library's default 5 s ``restart_delay``.

Mapping and its limits:

- lease: ``heartbeat_timeout = lease_ttl_seconds``. A picked job whose heartbeat (``NOW()``, renewed
  every T/2 while its handler runs) is older than T is re-picked by the dequeue CTE, judged by the
  database clock. The pick sets ``updated = NOW()``, reported as the DB-clock lease start.
- retries: ``DatabaseRetryEntrypointExecutor(max_attempts=retry.max_attempts - 1, initial_delay,
  backoff_multiplier, max_delay)``; its ``max_attempts`` counts retries, not calls, and it has no jitter.
  The delay is applied as ``execute_after = NOW() + delay``.
- dead letters: ``on_failure="hold"`` parks a terminally failed job in the queue table with status
  ``failed`` (no separate table); with ``ConsumerConfig.dlq=False`` it is deleted (``"delete"``).
- no delivery cap: ``attempts`` counts retries only, never re-picks after a crash.
- concurrency: ``max_concurrent_tasks`` caps this worker's picked jobs and must be at least twice the
  dequeue batch, so batch = min(fetch_batch_size, max_workers // 2) (at least 1) and the cap is
  max(max_workers, 2 * batch).
- stop: ``QueueManager.shutdown`` stops dequeuing and the run waits for every in-flight job, with no
  deadline; cancelling one would log it ``canceled`` and delete the row, so the adapter never does.
- completion and heartbeat writes are buffered and not fenced by ``queue_manager_id``; there is no
  per-job outcome callback, so no settle outcomes and no metrics.
"""

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg

from harness.adapter import Capabilities, ConsumerConfig, ConsumerContext, DeliveryInfo, OutboxState, PublishTx, read_payloads
from pgqueuer import AsyncpgDriver, AsyncpgPoolDriver, DatabaseRetryEntrypointExecutor, Job, Queries, QueueManager
from pgqueuer import run as pgqueuer_run
from pgqueuer.adapters.connections import create_asyncpg_pool
from pgqueuer.domain.settings import ConnectionSettings, db_settings

POOL_MAX = 5  # pgqueuer's ConnectionSettings default pool_max_size; one connection stays pinned for LISTEN


def _batch(cfg: ConsumerConfig) -> tuple[int, int]:
    batch = max(1, min(cfg.fetch_batch_size, cfg.max_workers // 2))
    return batch, max(cfg.max_workers, 2 * batch)


def _executor_factory(cfg: ConsumerConfig) -> functools.partial[DatabaseRetryEntrypointExecutor]:
    r = cfg.retry
    retries = 0 if r.kind == "none" else max(0, r.max_attempts - 1)
    multiplier = 1.0 if r.kind == "constant" else r.multiplier
    return functools.partial(
        DatabaseRetryEntrypointExecutor, max_attempts=retries,
        initial_delay=timedelta(seconds=max(r.initial_delay_seconds, 0.001)),
        max_delay=timedelta(seconds=max(r.max_delay_seconds, r.initial_delay_seconds)),
        backoff_multiplier=multiplier,
    )


class PgQueuerAdapter:
    name = "pgqueuer"
    capabilities = Capabilities(
        dlq=True, max_deliveries=False, retry_schedule=True, lease_ttl=True, lease_times=True,
        settle_outcomes=False, notify=True, graceful_drain=False, metrics=False, connection_budget=False,
        notes=("pgqueuer 1.6.0 through QueueManager on an asyncpg pool (max 5, its ConnectionSettings default; "
               "one connection pinned for LISTEN). Lease = heartbeat_timeout (= lease_ttl_seconds) renewed by "
               "heartbeats every T/2 while a handler runs; lease start = the pick's updated = NOW(). No DLQ "
               "table: terminal failures are held in the queue table with status 'failed' (on_failure='hold'). "
               "No delivery cap (attempts counts retries only). Retries by DatabaseRetryEntrypointExecutor "
               "(no jitter; execute_after = NOW() + delay). Stop waits for in-flight jobs with no deadline (no "
               "graceful_timeout knob; a cancelled job is logged 'canceled' and deleted). Completion and "
               "heartbeat writes are buffered and unfenced; no per-job outcome or metrics callback. pgqueuer "
               "documents no per-process connection budget. Concurrency: max_concurrent_tasks >= 2 x batch. "
               "Run by pgqueuer.run(restart_on_failure=True): a QueueManager does not survive its database "
               "going away, the runner rebuilds it after 5 s. A lost LISTEN connection is not re-established "
               "while the manager runs (shutdown_on_listener_failure left at its default, False)."),
    )
    dlq_table: str | None = None  # dead jobs stay in the queue table (status 'failed')

    def connection_budget(self, config: ConsumerConfig) -> int | None:
        return None

    async def create_schema(self, dsn: str, config: ConsumerConfig) -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            queries = Queries(AsyncpgDriver(conn))
            await queries.uninstall()
            await queries.install()
        finally:
            await conn.close()

    async def publish(self, tx: PublishTx, payloads: Sequence[bytes], queue: str) -> None:
        if not payloads:
            return
        n = len(payloads)
        await Queries(AsyncpgDriver(tx.connection)).enqueue([queue] * n, list(payloads), [0] * n)

    async def consume(self, ctx: ConsumerContext) -> None:
        cfg = ctx.config
        batch, cap = _batch(cfg)
        settings = ConnectionSettings(
            application_name=ctx.application_name, pool_min_size=1,
            pool_max_size=max(2, cfg.pool_size if cfg.pool_size is not None else POOL_MAX),
            connect_timeout=cfg.statement_timeout_seconds,
        )

        async def deliver(job: Job) -> None:
            info = DeliveryInfo(lease_at=job.updated, delivery=None, key=str(job.id))
            await ctx.handler(job.payload or b"", info)

        @asynccontextmanager
        async def manager() -> AsyncIterator[QueueManager]:
            """pgqueuer's factory shape: a fresh pool and QueueManager for every (re)start."""
            async with create_asyncpg_pool(dsn=ctx.dsn, settings=settings) as pool:
                qm = QueueManager(Queries(AsyncpgPoolDriver(pool)))
                qm.entrypoint(cfg.queue, on_failure="hold" if cfg.dlq else "delete",
                              executor_factory=_executor_factory(cfg))(deliver)
                yield qm

        # pgqueuer's own runner (what `pgq run` does): shutdown=ctx.stopping stops the current cycle and
        # waits for in-flight jobs; restart_on_failure restarts a manager that failed (e.g. its database
        # went away) after the library's default restart_delay of 5 s.
        await pgqueuer_run(
            manager, dequeue_timeout=timedelta(seconds=cfg.max_fetch_interval), batch_size=batch,
            heartbeat_timeout=timedelta(seconds=cfg.lease_ttl_seconds), max_concurrent_tasks=cap,
            restart_on_failure=True, shutdown=ctx.stopping,
        )

    async def read_state(self, dsn: str) -> OutboxState:
        table = db_settings().qualified.queue_table  # "pgqueuer" unless PGQUEUER_* env vars rename it
        return await read_payloads(dsn, f"SELECT payload FROM {table} WHERE status IN ('queued', 'picked')",
                                   f"SELECT payload FROM {table} WHERE status = 'failed'")


adapter = PgQueuerAdapter()
