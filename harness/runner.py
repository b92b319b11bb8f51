"""Runs one scenario against one implementation and checks the history.

A scenario (``Scenario``) is data: consumer knobs, handler timing, what to
publish (the generator), and a fault schedule (the nemeses). ``run_scenario``

1. creates a fresh database and the implementation's schema through its adapter;
2. starts the workers under a supervisor (through a Toxiproxy proxy when there is one);
3. publishes in transactions the harness owns (business row + outbox rows,
   some rolled back), while the nemesis schedule breaks things;
4. heals everything, publishes idle wake-up probes if asked, then drains with
   healthy workers until every committed message is handled or dead-lettered
   or a deadline passes;
5. stops the workers by pid, merges the histories and runs the checkers.

A fault that did not take effect turns every would-be "pass" into "unknown".
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import create_async_engine

from harness import business
from harness.adapter import Adapter, ConsumerConfig, PublishTx
from harness.checkers import CheckContext, run_checkers
from harness.history import Event, HistoryWriter, merge, read_events, write_history
from harness.names import PUBLISHER_APP, WORKER_APP_LIKE, scenario_database
from harness.nemesis.base import FaultNotApplied, Nemesis
from harness.payload import decode, encode
from harness.provision.postgres import PostgresServer, asyncpg_url
from harness.sampler import sample_connections
from harness.supervisor import Supervisor
from harness.verdict import ScenarioResult, Verdict

log = logging.getLogger("harness.runner")


@dataclass
class Env:
    """What a running scenario can act on; nemesis factories receive it."""

    server: PostgresServer
    admin_dsn: str  # direct to the scenario database, never through the proxy
    worker_dsn: str  # what workers and publishers use (through the proxy when there is one)
    supervisor: Supervisor
    adapter: Adapter
    proxy: Any | None  # harness.provision.toxiproxy.Proxy
    history: HistoryWriter
    in_flight: Callable[[str], int]
    progress: Callable[[str], None] = lambda line: None  # live progress for the terminal


@dataclass
class FaultStep:
    """At ``at`` seconds after the start, apply the nemesis built by ``make``; heal after ``hold`` seconds.

    ``inner`` steps are scheduled relative to the moment this fault took effect, during its hold:
    a fault that needs another in place first (kill a worker once the connection slots are full).
    """

    at: float
    make: Callable[[Env], Nemesis]
    hold: float = 0.0
    inner: list[FaultStep] = field(default_factory=list)


@dataclass
class Workload:
    """The generator: what the publishers send, and when."""

    messages: int = 400
    batch: int = 4  # messages per transaction
    rate: float = 200.0  # messages per second
    rollback_fraction: float = 0.1  # transactions rolled back on purpose (P1)
    poison: int = 0  # messages whose handler always raises
    probes: int = 0  # idle single-message publishes after the faults, for wake-up latency
    probe_interval: float = 0.2
    probe_fault: Callable[[Env], Nemesis] | None = None  # a fault active while probing (D8)
    probe_fault_hold: float = 0.0
    pad: int = 64  # payload padding bytes
    after_heal: int = 20  # messages published once every fault has healed


@dataclass
class Scenario:
    name: str
    guarantees: list[str]  # ids this scenario checks; others are not reported
    checkers: list[str]
    config: ConsumerConfig = field(default_factory=ConsumerConfig)
    workers: int = 2
    handler: dict[str, Any] = field(default_factory=dict)  # HandlerSpec fields
    workload: Workload = field(default_factory=Workload)
    faults: list[FaultStep] = field(default_factory=list)
    requires: tuple[str, ...] = ()  # Capabilities flags without which the scenario is not applicable
    needs_proxy: bool = False
    controls_server: bool = False  # crashes PostgreSQL: needs the harness's own server
    drain_deadline: float = 60.0
    extra: dict[str, Any] = field(default_factory=dict)  # hints for the checkers


@dataclass
class Outcome:
    """Figures the runner itself gathered, beside the history."""

    faults_failed: list[str] = field(default_factory=list)
    drained: bool = False
    notes: list[str] = field(default_factory=list)


async def run_scenario(scenario: Scenario, *, adapter: Adapter, impl_spec: str, server: PostgresServer,
                       workdir: Path, toxiproxy: Any | None = None, toxiproxy_error: str | None = None,
                       progress: Callable[[str], None] | None = None) -> ScenarioResult:
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    missing = adapter.capabilities.missing(*scenario.requires)
    if missing:
        return _not_run(scenario, adapter, "not_applicable", f"{adapter.name} lacks {', '.join(missing)}")
    if scenario.needs_proxy and toxiproxy is None:
        return _not_run(scenario, adapter, "skipped", f"Toxiproxy unavailable: {toxiproxy_error or 'not provisioned'}")
    if scenario.controls_server and not server.embedded:
        return _not_run(scenario, adapter, "skipped",
                        "crashes PostgreSQL, which needs the harness's own server: unset DATABASE_URL")
    admin_dsn = await server.create_database(scenario_database(scenario.name))
    await adapter.create_schema(admin_dsn, scenario.config)
    await business.create(admin_dsn)
    proxy = toxiproxy.proxy(f"pg_{scenario.name}", server.host, server.port) if toxiproxy is not None else None
    worker_dsn = proxy.dsn_for(admin_dsn) if proxy is not None else admin_dsn

    history = HistoryWriter(workdir / "history-runner.jsonl", "runner")
    supervisor = Supervisor(impl=impl_spec, dsn=worker_dsn, workdir=workdir, config=scenario.config.to_dict(),
                            handler=scenario.handler, history=history)
    say = _progress(scenario.name, progress)
    env = Env(server, admin_dsn, worker_dsn, supervisor, adapter, proxy, history,
              in_flight=lambda process: _in_flight(supervisor, process), progress=say)
    outcome = Outcome()
    mids = _Mids()
    sampler: asyncio.Task[None] | None = None
    try:
        for i in range(scenario.workers):
            supervisor.add(f"w{i + 1}")
        supervisor.start_monitor()
        sampler = asyncio.create_task(sample_connections(admin_dsn, history, like=WORKER_APP_LIKE))
        await supervisor.wait_started(timeout=20)
        say(f"{scenario.workers} workers up; publishing {scenario.workload.messages} messages")
        publisher = _Publisher(adapter, worker_dsn, scenario, history, mids)
        try:
            faults = asyncio.create_task(_run_faults(scenario.faults, env, outcome))
            await publisher.run(scenario.workload.messages, poison=scenario.workload.poison)
            await faults
            # A healthy tail after the last heal: recovery is judged on traffic, not on silence.
            await publisher.run(scenario.workload.after_heal)
            if scenario.workload.probes:
                await _probe(publisher, env, scenario.workload, outcome)
        finally:
            await publisher.close()
        say("faults healed; draining")
        outcome.drained = await _drain(admin_dsn, adapter, scenario.drain_deadline)
        say("drained" if outcome.drained else f"not drained after {scenario.drain_deadline:.0f}s")
        await _resolve_unknown(admin_dsn, mids, history)
    finally:
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        await supervisor.stop_all(timeout=scenario.config.graceful_timeout + 5)
        if proxy is not None:
            proxy.reset()
        history.close()

    state = await adapter.read_state(admin_dsn)
    events = merge(supervisor.history_paths() + [workdir / "history-runner.jsonl"])
    history_path = workdir / "history.jsonl"
    write_history(events, history_path)
    ctx = CheckContext(
        config=scenario.config, capabilities=adapter.capabilities,
        final_pending=[decode(p)[0] or "?" for p in state.pending], final_dead=[decode(p)[0] or "?" for p in state.dead],
        drained=outcome.drained, poison=mids.poison, connection_budget=adapter.connection_budget(scenario.config),
        extra={**scenario.extra, "skewed_workers": _skewed(events)},
    )
    verdicts = [v for v in run_checkers(scenario.checkers, events, ctx) if v.guarantee in scenario.guarantees]
    verdicts = _require_faults(verdicts, outcome, scenario)
    notes = outcome.notes + ([adapter.capabilities.notes] if adapter.capabilities.notes else [])
    return ScenarioResult(scenario.name, adapter.name, verdicts, time.monotonic() - t0,
                          history_path=str(history_path), notes=notes)


def _not_run(scenario: Scenario, adapter: Adapter, status: str, reason: str) -> ScenarioResult:
    """A scenario that cannot run here: every guarantee gets ``status`` with the reason, never pass."""
    verdicts = [Verdict(g, "runner", status, reason) for g in scenario.guarantees]  # type: ignore[arg-type]
    notes = [reason] + ([adapter.capabilities.notes] if adapter.capabilities.notes else [])
    return ScenarioResult(scenario.name, adapter.name, verdicts, 0.0, notes=notes)


def _progress(name: str, sink: Callable[[str], None] | None) -> Callable[[str], None]:
    t0 = time.monotonic()

    def say(line: str) -> None:
        if sink is not None:
            sink(f"  [{name} +{time.monotonic() - t0:5.1f}s] {line}")

    return say


def _skewed(events: list[Event]) -> list[str]:
    return [e.value["process"] for e in events if e.f == "worker" and e.value.get("event") == "spawned"
            and e.value.get("clock_offset")]


def _require_faults(verdicts: list[Verdict], outcome: Outcome, scenario: Scenario) -> list[Verdict]:
    """A scenario whose fault did not happen cannot pass; and every guarantee gets a verdict."""
    out = list(verdicts)
    if outcome.faults_failed:
        why = "; ".join(outcome.faults_failed)
        out = [Verdict(v.guarantee, v.checker, "unknown", f"fault did not take effect ({why}); {v.summary}", v.figures)
               if v.status == "pass" else v for v in out]
    seen = {v.guarantee for v in out}
    out += [Verdict(g, "runner", "unknown", "no checker decided this guarantee") for g in scenario.guarantees if g not in seen]
    return out


# -- publishing ----------------------------------------------------------------------

class _Mids:
    def __init__(self) -> None:
        self.n = 0
        self.poison: set[str] = set()
        self.committed: set[str] = set()
        self.unknown: set[str] = set()

    def next(self) -> str:
        self.n += 1
        return f"m{self.n}"


class _Publisher:
    """Transactions the harness owns: one business row per message plus the outbox rows."""

    def __init__(self, adapter: Adapter, dsn: str, scenario: Scenario, history: HistoryWriter, mids: _Mids) -> None:
        self.adapter = adapter
        self.dsn = dsn
        self.scenario = scenario
        self.workload = scenario.workload
        self.history = history
        self.mids = mids
        self.engine = create_async_engine(
            asyncpg_url(dsn), pool_size=2, max_overflow=0, pool_pre_ping=True,
            connect_args={"timeout": 3, "command_timeout": 5, "server_settings": {"application_name": PUBLISHER_APP}},
        )

    async def run(self, total: int, poison: int = 0) -> None:
        """``total`` messages at the workload's rate, ``poison`` of them spread evenly."""
        w = self.workload
        poison_left = poison
        poison_every = max(1, total // poison) if poison else 0
        interval = w.batch / w.rate if w.rate > 0 else 0.0
        sent = 0
        next_at = time.monotonic()
        while sent < total:
            n = min(w.batch, total - sent)
            kinds = []
            for i in range(n):
                poison = bool(poison_left) and (sent + i) % poison_every == 0
                poison_left -= poison
                kinds.append(poison)
            await self.publish(kinds, rollback=random.random() < w.rollback_fraction)
            sent += n
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def close(self) -> None:
        await self.engine.dispose()

    async def publish(self, kinds: list[bool], *, rollback: bool = False, probe: bool = False) -> None:
        mids = [self.mids.next() for _ in kinds]
        payloads = [encode(m, pad=self.workload.pad, poison=p) for m, p in zip(mids, kinds)]
        if not rollback:
            self.mids.poison.update(m for m, p in zip(mids, kinds) if p)
        self.history.record("invoke", "publish", mids=mids, rollback=rollback, probe=probe)
        committing = False
        try:
            async with self.engine.connect() as conn:
                tx = await conn.begin()
                await conn.exec_driver_sql(business.INSERT, (mids,))
                raw = (await conn.get_raw_connection()).driver_connection
                await self.adapter.publish(PublishTx(conn, raw), payloads, self.scenario.config.queue)
                if rollback:
                    await tx.rollback()
                    self.history.record("fail", "publish", mids=mids, rollback=True, probe=probe)
                    return
                committing = True
                await tx.commit()
        except Exception as exc:  # noqa: BLE001 - the outcome is the data
            kind = "info" if committing else "fail"  # a failed COMMIT may or may not have happened
            if committing:
                self.mids.unknown.update(mids)
            self.history.record(kind, "publish", mids=mids, rollback=False, probe=probe,
                                error=f"{type(exc).__name__}: {exc}"[:300])
            return
        self.mids.committed.update(mids)
        self.history.record("ok", "publish", mids=mids, probe=probe)


async def _probe(publisher: _Publisher, env: Env, w: Workload, outcome: Outcome) -> None:
    """Idle single-message publishes: wake-up latency (D7), and under a fault, polling fallback (D8)."""
    await asyncio.sleep(1.0)  # let the consumers go idle
    half = w.probes // 2 if w.probe_fault else w.probes
    await _probe_loop(publisher, half, w.probe_interval)
    if w.probe_fault is not None:
        await _apply(FaultStep(0.0, w.probe_fault, w.probe_fault_hold), env, outcome,
                     during=lambda: _probe_loop(publisher, w.probes - half, w.probe_interval))


async def _probe_loop(publisher: _Publisher, n: int, interval: float) -> None:
    for _ in range(n):
        await publisher.publish([False], probe=True)
        await asyncio.sleep(interval)


# -- faults --------------------------------------------------------------------------

async def _run_faults(steps: list[FaultStep], env: Env, outcome: Outcome) -> None:
    """Each step on its own clock, so faults overlap as scheduled."""
    t0 = time.monotonic()

    async def one(step: FaultStep) -> None:
        await asyncio.sleep(max(0.0, t0 + step.at - time.monotonic()))
        await _apply(step, env, outcome)

    await asyncio.gather(*(one(s) for s in steps))


async def _apply(step: FaultStep, env: Env, outcome: Outcome, during: Callable[[], Any] | None = None) -> None:
    try:
        nemesis = step.make(env)
    except FaultNotApplied as exc:
        outcome.faults_failed.append(str(exc))
        env.history.record("fail", "fault", kind="?", error=str(exc))
        return
    kind = nemesis.kind
    env.history.record("invoke", "fault", kind=kind)
    try:
        figures = await asyncio.to_thread(nemesis.start)
    except FaultNotApplied as exc:
        outcome.faults_failed.append(f"{kind}: {exc}")
        env.history.record("fail", "fault", kind=kind, error=str(exc))
        return
    env.history.record("ok", "fault", kind=kind, **figures)
    env.progress(f"fault {kind} applied {json.dumps(figures, default=str)[:120]}")
    outcome.notes.append(f"{kind}: {json.dumps(figures, default=str)}")
    jobs = [asyncio.sleep(step.hold)]
    if during is not None:
        jobs.append(during())
    if step.inner:
        jobs.append(_run_faults(step.inner, env, outcome))
    await asyncio.gather(*jobs)
    try:
        healed = await asyncio.to_thread(nemesis.stop)
    except FaultNotApplied as exc:
        outcome.faults_failed.append(f"{kind} heal: {exc}")
        healed = {"error": str(exc)}
    env.history.record("info", "fault", kind=kind, **healed)
    env.progress(f"fault {kind} healed")


# -- observation -----------------------------------------------------------------------

def _in_flight(supervisor: Supervisor, process: str) -> int:
    """Deliveries invoked but not finished by ``process``, read from its history file."""
    path = supervisor.history_path(process)
    if not path.exists():
        return 0
    open_: dict[str, int] = {}
    for e in read_events(path):
        if e.f == "deliver" and e.mid:
            open_[e.mid] = open_.get(e.mid, 0) + (1 if e.type == "invoke" else -1)
    return sum(1 for v in open_.values() if v > 0)


async def _drain(dsn: str, adapter: Adapter, deadline_s: float) -> bool:
    """Healthy workers run until every committed message is handled or dead, or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            state = await adapter.read_state(dsn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await asyncio.sleep(0.5)
            continue
        if not state.pending:
            return True
        await asyncio.sleep(0.25)
    return False


async def _resolve_unknown(dsn: str, mids: _Mids, history: HistoryWriter) -> None:
    """A publish whose COMMIT raised is resolved by looking for its business row."""
    if not mids.unknown:
        return
    found = await business.committed(dsn, list(mids.unknown))
    history.record("info", "resolve", committed=sorted(found), absent=sorted(mids.unknown - found))
