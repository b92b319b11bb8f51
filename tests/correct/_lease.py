"""What the correct lease outboxes of this package share: one table layout, its SQL, and connections.

The table holds the lease itself (``lease_token``, ``leased_until``), so a worker that dies simply
stops renewing or completing and its rows come back once ``leased_until`` passes. Every time in a
lease is taken from the database's ``now()``: workers' wall clocks never enter (D4). Every write
after a claim is guarded by the claim's token, so a holder whose lease was taken over writes
nothing and learns it (``lease_lost``, D6).

Written independently of ``outbox/`` (asyncpg only), so that checkers tuned to the reference's
habits show up as false alarms on these.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from harness.adapter import ConsumerConfig, OutboxState, PublishTx, read_payloads

_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,50}")

#: Errors that mean the server is out of reach (partition, black hole, crash-restart): reconnect later.
CONNECTION_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
                     asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError, asyncpg.CrashShutdownError,
                     asyncpg.TooManyConnectionsError)


@dataclass(frozen=True)
class LeaseTable:
    """An outbox table and its dead-letter table; every statement the consumers run."""

    name: str

    def __post_init__(self) -> None:
        if not _IDENT.fullmatch(self.name):
            raise ValueError(f"table name {self.name!r} is not a plain lower-case identifier")

    @property
    def dlq(self) -> str:
        return f"{self.name}_dlq"

    @property
    def ddl(self) -> str:
        t, d = self.name, self.dlq
        return (
            f"DROP TABLE IF EXISTS {t}, {d};"
            f"CREATE TABLE {t} (id bigserial PRIMARY KEY, queue text NOT NULL, payload bytea NOT NULL,"
            f" deliveries int NOT NULL DEFAULT 0, attempts int NOT NULL DEFAULT 0,"
            f" available_at timestamptz NOT NULL DEFAULT now(), lease_token uuid, leased_until timestamptz,"
            f" created_at timestamptz NOT NULL DEFAULT now(),"
            f" CHECK ((lease_token IS NULL) = (leased_until IS NULL)));"
            f"CREATE INDEX {t}_queue_id ON {t} (queue, id);"
            f"CREATE TABLE {d} (id bigserial PRIMARY KEY, original_id bigint NOT NULL, queue text NOT NULL,"
            f" payload bytea NOT NULL, deliveries int NOT NULL, attempts int NOT NULL, reason text NOT NULL,"
            f" last_error text, created_at timestamptz NOT NULL, dead_at timestamptz NOT NULL DEFAULT now());"
        )

    @property
    def insert(self) -> str:
        """$1 queue, $2 payloads bytea[]."""
        return f"INSERT INTO {self.name} (queue, payload) SELECT $1, p FROM unnest($2::bytea[]) AS u(p)"

    @property
    def claim(self) -> str:
        """$1 queue, $2 limit, $3 lease seconds. A row is free when unleased or its lease has run out,
        both by the database clock; SKIP LOCKED keeps two claimers off one row (D3)."""
        return (
            f"WITH free AS (SELECT id FROM {self.name} WHERE queue = $1 AND available_at <= now()"
            f" AND (leased_until IS NULL OR leased_until < now()) ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)"
            f" UPDATE {self.name} AS o SET lease_token = gen_random_uuid(),"
            f" leased_until = now() + make_interval(secs => $3), deliveries = o.deliveries + 1"
            f" FROM free WHERE o.id = free.id"
            f" RETURNING o.id, o.payload, o.lease_token, o.deliveries, o.attempts"
        )

    @property
    def complete(self) -> str:
        """$1 id, $2 token. No row back: the lease went to someone else."""
        return f"DELETE FROM {self.name} WHERE id = $1 AND lease_token = $2 RETURNING id"

    @property
    def retry(self) -> str:
        """$1 id, $2 token, $3 delay seconds. Clears the lease; the row is free again after the delay."""
        return (
            f"UPDATE {self.name} SET lease_token = NULL, leased_until = NULL, attempts = attempts + 1,"
            f" available_at = now() + make_interval(secs => $3) WHERE id = $1 AND lease_token = $2 RETURNING id"
        )

    @property
    def release(self) -> str:
        """$1 ids, $2 tokens. Hands back rows never handed to a handler: not a delivery, so not counted."""
        return (
            f"UPDATE {self.name} AS o SET lease_token = NULL, leased_until = NULL, deliveries = o.deliveries - 1"
            f" FROM unnest($1::bigint[], $2::uuid[]) AS r(id, token)"
            f" WHERE o.id = r.id AND o.lease_token = r.token RETURNING o.id"
        )

    @property
    def extend(self) -> str:
        """$1 ids, $2 tokens, $3 lease seconds. Renews leases still held; returns the tokens renewed."""
        return (
            f"UPDATE {self.name} AS o SET leased_until = now() + make_interval(secs => $3)"
            f" FROM unnest($1::bigint[], $2::uuid[]) AS r(id, token)"
            f" WHERE o.id = r.id AND o.lease_token = r.token RETURNING o.lease_token"
        )

    @property
    def dead_letter(self) -> str:
        """$1 id, $2 token, $3 reason, $4 last error. One statement: the row is in exactly one table
        afterwards, whatever fails (R3)."""
        return (
            f"WITH gone AS (DELETE FROM {self.name} WHERE id = $1 AND lease_token = $2"
            f" RETURNING id, queue, payload, deliveries, attempts, created_at)"
            f" INSERT INTO {self.dlq} (original_id, queue, payload, deliveries, attempts, reason, last_error,"
            f" created_at) SELECT id, queue, payload, deliveries, attempts + 1, $3, $4, created_at FROM gone"
            f" RETURNING original_id"
        )

    @property
    def drop(self) -> str:
        """$1 id, $2 token. A terminal failure when dead letters are switched off."""
        return self.complete

    async def create(self, dsn: str) -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(self.ddl)
        finally:
            await conn.close()

    async def publish(self, tx: PublishTx, payloads: Sequence[bytes], queue: str) -> None:
        """Inside the harness's transaction. SQLAlchemy sends BEGIN lazily: make sure it has, or the
        INSERT would commit on its own."""
        if not tx.connection.is_in_transaction():
            await tx.sa_connection.exec_driver_sql("SELECT 1")
        await tx.connection.execute(self.insert, queue, list(payloads))

    async def read_state(self, dsn: str) -> OutboxState:
        return await read_payloads(dsn, f"SELECT payload FROM {self.name} ORDER BY id",
                                   f"SELECT payload FROM {self.dlq} ORDER BY id")


class Link:
    """One connection owned by one task, opened on first use and after any failure.

    Any exception (a timeout, a cancellation) leaves the connection in an unknown state, so it is
    dropped and the next call reconnects: the cheapest way to survive partitions, black holes and
    server restarts without a pool's checkout rules."""

    def __init__(self, dsn: str, application_name: str, timeout: float) -> None:
        self.dsn = dsn
        self.application_name = application_name
        self.timeout = timeout
        self._conn: asyncpg.Connection | None = None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.dsn, timeout=self.timeout,
                                               server_settings={"application_name": self.application_name})
        return self._conn

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            conn = await self._connection()
            return await conn.fetch(sql, *args, timeout=self.timeout)
        except BaseException:
            self.drop()
            raise

    def drop(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await asyncio.wait_for(conn.close(), timeout=1.0)
        except Exception:  # noqa: BLE001 - unreachable server: just cut the socket
            conn.terminate()


class Outage:
    """Logs the first failure of an outage as a warning and the recovery once, not every retry."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        self.failures = 0

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self.failures == 1:
            self.log.warning("%s failed: %s: %s; retrying", self.what, type(exc).__name__, exc,
                             exc_info=not isinstance(exc, CONNECTION_ERRORS))
        else:
            self.log.debug("%s failed again (%d): %s", self.what, self.failures, exc)

    def ok(self) -> None:
        if self.failures:
            self.log.info("%s recovered after %d failures", self.what, self.failures)
            self.failures = 0

    def backoff(self) -> float:
        """Short, jittered, capped: 0.1 s doubling to 1 s."""
        return min(1.0, 0.1 * 2 ** min(self.failures - 1, 4)) * random.uniform(0.5, 1.0)


async def pause(stopping: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> None:
    """Waits ``seconds``, or less if ``stopping`` (or ``wake``) is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in (stopping, wake) if e is not None]
    try:
        await asyncio.wait(waiters, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def retry_delay(config: ConsumerConfig, failures: int) -> float:
    """``RetryConfig``'s nominal delay after failure number ``failures``, jittered by ± jitter_factor."""
    retry = config.retry
    j = retry.jitter_factor if retry.kind != "none" else 0.0
    return retry.delay(failures) * random.uniform(1 - j, 1 + j)


def terminal_reason(config: ConsumerConfig, failures: int, deliveries: int) -> str | None:
    """Why this failure is the last the policy allows (attempts spent, the first under NoRetry, or the
    delivery cap reached), or None when it is retried."""
    retry, cap = config.retry, config.max_deliveries
    if failures >= (1 if retry.kind == "none" else retry.max_attempts):
        return "attempts"
    if cap is not None and deliveries >= cap:
        return "max_deliveries"
    return None


async def close_all(links: Sequence[Link]) -> None:
    with contextlib.suppress(Exception):
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)
