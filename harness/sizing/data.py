"""The raw data of one grid point, read back and merged: the locust master's log and one commit log
per publishing process (wherever it ran), the consumer workers' histories, the CPU samples and clock
anchors of the sizing run; :func:`analyse_point` turns them into the point's figures.

Every time is placed on the sizing run's own monotonic clock (the consumers' host). A log written on
the same boot keeps its times as they are; one from another host is shifted through the database's
clock (:mod:`harness.sizing.clock`): both hosts' best anchors map their monotonic clocks onto
``clock_timestamp()``, so the shift is off by at most the two anchors' half round trips, reported as
``clock.uncertainty_ms``.
"""

from __future__ import annotations

import bisect
import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.history import read_events
from harness.sizing.analysis import Commit, Cpu, PointResult, Step, check_budget, find_knee, latencies, step_figures
from harness.sizing.clock import Anchor, Clocks
from harness.sizing.plan import GridPoint
from harness.stats import percentile

#: The master's log; each publishing process's records are in ``commits.<n>.jsonl`` beside it.
MASTER_LOG = "commits.jsonl"

Series = list[tuple[float, float]]  # (time, cumulative CPU seconds)


@dataclass
class Source:
    """One locust process's log."""

    src: str
    boot: str
    node: str
    commits: list[Commit] = field(default_factory=list)
    cpu: Series = field(default_factory=list)
    wait: Series = field(default_factory=list)  # seconds spent waiting for a CPU
    anchors: list[Anchor] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    end: float | None = None


@dataclass
class LoadLog:
    """Every locust process's records on the run's timeline."""

    commits: list[Commit]
    steps: list[Step]
    end: float | None
    publishers: dict[str, Series]  # src -> CPU seconds, for the processes that published
    publishers_wait: dict[str, Series]  # src -> seconds waiting for a CPU
    master: Series  # the master's CPU seconds (when it published nothing itself)
    local: set[str]  # sources on the run's own host
    boots: set[str]  # the hosts (boots) the sources ran on


def log_files(point_dir: Path) -> list[Path]:
    return [p for p in [point_dir / MASTER_LOG, *sorted(point_dir.glob("commits.*.jsonl"))] if p.exists()]


def read_source(path: Path) -> Source:
    """One log file; a torn last line is skipped."""
    source = Source(path.name, "", "")
    with open(path, encoding="utf-8", errors="replace") as fh:
        for raw in fh:
            if not raw.endswith("\n"):
                continue
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            kind = rec.get("k")
            if kind == "c":
                source.commits.append(Commit(float(rec["t0"]), float(rec["t"]), tuple(rec["mids"])))
            elif kind == "cpu":
                source.cpu.append((float(rec["t"]), float(rec["s"])))
                if "wait" in rec:
                    source.wait.append((float(rec["t"]), float(rec["wait"])))
            elif kind == "clock":
                source.anchors.append(Anchor.from_record(rec))
            elif kind == "step":
                source.steps.append(Step(int(rec["step"]), float(rec["t"]), int(rec["users"]), float(rec["offered"])))
            elif kind == "end":
                source.end = float(rec["t"])
            elif kind == "src":
                source.src, source.boot, source.node = str(rec["src"]), str(rec["boot"]), str(rec.get("node", ""))
    return source


def read_load_log(point_dir: Path, clocks: Clocks, boot: str) -> LoadLog:
    """Merges the logs onto the timeline of ``boot`` (the run's host); ``clocks`` gains their anchors."""
    sources = [read_source(p) for p in log_files(point_dir)]
    for s in sources:
        for a in s.anchors:
            clocks.add(a)

    def shift(b: str) -> float:
        if b in ("", boot):
            return 0.0
        if not (clocks.known(b) and clocks.known(boot)):
            raise RuntimeError(f"a locust process on another host (boot {b[:8]}) left no clock anchor: its times "
                               "cannot be placed on this run's clock (could it reach the database?)")
        return clocks.to_db(b, 0.0) - clocks.to_db(boot, 0.0)

    commits: list[Commit] = []
    steps: list[Step] = []
    publishers: dict[str, Series] = {}
    waits: dict[str, Series] = {}
    master: Series = []
    end: float | None = None
    for s in sources:
        d = shift(s.boot)
        commits += [Commit(c.t0 + d, c.t + d, c.mids) for c in s.commits]
        steps += [Step(x.index, x.t + d, x.users, x.offered) for x in s.steps]
        if s.end is not None:
            end = max(end or -math.inf, s.end + d)
        cpu = [(t + d, v) for t, v in s.cpu]
        if s.commits:
            publishers[s.src] = cpu
            waits[s.src] = [(t + d, v) for t, v in s.wait]
        elif s.steps:
            master = cpu
    return LoadLog(commits, steps, end, publishers, waits, master, {s.src for s in sources if s.boot in ("", boot)},
                   {s.boot for s in sources if s.boot})


def cores(series: Sequence[tuple[float, float]], a: float, b: float) -> float | None:
    """CPU cores used between ``a`` and ``b`` from cumulative samples (linear between samples);
    None when the samples cover less than half the window."""
    if len(series) < 2:
        return None
    ts = [t for t, _ in series]
    a2, b2 = max(a, ts[0]), min(b, ts[-1])
    if b2 - a2 < 0.5 * (b - a) or b2 <= a2:
        return None

    def at(t: float) -> float:
        i = min(max(bisect.bisect_right(ts, t), 1), len(ts) - 1)
        (t0, v0), (t1, v1) = series[i - 1], series[i]
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1

    return max(0.0, (at(b2) - at(a2)) / (b2 - a2))


def cpu_meter(load: LoadLog, samples: Sequence[dict[str, Any]]) -> Any:
    """``window(a, b) -> Cpu`` from the load log's self-reported CPU and the run's ``/proc`` samples."""
    consumers: dict[str, Series] = {}
    consumers_wait: dict[str, Series] = {}
    for s in samples:
        for pid, v in s["consumers"].items():
            consumers.setdefault(pid, []).append((s["t"], v))
        for pid, v in s.get("consumers_wait", {}).items():
            consumers_wait.setdefault(pid, []).append((s["t"], v))
    database = [(s["t"], s["database"]) for s in samples if s.get("database") is not None]
    database_wait = [(s["t"], s["database_wait"]) for s in samples if s.get("database_wait") is not None]
    harness = [(s["t"], s["harness"]) for s in samples]
    busy = [(s["t"], s["host_busy"]) for s in samples]
    total = [(s["t"], s["host_total"]) for s in samples]
    n_cores = samples[-1]["cores"] if samples else None

    def most(series: Iterable[Series], a: float, b: float) -> float | None:
        return max((v for x in series if (v := cores(x, a, b)) is not None), default=None)

    def window(a: float, b: float) -> Cpu:
        pubs = {src: cores(series, a, b) for src, series in load.publishers.items()}
        known = [v for v in pubs.values() if v is not None]
        cons = [v for v in (cores(series, a, b) for series in consumers.values()) if v is not None]
        db, me, master = cores(database, a, b), cores(harness, a, b), cores(load.master, a, b)
        host = cores(busy, a, b)
        other = None
        if host is not None:
            local_pubs = sum(v for src, v in pubs.items() if v is not None and src in load.local)
            other = max(0.0, host - sum(cons) - (db or 0.0) - (me or 0.0) - (master or 0.0) - local_pubs)
        host_cores = round(c) if (c := cores(total, a, b)) is not None else n_cores
        return Cpu(publisher=sum(known) if known else None, publisher_max=max(known, default=None),
                   publishers=len(pubs), load_master=master, consumers=sum(cons) if cons else None,
                   consumers_max=max(cons, default=None), database=db, harness=me, host_busy=host,
                   host_cores=host_cores, other=other, publisher_wait=most(load.publishers_wait.values(), a, b),
                   consumers_wait=most(consumers_wait.values(), a, b), database_wait=cores(database_wait, a, b))

    return window


def first_deliveries(paths: Iterable[Path]) -> dict[str, float]:
    """mid → earliest handler start (``deliver`` invoke) over every worker history."""
    first: dict[str, float] = {}
    for path in paths:
        for event in read_events(path, f="deliver", type_="invoke"):
            mid = event.mid
            if isinstance(mid, str) and event.t < first.get(mid, math.inf):
                first[mid] = event.t
    return first


def handler_durations(paths: Iterable[Path]) -> list[float]:
    """Seconds from each handler start to its end (``deliver`` invoke to ok or fail), one history file per worker
    incarnation; a call still running when its history ends is left out."""
    out: list[float] = []
    for path in paths:
        started: dict[str, float] = {}
        for event in read_events(path, f="deliver"):
            mid = event.mid
            if not isinstance(mid, str):
                continue
            if event.type == "invoke":
                started[mid] = event.t
            elif mid in started:
                out.append(event.t - started.pop(mid))
    return out


def read_locust_stats(path: Path) -> dict[str, Any]:
    """The aggregate rows of locust's ``*_stats.csv`` for publish and deliver (cross-check)."""
    out: dict[str, Any] = {}
    if not path.exists():
        return out
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row.get("Type") in ("publish", "deliver"):
                out[row["Type"]] = {
                    "requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                    "p50_ms": _num(row.get("50%")), "p95_ms": _num(row.get("95%")), "p99_ms": _num(row.get("99%")),
                    "rps": _num(row.get("Requests/s")),
                }
    return out


def _num(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "", "N/A") else None
    except ValueError:
        return None


def analyse_point(point: GridPoint, point_dir: Path, samples: list[dict[str, int]], *, max_connections: int | None,
                  reserved: int, bound_s: float, settle_s: float, cpu_samples: Sequence[dict[str, Any]] = (),
                  anchors: Sequence[Anchor] = (), boot: str = "") -> PointResult:
    """The point's figures; ``boot``: the run's host, whose clock the consumers' histories use."""
    clocks = Clocks(anchors)
    load = read_load_log(point_dir, clocks, boot)
    histories = sorted(point_dir.glob("worker-*.jsonl"))
    delivered = first_deliveries(histories)
    figures = step_figures(load.commits, load.steps, delivered, end=load.end, bound_s=bound_s, settle_s=settle_s,
                           cpu=cpu_meter(load, cpu_samples))
    mids = [m for c in load.commits for m in c.mids]
    return PointResult(
        point=point, steps=figures, knee=find_knee(figures),
        budget=check_budget(point, samples, max_connections=max_connections, reserved=reserved),
        published=len(mids), delivered=sum(1 for m in mids if m in delivered),
        e2e_p95_ms=percentile(latencies(load.commits, delivered), 95) * 1000,
        publish_p95_ms=percentile([c.t - c.t0 for c in load.commits], 95) * 1000,
        locust=read_locust_stats(point_dir / "locust_stats.csv"),
        handler_p99_ms=percentile(handler_durations(histories), 99) * 1000,
        clock=clock_summary(load, clocks, boot),
    )


def clock_summary(load: LoadLog, clocks: Clocks, boot: str) -> dict[str, Any]:
    """How commit → handler was measured: on one host exactly, across hosts through the database clock."""
    hosts = len(load.boots | {boot})
    remote = [b for b in load.boots if b != boot]
    error = max((clocks.uncertainty(b) + clocks.uncertainty(boot) for b in remote if clocks.known(boot)), default=0.0)
    how = ("one host: differences of its monotonic clock" if not remote else
           f"{hosts} hosts: each host's monotonic clock mapped onto the database's clock_timestamp() by its "
           f"best anchor; off by at most {error * 1000:.1f} ms")
    return {"hosts": hosts, "publishers": len(load.publishers), "how": how, "uncertainty_ms": error * 1000,
            "boots": {b[:8]: v for b, v in clocks.summary().items()}}
