"""Peer benchmark: outbox implementations side by side on one workload, against a raw-SQL floor.

One run, one PostgreSQL server, fresh databases for every implementation (and one for the floor).
Every implementation, the reference included, is measured the same way: through its adapter
(:mod:`harness.adapter`), its consumer in its own process (:mod:`harness.benchworker`).

(a) **drain throughput**: ``messages`` payloads are pre-published through ``adapter.publish`` in
    transactions of ``publish_chunk`` (a :class:`PublishTx`, as the runner publishes), the database
    is VACUUM ANALYZEd, then a consumer process with a no-op handler is started. Drain time runs
    from the worker's ``ready`` (adapter imported, ``consume`` about to be called: pool set-up and
    start-up are included) until ``adapter.read_state`` shows nothing pending, polled once every
    payload has been delivered (so acknowledgements are included: a row handled but not yet
    deleted or marked done has not been drained). A state that does not empty is reported.
(b) **the raw-SQL floor** for the same work, measured once: the same number of rows in the
    reference schema, and ``floor_loops`` asyncpg loops, each on its own connection, claiming a
    batch (``fetch_batch_size``) with the reference's lease CTE (``Statements.fetch``) and deleting it
    in one token-guarded statement (``Statements.ack``): no handler, no framework.
(c) **idle wake-up latency**, in a fresh database of its own (so it is measured even when the
    drain failed): a fresh consumer process, one warm-up message, then ``probes`` single messages
    published one at a time, each once the previous one has left the state (the consumer is idle
    again). Latency runs from just before COMMIT (time.monotonic here) to the handler's first
    line (time.monotonic in the worker: one clock on Linux). ``max_fetch_interval`` is far longer
    than a probe, so polling cannot help an implementation that has a wake-up mechanism
    (``capabilities.notify``); one without is labelled ``polling``, and its probes run until
    ``probe_timeout_seconds`` is spent.
(d) **memory**: the consumer process's peak RSS (``VmHWM``) at the end of the drain; the RSS at
    ``ready`` (interpreter plus the library's imports) is reported beside it.

Consumer configuration (``DEFAULTS``, one :class:`ConsumerConfig` for every implementation, each
adapter maps it to its library's own knobs): ``max_workers=16``, ``fetch_batch_size=500``,
``lease_ttl_seconds=60``, ``max_fetch_interval=30``, ``min_fetch_interval=0.05``, dead-lettering on,
default retry policy, pool = the adapter's own budget. 64-byte payloads; floor: 2 loops × 500 rows.
Chosen on a 2-core machine with PostgreSQL on the same host (a grid of max_workers 4..64 × batch
200..1000 at 100k messages for the reference): with a no-op handler a consumer is bound by
per-message Python work, so the choice mostly sets the floor's batch.

A failing implementation (import error, crash, a phase over its timeout) gets a row with its error
and no figure for what was not measured. ``print_bench(result)`` prints a table and, as its last
line, one JSON object: the first implementation's figures at the top level (``impl``,
``throughput_msgs_per_s``, ``floor_msgs_per_s``, ``ratio_to_floor``, ``notify_p50_ms``,
``notify_p99_ms``, ...), every implementation's under ``impls``, and the configuration.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import create_async_engine

from harness.adapter import Adapter, ConsumerConfig, OutboxState, PublishTx, load_adapter
from harness.benchworker import payload
from harness.provision import guard
from harness.provision.postgres import PostgresServer, asyncpg_url, plain_dsn

__all__ = ["DEFAULTS", "BenchConfig", "arun_bench", "consumer_config", "print_bench", "run_bench"]

QUEUE = "bench"


@dataclass(frozen=True)
class BenchConfig:
    messages: int = 100_000
    probes: int = 200
    max_workers: int = 16
    fetch_batch_size: int = 500
    lease_ttl_seconds: float = 60.0
    max_fetch_interval: float = 30.0
    min_fetch_interval: float = 0.05
    floor_loops: int = 2
    floor_batch: int | None = None  # None: fetch_batch_size
    publish_chunk: int = 10_000
    payload_bytes: int = 64
    timeout_seconds: float = 600.0  # each of: publishing, the drain, the floor
    probe_timeout_seconds: float = 180.0  # the whole probe phase of one implementation
    settle_timeout_seconds: float = 30.0  # state empty after the last delivery
    start_timeout_seconds: float = 120.0  # worker up to ``ready``
    stop_timeout_seconds: float = 30.0  # worker gone after SIGTERM

    def __post_init__(self) -> None:
        for name in ("messages", "probes", "max_workers", "fetch_batch_size", "floor_loops", "publish_chunk"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")

    @property
    def floor_batch_size(self) -> int:
        return self.floor_batch if self.floor_batch is not None else self.fetch_batch_size


DEFAULTS = BenchConfig()


def consumer_config(config: BenchConfig) -> ConsumerConfig:
    """The one consumer configuration every implementation runs with."""
    return ConsumerConfig(queue=QUEUE, max_workers=config.max_workers, fetch_batch_size=config.fetch_batch_size,
                          lease_ttl_seconds=config.lease_ttl_seconds, max_fetch_interval=config.max_fetch_interval,
                          min_fetch_interval=config.min_fetch_interval)


class PhaseError(RuntimeError):
    """A phase could not be measured; the message goes into the implementation's row."""


# -- the consumer process --------------------------------------------------------------

class _Worker:
    """``python -m harness.benchworker`` as a child process; its stdout is a stream of JSON events."""

    def __init__(self, impl: str, dsn: str, mode: str, expect: int, config: ConsumerConfig) -> None:
        self.args = ["--impl", impl, "--dsn", dsn, "--mode", mode, "--expect", str(expect),
                     "--config", json.dumps(config.to_dict())]
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr: collections.deque[str] = collections.deque(maxlen=30)
        self._stderr_task: asyncio.Task[None] | None = None
        self.exit: dict[str, Any] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "harness.benchworker", *self.args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
            limit=1 << 20)
        guard.protect(self.proc.pid)
        self._stderr_task = asyncio.create_task(self._read_stderr())

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace").rstrip())

    def _tail(self) -> str:
        lines = [s for s in self.stderr if s.strip()]
        return (" | last stderr: " + " / ".join(lines[-3:]))[:600] if lines else ""

    async def event(self, timeout: float) -> dict[str, Any]:
        """The next event; PhaseError on a timeout, an error exit or a dead process."""
        assert self.proc is not None and self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout=max(0.0, timeout))
        except asyncio.TimeoutError:
            raise PhaseError(f"timed out after {timeout:.0f} s") from None
        if not line:
            code = await self._wait(5.0)
            raise PhaseError(f"consumer process exited (code {code}) without reporting{self._tail()}")
        event = json.loads(line)
        if event["event"] == "exit":
            self.exit = event
            raise PhaseError(f"consumer failed: {event.get('error') or 'exited early'}{self._tail()}")
        return event

    async def wait_for(self, name: str, timeout: float, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            event = await self.event(deadline - time.monotonic())
            if event["event"] == name and all(event.get(k) == v for k, v in match.items()):
                return event

    async def _wait(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout=timeout)
        except asyncio.TimeoutError:
            return None

    async def stop(self, timeout: float) -> dict[str, Any] | None:
        """SIGTERM, then the ``exit`` event (None if it never came); SIGKILL by pid after ``timeout``."""
        proc = self.proc
        if proc is None:
            return None
        deadline = time.monotonic() + timeout
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        while self.exit is None:
            try:
                await self.event(deadline - time.monotonic())
            except PhaseError:
                break
        if await self._wait(max(0.1, deadline - time.monotonic())) is None:
            guard.kill_and_forget(proc.pid)
            await self._wait(10.0)
        guard.forget(proc.pid)
        if self._stderr_task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._stderr_task, timeout=5.0)
        return self.exit


# -- helpers ---------------------------------------------------------------------------------

def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


async def _vacuum(dsn: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()


async def _drop_database(server: PostgresServer, name: str) -> None:
    conn = await asyncpg.connect(server.dsn, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _server_info(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return {"server_version": await conn.fetchval("SHOW server_version"),
                "server_max_connections": int(await conn.fetchval("SHOW max_connections"))}
    finally:
        await conn.close()


async def _publish(adapter: Adapter, dsn: str, seqs: range, config: BenchConfig) -> float:
    """Publishes ``payload(seq)`` for every seq in transactions of ``publish_chunk``; returns the
    monotonic time just before the last COMMIT."""
    engine = create_async_engine(asyncpg_url(dsn), pool_size=1, max_overflow=0)
    t0 = 0.0
    try:
        for start in range(0, len(seqs), config.publish_chunk):
            chunk = [payload(s, config.payload_bytes) for s in seqs[start:start + config.publish_chunk]]
            async with engine.connect() as conn:
                tx, ptx = await PublishTx.begin(conn)
                await adapter.publish(ptx, chunk, QUEUE)
                t0 = time.monotonic()
                await tx.commit()
    finally:
        await engine.dispose()
    return t0


async def _until_empty(adapter: Adapter, dsn: str, timeout: float) -> tuple[float | None, OutboxState]:
    """Polls ``read_state`` until nothing is pending: (monotonic time it was seen empty, state);
    (None, last state) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        state = await adapter.read_state(dsn)
        now = time.monotonic()
        if not state.pending:
            return now, state
        if now > deadline:
            return None, state
        await asyncio.sleep(0.005)


# -- the phases --------------------------------------------------------------------------------

async def _floor(server: PostgresServer, config: BenchConfig, say: Callable[[str], None]) -> dict[str, Any]:
    """The raw-SQL floor on the reference schema, in its own database."""
    from outbox import Outbox, make_outbox_table  # noqa: PLC0415

    name = f"bench_floor_{uuid.uuid4().hex[:8]}"
    dsn = await server.create_database(name)
    try:
        metadata = MetaData()
        outbox = Outbox(make_outbox_table(metadata, "bench_floor"))
        engine = create_async_engine(asyncpg_url(dsn), pool_size=1, max_overflow=0)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
            for start in range(0, config.messages, config.publish_chunk):
                seqs = range(start, min(config.messages, start + config.publish_chunk))
                async with engine.begin() as conn:
                    await outbox.publish_batch(conn, [payload(s, config.payload_bytes) for s in seqs], queue=QUEUE)
        finally:
            await engine.dispose()
        await _vacuum(dsn)
        st = outbox.statements
        batch, ttl = config.floor_batch_size, config.lease_ttl_seconds
        conns = [await asyncpg.connect(dsn) for _ in range(config.floor_loops)]
        deleted = 0

        async def loop(conn: asyncpg.Connection) -> None:
            nonlocal deleted
            while True:
                rows = await conn.fetch(st.fetch, QUEUE, ttl, batch)
                if not rows:
                    return
                gone = await conn.fetch(st.ack, [r[0] for r in rows], [r[3] for r in rows])
                deleted += len(gone)

        try:
            t0 = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*(loop(c) for c in conns)), timeout=config.timeout_seconds)
            elapsed = time.perf_counter() - t0
        finally:
            await asyncio.gather(*(c.close() for c in conns))
        if deleted != config.messages:
            raise PhaseError(f"floor deleted {deleted} rows, expected {config.messages}")
        say(f"raw-SQL floor: {config.messages} in {elapsed:.2f} s")
        return {"floor_msgs_per_s": round(config.messages / elapsed, 1), "floor_seconds": round(elapsed, 3)}
    finally:
        await _drop_database(server, name)


async def _drain(adapter: Adapter, spec: str, dsn: str, config: BenchConfig, row: dict[str, Any]) -> None:
    n = config.messages
    worker = _Worker(spec, dsn, "drain", n, consumer_config(config))
    await worker.start()
    try:
        ready = await worker.wait_for("ready", config.start_timeout_seconds)
        row["ready_rss_mb"] = ready["rss_mb"]
        try:
            done = await worker.wait_for("done", config.timeout_seconds)
        except PhaseError as exc:
            last = worker.exit or await worker.stop(config.stop_timeout_seconds)
            got = f"; {last['unique']} of {n} delivered" if last else ""
            raise PhaseError(f"drain: {exc}{got}") from None
        row["peak_rss_mb"] = done["peak_rss_mb"]
        row["startup_ms"] = round((done["first"] - ready["t"]) * 1000, 1)
        row["delivery_msgs_per_s"] = round(n / (done["last"] - ready["t"]), 1)
        emptied, state = await _until_empty(adapter, dsn, config.settle_timeout_seconds)
        if emptied is None:
            end = done["last"]
            row["notes"].append(f"drain: {len(state.pending)} of {n} still pending "
                                f"{config.settle_timeout_seconds:.0f} s after the last delivery; "
                                f"throughput counts deliveries only")
        else:
            end = max(emptied, done["last"])
            row["ack_tail_ms"] = round((end - done["last"]) * 1000, 1)
        if state.dead:
            row["notes"].append(f"drain: {len(state.dead)} dead-lettered")
        row["drain_seconds"] = round(end - ready["t"], 3)
        row["throughput_msgs_per_s"] = round(n / (end - ready["t"]), 1)
    finally:
        exit_event = await worker.stop(config.stop_timeout_seconds)
    if exit_event is None:
        row["notes"].append(f"drain: the consumer did not stop within {config.stop_timeout_seconds:.0f} s of SIGTERM")
    else:
        row["duplicates"] = exit_event["deliveries"] - exit_event["unique"]
        if exit_event.get("error"):
            row["notes"].append(f"drain: stop: {exit_event['error']}")


async def _probe(adapter: Adapter, spec: str, dsn: str, config: BenchConfig, row: dict[str, Any]) -> None:
    cc = consumer_config(config)
    worker = _Worker(spec, dsn, "probe", 0, cc)
    wait = cc.max_fetch_interval + 10  # a delivery may take one polling interval without a wake-up
    latencies: list[float] = []
    await worker.start()
    try:
        await worker.wait_for("ready", config.start_timeout_seconds)
        warm = config.messages  # sequence numbers after the drain's
        await _publish(adapter, dsn, range(warm, warm + 1), config)
        try:
            await worker.wait_for("delivery", wait + 20, seq=warm)
        except PhaseError as exc:
            raise PhaseError(f"probes: warm-up message: {exc}") from None
        await _until_empty(adapter, dsn, 10.0)
        await asyncio.sleep(1.0)  # idle: every start-up fetch is over
        deadline = time.monotonic() + config.probe_timeout_seconds
        for k in range(config.probes):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                row["notes"].append(f"probes: {len(latencies)} of {config.probes} within the "
                                    f"{config.probe_timeout_seconds:.0f} s probe phase")
                break
            seq = warm + 1 + k
            t0 = await _publish(adapter, dsn, range(seq, seq + 1), config)
            try:
                event = await worker.wait_for("delivery", min(wait, remaining), seq=seq)
            except PhaseError as exc:
                if "timed out" in str(exc) and remaining < wait:
                    row["notes"].append(f"probes: {len(latencies)} of {config.probes} within the "
                                        f"{config.probe_timeout_seconds:.0f} s probe phase")
                    break
                raise PhaseError(f"probes: probe {k + 1}: {exc}") from None
            latencies.append(event["t"] - t0)
            emptied, _ = await _until_empty(adapter, dsn, 10.0)
            if emptied is None:
                raise PhaseError(f"probes: probe {k + 1} delivered but still pending 10 s later")
            await asyncio.sleep(0.01)
    finally:
        if latencies:
            row["probes"] = len(latencies)
            row["notify_p50_ms"] = round(statistics.median(latencies) * 1000, 3)
            row["notify_p99_ms"] = round(_percentile(latencies, 99) * 1000, 3)
            row["notify_max_ms"] = round(max(latencies) * 1000, 3)
        exit_event = await worker.stop(config.stop_timeout_seconds)
        if exit_event is not None and exit_event.get("error"):
            row["notes"].append(f"probes: stop: {exit_event['error']}")


async def _measure(server: PostgresServer, spec: str, index: int, config: BenchConfig,
                   say: Callable[[str], None]) -> dict[str, Any]:
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

    async def drain(dsn: str) -> None:
        t0 = time.perf_counter()
        await asyncio.wait_for(_publish(adapter, dsn, range(config.messages), config), timeout=config.timeout_seconds)
        row["publish_msgs_per_s"] = round(config.messages / (time.perf_counter() - t0), 1)
        await _vacuum(dsn)
        say(f"{spec}: published {config.messages} at {row['publish_msgs_per_s']:,.0f} msg/s; draining")
        await _drain(adapter, spec, dsn, config, row)
        say(f"{spec}: drained at {row['throughput_msgs_per_s']:,.0f} msg/s")

    async def probe(dsn: str) -> None:
        await _probe(adapter, spec, dsn, config, row)
        say(f"{spec}: wake-up p50 {row['notify_p50_ms']} ms, p99 {row['notify_p99_ms']} ms")

    errors: list[str] = []
    for phase, run in (("drain", drain), ("probes", probe)):  # each in a fresh database of its own
        name = f"bench_{index}_{phase}_{uuid.uuid4().hex[:8]}"
        try:
            dsn = await server.create_database(name)
            await asyncio.wait_for(adapter.create_schema(dsn, cc), timeout=120)
            await run(dsn)
        except PhaseError as exc:
            errors.append(str(exc) if str(exc).startswith(phase) else f"{phase}: {exc}")
        except asyncio.TimeoutError:
            errors.append(f"{phase}: timed out")
        except Exception as exc:  # noqa: BLE001 - whatever the library raised is the row's finding
            errors.append(f"{phase}: {type(exc).__name__}: {exc}"[:600])
        finally:
            await _drop_database(server, name)
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
    info = await _server_info(admin)
    floor: dict[str, Any] = {"floor_msgs_per_s": None, "floor_seconds": None}
    try:
        floor = await _floor(server, config, say)
    except Exception as exc:  # noqa: BLE001 - reported; the implementations are still measured
        floor["floor_error"] = f"{type(exc).__name__}: {exc}"[:600]
    rows = [await _measure(server, spec, i, config, say) for i, spec in enumerate(impls)]
    reference = next((r["throughput_msgs_per_s"] for r in rows
                      if r["impl"] == "reference" and r["throughput_msgs_per_s"]), None)
    for r in rows:
        if r["throughput_msgs_per_s"]:
            if floor["floor_msgs_per_s"]:
                r["ratio_to_floor"] = round(r["throughput_msgs_per_s"] / floor["floor_msgs_per_s"], 3)
            if reference:
                r["ratio_to_reference"] = round(r["throughput_msgs_per_s"] / reference, 3)
    cc = consumer_config(config)
    return {
        **rows[0],
        **floor,
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


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_bench(result: dict[str, Any], file: Any = None) -> None:
    """A side-by-side table, notes, then (last line) the whole result as one JSON object."""
    header = ("impl", "drain msg/s", "x floor", "x ref", "p50 ms", "p99 ms", "RSS MB", "notes")
    table = [header]
    footnotes: list[str] = []
    for r in result["impls"]:
        notes = list(r["notes"])
        if r["error"]:
            notes.insert(0, f"ERROR: {r['error']}")
        wake = "" if r["wakeup"] in (None, "notify") else f" ({r['wakeup']})"
        table.append((r["impl"], _fmt(r["throughput_msgs_per_s"], ",.0f"), _fmt(r["ratio_to_floor"], ".2f"),
                      _fmt(r["ratio_to_reference"], ".2f"), _fmt(r["notify_p50_ms"], ".2f") + wake,
                      _fmt(r["notify_p99_ms"], ".2f"), _fmt(r["peak_rss_mb"], ".0f"), "; ".join(notes) or "-"))
        if r.get("capabilities_notes"):
            footnotes.append(f"{r['impl']}: {r['capabilities_notes']}")
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in table]
    floor = result.get("floor_msgs_per_s")
    floor_text = (f"{floor:,.0f} msg/s ({result['floor_seconds']:.2f} s)" if floor
                  else f"not measured: {result.get('floor_error')}")
    cfg = result["config"]
    lines += ["", f"raw-SQL floor: {floor_text}; {result['messages']:,} messages, {cfg['probes']} probes",
              "config: " + ", ".join(f"{k}={v}" for k, v in cfg.items()), "", *footnotes]
    print("\n".join(lines), file=file)
    print(json.dumps(result, sort_keys=True), file=file)
