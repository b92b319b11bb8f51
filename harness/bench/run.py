"""The benchmark run: for every implementation, its backlog published once, drains interleaved with the
floor's (F I F I ... F, each on a fresh copy of the backlog), then its wake-up probes."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.adapter import Adapter, load_adapter
from harness.bench.config import DEFAULTS, BenchConfig, PhaseError, consumer_config
from harness.bench.consumer import measure_drain, measure_probes
from harness.bench.db import clone, publish, vacuum
from harness.bench.floor import drain_floor, publish_floor
from harness.bench.machine import describe, load_average
from harness.bench.rounds import FloorChain, bracket, summarise
from harness.history import HistoryWriter
from harness.names import TEMP_PREFIX
from harness.payload import numbered
from harness.provision.postgres import PostgresServer, plain_dsn

Say = Callable[[str], None]


def _name(what: str) -> str:
    return f"bench_{what}_{uuid.uuid4().hex[:8]}"


class Run:
    """One benchmark run: the server, the floor's backlog, the consumers' working directory."""

    def __init__(self, server: PostgresServer, config: BenchConfig, workdir: Path, history: HistoryWriter,
                 say: Say) -> None:
        self.server = server
        self.config = config
        self.workdir = workdir
        self.history = history
        self.say = say
        self.floor_template = ""
        self.floor_error: str | None = None

    async def prepare_floor(self) -> None:
        """The floor's backlog, published once; reported, not raised, if it fails."""
        name = _name("floor")
        try:
            self.floor_template = name
            await publish_floor(await self.server.create_database(name), self.config)
        except Exception as exc:  # noqa: BLE001 - the implementations are still measured
            self.floor_error = f"{type(exc).__name__}: {exc}"[:600]

    async def floor(self) -> float:
        """One floor drain of a fresh copy of the floor's backlog, in msg/s."""
        if self.floor_error is not None:
            raise PhaseError(self.floor_error)
        name = _name("floor_run")
        try:
            seconds = await drain_floor(await clone(self.server, self.floor_template, name), self.config)
        finally:
            await self.server.drop_database(name)
        return round(self.config.messages / seconds, 1)

    async def backlog(self, adapter: Adapter, spec: str, row: dict[str, Any]) -> str:
        """A template database: the implementation's schema and ``messages`` published through it, VACUUM ANALYZEd."""
        config = self.config
        name = _name("backlog")
        dsn = await self.server.create_database(name)
        await asyncio.wait_for(adapter.create_schema(dsn, consumer_config(config)), timeout=120)
        t0 = time.perf_counter()
        payloads = [numbered(s, config.payload_bytes) for s in range(config.messages)]
        await asyncio.wait_for(publish(adapter, dsn, payloads, config.publish_chunk), timeout=config.timeout_seconds)
        row["publish_msgs_per_s"] = round(config.messages / (time.perf_counter() - t0), 1)
        await vacuum(dsn)
        self.say(f"{spec}: published {config.messages:,} at {row['publish_msgs_per_s']:,.0f} msg/s")
        return name

    async def rounds(self, adapter: Adapter, spec: str, index: int, template: str) -> tuple[list[dict[str, Any]], list[str]]:
        """Drains of fresh copies of ``template``, each between two floor drains, until ``rounds`` are done,
        one was capped, or ``impl_budget_seconds`` have gone by (at least one round)."""
        config = self.config
        chain = FloorChain(self.floor)
        before = await chain.next()
        rounds: list[dict[str, Any]] = []
        notes: list[str] = []
        started = time.monotonic()
        for k in range(config.rounds):
            if k and time.monotonic() - started > config.impl_budget_seconds:
                notes.append(f"{k} of {config.rounds} rounds: no new round after {config.impl_budget_seconds:.0f} s")
                break
            name = _name(f"{index}_r{k}")
            try:
                dsn = await clone(self.server, template, name)
                figures = await measure_drain(adapter, spec, dsn, config, self.workdir / f"{index}-drain-{k}",
                                              self.history)
            finally:
                await self.server.drop_database(name)
            after = await chain.next()
            bracket(figures, before, after)
            before = after
            rounds.append(figures)
            ratio = figures.get("ratio_to_floor")
            self.say(f"{spec}: round {k + 1}: {figures['throughput_msgs_per_s']:,.0f} msg/s"
                     + (f", {ratio:.3f} x floor ({figures['floor_msgs_per_s']:,.0f})" if ratio is not None else ""))
            if figures["capped"]:
                break
        if chain.error:
            notes.append(f"floor: {chain.error}")
        return rounds, notes

    async def probes(self, adapter: Adapter, spec: str, index: int, row: dict[str, Any]) -> None:
        """Wake-up probes in a fresh, empty database of their own."""
        name = _name(f"{index}_probes")
        try:
            dsn = await self.server.create_database(name)
            await asyncio.wait_for(adapter.create_schema(dsn, consumer_config(self.config)), timeout=120)
            await measure_probes(adapter, spec, dsn, self.config, adapter.capabilities.notify, row,
                                 self.workdir / f"{index}-probes", self.history)
        finally:
            await self.server.drop_database(name)
        self.say(f"{spec}: wake-up p50 {row.get('notify_p50_ms')} ms, p99 {row.get('notify_p99_ms')} ms")

    async def measure(self, spec: str, index: int) -> dict[str, Any]:
        row: dict[str, Any] = {
            "impl": spec, "rounds": 0, "throughput_msgs_per_s": None, "ratio_to_floor": None, "ratio_spread": None,
            "ratio_to_reference": None, "floor_msgs_per_s": None, "notify_p50_ms": None, "notify_p99_ms": None,
            "peak_rss_mb": None, "rss_mb": None, "wakeup": None, "error": None, "notes": [],
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
                                f"{self.config.max_fetch_interval:g} s), {self.config.polling_probes} probes")
        errors: list[str] = []
        for phase, step in (("drain", self._drains), ("probes", self.probes)):
            try:
                await step(adapter, spec, index, row)
            except PhaseError as exc:
                errors.append(str(exc) if str(exc).startswith(phase) else f"{phase}: {exc}")
            except asyncio.TimeoutError:
                errors.append(f"{phase}: timed out")
            except Exception as exc:  # noqa: BLE001 - whatever the library raised is the row's finding
                errors.append(f"{phase}: {type(exc).__name__}: {exc}"[:600])
        if errors:
            row["error"] = "; ".join(errors)
            self.say(f"{spec}: {row['error']}")
        return row

    async def _drains(self, adapter: Adapter, spec: str, index: int, row: dict[str, Any]) -> None:
        template = await self.backlog(adapter, spec, row)
        try:
            rounds, notes = await self.rounds(adapter, spec, index, template)
        finally:
            await self.server.drop_database(template)
        row["round_figures"] = rounds
        if rounds:
            summary = summarise(rounds, self.config.messages)
            row.update({**summary, "notes": [*row["notes"], *summary["notes"], *notes]})
        else:
            row["notes"].extend(notes)


def _config(config: BenchConfig) -> dict[str, Any]:
    cc = consumer_config(config)
    return {
        "rounds": config.rounds, "max_workers": cc.max_workers, "fetch_batch_size": cc.fetch_batch_size,
        "lease_ttl_seconds": cc.lease_ttl_seconds, "max_fetch_interval": cc.max_fetch_interval,
        "min_fetch_interval": cc.min_fetch_interval, "dlq": cc.dlq, "pool_size": "adapter budget",
        "probes": config.probes, "polling_probes": config.polling_probes, "floor_loops": config.floor_loops,
        "floor_batch": config.floor_batch_size, "publish_chunk": config.publish_chunk,
        "payload_bytes": config.payload_bytes, "drain_cap_seconds": config.drain_cap_seconds,
        "impl_budget_seconds": config.impl_budget_seconds, "probe_timeout_seconds": config.probe_timeout_seconds,
    }


async def arun_bench(dsn: str, *, impls: Sequence[str] = ("reference",), log: Say | None = None,
                     **options: Any) -> dict[str, Any]:
    """The benchmark, on the running event loop; see :func:`run_bench`."""
    config = BenchConfig(**{**asdict(DEFAULTS), **options})
    impls = list(impls)
    if not impls:
        raise ValueError("impls must name at least one implementation")
    say = log or (lambda _m: None)
    admin = plain_dsn(dsn)
    server = PostgresServer(dsn=admin, host="", port=0, embedded=False)  # create_database needs the admin DSN only
    machine = await describe(admin)
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}bench-"))  # the consumers' specs, logs and histories
    history = HistoryWriter(workdir / "history-bench.jsonl", "bench")
    run = Run(server, config, workdir, history, say)
    try:
        await run.prepare_floor()
        rows = [await run.measure(spec, i) for i, spec in enumerate(impls)]
    finally:
        history.close()
        shutil.rmtree(workdir, ignore_errors=True)
        if run.floor_template:
            await server.drop_database(run.floor_template)
    reference = next((r["throughput_msgs_per_s"] for r in rows
                      if r["impl"] == "reference" and r["throughput_msgs_per_s"]), None)
    for r in rows:
        if r["throughput_msgs_per_s"] and reference:
            r["ratio_to_reference"] = round(r["throughput_msgs_per_s"] / reference, 3)
    machine["load_at_end"] = load_average()
    return {**rows[0], "floor_error": run.floor_error, "messages": config.messages, "impls": rows,
            "config": _config(config), "machine": machine, "seconds": round(time.monotonic() - t0, 1)}


def run_bench(dsn: str, *, messages: int = 100_000, impls: Sequence[str] = ("reference",),
              log: Say | None = None, **options: Any) -> dict[str, Any]:
    """Runs the benchmark on the server of ``dsn`` (an admin ``postgresql://`` DSN: it creates and
    drops databases) and returns the figures. Options are :class:`BenchConfig` fields (``rounds``,
    ``probes``, ``max_workers``, ``fetch_batch_size``, ``floor_loops``, ...). Works from plain code (its
    own event loop) and from inside a running loop (then on a helper thread)."""
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
