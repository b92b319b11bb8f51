"""``outbox-harness soak``: one implementation under steady load for a long time, the ``mixed`` scenario's faults
repeating, then drained and judged like any scenario.

Why: a leak, a slow drift or a recovery that breaks only the twentieth time shows only over a long run. The soak is
one :class:`~harness.scenario.Scenario` (built from the duration and the rate, its fault steps the ``mixed`` cycle
repeated every :data:`CYCLE_S`) run by :func:`harness.runner.run_scenario`, so it has the suite's supervisor,
nemeses, drain, interrupt handling and report. Nothing the harness holds grows with the run's length but one byte
per message here: every process appends its history to a file, the runner merges the files as streams and judges
the merged file in one pass, and a kill reads only what its worker wrote since the previous one.

Every few seconds a progress line gives what the record says (the history files, never the implementation's own
figures): messages committed (publish ok), delivered (a first deliver ok), the lag between them, duplicate
deliveries, faults applied, and the resident memory of the harness process and of the live workers. Verdicts are
decided at the end, then judged once more from the saved history (as ``outbox-harness check`` does) and required to
agree; the figures, memory and judge time included, go into ``results.json`` under ``meta.soak``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import interrupt
from harness.adapter import load_adapter
from harness.analysis import judge
from harness.checkers import History
from harness.exits import ERROR, FINDINGS, OK, USAGE
from harness.history import Tail
from harness.interrupt import Terminated
from harness.provision.postgres import PostgresServer, provision
from harness.report import write_report
from harness.runner import RUNNER_HISTORY, run_scenario
from harness.scenario import Scenario, Workload
from harness.scenarios.mixed import MIXED_NEMESIS
from harness.summary import verdict_table
from harness.verdict import ScenarioResult
from harness.worker import memory_mb

NAME = "soak"
#: One round of ``mixed``'s faults takes 8 s; the rest of the cycle lets the consumers reclaim, reconnect and catch
#: up before the next, so each round starts from a recovered system (the fault schedule is in the report).
CYCLE_S = 30.0
#: Without faults, the guarantees that a fault-free run can decide (P2 and L4 need a crash and a network fault).
FAULT_FREE = ("D1", "D2", "P1", "D3")
DRAIN_DEADLINE_S = 120.0
PROGRESS_S = 5.0


def cycle_span(faults: str) -> float:
    """How long one round of faults lasts (0 for none)."""
    steps = MIXED_NEMESIS.faults if faults == "mixed" else []
    return max((s.at + s.hold for s in steps), default=0.0)


def soak_scenario(duration_s: float, rate: float, faults: str) -> Scenario:
    """``mixed`` (its workers, consumer configuration and handler) publishing ``rate`` messages/s for ``duration_s``, its
    fault round repeated every :data:`CYCLE_S` while every round fits in the publishing time."""
    rounds = int((duration_s - cycle_span(faults)) // CYCLE_S) + 1 if faults == "mixed" else 0
    steps = [replace(s, at=s.at + k * CYCLE_S) for k in range(rounds) for s in MIXED_NEMESIS.faults]
    guarantees = list(MIXED_NEMESIS.guarantees) if steps else [g for g in MIXED_NEMESIS.guarantees if g in FAULT_FREE]
    return replace(MIXED_NEMESIS, name=NAME, guarantees=guarantees,
                   workload=Workload(messages=max(1, round(rate * duration_s)), rate=rate), faults=steps,
                   drain_deadline=DRAIN_DEADLINE_S)


@dataclass
class Trace:
    """A figure sampled through the run: its first, highest and last value."""

    start: float | None = None
    peak: float = 0.0
    end: float | None = None

    def add(self, value: float) -> None:
        self.start = value if self.start is None else self.start
        self.peak = max(self.peak, value)
        self.end = value


@dataclass
class Tally:
    """The run so far, read from the history files as they grow (each read takes only what was appended)."""

    workdir: Path
    committed: int = 0
    delivered: int = 0  # messages with at least one deliver ok
    duplicates: int = 0  # deliver oks after a message's first
    faults: int = 0  # fault ok: applied and proven
    harness_rss_mb: Trace = field(default_factory=Trace)
    workers_rss_mb: Trace = field(default_factory=Trace)  # the live workers' together
    _seen: bytearray = field(default_factory=bytearray)  # one byte per message number: delivered yet
    _tails: dict[Path, Tail] = field(default_factory=dict)
    _pids: dict[str, int] = field(default_factory=dict)  # live worker incarnations, from the runner's notes

    def read(self) -> None:
        for e in self._tail(self.workdir / RUNNER_HISTORY, None).read():
            if e.f == "publish" and e.type == "ok":
                self.committed += len(e.value.get("mids") or ())
            elif e.f == "fault" and e.type == "ok":
                self.faults += 1
            elif e.f == "worker" and e.value.get("event") == "spawned":
                self._pids[str(e.value["process"])] = int(e.value["pid"])
            elif e.f == "worker" and e.value.get("event") in ("died", "stopped"):
                self._pids.pop(str(e.value.get("process")), None)
        for path in sorted(self.workdir.glob("worker-*.jsonl")):
            for e in self._tail(path, "deliver").read():
                if e.type == "ok" and e.mid and e.mid[1:].isdigit():
                    self._delivered(int(e.mid[1:]))

    def _tail(self, path: Path, f: str | None) -> Tail:
        if path not in self._tails:
            self._tails[path] = Tail(path, f=f)
        return self._tails[path]

    def _delivered(self, n: int) -> None:
        if n >= len(self._seen):
            self._seen.extend(bytes(n + 1 - len(self._seen)))
        if self._seen[n]:
            self.duplicates += 1
        else:
            self._seen[n] = 1
            self.delivered += 1

    def sample_memory(self) -> None:
        self.harness_rss_mb.add(memory_mb()["rss_mb"])
        workers = [memory_mb(pid).get("rss_mb", 0.0) for pid in list(self._pids.values())]
        if workers:
            self.workers_rss_mb.add(round(sum(workers), 1))

    def line(self) -> str:
        workers = f", workers {self.workers_rss_mb.end:.0f} MB" if self.workers_rss_mb.end is not None else ""
        return (f"committed {self.committed:,} · delivered {self.delivered:,} · lag {self.committed - self.delivered:,}"
                f" · duplicates {self.duplicates:,} · faults {self.faults} · RSS harness"
                f" {self.harness_rss_mb.end or 0:.0f} MB{workers}")


async def _watch(tally: Tally) -> None:
    """The progress line, in the runner's format beside its own lines (faults, phases)."""
    t0 = time.monotonic()
    while True:
        await asyncio.sleep(PROGRESS_S)
        tally.read()
        tally.sample_memory()
        _say(f"  [{NAME} +{time.monotonic() - t0:5.1f}s] {tally.line()}")


async def _soak(scenario: Scenario, tally: Tally, *, impl: str, server: PostgresServer, toxiproxy: Any,
                seed: int | None) -> ScenarioResult:
    watch = asyncio.create_task(_watch(tally))
    try:
        return await run_scenario(scenario, adapter=load_adapter(impl), impl_spec=impl, server=server,
                                  workdir=tally.workdir, toxiproxy=toxiproxy, progress=_say, seed=seed)
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)


def _rejudged(result: ScenarioResult) -> tuple[float, int, bool]:
    """The saved history judged again, in one streaming pass as ``outbox-harness check`` judges it: the time it
    took, the events read, and whether the verdicts agree with the run's."""
    t0 = time.monotonic()
    history = History.read(Path(str(result.history_path)))
    verdicts, _ = judge(history)
    same = [v.to_dict() for v in verdicts] == [v.to_dict() for v in result.verdicts]
    return time.monotonic() - t0, history.size, same


def _refusal(ns: argparse.Namespace) -> str | None:
    """What makes the command line unusable that no single argument shows."""
    if ns.impl and len(ns.impl) > 1:
        return "a soak runs one implementation: give --impl once"
    if ns.faults == "mixed" and ns.duration < cycle_span(ns.faults):
        return (f"--duration {ns.duration:g}s is shorter than one round of mixed faults ({cycle_span('mixed'):g} s):"
                " give a longer --duration, or --faults none")
    return None


def run(ns: argparse.Namespace) -> int:
    """The soak of ``outbox-harness soak``; its exit code (:mod:`harness.exits`)."""
    if why := _refusal(ns):
        print(f"outbox-harness soak: error: {why}", file=sys.stderr)
        return USAGE
    impl = (ns.impl or ["reference"])[0]
    scenario = soak_scenario(ns.duration, ns.rate, ns.faults)
    figures: dict[str, Any] = {"impl": impl, "duration_s": ns.duration, "rate": ns.rate, "faults": ns.faults,
                               "fault_rounds": len(scenario.faults) // max(1, len(MIXED_NEMESIS.faults)),
                               "cycle_s": CYCLE_S, "messages_planned": scenario.workload.messages}
    _say(f"{impl}: {scenario.workload.messages:,} messages at {ns.rate:g}/s over {ns.duration:g} s, faults"
        f" {ns.faults} ({figures['fault_rounds']} round(s), one every {CYCLE_S:g} s); verdicts are decided at the end")
    server = provision()
    workdir = Path(tempfile.mkdtemp(prefix="outbox-harness-soak-"))
    tally = Tally(workdir)
    toxiproxy = None
    try:
        if scenario.needs_proxy:
            from harness.provision.toxiproxy import provision_toxiproxy  # noqa: PLC0415

            toxiproxy = provision_toxiproxy()  # unavailable: a ProvisioningError, the command's exit 3
        logs = {"postgresql": server.log_path, "toxiproxy": toxiproxy.log_path if toxiproxy else None}
        t0 = time.monotonic()
        try:
            result = interrupt.run(_soak(scenario, tally, impl=impl, server=server, toxiproxy=toxiproxy, seed=ns.seed))
        except KeyboardInterrupt as exc:
            signal = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
            figures.update(_record(tally, time.monotonic() - t0))
            write_report([], reports_dir=ns.reports_dir, server_logs=logs, meta={NAME: figures}, interrupted={
                "signal": signal, "reason": f"interrupted by {signal}", "impl": impl, "scenario": NAME, "test": None})
            raise
        figures.update(_record(tally, time.monotonic() - t0))
        judge_s, events, same = _rejudged(result)
        figures.update(judge_s=round(judge_s, 2), events=events,
                       harness_rss_after_judge_mb=memory_mb()["rss_mb"], verdicts=[
                           {"guarantee": v.guarantee, "status": v.status} for v in result.verdicts])
        run_dir = write_report([result], reports_dir=ns.reports_dir, server_logs=logs, meta={NAME: figures})
    finally:
        if toxiproxy is not None:
            toxiproxy.stop()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return _verdict(result, figures, run_dir, same)


def _record(tally: Tally, run_s: float) -> dict[str, Any]:
    """The figures of the run as its record shows them once it has ended."""
    tally.read()
    return {"run_s": round(run_s, 1), "committed": tally.committed, "delivered": tally.delivered,
            "duplicates": tally.duplicates, "faults_applied": tally.faults,
            "harness_rss_mb": asdict(tally.harness_rss_mb), "workers_rss_mb": asdict(tally.workers_rss_mb),
            "harness_peak_rss_mb": memory_mb()["peak_rss_mb"]}


def _verdict(result: ScenarioResult, figures: dict[str, Any], run_dir: Path, same: bool) -> int:
    for line in verdict_table([result]):
        print(line)
    h, w = figures["harness_rss_mb"], figures["workers_rss_mb"]
    print(f"{figures['committed']:,} committed, {figures['delivered']:,} delivered, {figures['duplicates']:,}"
          f" duplicates, {figures['faults_applied']} faults in {figures['run_s']:g} s; judged {figures['events']:,}"
          f" events in {figures['judge_s']:g} s")
    print(f"RSS MB, harness: start {h['start']} · peak {h['peak']} · end {h['end']} · after judging"
          f" {figures['harness_rss_after_judge_mb']}; workers together: start {w['start']} · peak {w['peak']} · end"
          f" {w['end']}")
    print(f"report: {run_dir / 'report.html'}")
    statuses = {v.status for v in result.verdicts}
    if not same:
        print("outbox-harness soak: the saved history judged again gave other verdicts (a harness bug)",
              file=sys.stderr)
        return ERROR
    if statuses <= {"skipped", "not_applicable"}:
        print(f"outbox-harness soak: could not run: {'; '.join(result.notes[:1])}", file=sys.stderr)
        return ERROR
    return FINDINGS if statuses & {"fail", "unknown"} else OK


def _say(line: str) -> None:
    print(line, flush=True)
