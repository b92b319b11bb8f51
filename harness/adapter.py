"""The adapter contract: the only way the harness touches an outbox implementation.

An adapter is a small object (see ``docs/adapters.md``) that can

- create the implementation's schema in an empty database (``create_schema``);
- publish payloads inside a transaction the harness owns (``publish``): the
  harness writes a business row in the same transaction and may roll it back;
- run one consumer until told to stop (``consume``), calling the harness's
  handler for every delivery and, where the implementation can tell, reporting
  what happened afterwards (``ctx.settled``) and its metrics (``ctx.metric``);
- read the implementation's state (``read_state``): payloads still pending and
  payloads dead-lettered.

Capabilities say which guarantees an implementation can be held to; a scenario
that needs a capability the adapter lacks reports "not applicable", never fail.
The reference outbox is plugged in through this contract exactly like any
third-party library (``harness/adapters/reference.py``).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable

import asyncpg
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncTransaction, create_async_engine

from harness.business import TABLE as BUSINESS_TABLE
from harness.messages import one_line
from harness.provision.postgres import asyncpg_url


@dataclass(frozen=True)
class Capabilities:
    """What an implementation can express; each flag unlocks guarantee ids."""

    dlq: bool = False  # terminal failures go to a dead-letter table (R3, R4)
    max_deliveries: bool = False  # caps deliveries including reclaims (R2)
    retry_schedule: bool = False  # honours RetryConfig delays (R1)
    lease_ttl: bool = False  # honours lease_ttl_seconds for reclaim (D4, D5)
    lease_times: bool = False  # DeliveryInfo.lease_at carries the DB-clock lease start
    settle_outcomes: bool = False  # reports acked / lease_lost per delivery (D6)
    notify: bool = False  # LISTEN/NOTIFY wake-up (D7, D8)
    graceful_drain: bool = False  # stop() drains in-flight work within graceful_timeout (L1)
    metrics: bool = False  # reports O1 counters through ctx.metric
    connection_budget: bool = False  # declares a per-process connection budget (L2, L3)
    prefetch: bool = False  # claimed rows may wait in memory before their handler starts (see ctx.claimed)
    notes: str = ""  # shown beside the implementation's verdicts

    def missing(self, *names: str) -> list[str]:
        return [n for n in names if not getattr(self, n)]


@dataclass(frozen=True)
class Timings:
    """How long an implementation may take to recover on its own, as it declares (``Adapter.timings``).

    They bound the waits after which silence is a finding: rows of a dead holder become claimable after
    ``reclaim_seconds`` (a lease TTL, a heartbeat timeout; None without either), and a lost connection is
    retried within ``reconnect_seconds``. Scenarios stretch their drains to cover them."""

    reclaim_seconds: float | None = None
    reclaim_window_seconds: float = 0.0  # how much later still, e.g. the tick of a sweeper that requeues them
    reconnect_seconds: float = 5.0


def declared_timings(adapter: Any, config: ConsumerConfig) -> Timings:
    """``adapter.timings(config)`` when the adapter declares it; else the lease TTL (if it honours one) and a
    5 s reconnect back-off."""
    own = getattr(adapter, "timings", None)
    if callable(own):
        return own(config)
    return Timings(config.lease_ttl_seconds if adapter.capabilities.lease_ttl else None)


@dataclass(frozen=True)
class RetryConfig:
    """Retry policy the harness asks for; adapters map it to their library's own."""

    kind: str = "exponential"  # exponential | constant | none
    initial_delay_seconds: float = 1.0
    multiplier: float = 2.0
    max_delay_seconds: float = 300.0
    max_attempts: int = 10
    jitter_factor: float = 0.2

    def build(self, *, exponential: Callable[..., Any], constant: Callable[..., Any], none: Callable[[], Any]) -> Any:
        """The library's own strategy object, for libraries whose retry classes take faststream-outbox's
        keyword names (the reference outbox and faststream-outbox do)."""
        if self.kind == "none":
            return none()
        if self.kind == "constant":
            return constant(delay_seconds=self.initial_delay_seconds, max_attempts=self.max_attempts)
        return exponential(initial_delay_seconds=self.initial_delay_seconds, multiplier=self.multiplier,
                           max_delay_seconds=self.max_delay_seconds, max_attempts=self.max_attempts,
                           jitter_factor=self.jitter_factor)

    @property
    def calls(self) -> int:
        """Handler calls the policy allows in all, the first one included (1 when it never retries)."""
        return 1 if self.kind == "none" else max(1, self.max_attempts)

    def delay(self, attempt: int) -> float:
        """Nominal delay (no jitter) before the retry that follows failure number ``attempt`` (1-based)."""
        if self.kind == "none":
            return 0.0
        if self.kind == "constant":
            return self.initial_delay_seconds
        return min(self.max_delay_seconds, self.initial_delay_seconds * self.multiplier ** (attempt - 1))


@dataclass(frozen=True)
class ConsumerConfig:
    """Knobs of one consumer process. Adapters map what their library can express."""

    queue: str = "harness"
    max_workers: int = 4
    fetch_batch_size: int = 50
    lease_ttl_seconds: float = 3.0
    max_deliveries: int | None = None
    retry: RetryConfig = field(default_factory=RetryConfig)
    dlq: bool = True
    graceful_timeout: float = 5.0
    min_fetch_interval: float = 0.05
    max_fetch_interval: float = 1.0
    pool_size: int | None = None  # None: exactly the adapter's pool budget
    statement_timeout_seconds: float = 5.0

    @property
    def call_budget(self) -> int:
        """Handler calls a message gets before it is terminal: the retry policy's, capped by ``max_deliveries``. For
        libraries with one attempts counter for failures and reclaims alike."""
        return min(self.retry.calls, self.max_deliveries) if self.max_deliveries is not None else self.retry.calls

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["retry"] = {f.name: getattr(self.retry, f.name) for f in fields(self.retry)}
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ConsumerConfig:
        raw = dict(raw)
        raw["retry"] = RetryConfig(**raw.get("retry", {}))
        return cls(**raw)


class DeliveryInfo(NamedTuple):
    """What an adapter knows about one delivery, passed to the harness handler. A named tuple: adapters
    build one or two per delivery, and a frozen dataclass costs twice as much, which a throughput run
    would charge to the implementation."""

    lease_at: datetime | None = None  # lease start by the database clock
    delivery: int | None = None  # how many times this row was claimed, this one included
    key: str | None = None  # adapter's own row id, for logs


Handler = Callable[[bytes, DeliveryInfo], Awaitable[None]]


class ConsumerContext:
    """Everything ``Adapter.consume`` needs, built by the worker process."""

    def __init__(
        self,
        *,
        dsn: str,
        config: ConsumerConfig,
        application_name: str,
        handler: Handler,
        stopping: asyncio.Event,
        settled: Callable[..., None],
        metric: Callable[[str, float, dict[str, str]], None],
        claimed: Callable[..., None] = lambda payloads, lease_at=None: None,
        records_settles: bool = True,
    ) -> None:
        self.dsn = dsn  # plain postgresql:// DSN through the harness's proxy
        self.config = config
        self.application_name = application_name  # set it on every connection (L2 sampling)
        self.handler = handler
        self.stopping = stopping
        # settled(payload, outcome, info=None): what the implementation did after the handler:
        # acked | retry | dead_lettered | dropped | released, or lease_lost | error. Pass the
        # DeliveryInfo of the call when known, so two calls of one message can be told apart.
        self.settled = settled
        # False when nothing is recorded of settlements (the benchmark's no-op handler): an adapter may skip
        # building what it would pass to settled, work a throughput run would otherwise charge to the library.
        self.records_settles = records_settles
        self.metric = metric  # metric(name, value, labels)
        # claimed(payloads, lease_at=None): call right after a claim statement returns, with the rows it leased
        # (and the lease start by the database clock when known). Optional; it lets the harness judge leases by
        # their claims rather than by handler starts, which an implementation that prefetches delays.
        self.claimed = claimed
        self.log = logging.getLogger("harness.adapter")


@dataclass(frozen=True)
class OutboxState:
    pending: list[bytes]  # payloads still in the outbox (leased or not)
    dead: list[bytes]  # payloads in the dead-letter table, one entry per row


async def recreate_tables(dsn: str, metadata: MetaData) -> None:
    """``create_schema`` for adapters whose library describes its tables as SQLAlchemy metadata."""
    engine = create_async_engine(asyncpg_url(dsn))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
            await conn.run_sync(metadata.create_all)
    finally:
        await engine.dispose()


async def read_payloads(dsn: str, pending_sql: str, dead_sql: str | None = None,
                        decode: Callable[[Any], bytes] = bytes) -> OutboxState:
    """``read_state`` for most adapters: two queries whose first column is the payload."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        pending = [decode(r[0]) for r in await conn.fetch(pending_sql)]
        dead = [decode(r[0]) for r in await conn.fetch(dead_sql)] if dead_sql else []
    finally:
        await conn.close()
    return OutboxState(pending=pending, dead=dead)


@dataclass
class PublishTx:
    """One open transaction owned by the harness; both views share it.

    The transaction has begun on the server before the adapter sees it (:meth:`begin`), so an adapter may
    write on the raw asyncpg connection at once: nothing it sends autocommits. It must never commit or roll
    back."""

    sa_connection: AsyncConnection
    connection: asyncpg.Connection

    @classmethod
    async def begin(cls, conn: AsyncConnection) -> tuple[AsyncTransaction, PublishTx]:
        """Begins a transaction on ``conn`` and makes BEGIN reach the server (SQLAlchemy sends it lazily, and a
        statement on the raw connection before it would autocommit)."""
        tx = await conn.begin()
        raw = (await conn.get_raw_connection()).driver_connection
        if not raw.is_in_transaction():
            await conn.exec_driver_sql("SELECT 1")
        return tx, cls(conn, raw)


@dataclass(frozen=True)
class TxOutcome:
    """What an implementation's own publisher says of one transaction it ran (:class:`TxPublisher`)."""

    ok: bool  # it did what was asked: committed, or rolled back on request
    definite: bool = True  # False: COMMIT was sent and its outcome is unknown (resolved by the business rows)
    error: str | None = None


class TxPublisher(Protocol):
    """A publisher in the implementation's own language, for libraries that cannot join the harness's transaction.

    The harness still decides every transaction (which messages, commit or roll back: P1); the publisher runs it on
    its own connection: business rows for ``mids`` in ``business`` (none when ``None``), the messages through the
    library's transactional insert, then COMMIT or ROLLBACK. Returned by the optional ``Adapter.publisher(dsn,
    config)``; the generator uses it instead of ``Adapter.publish`` when the adapter has one."""

    async def publish_tx(self, mids: Sequence[str], payloads: Sequence[bytes], rollback: bool, *, queue: str,
                         business: str | None = BUSINESS_TABLE) -> TxOutcome: ...

    async def close(self) -> None: ...


@runtime_checkable
class Adapter(Protocol):
    name: str
    capabilities: Capabilities
    dlq_table: str | None  # for the DLQ drift nemesis; None without a DLQ

    def connection_budget(self, config: ConsumerConfig) -> int | None:
        """Most backends one consumer process may hold (L2), or None if undeclared."""

    async def create_schema(self, dsn: str, config: ConsumerConfig) -> None:
        """Create (drop first if present) everything the implementation needs."""

    async def publish(self, tx: PublishTx, payloads: Sequence[bytes], queue: str) -> None:
        """Publish inside ``tx``; must not commit or roll back."""

    async def consume(self, ctx: ConsumerContext) -> None:
        """Deliver until ``ctx.stopping`` is set, then drain and return."""

    async def read_state(self, dsn: str) -> OutboxState:
        """Payloads pending in the outbox and payloads dead-lettered."""


ALIASES = {
    "reference": "harness.adapters.reference:adapter",
    "faststream-outbox": "harness.adapters.faststream_outbox:adapter",
    "pgqueuer": "harness.adapters.pgqueuer_adapter:adapter",
    "soniq": "harness.adapters.soniq_adapter:adapter",
    "eventsource-py": "harness.adapters.eventsource_adapter:adapter",
    "procrastinate": "harness.adapters.procrastinate_adapter:adapter",
    "chancy": "harness.adapters.chancy_adapter:adapter",
    "river": "harness.adapters.river_adapter:adapter",
    "pg-boss": "harness.adapters.pgboss_adapter:adapter",
    "graphile-worker": "harness.adapters.graphile_worker_adapter:adapter",
}


class AdapterLoadError(RuntimeError):
    """An ``--impl`` spec that gives no adapter; the message names --impl, the spec and the fix, on one line."""


ADAPTER_MEMBERS = ("name", "capabilities", "dlq_table", "connection_budget", "create_schema", "publish", "consume",
                   "read_state")


def alias_help() -> str:
    return ", ".join(ALIASES)


def unavailable(adapter: Adapter) -> str | None:
    """Why an adapter that loaded still cannot run here (a program whose toolchain is missing), or None. An
    optional member of the contract: ``adapter.unavailable()``."""
    check = getattr(adapter, "unavailable", None)
    return check() if callable(check) else None


def load_adapter(spec: str) -> Adapter:
    """Loads ``alias`` or ``package.module:attribute`` (an adapter, or a zero-argument factory).

    Whatever goes wrong (the import raises anything, the attribute is missing or is neither an adapter nor
    a factory, the factory raises) is one :class:`AdapterLoadError`, so a bad spec is a usage error, never
    a traceback from inside a scenario."""
    target = ALIASES.get(spec, spec)
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise AdapterLoadError(f"--impl {spec!r}: neither a known alias ({alias_help()}) nor "
                               "package.module:attribute; pass an alias or the path of your adapter, "
                               "e.g. --impl mypkg.outbox_adapter:adapter")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AdapterLoadError(f"--impl {spec!r}: cannot import {module_name!r} ({one_line(exc)}); fix the module "
                               "path or PYTHONPATH, and for the peer adapters pip install '.[peers]'") from exc
    except Exception as exc:
        raise AdapterLoadError(f"--impl {spec!r}: importing {module_name!r} raised {one_line(exc)}; fix that "
                               f"module (python -c 'import {module_name}' shows the traceback)") from exc
    try:
        obj = getattr(module, attr)
    except AttributeError as exc:
        raise AdapterLoadError(f"--impl {spec!r}: module {module_name!r} has no attribute {attr!r}; "
                               "point --impl at the adapter object or its factory") from exc
    if isinstance(obj, Adapter):
        return obj
    if not callable(obj):
        raise AdapterLoadError(f"--impl {spec!r}: {module_name}.{attr} is a {type(obj).__name__}, neither an "
                               "adapter nor a zero-argument factory; point --impl at one of those")
    try:
        adapter = obj()
    except Exception as exc:
        raise AdapterLoadError(f"--impl {spec!r}: calling {module_name}.{attr}() raised {one_line(exc)}; "
                               "make it a zero-argument factory that returns an adapter") from exc
    if not isinstance(adapter, Adapter):
        missing = [m for m in ADAPTER_MEMBERS if not hasattr(adapter, m)]
        raise AdapterLoadError(f"--impl {spec!r}: {type(adapter).__name__} lacks adapter members {missing}; "
                               "add them (docs/adapters.md is the contract)")
    return adapter
