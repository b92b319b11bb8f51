"""Adapter for Soniq (PyPI ``soniq``), a Postgres job queue with transactional enqueue.

Public API only: ``Soniq.setup()`` applies the library's own migrations, ``Soniq.enqueue(...,
connection=<the harness's SQLAlchemy AsyncConnection>)`` joins the harness's transaction (the job INSERT and its
``pg_notify`` commit or roll back with the business row), and ``Soniq.run_worker(...,
shutdown_event=ctx.stopping)`` is the consumer. The handler is one registered job whose argument is
the payload (base64, because job arguments are JSON). Retries use Soniq's ``RetryPolicy`` extension
point; per-job outcomes come from its ``MetricsSink``.

What Soniq cannot express is declared, not emulated:

- no lease TTL: a claimed job is ``processing`` until its worker's heartbeat is older than
  ``heartbeat_timeout`` (at least 60 s by settings validation) and a leader's cleanup tick (at least
  every 10 s) requeues it; so D4/D5 cannot be held to ``lease_ttl_seconds``;
- no DB-clock lease times on the claimed record (the SELECT happens before the UPDATE);
- completion writes are not fenced (``UPDATE ... WHERE id = $1``): a stale worker cannot be told
  apart, so there is no ``lease_lost``;
- one attempt budget (``max_attempts = retries + 1``) that also counts crash reclaims, because
  ``attempts`` is bumped at claim time; the adapter sets it to
  ``min(retry.max_attempts, max_deliveries)``.

No ``from __future__ import annotations`` here: Soniq injects ``JobContext`` by comparing the
parameter's annotation with the class itself.
"""

import asyncio
import base64
import json
import random
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
from soniq import JobContext, Soniq
from soniq.backends.postgres import PostgresBackend

JOB = "harness.deliver"
HEADROOM = 2  # Soniq's default SONIQ_POOL_HEADROOM: listener + heartbeat writer
HEARTBEAT_TIMEOUT_S = 60.0  # the smallest heartbeat_timeout its settings accept
HEARTBEAT_INTERVAL_S = 5.0  # its default heartbeat_interval
CLEANUP_INTERVAL_S = 10.0  # the smallest cleanup_interval
DEAD_TABLE = "soniq_dead_letter_jobs"


def with_app_name(dsn: str, application_name: str) -> str:
    """asyncpg turns unknown DSN query keys into server settings, so the whole pool carries the name."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    query["application_name"] = application_name
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


class HarnessRetry:
    """Soniq ``RetryPolicy``: the harness's RetryConfig, delays applied by Soniq as ``NOW() + delay``."""

    def __init__(self, retry: RetryConfig) -> None:
        self.retry = retry

    def delay_for(self, *, attempt: int, job_meta: dict[str, Any], exc: BaseException) -> float | None:
        r = self.retry
        if r.kind == "none":
            return None  # Soniq dead-letters at once ("permanent_failure")
        delay = r.delay(attempt)
        if r.kind == "exponential" and r.jitter_factor:
            delay *= 1.0 + random.uniform(-r.jitter_factor / 2, r.jitter_factor / 2)  # noqa: S311
        return max(delay, 0.0)


class _Sink:
    """Soniq ``MetricsSink``: per-job start/end, forwarded as settle outcomes and counters."""

    _SETTLE = {"done": "acked", "failed": "retry", "dead_letter": "dead_lettered"}
    _COUNTER = {"done": "acked", "failed": "nacked_retry", "dead_letter": "nacked_terminal"}

    def __init__(self, ctx: ConsumerContext, calls: dict[str, tuple[bytes, DeliveryInfo]]) -> None:
        self.ctx = ctx
        self.calls = calls

    async def record_job_start(self, *, job_id: str, job_name: str, queue: str, attempt: int) -> None:
        self._metric("fetched", queue)

    async def record_job_end(self, *, job_id: str, job_name: str, queue: str, status: str, duration_s: float,
                             error: str | None = None) -> None:
        try:
            call = self.calls.pop(job_id, None)
            if status in self._COUNTER:
                self._metric(self._COUNTER[status], queue)
            if call is not None and status in self._SETTLE:
                self.ctx.settled(call[0], self._SETTLE[status], call[1])
        except Exception:  # noqa: BLE001 - a raising sink would mark the job failed
            self.ctx.log.debug("soniq sink failed", exc_info=True)

    def emit(self, name: str, tags: dict[str, Any]) -> None:
        if name == "shutdown_nack":  # a job cut off at shutdown_timeout and put back to queued
            self._metric("drain_timeout", "")

    def _metric(self, name: str, queue: str) -> None:
        try:
            self.ctx.metric(name, 1.0, {"queue": queue})
        except Exception:  # noqa: BLE001
            self.ctx.log.debug("soniq metric failed", exc_info=True)


def _register(app: Soniq, handler: Any, cfg: ConsumerConfig) -> None:
    app.job(name=JOB, retries=cfg.call_budget - 1, queue=cfg.queue)(handler)


class SoniqAdapter:
    name = "soniq"

    def timings(self, config: ConsumerConfig) -> Timings:
        """A crashed worker's jobs are requeued once its last heartbeat is heartbeat_timeout old, by the next
        cleanup tick. The last heartbeat may precede a claim by up to heartbeat_interval, so a job comes back
        between heartbeat_timeout - heartbeat_interval and heartbeat_timeout + cleanup_interval after its claim.
        Scenarios that need reclaims stretch to these (the smallest the settings accept, as set below)."""
        return Timings(reclaim_seconds=HEARTBEAT_TIMEOUT_S - HEARTBEAT_INTERVAL_S,
                       reclaim_window_seconds=HEARTBEAT_INTERVAL_S + CLEANUP_INTERVAL_S)

    capabilities = Capabilities(
        dlq=True, max_deliveries=True, retry_schedule=True, lease_ttl=False, lease_times=False,
        settle_outcomes=False, notify=True, graceful_drain=True, metrics=False, connection_budget=True,
        notes=("soniq 0.1.0 through Soniq.enqueue(connection=...) and Soniq.run_worker: no lease TTL (a "
               "crashed worker's jobs are requeued after heartbeat_timeout >= 60 s by a cleanup tick >= 10 s); "
               "no DB-clock lease times; completion writes are unfenced, so no lease_lost (settles for "
               "acked/retry/dead_lettered come from its MetricsSink and are recorded, but D6 cannot be held); "
               "MetricsSink has no batch fetch count, no lease_lost and no nacked_terminal vs dlq_written split "
               "(R4 not observable); one attempt budget counts crash reclaims too, set to "
               "min(retry.max_attempts, max_deliveries); retry delays through a custom RetryPolicy "
               "(scheduled_at = NOW() + delay); drain: shutdown_timeout, then cancel and nack back to queued; "
               "a lost LISTEN connection is not re-established (polling at poll_interval). max_attempts is "
               "stamped at enqueue from the job registration, so the publisher registers the job with the "
               "scenario's config (seen at create_schema). Seen in runs: a job whose outcome write fails while "
               "the database is unreachable stays 'processing' while its worker lives, and the stale sweep only "
               "requeues jobs of workers still marked 'active', so after a graceful stop it is never requeued."),
    )
    dlq_table: str | None = DEAD_TABLE

    def __init__(self) -> None:
        self._publisher_app: tuple[asyncio.AbstractEventLoop, int, Soniq] | None = None
        # Soniq stamps max_attempts on the row at enqueue time from the job's registration, so the
        # producer must register the job as the consumers do: the scenario's config, seen at create_schema.
        self._config = ConsumerConfig()

    def connection_budget(self, config: ConsumerConfig) -> int:
        # documented: SONIQ_POOL_MAX_SIZE >= concurrency + SONIQ_POOL_HEADROOM, one pool per worker process
        return config.max_workers + HEADROOM

    async def create_schema(self, dsn: str, config: ConsumerConfig) -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:  # Soniq ships no uninstall: drop what its migrations created, then let setup() recreate it
            names = [r[0] for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE 'soniq%'")]
            for table in names:
                await conn.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
        finally:
            await conn.close()
        self._config = config
        app = Soniq(database_url=dsn, pool_min_size=1, pool_max_size=2)
        try:
            await app.setup()
        finally:
            await app.close()

    def _publisher(self, tx: PublishTx) -> Soniq:
        """A Soniq whose backend is PostgresBackend (transactional enqueue needs it) with a pool that never
        opens a connection: enqueue(connection=...) runs on the caller's connection only."""
        loop = asyncio.get_running_loop()
        budget = self._config.call_budget
        if self._publisher_app is not None and self._publisher_app[:2] == (loop, budget):
            return self._publisher_app[2]
        url = tx.sa_connection.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        app = Soniq(backend=PostgresBackend(url, pool_min_size=0, pool_max_size=1))
        _register(app, _never_called, self._config)
        self._publisher_app = (loop, budget, app)
        return app

    async def publish(self, tx: PublishTx, payloads: Sequence[bytes], queue: str) -> None:
        app = self._publisher(tx)
        for payload in payloads:
            # Soniq's SQLAlchemy integration: it enqueues on the caller's connection and transaction
            await app.enqueue(JOB, args={"payload_b64": base64.b64encode(payload).decode()}, queue=queue,
                              connection=tx.sa_connection)

    async def consume(self, ctx: ConsumerContext) -> None:
        cfg = ctx.config
        calls: dict[str, tuple[bytes, DeliveryInfo]] = {}
        pool_max = cfg.pool_size if cfg.pool_size is not None else cfg.max_workers + HEADROOM
        app = Soniq(
            database_url=with_app_name(ctx.dsn, ctx.application_name),
            retry_policy=HarnessRetry(cfg.retry), metrics_sink=_Sink(ctx, calls),
            concurrency=cfg.max_workers,
            poll_interval=min(60.0, max(0.1, cfg.max_fetch_interval)),
            shutdown_timeout=max(0.1, cfg.graceful_timeout),
            pool_min_size=1, pool_max_size=max(1, pool_max), pool_headroom=HEADROOM,
            heartbeat_timeout=HEARTBEAT_TIMEOUT_S, cleanup_interval=CLEANUP_INTERVAL_S,  # the smallest accepted
            heartbeat_interval=HEARTBEAT_INTERVAL_S,
            job_timeout=None,
        )

        async def deliver(payload_b64: str, job: JobContext) -> None:
            payload = base64.b64decode(payload_b64)
            info = DeliveryInfo(lease_at=None, delivery=job.attempt, key=job.job_id)
            calls[job.job_id] = (payload, info)
            await ctx.handler(payload, info)

        _register(app, deliver, cfg)
        try:
            await app.run_worker(concurrency=cfg.max_workers, queues=[cfg.queue], shutdown_event=ctx.stopping)
        finally:
            await app.close()

    async def read_state(self, dsn: str) -> OutboxState:
        return await read_payloads(dsn, "SELECT args FROM soniq_jobs WHERE status IN ('queued', 'processing')",
                                   f"SELECT args FROM {DEAD_TABLE}", decode=_payload)


async def _never_called(payload_b64: str, job: JobContext) -> None:
    raise RuntimeError("the publishing Soniq instance does not run jobs")


def _payload(args: Any) -> bytes:
    data = json.loads(args) if isinstance(args, str) else args
    return base64.b64decode(data["payload_b64"])


adapter = SoniqAdapter()
