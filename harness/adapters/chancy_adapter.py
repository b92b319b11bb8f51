"""Adapter for Chancy (PyPI ``chancy``), a PostgreSQL job queue on psycopg 3 with claim-fenced updates.

Public API only:

- schema: ``Chancy.migrate(to_version=0)`` then ``migrate()``: its own migrations, down and up, plugins
  included. The ``default`` queue that every ``Worker.start`` declares is declared first with no tags
  (Chancy: "an empty set leaves the queue unassigned"), or each worker would start a process-pool executor;
- publish: ``Chancy.push_many_ex(cursor, jobs)``, its documented way to push "only if some other operation is
  successful". It takes a psycopg cursor and the harness's transaction is on asyncpg, so the cursor is
  ``_psycopg_bridge.AsyncpgCursor``: the job INSERTs and the ``queue.pushed`` ``pg_notify`` Chancy builds run
  in the harness's transaction;
- consume: a ``Worker`` (its heartbeat, notifications listener, batched and claim-fenced updates) over a queue
  declared with the ``AsyncExecutor`` (``concurrency = max_workers``), and Chancy's default plugins with
  ``Leadership`` and ``Recovery`` tuned to the lease; ``Worker.stop()`` drains within ``shutdown_timeout``;
- retries: Chancy's own ``RetryPlugin``, driven by ``retry_settings`` in each job's meta (set when pushed);
- outcomes: a plugin's ``on_job_updated`` (called only for updates whose claim still matched, after commit).

The job function is this module's ``deliver``: Chancy imports jobs by name, so it finds the consumer's
context in a module global (one consumer per process). No ``from __future__ import annotations``: Chancy
injects the ``QueuedJob`` by testing the parameter's annotation with ``issubclass``.
"""

import asyncio
import base64
import logging
import math
from collections.abc import Sequence
from typing import Any

from harness.adapter import (
    Capabilities,
    ConsumerConfig,
    ConsumerContext,
    DeliveryInfo,
    OutboxState,
    PublishTx,
    Timings,
    read_payloads,
)
from harness.adapters._psycopg_bridge import AsyncpgCursor, with_app_name

from chancy import Chancy, Job, Queue, QueuedJob, Worker
from chancy.plugin import Plugin
from chancy.plugins.leadership import Leadership
from chancy.plugins.recovery import Recovery
from chancy.plugins.retry import RetryPlugin

FUNC = f"{__name__}.deliver"
POOL_MAX = 10  # Chancy's default max_connection_pool_size
LISTEN_CONNECTIONS = 1  # the notifications listener connects outside the pool
LOG = logging.getLogger("chancy")  # passed in, so Chancy does not install its own (rich) console handler


class _Active:
    """The consumer running in this process, for ``deliver`` and the outcome plugin."""

    ctx: ConsumerContext | None = None
    calls: dict[tuple[Any, Any], tuple[bytes, DeliveryInfo]] = {}


def liveness(cfg: ConsumerConfig) -> tuple[float, float]:
    """(heartbeat timeout = lease TTL, heartbeat / leadership / recovery interval)."""
    return cfg.lease_ttl_seconds, min(cfg.lease_ttl_seconds / 3, 1.0)


def polling_interval(cfg: ConsumerConfig) -> int:
    """Chancy stores a queue's polling interval as whole seconds."""
    return max(1, math.ceil(cfg.max_fetch_interval))


def retry_settings(cfg: ConsumerConfig) -> dict[str, Any]:
    """RetryPlugin's meta: delay = backoff * backoff_factor ** (failures - 1), capped, plus uniform jitter."""
    r = cfg.retry
    return {"backoff": r.initial_delay_seconds, "backoff_factor": 1.0 if r.kind == "constant" else r.multiplier,
            "backoff_limit": r.max_delay_seconds, "backoff_jitter": [0, 0]}


class Outcomes(Plugin):
    """Reports each accepted (claim-matched, committed) update of a harness job as its settle outcome."""

    _SETTLE = {QueuedJob.State.SUCCEEDED: "acked", QueuedJob.State.RETRYING: "retry",
               QueuedJob.State.FAILED: "dead_lettered"}

    @staticmethod
    def get_identifier() -> str:
        return "harness.outcomes"

    async def on_job_updated(self, *, worker: Worker, job: QueuedJob) -> None:
        call = _Active.calls.pop((job.id, job.claim_id), None)
        outcome = self._SETTLE.get(job.state)
        if call is not None and outcome is not None and _Active.ctx is not None:
            _Active.ctx.settled(call[0], outcome, call[1])


def plugins(cfg: ConsumerConfig) -> list[Plugin]:
    """Default plugins stay (Chancy adds Pruner, Metrics, Workflow); these are tuned or added."""
    _, beat = liveness(cfg)
    return [Leadership(poll_interval=beat, timeout=cfg.lease_ttl_seconds), Recovery(poll_interval=beat),
            RetryPlugin(), Outcomes()]


def queue(cfg: ConsumerConfig) -> Queue:
    return Queue(name=cfg.queue, concurrency=cfg.max_workers, executor=Chancy.Executor.Async,
                 polling_interval=polling_interval(cfg), eager_polling=True)


async def deliver(payload_b64: str, *, job: QueuedJob) -> None:
    """The job function. ``started_at`` is set by ``NOW()`` in Chancy's claiming UPDATE."""
    ctx = _Active.ctx
    if ctx is None:
        raise RuntimeError("no harness consumer runs in this process")
    payload = base64.b64decode(payload_b64)
    info = DeliveryInfo(lease_at=job.started_at, delivery=None, key=str(job.id))
    _Active.calls[(job.id, job.claim_id)] = (payload, info)
    await ctx.handler(payload, info)


class ChancyAdapter:
    name = "chancy"
    capabilities = Capabilities(
        dlq=True, max_deliveries=False, retry_schedule=True, lease_ttl=False, lease_times=True,
        settle_outcomes=False, notify=True, graceful_drain=True, metrics=False, connection_budget=True,
        prefetch=False,
        notes=("chancy 0.26 (psycopg 3). Transactional push: push_many_ex(cursor, ...) takes a psycopg cursor; "
               "the harness's transaction is asyncpg, so the adapter passes a cursor that runs Chancy's own "
               "INSERT and pg_notify on that connection (driver translation only). No lease TTL: a worker's "
               "running jobs are reclaimed only when its heartbeat (every min(T/3, 1 s)) is older than "
               "heartbeat_timeout = lease_ttl_seconds, by the leader's Recovery plugin (every min(T/3, 1 s); "
               "a dead leader is replaced after Leadership timeout = T). Lease start = started_at, set by NOW() "
               "in the claiming UPDATE. Updates are batched (flushed every 1 s) and fenced by claim_id: a stale "
               "completion is discarded, but silently (no lease_lost callback), so outcomes are recorded from "
               "on_job_updated without the settle capability. No delivery cap: Recovery adds one to "
               "max_attempts per reclaim, so max_attempts = min(retry.max_attempts, max_deliveries) caps only "
               "calls that end. Retries by Chancy's RetryPlugin from job meta set at push (no jitter; the "
               "publisher takes the config seen at create_schema); terminal failures stay as state 'failed' "
               "(no DLQ table). Polling interval is whole seconds (>= 1); no batch size (fetches free slots); "
               "no metrics reach the harness (its Metrics plugin keeps its own). Drain: stop fetching, "
               "shutdown_timeout = graceful_timeout, then cancel; a cut-off job's update is ignored and it is "
               "recovered after the heartbeat timeout. Pool: Chancy's default max_connection_pool_size (10) "
               "plus its LISTEN connection."),
    )
    dlq_table: str | None = None  # terminal failures stay in chancy_jobs (state 'failed')

    def __init__(self) -> None:
        self._config = ConsumerConfig()  # the scenario's, seen at create_schema: jobs carry their retry policy
        self._publisher = Chancy("postgresql://", plugins=plugins(self._config), log=LOG)

    def timings(self, config: ConsumerConfig) -> Timings:
        """From a lease start, a dead worker's job comes back after T - h at the earliest (its last heartbeat
        may precede the claim by h) and at most h + one Recovery or Leadership tick later, plus the whole-second
        polling rounding."""
        timeout, beat = liveness(config)
        rounding = polling_interval(config) - config.max_fetch_interval
        return Timings(reclaim_seconds=timeout - beat, reclaim_window_seconds=2 * beat + rounding + 0.5)

    def connection_budget(self, config: ConsumerConfig) -> int:
        return POOL_MAX + LISTEN_CONNECTIONS

    async def create_schema(self, dsn: str, config: ConsumerConfig) -> None:
        self._config = config
        self._publisher = Chancy("postgresql://", plugins=plugins(config), log=LOG)
        async with Chancy(dsn, plugins=plugins(config), log=LOG, max_connection_pool_size=2) as chancy:
            await chancy.migrate(to_version=0)
            await chancy.migrate()
            await chancy.declare(Queue(name="default", tags=set()), upsert=True)
            await chancy.declare(queue(config), upsert=True)

    async def publish(self, tx: PublishTx, payloads: Sequence[bytes], queue_name: str) -> None:
        if not payloads:
            return
        # max_attempts: handler calls that end (success or failure); recovery adds one per reclaim
        budget, meta = self._config.call_budget, {"retry_settings": retry_settings(self._config)}
        jobs = [Job(func=FUNC, queue=queue_name, kwargs={"payload_b64": base64.b64encode(p).decode()},
                    max_attempts=budget, meta=meta) for p in payloads]
        await self._publisher.push_many_ex(AsyncpgCursor(tx.connection), jobs)

    async def consume(self, ctx: ConsumerContext) -> None:
        cfg = ctx.config
        timeout, beat = liveness(cfg)
        pool = cfg.pool_size if cfg.pool_size is not None else POOL_MAX
        _Active.ctx, _Active.calls = ctx, {}
        async with Chancy(with_app_name(ctx.dsn, ctx.application_name), plugins=plugins(cfg), log=LOG,
                          min_connection_pool_size=1, max_connection_pool_size=max(1, pool)) as chancy:
            await chancy.declare(queue(cfg), upsert=True)
            worker = Worker(chancy, register_signal_handlers=False, heartbeat_poll_interval=beat,
                            heartbeat_timeout=timeout, shutdown_timeout=cfg.graceful_timeout)
            await worker.start()
            life = asyncio.create_task(worker.wait_for_shutdown(), name="chancy-worker")
            stop = asyncio.create_task(ctx.stopping.wait())
            done, _ = await asyncio.wait({life, stop}, return_when=asyncio.FIRST_COMPLETED)
            if life in done:
                stop.cancel()
                await worker.stop()
                life.result()
                raise RuntimeError("chancy's worker stopped by itself (see its log above)")
            await worker.stop()
            await life

    async def read_state(self, dsn: str) -> OutboxState:
        where = f"FROM chancy_jobs WHERE func = '{FUNC}' AND state"
        return await read_payloads(dsn, f"SELECT kwargs->>'payload_b64' {where} IN ('pending', 'running', 'retrying')",
                                   f"SELECT kwargs->>'payload_b64' {where} = 'failed'", decode=_b64)


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


adapter = ChancyAdapter()
