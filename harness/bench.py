"""Throughput and wake-up benchmark of an outbox implementation against its raw-SQL floor.

One run on one PostgreSQL server measures three things:

(a) **drain throughput**: ``messages`` rows are pre-published (``publish_batch`` in chunks), then
    the implementation's subscriber, with a no-op handler, is started and timed until every row
    has been acked (end to end: start → last ack; the table is checked empty);
(b) **the raw-SQL floor** for the same work: the same number of rows re-published, then
    ``floor_loops`` concurrent asyncpg loops, each on its own connection, claim a batch with the
    very same ``Statements.fetch`` CTE (batch = the subscriber's ``fetch_batch_size``) and delete it
    in one token-guarded statement (``Statements.ack``), with no handler and no framework around it;
(c) **idle NOTIFY wake-up latency**: ``probes`` single messages, published one at a time into an
    idle subscriber whose ``max_fetch_interval`` is far longer than the whole phase (so polling
    cannot help), timed from just before COMMIT to the handler's first line.

Every phase runs on freshly published rows of a freshly VACUUM ANALYZEd table, so no phase pays
for another's dead tuples. The tables (``bench_<random>`` and its DLQ) are created in the DSN's
database and dropped at the end.

Default configuration (``DEFAULTS``): ``max_workers=16``, ``fetch_batch_size=500``, engine pool
``max_workers + 4`` (the subscriber's budget of max_workers + 1, plus the publisher and a spare),
``lease_ttl_seconds=60``, 64-byte payloads, and 2 floor loops × 500 rows. Chosen on a 2-core
machine with PostgreSQL on the same host from a grid of max_workers 4..64 × batch 200..1000 at
100k messages: with a no-op handler the subscriber is bound by per-message Python work, so the
choice mostly sets the floor's batch. ``impl`` selects the
implementation; only ``"reference"`` (this repository's outbox) exists so far; peers register a
:class:`BenchImpl` factory in ``IMPLS``.

``print_bench(result)`` prints a table and, as its last line, one JSON object with the figures
and the configuration (for CI and the reports).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import asyncpg
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["DEFAULTS", "IMPLS", "BenchConfig", "arun_bench", "print_bench", "run_bench"]


@dataclass(frozen=True)
class BenchConfig:
    messages: int = 100_000
    probes: int = 200
    max_workers: int = 16
    fetch_batch_size: int = 500
    pool_size: int | None = None  # None: max_workers + 4 (subscriber budget + publisher + spare)
    floor_loops: int = 2
    floor_batch: int | None = None  # None: fetch_batch_size
    publish_chunk: int = 10_000
    payload_bytes: int = 64
    lease_ttl_seconds: float = 60.0
    timeout_seconds: float = 600.0

    def __post_init__(self) -> None:
        for name in ("messages", "probes", "max_workers", "fetch_batch_size", "floor_loops", "publish_chunk"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")

    @property
    def pool(self) -> int:
        return self.pool_size if self.pool_size is not None else self.max_workers + 4

    @property
    def floor_batch_size(self) -> int:
        return self.floor_batch if self.floor_batch is not None else self.fetch_batch_size


DEFAULTS = BenchConfig()


class BenchImpl(Protocol):
    """What the benchmark needs from an implementation; one instance per run."""

    name: str

    async def setup(self) -> None: ...
    async def publish(self, count: int, queue: str) -> None: ...
    async def drain(self, count: int, queue: str) -> float:
        """Seconds for the subscriber to handle and ack ``count`` pre-published rows."""
    async def floor(self, count: int, queue: str) -> float:
        """Seconds for the raw-SQL loops to claim and delete ``count`` pre-published rows."""
    async def wakeup_latencies(self, probes: int, queue: str) -> list[float]:
        """Seconds from COMMIT to handler for single messages into an idle subscriber."""
    async def teardown(self) -> None: ...


def _engine_url(dsn: str) -> str:
    scheme, rest = dsn.split("://", 1)
    if scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL DSN: {dsn!r}")
    return "postgresql+asyncpg://" + rest


def _plain_dsn(dsn: str) -> str:
    return "postgresql://" + dsn.split("://", 1)[1]


class ReferenceImpl:
    """This repository's outbox (``outbox``): Subscriber with a no-op handler."""

    name = "reference"

    def __init__(self, dsn: str, config: BenchConfig) -> None:
        from outbox import Outbox, make_dlq_table, make_outbox_table  # noqa: PLC0415

        self.dsn = _plain_dsn(dsn)
        self.config = config
        self.table_name = f"bench_{uuid.uuid4().hex[:10]}"
        self.metadata = MetaData()
        table = make_outbox_table(self.metadata, self.table_name)
        dlq = make_dlq_table(self.metadata, f"{self.table_name}_dlq")
        self.outbox = Outbox(table, dlq_table=dlq)
        self.engine: AsyncEngine = create_async_engine(
            _engine_url(dsn), pool_size=config.pool, max_overflow=0,
            connect_args={"server_settings": {"application_name": "outbox_bench"}},
        )
        self.payload = b"x" * config.payload_bytes

    async def setup(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(self.metadata.create_all)

    async def teardown(self) -> None:
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(self.metadata.drop_all)
        finally:
            await self.engine.dispose()

    async def _vacuum(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f"VACUUM (ANALYZE) {self.table_name}")
        finally:
            await conn.close()

    async def publish(self, count: int, queue: str) -> None:
        chunk = self.config.publish_chunk
        for start in range(0, count, chunk):
            n = min(chunk, count - start)
            async with self.engine.begin() as conn:
                await self.outbox.publish_batch(conn, [self.payload] * n, queue=queue)
        await self._vacuum()

    async def _remaining(self, queue: str) -> int:
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            return await raw.driver_connection.fetchval(
                f"SELECT count(*) FROM {self.table_name} WHERE queue = $1", queue)

    async def drain(self, count: int, queue: str) -> float:
        done = asyncio.Event()
        settled = 0
        bad: list[str] = []

        async def handler(_msg: Any) -> None:
            return None

        def on_settled(_msg: Any, outcome: str) -> None:
            nonlocal settled
            if outcome != "acked":
                bad.append(outcome)
            settled += 1
            if settled >= count:
                done.set()

        sub = self.outbox.subscriber(
            self.engine, queue=queue, handler=handler, max_workers=self.config.max_workers,
            fetch_batch_size=self.config.fetch_batch_size, lease_ttl_seconds=self.config.lease_ttl_seconds,
            max_fetch_interval=1.0, min_fetch_interval=0.01, on_settled=on_settled,
        )
        t0 = time.perf_counter()
        await sub.start()
        try:
            await asyncio.wait_for(done.wait(), timeout=self.config.timeout_seconds)
            elapsed = time.perf_counter() - t0
        finally:
            await sub.stop()
        if bad:
            raise RuntimeError(f"drain settled {len(bad)} messages other than 'acked': {sorted(set(bad))}")
        left = await self._remaining(queue)
        if left:
            raise RuntimeError(f"{left} rows left in {self.table_name} after the drain")
        return elapsed

    async def floor(self, count: int, queue: str) -> float:
        st = self.outbox.statements
        batch, ttl = self.config.floor_batch_size, self.config.lease_ttl_seconds
        conns = [await asyncpg.connect(self.dsn) for _ in range(self.config.floor_loops)]
        deleted = 0

        async def loop(conn: asyncpg.Connection) -> None:
            nonlocal deleted
            while True:
                rows = await conn.fetch(st.fetch, queue, ttl, batch)
                if not rows:
                    return
                gone = await conn.fetch(st.ack, [r[0] for r in rows], [r[3] for r in rows])
                deleted += len(gone)

        try:
            t0 = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*(loop(c) for c in conns)), timeout=self.config.timeout_seconds)
            elapsed = time.perf_counter() - t0
        finally:
            await asyncio.gather(*(c.close() for c in conns))
        if deleted != count:
            raise RuntimeError(f"floor deleted {deleted} rows, expected {count}")
        return elapsed

    async def wakeup_latencies(self, probes: int, queue: str) -> list[float]:
        handled: dict[int, float] = {}
        arrived = asyncio.Event()

        async def handler(msg: Any) -> None:
            handled[msg.id] = time.perf_counter()
            arrived.set()

        sub = self.outbox.subscriber(
            self.engine, queue=queue, handler=handler, max_workers=self.config.max_workers,
            fetch_batch_size=self.config.fetch_batch_size, max_fetch_interval=3600.0,
            lease_ttl_seconds=self.config.lease_ttl_seconds,
        )
        await sub.start()
        latencies: list[float] = []
        try:
            deadline = time.monotonic() + 30
            while not (sub.listener is not None and sub.listener.connected):
                if time.monotonic() > deadline:
                    raise RuntimeError("the subscriber's LISTEN connection did not come up within 30 s")
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # the first fetch has run; the fetch loop now sleeps for an hour
            for _ in range(probes):
                async with self.engine.connect() as conn:
                    tx = await conn.begin()
                    row_id = await self.outbox.publish(conn, self.payload, queue=queue)
                    arrived.clear()
                    t0 = time.perf_counter()
                    await tx.commit()
                while row_id not in handled:
                    arrived.clear()
                    try:
                        await asyncio.wait_for(arrived.wait(), timeout=10)
                    except asyncio.TimeoutError:
                        raise RuntimeError(f"probe {row_id} was not handled within 10 s (NOTIFY lost?)") from None
                latencies.append(handled[row_id] - t0)
                # idle again: the ack is written and the fetch loop is back in its long sleep
                acked, deadline = len(latencies), time.monotonic() + 10
                while sub.metrics.counts["acked"] < acked:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"probe {row_id} was handled but not acked within 10 s")
                    await asyncio.sleep(0.001)
                await asyncio.sleep(0.005)
        finally:
            await sub.stop()
        return latencies


IMPLS: dict[str, Callable[[str, BenchConfig], BenchImpl]] = {"reference": ReferenceImpl}


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


async def _server_info(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(_plain_dsn(dsn))
    try:
        return {"server_version": await conn.fetchval("SHOW server_version"),
                "server_max_connections": int(await conn.fetchval("SHOW max_connections"))}
    finally:
        await conn.close()


async def arun_bench(dsn: str, *, impl: str = "reference", log: Callable[[str], None] | None = None,
                     **options: Any) -> dict[str, Any]:
    """The benchmark, on the running event loop; see :func:`run_bench`."""
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; known: {', '.join(sorted(IMPLS))}")
    config = BenchConfig(**{**asdict(DEFAULTS), **options})
    say = log or (lambda _m: None)
    bench = IMPLS[impl](dsn, config)
    info = await _server_info(dsn)
    await bench.setup()
    try:
        t0 = time.perf_counter()
        await bench.publish(config.messages, "bench")
        publish_s = time.perf_counter() - t0
        say(f"published {config.messages} in {publish_s:.2f}s; draining with the subscriber")
        drain_s = await bench.drain(config.messages, "bench")
        say(f"subscriber drained {config.messages} in {drain_s:.2f}s; re-publishing for the floor")
        await bench.publish(config.messages, "bench")
        floor_s = await bench.floor(config.messages, "bench")
        say(f"raw-SQL floor drained {config.messages} in {floor_s:.2f}s; probing NOTIFY wake-ups")
        lat = await bench.wakeup_latencies(config.probes, "probe")
    finally:
        await bench.teardown()
    throughput = config.messages / drain_s
    floor = config.messages / floor_s
    return {
        "impl": bench.name,
        "messages": config.messages,
        "throughput_msgs_per_s": round(throughput, 1),
        "drain_seconds": round(drain_s, 3),
        "floor_msgs_per_s": round(floor, 1),
        "floor_seconds": round(floor_s, 3),
        "ratio_to_floor": round(throughput / floor, 3),
        "publish_msgs_per_s": round(config.messages / publish_s, 1),
        "probes": len(lat),
        "notify_p50_ms": round(statistics.median(lat) * 1000, 3),
        "notify_p99_ms": round(_percentile(lat, 99) * 1000, 3),
        "notify_max_ms": round(max(lat) * 1000, 3),
        "config": {
            "max_workers": config.max_workers, "fetch_batch_size": config.fetch_batch_size,
            "pool_size": config.pool, "lease_ttl_seconds": config.lease_ttl_seconds,
            "floor_loops": config.floor_loops, "floor_batch": config.floor_batch_size,
            "publish_chunk": config.publish_chunk, "payload_bytes": config.payload_bytes,
            "cpus": os.cpu_count(), **info,
        },
    }


def run_bench(dsn: str, *, messages: int = 100_000, impl: str = "reference",
              log: Callable[[str], None] | None = None, **options: Any) -> dict[str, Any]:
    """Runs the benchmark against ``dsn`` (``postgresql://`` or ``postgresql+asyncpg://``) and
    returns the figures. Options are :class:`BenchConfig` fields (``probes``, ``max_workers``,
    ``fetch_batch_size``, ``pool_size``, ``floor_loops``, ``floor_batch``, ...). Works from plain
    code (its own event loop) and from inside a running loop (then on a helper thread)."""
    coro_factory: Callable[[], Awaitable[dict[str, Any]]] = lambda: arun_bench(  # noqa: E731
        dsn, impl=impl, log=log, messages=messages, **options)
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


def print_bench(result: dict[str, Any], file: Any = None) -> None:
    """A human table, then (last line) the whole result as one JSON object."""
    cfg = result.get("config", {})
    rows = [
        ("implementation", result["impl"]),
        ("messages", f"{result['messages']:,}"),
        ("subscriber drain", f"{result['throughput_msgs_per_s']:,.0f} msg/s  ({result['drain_seconds']:.2f} s)"),
        ("raw-SQL floor", f"{result['floor_msgs_per_s']:,.0f} msg/s  ({result['floor_seconds']:.2f} s)"),
        ("ratio to floor", f"{result['ratio_to_floor']:.2f}"),
        ("publish (batch)", f"{result['publish_msgs_per_s']:,.0f} msg/s"),
        ("NOTIFY wake-up p50", f"{result['notify_p50_ms']:.2f} ms"),
        ("NOTIFY wake-up p99", f"{result['notify_p99_ms']:.2f} ms  (max {result['notify_max_ms']:.2f} ms, "
                               f"{result['probes']} probes)"),
        ("config", ", ".join(f"{k}={v}" for k, v in cfg.items())),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    print("\n".join(lines), file=file)
    print(json.dumps(result, sort_keys=True), file=file)
