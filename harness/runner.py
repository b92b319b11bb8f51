"""Runs one scenario against one implementation and judges its history.

``run_scenario``

1. creates a fresh database and the implementation's schema through its adapter, and writes the history's
   ``run`` header (the scenario, the declared config, capabilities and budget, the seed, and the versions of the
   implementation, the harness, PostgreSQL and Toxiproxy); every random choice of the run is drawn from the seed
   (:mod:`harness.seeds`), so ``seed=`` replays them;
2. starts the workers under the supervisor (through a Toxiproxy proxy when there is one);
3. publishes (:mod:`harness.generator`) while the fault schedule (:mod:`harness.schedule`) breaks things;
4. publishes a healthy tail after the last heal, and idle wake-up probes if asked, then drains with healthy
   workers until the outbox is empty or a deadline passes (a ``drain`` event);
5. stops the workers by pid, reads the tables one last time (a ``read`` event), merges the histories into one
   file as streams and judges it in one pass (:func:`harness.analysis.judge`), exactly as ``outbox-harness check``
   would later.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from harness import business, seeds
from harness.adapter import Adapter, Timings, declared_timings
from harness.analysis import judge
from harness.checkers import CheckContext, History
from harness.checkers.recovery import silent_since_heal
from harness.generator import Publisher
from harness.history import HistoryWriter, OutOfOrder, Tail, merge, merge_in_memory, write_merged
from harness.names import WORKER_APP_LIKE, scenario_database
from harness.nemesis.base import Env
from harness.payload import decode
from harness.provenance import implementation_version
from harness.provision.postgres import PostgresServer, server_settings
from harness.sampler import ListenerWatch, sample_connections
from harness.scenario import RECLAIM, Scenario, Workload
from harness.schedule import apply, run_schedule
from harness.supervisor import Supervisor
from harness.verdict import ScenarioResult
from harness.version import version

RUNNER_HISTORY = "history-runner.jsonl"
PUBLISHER = "publisher"  # the publisher's path to PostgreSQL, beside the workers' (w1, w2, ...)
DRAIN_MARGIN_S = 5.0
HISTORY = "history.jsonl"


async def run_scenario(scenario: Scenario, *, adapter: Adapter, impl_spec: str, server: PostgresServer,
                       workdir: Path, toxiproxy: Any | None = None, toxiproxy_error: str | None = None,
                       progress: Callable[[str], None] | None = None, seed: int | None = None,
                       time_scale: float = 1.0) -> ScenarioResult:
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    seed = random.randrange(2**32) if seed is None else seed
    say = _progress(scenario.name, progress)
    say(f"seed {seed}")
    scale = max(time_scale, _reclaim_scale(scenario, declared_timings(adapter, scenario.config)))
    scenario = scenario.scaled(scale)
    ctx = CheckContext(scenario.config, adapter.capabilities, adapter.connection_budget(scenario.config),
                       declared_timings(adapter, scenario.config))
    history = HistoryWriter(workdir / RUNNER_HISTORY, "runner")
    versions = {"impl": implementation_version(adapter), "harness": version(),
                "postgresql": (await server_settings(server.dsn, "server_version"))["server_version"],
                "toxiproxy": toxiproxy.version if toxiproxy is not None else None}

    def header(**extra: Any) -> None:
        history.record("info", "run", scenario=scenario.describe(), impl=adapter.name, impl_spec=impl_spec,
                       context=ctx.to_dict(), notes=adapter.capabilities.notes, seed=seed, time_scale=scale,
                       versions=versions, **extra)

    if reason := _cannot_run(scenario, adapter, ctx, server, toxiproxy, toxiproxy_error):
        header(not_run={"status": reason[0], "reason": reason[1]})
        history.close()
        return _result(scenario, adapter, workdir, [workdir / RUNNER_HISTORY], t0)

    admin_dsn = await server.create_database(scenario_database(scenario.name))
    await adapter.create_schema(admin_dsn, scenario.config)
    await business.create(admin_dsn)
    slots = [f"w{i + 1}" for i in range(scenario.workers)]
    # A path of its own to PostgreSQL for each worker and for the publisher, so one can be cut off alone.
    proxies = {path: toxiproxy.proxy(f"pg_{scenario.name}_{path}", server.host, server.port)
               for path in [*slots, PUBLISHER]} if toxiproxy is not None else {}

    def dsn(path: str) -> str:
        return proxies[path].dsn_for(admin_dsn) if path in proxies else admin_dsn

    header()
    supervisor = Supervisor(impl=impl_spec, dsn=admin_dsn, workdir=workdir, config=scenario.config.to_dict(),
                            handler=scenario.handler, history=history, seed=seed)
    env = Env(server, admin_dsn, supervisor, adapter, proxies, history,
              in_flight=InFlight(supervisor), progress=say,
              rng=seeds.stream(seed, "nemesis"), listeners=ListenerWatch())
    sampler: asyncio.Task[None] | None = None
    try:
        for slot in slots:
            supervisor.add(slot, dsn=dsn(slot), handler=scenario.worker_handlers.get(slot))
        supervisor.start_monitor()
        sampler = asyncio.create_task(sample_connections(admin_dsn, history, like=WORKER_APP_LIKE,
                                                         listeners=env.listeners))
        await supervisor.wait_started(timeout=20)
        say(f"{scenario.workers} workers up; publishing {scenario.workload.messages} messages")
        publisher = Publisher(adapter, dsn(PUBLISHER), scenario, history, seeds.stream(seed, "publisher"))
        try:
            faults = asyncio.create_task(run_schedule(scenario.faults, env))
            await publisher.run(scenario.workload.messages, poison=scenario.workload.poison)
            await faults
            # A healthy tail after the last heal: recovery is judged on traffic, not on silence.
            await publisher.run(scenario.workload.after_heal)
            if scenario.workload.probes:
                await _probe(publisher, env, scenario.workload)
            # Long enough for a consumer that recovers at its own declared pace: past it, silence is a finding.
            deadline = max(scenario.drain_deadline, ctx.liveness_bound + DRAIN_MARGIN_S)
            say("faults healed; draining")
            drained = await _drain(admin_dsn, adapter, deadline, history)
            say("drained" if drained else f"not drained after {deadline:.0f}s")
            paths = lambda: supervisor.history_paths() + [workdir / RUNNER_HISTORY]  # noqa: E731
            if drained and await _watch_cut_off(publisher, ctx, paths, say):
                await _drain(admin_dsn, adapter, deadline, history)
            await publisher.resolve_unknown(admin_dsn)
        finally:
            await publisher.close()
    finally:
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        await supervisor.stop_all(timeout=scenario.config.graceful_timeout + 5)
        for proxy in proxies.values():
            proxy.reset()
        try:
            await _final_read(admin_dsn, adapter, history)
        finally:
            history.close()
    return _result(scenario, adapter, workdir, supervisor.history_paths() + [workdir / RUNNER_HISTORY], t0)


def _reclaim_scale(scenario: Scenario, timings: Timings) -> float:
    """How much slower a scenario that needs reclaims must run for this implementation: its own reclaim time over
    the scenario's lease (a heartbeat timeout of a minute against a 2 s lease runs the scenario 30 times slower)."""
    if RECLAIM not in scenario.requires or not timings.reclaim_seconds:
        return 1.0
    own = timings.reclaim_seconds + timings.reclaim_window_seconds
    return max(1.0, own / scenario.config.lease_ttl_seconds)


def _cannot_run(scenario: Scenario, adapter: Adapter, ctx: CheckContext, server: PostgresServer,
                toxiproxy: Any | None, toxiproxy_error: str | None) -> tuple[str, str] | None:
    """(status, reason) when the scenario cannot run here; never a pass."""
    flags = [r for r in scenario.requires if r != RECLAIM]
    missing = adapter.capabilities.missing(*flags)
    if RECLAIM in scenario.requires and ctx.timings.reclaim_seconds is None:
        missing.append("a reclaim time (a lease TTL or declared Timings.reclaim_seconds)")
    if missing:
        return "not_applicable", f"{adapter.name} lacks {', '.join(missing)}"
    if scenario.needs_proxy and toxiproxy is None:
        return "skipped", f"Toxiproxy unavailable: {toxiproxy_error or 'not provisioned'}"
    if scenario.controls_server and not server.embedded:
        return "skipped", "crashes PostgreSQL, which needs the harness's own server: unset DATABASE_URL"
    return None


def _result(scenario: Scenario, adapter: Adapter, workdir: Path, paths: list[Path], t0: float) -> ScenarioResult:
    """Merges the histories into one record and judges it, streamed from the file as ``outbox-harness check``
    would: a long run is never held in memory."""
    history_path = workdir / HISTORY
    write_merged(paths, history_path)
    verdicts, notes = judge(History.read(history_path))
    return ScenarioResult(scenario.name, adapter.name, verdicts, time.monotonic() - t0,
                          history_path=str(history_path), notes=notes)


async def _watch_cut_off(publisher: Publisher, ctx: CheckContext, paths: Callable[[], list[Path]],
                         say: Callable[[str], None]) -> bool:
    """L4 asks the workers a network fault cut off to come back. While one has neither delivered nor held a
    connection since the last heal, offer it work (a message a second) until it does or the liveness bound has
    passed, so the verdict is decided by the worker, not by how fast the others drained. True if it published."""
    published = False
    while True:
        try:
            silent, until = silent_since_heal(merge(paths()), ctx)
        except OutOfOrder:
            silent, until = silent_since_heal(merge_in_memory(paths()), ctx)
        if not silent or time.monotonic() >= until:
            return published
        if not published:
            say(f"{', '.join(sorted(silent))} silent since the heal; offering work for up to {until - time.monotonic():.0f}s")
        await publisher.publish([False])
        published = True
        await asyncio.sleep(1.0)


def _progress(name: str, sink: Callable[[str], None] | None) -> Callable[[str], None]:
    t0 = time.monotonic()

    def say(line: str) -> None:
        if sink is not None:
            sink(f"  [{name} +{time.monotonic() - t0:5.1f}s] {line}")

    return say


async def _probe(publisher: Publisher, env: Env, w: Workload) -> None:
    """Idle single-message publishes: wake-up latency (D7), and under a fault, polling fallback (D8)."""
    await asyncio.sleep(1.0)  # let the consumers go idle
    half = w.probes // 2 if w.probe_fault else w.probes
    await publisher.probe(half, w.probe_interval)
    if w.probe_fault is not None:
        await apply(w.probe_fault, env, during=lambda: publisher.probe(w.probes - half, w.probe_interval))


class InFlight:
    """Deliveries invoked but not finished by a worker incarnation, followed in its history file as it grows: a
    kill late in a long run reads only what was written since the last one and keeps only the open calls."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self._seen: dict[str, tuple[Tail, dict[str, int]]] = {}
        self._lock = threading.Lock()  # nemeses ask from their own threads

    def __call__(self, process: str) -> int:
        with self._lock:
            tail, open_ = self._seen.setdefault(process, (Tail(self.supervisor.history_path(process), f="deliver"), {}))
            for e in tail.read():
                if e.mid:
                    n = open_.get(e.mid, 0) + (1 if e.type == "invoke" else -1)
                    if n > 0:
                        open_[e.mid] = n
                    else:
                        open_.pop(e.mid, None)
            return len(open_)


async def _drain(dsn: str, adapter: Adapter, deadline_s: float, history: HistoryWriter) -> bool:
    """Healthy workers run until every committed message is handled or dead, or the deadline passes."""
    t0 = time.monotonic()
    pending: int | None = None
    while time.monotonic() - t0 < deadline_s:
        try:
            pending = len((await adapter.read_state(dsn)).pending)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await asyncio.sleep(0.5)
            continue
        if not pending:
            history.record("ok", "drain", deadline_s=deadline_s, took_s=round(time.monotonic() - t0, 3))
            return True
        await asyncio.sleep(0.25)
    history.record("fail", "drain", deadline_s=deadline_s, pending=pending)
    return False


async def _final_read(dsn: str, adapter: Adapter, history: HistoryWriter) -> None:
    """The final read of the tables, as Jepsen's final read: which messages are still pending or dead."""
    history.record("invoke", "read")
    try:
        state = await adapter.read_state(dsn)
    except Exception as exc:
        history.record("fail", "read", error=f"{type(exc).__name__}: {exc}"[:300])
        raise
    history.record("ok", "read", pending=[decode(p)[0] or "?" for p in state.pending],
                   dead=[decode(p)[0] or "?" for p in state.dead])

