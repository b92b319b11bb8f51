"""Sizing runs: locust step load over a (max_workers, fetch_batch_size, worker processes) grid.

For each grid point: a fresh PostgreSQL (the embedded one, or a fresh database on ``DATABASE_URL``),
the reference schema, N consumer worker processes under :class:`harness.supervisor.Supervisor`
(reference adapter, no faults, a handler of ``handler_ms`` ± ``jitter_ms``), then locust headless
as a subprocess (``harness/locustfile.py`` with its step shape) while ``pg_stat_activity`` is sampled
by ``application_name``. Figures come from the raw data, not from locust's bucketed percentiles:
the locustfile's commit log (monotonic COMMIT time per message) and the workers' histories
(monotonic handler start per message) give every message's end-to-end latency.

Per load step (its first ``settle`` seconds skipped): messages committed per second, first
deliveries per second, p95 of commit → handler start over the messages committed in the step (a
message never delivered counts as infinitely late), publish p95. A step is *sustained* when that
p95 is within the bound (default 1 s) and it delivered at least 90 % of what it published (a short
step can stay under the bound while its backlog grows). The point's **sustainable rate** is the best
delivery rate among the steps before the first one that is not sustained; if no step failed, it is a
lower bound and ``limited_by`` says why (``publisher``: locust could not offer more; ``load``: the
step plan did not reach the knee).

Connection use is checked against the budget formulas (one subscriber per worker process):
pool ``Σ subs × (max_workers + 1)``, ``+1`` LISTEN per subscriber, so per process
``max_workers + 2``, and ``max_connections ≥ replicas × Σ subs × (max_workers + 2)``.

``main(ns)`` (``outbox-harness size``) writes ``reports/sizing-<run-id>/``: ``sizing.json``,
``sizing.md``, ``sizing.html`` (inline SVG, no scripts), and per point the locust CSV/HTML, the
commit log, worker histories (gzipped) and logs. ``python -m harness.sizing consumers`` starts only
the consumers, for running the locustfile by hand (``docs/sizing.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gzip
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
QUEUE = "sizing"
DEFAULT_BOUND_S = 1.0
_INVOKE = '"type":"invoke","f":"deliver"'


# -- configuration -------------------------------------------------------------------

@dataclass(frozen=True)
class GridPoint:
    max_workers: int
    fetch_batch_size: int
    processes: int
    subs: int = 1  # subscribers per worker process (the harness worker runs one)

    @property
    def label(self) -> str:
        return f"mw={self.max_workers} fb={self.fetch_batch_size} p={self.processes}"

    @property
    def slug(self) -> str:
        return f"mw{self.max_workers}-fb{self.fetch_batch_size}-p{self.processes}"

    @property
    def per_process_budget(self) -> int:
        return self.subs * (self.max_workers + 2)

    @property
    def total_budget(self) -> int:
        return self.processes * self.per_process_budget

    def cost(self) -> tuple[int, int, int, int]:
        """Smaller is cheaper: connections the formula reserves, then processes, workers, batch."""
        return (self.total_budget, self.processes, self.max_workers, self.fetch_batch_size)


@dataclass(frozen=True)
class LoadPlan:
    """The locust step shape: ``step_users`` more users every ``step_seconds``, each ``user_rate`` tx/s."""

    user_rate: float = 25.0
    batch: int = 2
    step_users: int = 5
    step_seconds: float = 8.0
    steps: int = 10
    drain_seconds: float = 3.0
    pad: int = 64

    def offered(self) -> list[float]:
        return [self.step_users * k * self.user_rate * self.batch for k in range(1, self.steps + 1)]

    @property
    def duration(self) -> float:
        return self.steps * self.step_seconds + self.drain_seconds

    def env(self) -> dict[str, str]:
        return {
            "OUTBOX_LOCUST_USER_RATE": str(self.user_rate), "OUTBOX_LOCUST_BATCH": str(self.batch),
            "OUTBOX_LOCUST_STEP_USERS": str(self.step_users), "OUTBOX_LOCUST_STEP_SECONDS": str(self.step_seconds),
            "OUTBOX_LOCUST_STEPS": str(self.steps), "OUTBOX_LOCUST_DRAIN_SECONDS": str(self.drain_seconds),
            "OUTBOX_LOCUST_PAD": str(self.pad), "OUTBOX_LOCUST_SHAPE": "step",
        }


@dataclass(frozen=True)
class Handler:
    base_ms: float = 5.0
    jitter_ms: float = 1.0


QUICK_GRID = [GridPoint(2, 20, 1), GridPoint(4, 50, 1), GridPoint(8, 100, 2)]
QUICK_PLAN = LoadPlan(user_rate=50.0, batch=1, step_users=4, step_seconds=4.0, steps=4, drain_seconds=2.0)
FULL_GRID = [GridPoint(mw, fb, p) for p in (1, 2) for mw in (2, 8, 16) for fb in (20, 100)]
FULL_PLAN = LoadPlan()  # 250, 500 ... 2500 msg/s


# -- analysis (pure) -------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of ``values``; ``inf`` entries count; NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Commit:
    t0: float  # transaction start (monotonic)
    t: float  # COMMIT returned (monotonic)
    mids: tuple[str, ...]


@dataclass(frozen=True)
class Step:
    index: int
    t: float  # monotonic time the shape switched to it
    users: int
    offered: float  # nominal messages/s


@dataclass
class StepFigures:
    index: int
    users: int
    offered: float
    window_s: float
    committed: int
    publish_rate: float  # messages committed per second
    delivery_rate: float  # first deliveries per second (handler starts)
    delivered_fraction: float  # of the messages committed in the window, delivered by the end
    e2e_p50_ms: float
    e2e_p95_ms: float
    e2e_p99_ms: float
    publish_p95_ms: float
    sustained: bool = False


#: A step keeps up when it delivers at least this fraction of what it publishes: a short step can
#: stay under the latency bound while its backlog grows, and a longer one would not.
KEEP_UP = 0.9


def step_figures(commits: Sequence[Commit], steps: Sequence[Step], delivered: dict[str, float], *,
                 end: float | None = None, bound_s: float = DEFAULT_BOUND_S, settle_s: float = 1.0,
                 keep_up: float = KEEP_UP) -> list[StepFigures]:
    """Figures per load step (``users > 0``) from commits, step switches and first-delivery times.

    A step is sustained when the p95 of commit → handler start over the messages committed in it
    (never delivered = ∞) is within ``bound_s`` and it delivered ≥ ``keep_up`` × what it published.
    """
    steps = sorted(steps, key=lambda s: s.t)
    if end is None:
        end = max((c.t for c in commits), default=steps[-1].t if steps else 0.0)
    deliver_times = sorted(delivered.values())
    out: list[StepFigures] = []
    for i, step in enumerate(steps):
        if step.users <= 0:
            continue
        stop = steps[i + 1].t if i + 1 < len(steps) else end
        start = step.t + min(settle_s, 0.25 * max(0.0, stop - step.t))
        window = stop - start
        if window <= 0:
            continue
        inside = [c for c in commits if start <= c.t < stop]
        mids = [m for c in inside for m in c.mids]
        lat = [max(0.0, delivered[m] - c.t) if m in delivered else math.inf for c in inside for m in c.mids]
        n_deliv = _count_between(deliver_times, start, stop)
        p95 = percentile(lat, 0.95)
        fig = StepFigures(
            index=step.index, users=step.users, offered=step.offered, window_s=window, committed=len(mids),
            publish_rate=len(mids) / window, delivery_rate=n_deliv / window,
            delivered_fraction=(sum(1 for m in mids if m in delivered) / len(mids)) if mids else math.nan,
            e2e_p50_ms=percentile(lat, 0.50) * 1000, e2e_p95_ms=p95 * 1000, e2e_p99_ms=percentile(lat, 0.99) * 1000,
            publish_p95_ms=percentile([c.t - c.t0 for c in inside], 0.95) * 1000,
        )
        fig.sustained = bool(mids) and p95 <= bound_s and fig.delivery_rate >= keep_up * fig.publish_rate
        out.append(fig)
    return out


def _count_between(ordered: list[float], lo: float, hi: float) -> int:
    import bisect  # noqa: PLC0415

    return bisect.bisect_left(ordered, hi) - bisect.bisect_left(ordered, lo)


@dataclass(frozen=True)
class Knee:
    sustainable_rate: float  # msgs/s delivered at the best sustained step (0 if none)
    step: int | None  # index of that step
    limited_by: str  # consumer (knee found) | publisher | load (knee not reached) | none
    lower_bound: bool  # True when the knee was not reached (the real rate is higher)
    e2e_p95_ms: float  # at that step
    publish_p95_ms: float  # at that step
    first_failed_step: int | None
    peak_rate: float = 0.0  # most msgs/s delivered in any step, sustained or not (saturation throughput)


def find_knee(figures: Sequence[StepFigures], *, publisher_tolerance: float = 0.9) -> Knee:
    """The best sustained step before the first unsustained one, and why the search stopped there.

    Only the steps before the first failure count: a later step that happens to pass again does not
    make a configuration sustainable at that rate. Among them the highest delivery rate wins (a
    publisher that fell behind in the last step must not lower the consumer's figure). When nothing
    failed the figure is a lower bound: ``publisher`` if locust did not reach ``publisher_tolerance``
    of the offered rate in some sustained step, else ``load`` (the plan stopped below the knee).
    """
    peak = max((f.delivery_rate for f in figures), default=0.0)
    prefix: list[StepFigures] = []
    failed: StepFigures | None = None
    for f in sorted(figures, key=lambda f: f.index):
        if not f.sustained:
            failed = f
            break
        prefix.append(f)
    if not prefix:
        return Knee(0.0, None, "none" if failed is None else "consumer", False, math.nan, math.nan,
                    failed.index if failed else None, peak)
    best = max(prefix, key=lambda f: f.delivery_rate)
    if failed is not None:
        limited, lower = "consumer", False
    elif any(f.publish_rate < publisher_tolerance * f.offered for f in prefix):
        limited, lower = "publisher", True
    else:
        limited, lower = "load", True
    return Knee(best.delivery_rate, best.index, limited, lower, best.e2e_p95_ms, best.publish_p95_ms,
                failed.index if failed else None, peak)


@dataclass(frozen=True)
class Budget:
    pool_formula: int  # Σ subs × (max_workers + 1) per process
    listen_formula: int  # Σ subs per process
    per_process_formula: int  # Σ subs × (max_workers + 2)
    total_formula: int  # replicas × Σ subs × (max_workers + 2)
    per_process_peak: int  # most backends one worker process held in any sample
    total_peak: int  # most backends all worker processes held together in any sample
    publisher_peak: int
    max_connections: int | None
    reserved: int  # superuser_reserved_connections + reserved_connections
    samples: int
    process_overrun: bool
    total_overrun: bool
    server_short: bool  # max_connections - reserved < total_formula + publisher_peak

    @property
    def ok(self) -> bool:
        return not (self.process_overrun or self.total_overrun or self.server_short)

    def flags(self) -> list[str]:
        out = []
        if self.process_overrun:
            out.append(f"process overrun: {self.per_process_peak} > {self.per_process_formula}")
        if self.total_overrun:
            out.append(f"total overrun: {self.total_peak} > {self.total_formula}")
        if self.server_short:
            out.append(f"max_connections {self.max_connections} (−{self.reserved} reserved) < "
                       f"{self.total_formula} + {self.publisher_peak} publisher")
        return out


def check_budget(point: GridPoint, samples: Iterable[dict[str, int]], *, max_connections: int | None,
                 reserved: int = 0, worker_prefix: str = "harness-w", publisher_prefix: str = "harness-locust") -> Budget:
    """Observed backends (samples of ``{application_name: count}``) against the budget formulas."""
    per_process = total = publisher = n = 0
    for sample in samples:
        n += 1
        workers = {k: v for k, v in sample.items() if k.startswith(worker_prefix)}
        per_process = max(per_process, max(workers.values(), default=0))
        total = max(total, sum(workers.values()))
        publisher = max(publisher, sum(v for k, v in sample.items() if k.startswith(publisher_prefix)))
    short = max_connections is not None and max_connections - reserved < point.total_budget + publisher
    return Budget(
        pool_formula=point.subs * (point.max_workers + 1), listen_formula=point.subs,
        per_process_formula=point.per_process_budget, total_formula=point.total_budget,
        per_process_peak=per_process, total_peak=total, publisher_peak=publisher,
        max_connections=max_connections, reserved=reserved, samples=n,
        process_overrun=per_process > point.per_process_budget, total_overrun=total > point.total_budget,
        server_short=short,
    )


@dataclass
class PointResult:
    point: GridPoint
    steps: list[StepFigures]
    knee: Knee
    budget: Budget
    published: int = 0
    delivered: int = 0
    e2e_p95_ms: float = math.nan  # over every message of the point
    publish_p95_ms: float = math.nan
    locust: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    duration_s: float = 0.0
    error: str | None = None
    stopped_early: str | None = None  # why the load was cut short (a backlog no later step could work off)


@dataclass(frozen=True)
class Recommendation:
    target: float
    point: GridPoint | None
    rate: float
    message: str


def recommend(results: Sequence[PointResult], target: float, *, bound_s: float = DEFAULT_BOUND_S) -> Recommendation:
    """Smallest configuration (fewest budgeted connections) whose sustainable rate ≥ target within the bound."""
    fits = [r for r in results if r.error is None and r.knee.sustainable_rate >= target
            and r.knee.e2e_p95_ms <= bound_s * 1000]
    clean = [r for r in fits if r.budget.ok]
    if not clean:
        best = max((r for r in results if r.error is None), key=lambda r: r.knee.sustainable_rate, default=None)
        why = f"none of the measured points sustains {target:g} msg/s with p95 ≤ {bound_s:g} s"
        if fits:
            why += f" without a connection-budget flag ({', '.join(r.point.label for r in fits)} would, but overran)"
        if best is not None:
            why += f"; the best measured is {best.point.label} at {_rate(best.knee)} msg/s"
        return Recommendation(target, None, 0.0, why)
    pick = min(clean, key=lambda r: r.point.cost())
    p = pick.point
    msg = (f"{p.label}: max_workers={p.max_workers}, fetch_batch_size={p.fetch_batch_size}, {p.processes} worker "
           f"process(es); sustained {_rate(pick.knee)} msg/s with p95 {pick.knee.e2e_p95_ms:.0f} ms; pool_size ≥ "
           f"{pick.budget.pool_formula} per process, max_connections ≥ {p.total_budget} for these replicas "
           f"(× 2 during a rolling deploy that doubles them), plus publishers")
    return Recommendation(target, p, pick.knee.sustainable_rate, msg)


def _rate(knee: Knee) -> str:
    return ("≥ " if knee.lower_bound else "") + f"{knee.sustainable_rate:.0f}"


# -- raw data ------------------------------------------------------------------------

def read_commit_log(path: Path) -> tuple[list[Commit], list[Step], float | None]:
    commits: list[Commit] = []
    steps: list[Step] = []
    end: float | None = None
    for raw in _lines(path):
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        kind = rec.get("k")
        if kind == "c":
            commits.append(Commit(float(rec["t0"]), float(rec["t"]), tuple(rec["mids"])))
        elif kind == "step":
            steps.append(Step(int(rec["step"]), float(rec["t"]), int(rec["users"]), float(rec["offered"])))
        elif kind == "end":
            end = float(rec["t"])
    return commits, steps, end


def first_deliveries(paths: Iterable[Path]) -> dict[str, float]:
    """mid → earliest handler start over every worker history."""
    first: dict[str, float] = {}
    for path in paths:
        for raw in _lines(path):
            if _INVOKE not in raw:
                continue
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            mid = (event.get("value") or {}).get("mid")
            if isinstance(mid, str):
                t = float(event["t"])
                if t < first.get(mid, math.inf):
                    first[mid] = t
    return first


def _lines(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    if not path.exists():
        return
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:  # type: ignore[operator]
        for line in fh:
            if line.endswith("\n"):  # a torn last line is skipped
                yield line


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
                  reserved: int, bound_s: float, settle_s: float) -> PointResult:
    commits, steps, end = read_commit_log(point_dir / "commits.jsonl")
    delivered = first_deliveries(sorted(point_dir.glob("worker-*.jsonl")) + sorted(point_dir.glob("worker-*.jsonl.gz")))
    figures = step_figures(commits, steps, delivered, end=end, bound_s=bound_s, settle_s=settle_s)
    mids = [(m, c) for c in commits for m in c.mids]
    lat = [max(0.0, delivered[m] - c.t) if m in delivered else math.inf for m, c in mids]
    return PointResult(
        point=point, steps=figures, knee=find_knee(figures),
        budget=check_budget(point, samples, max_connections=max_connections, reserved=reserved),
        published=len(mids), delivered=sum(1 for m, _ in mids if m in delivered),
        e2e_p95_ms=percentile(lat, 0.95) * 1000, publish_p95_ms=percentile([c.t - c.t0 for c in commits], 0.95) * 1000,
        locust=read_locust_stats(point_dir / "locust_stats.csv"),
    )


# -- running one point -------------------------------------------------------------------

async def _require_started(supervisor: Any, timeout: float) -> None:
    if not await supervisor.wait_started(timeout):
        raise RuntimeError(f"worker processes did not start within {timeout:.0f} s (see their .log files)")


async def _sampler(dsn: str, out: list[dict[str, int]], history: Any, every: float = 0.2) -> None:
    """Backends by application_name (harness-*) every ``every`` seconds."""
    import asyncpg  # noqa: PLC0415

    conn = None
    try:
        while True:
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(dsn, timeout=2, server_settings={"application_name": "sizing-sampler"})
                rows = await conn.fetch("SELECT application_name, count(*) FROM pg_stat_activity "
                                        "WHERE application_name LIKE 'harness-%' GROUP BY 1", timeout=2)
                sample = {r[0]: int(r[1]) for r in rows}
                out.append(sample)
                history.record("info", "sample", backends=sample)
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn = None
            await asyncio.sleep(every)
    finally:
        if conn is not None:
            conn.terminate()


async def _server_limits(dsn: str) -> tuple[int, int, str]:
    import asyncpg  # noqa: PLC0415

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        mc = int(await conn.fetchval("SHOW max_connections"))
        reserved = int(await conn.fetchval("SHOW superuser_reserved_connections"))
        with contextlib.suppress(asyncpg.PostgresError):
            reserved += int(await conn.fetchval("SHOW reserved_connections"))  # PostgreSQL 16+
        version = str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
    return mc, reserved, version


async def _prepare(dsn: str, point: GridPoint) -> dict[str, Any]:
    import asyncpg  # noqa: PLC0415

    from harness.adapters.reference import adapter  # noqa: PLC0415

    config = consumer_config(point)
    await adapter.create_schema(dsn, config)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS harness_business (mid text PRIMARY KEY, at timestamptz DEFAULT now())")
    finally:
        await conn.close()
    return config.to_dict()


def consumer_config(point: GridPoint) -> Any:
    from harness.adapter import ConsumerConfig  # noqa: PLC0415

    # A long lease: sizing measures throughput, not reclaims; LISTEN wakes idle consumers.
    return ConsumerConfig(queue=QUEUE, max_workers=point.max_workers, fetch_batch_size=point.fetch_batch_size,
                          lease_ttl_seconds=60.0, graceful_timeout=5.0, min_fetch_interval=0.05,
                          max_fetch_interval=1.0, statement_timeout_seconds=10.0)


def backlog_limit(plan: LoadPlan, bound_s: float, margin: float = 2.0) -> float:
    """Pending rows beyond which every later step must fail, so the load can stop early.

    A backlog larger than ``bound_s`` × the highest rate the plan offers cannot be worked off while
    the offered rate keeps stepping up: if the consumer were faster than that rate no backlog would
    build, and if it is slower, every later message waits behind more than ``bound_s`` of work.
    """
    return margin * bound_s * max(plan.offered(), default=0.0)


async def _watch_load(locust: subprocess.Popen[bytes], dsn: str, plan: LoadPlan, bound_s: float,
                      history: Any) -> str | None:
    """Waits for locust to finish; returns why it was stopped early (None: it ran its plan or timed out)."""
    import asyncpg  # noqa: PLC0415

    from harness.adapters.reference import TABLE  # noqa: PLC0415

    limit = backlog_limit(plan, bound_s)
    deadline = time.monotonic() + plan.duration + 60
    conn = await asyncpg.connect(dsn, timeout=5, server_settings={"application_name": "sizing-monitor"})
    try:
        while locust.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            pending = int(await conn.fetchval(f"SELECT count(*) FROM {TABLE}", timeout=5))
            if pending > limit:
                why = f"backlog of {pending} rows > {limit:.0f} (2 × bound × highest offered rate): later steps cannot pass"
                history.record("info", "locust", event="stopped_early", pending=pending, limit=limit)
                return why
    finally:
        await conn.close()
    return None


async def _pending(dsn: str) -> int:
    import asyncpg  # noqa: PLC0415

    from harness.adapters.reference import TABLE  # noqa: PLC0415

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {TABLE}"))
    finally:
        await conn.close()


def _stop_pid(proc: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    """Stops locust by pid: SIGUSR1 (the locustfile ends the test the normal way: complete reports),
    then SIGINT (HTML and CSV still written; SIGTERM would skip the HTML), then SIGKILL."""
    from harness.provision import guard  # noqa: PLC0415

    for sig, wait in ((signal.SIGUSR1, grace), (signal.SIGINT, grace)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
    guard.kill_and_forget(proc.pid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=1)


def locust_command(point_dir: Path, *, run_time: float | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary", "--stop-timeout", "5",
           "--csv", str(point_dir / "locust"), "--csv-full-history", "--html", str(point_dir / "locust.html")]
    if run_time is not None:
        cmd += ["-t", f"{int(math.ceil(run_time))}s"]
    return cmd


async def run_point(point: GridPoint, plan: LoadPlan, handler: Handler, point_dir: Path, *, bound_s: float,
                    settle_s: float, drain_timeout: float, log: Any = print) -> PointResult:
    """One grid point end to end; every process it starts is stopped by pid before it returns."""
    from harness.history import HistoryWriter  # noqa: PLC0415
    from harness.provision import guard  # noqa: PLC0415
    from harness.provision.postgres import provision  # noqa: PLC0415
    from harness.supervisor import Supervisor  # noqa: PLC0415

    t_start = time.monotonic()
    point_dir.mkdir(parents=True, exist_ok=True)
    samples: list[dict[str, int]] = []
    server = provision()
    supervisor: Supervisor | None = None
    sampler: asyncio.Task[None] | None = None
    locust: subprocess.Popen[bytes] | None = None
    stopped_early: str | None = None
    history = HistoryWriter(point_dir / "history-runner.jsonl", "sizing")
    try:
        dsn = await server.create_database(f"sizing_{point.slug.replace('-', '_')}")
        max_connections, reserved, version = await _server_limits(dsn)
        config = await _prepare(dsn, point)
        supervisor = Supervisor(impl="reference", dsn=dsn, workdir=point_dir, config=config,
                                handler=asdict(handler), history=history)
        for i in range(point.processes):
            supervisor.add(f"w{i + 1}")
        supervisor.start_monitor()
        await _require_started(supervisor, 30)
        sampler = asyncio.create_task(_sampler(dsn, samples, history))
        env = {**os.environ, **plan.env(), "OUTBOX_LOCUST_DSN": dsn, "OUTBOX_LOCUST_QUEUE": QUEUE,
               "OUTBOX_LOCUST_HISTORY_DIR": str(point_dir), "OUTBOX_LOCUST_LOG": str(point_dir / "commits.jsonl"),
               "OUTBOX_LOCUST_DELIVER_TIMEOUT": str(max(10.0, plan.duration))}
        with open(point_dir / "locust.log", "wb") as out:
            locust = subprocess.Popen(locust_command(point_dir), stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        guard.protect(locust.pid)
        history.record("info", "locust", event="spawned", pid=locust.pid)
        stopped_early = await _watch_load(locust, dsn, plan, bound_s, history)
        timed_out = locust.poll() is None and stopped_early is None
        _stop_pid(locust)
        history.record("info", "locust", event="exited", code=locust.returncode, timed_out=timed_out)
        drain_until = time.monotonic() + drain_timeout
        while time.monotonic() < drain_until and await _pending(dsn) > 0:
            await asyncio.sleep(0.2)
        if timed_out:
            raise RuntimeError(f"locust did not finish within {plan.duration + 60:.0f} s (see {point_dir / 'locust.log'})")
    finally:
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        if locust is not None:
            _stop_pid(locust)
        if supervisor is not None:
            await supervisor.stop_all(timeout=10)
        history.close()
        server.stop()
    if not (point_dir / "commits.jsonl").exists():
        raise RuntimeError(f"locust published nothing (see {point_dir / 'locust.log'})")
    result = analyse_point(point, point_dir, samples, max_connections=max_connections, reserved=reserved,
                           bound_s=bound_s, settle_s=settle_s)
    result.locust["server_version"] = version
    result.stopped_early = stopped_early
    result.duration_s = time.monotonic() - t_start
    _compress(point_dir)
    result.files = {p.name: str(p) for p in sorted(point_dir.iterdir()) if p.is_file()}
    return result


def _compress(point_dir: Path) -> None:
    """Raw histories are large on full grids; gzip them once analysed (the analysis reads .gz too)."""
    for path in [point_dir / "commits.jsonl", *point_dir.glob("worker-*.jsonl")]:
        if path.exists():
            with open(path, "rb") as src, gzip.open(path.with_name(path.name + ".gz"), "wb", compresslevel=3) as dst:
                shutil.copyfileobj(src, dst)
            path.unlink()


# -- the grid ------------------------------------------------------------------------

@dataclass
class SizingRun:
    run_id: str
    out_dir: Path
    grid: list[GridPoint]
    plan: LoadPlan
    handler: Handler
    bound_s: float
    target: float | None
    results: list[PointResult] = field(default_factory=list)
    started: str = ""
    duration_s: float = 0.0
    recommendation: Recommendation | None = None
    interrupted: bool = False


async def run_grid(run: SizingRun, *, settle_s: float, drain_timeout: float, log: Any = print) -> None:
    t0 = time.monotonic()
    task = asyncio.current_task()
    if task is not None:  # SIGTERM unwinds like Ctrl-C: every finally block stops its processes by pid
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    for n, point in enumerate(run.grid, 1):
        log(f"[{n}/{len(run.grid)}] {point.label}: {run.plan.steps} steps × {run.plan.step_seconds:g} s, "
            f"offered {', '.join(f'{r:g}' for r in run.plan.offered())} msg/s")
        try:
            result = await run_point(point, run.plan, run.handler, run.out_dir / "points" / point.slug,
                                     bound_s=run.bound_s, settle_s=settle_s, drain_timeout=drain_timeout, log=log)
        except Exception as exc:  # noqa: BLE001 - one broken point is reported, the grid goes on
            result = PointResult(point, [], Knee(0.0, None, "none", False, math.nan, math.nan, None),
                                 check_budget(point, [], max_connections=None), error=f"{type(exc).__name__}: {exc}")
            log(f"    error: {result.error}")
        else:
            if result.stopped_early:
                log(f"    load stopped early: {result.stopped_early}")
            log(f"    sustainable {_rate(result.knee)} msg/s ({result.knee.limited_by}), p95 "
                f"{_ms(result.knee.e2e_p95_ms)}, peak conns {result.budget.total_peak}/{result.budget.total_formula}, "
                f"{result.duration_s:.0f} s")
        run.results.append(result)
        run.duration_s = time.monotonic() - t0


# -- report --------------------------------------------------------------------------

def _ms(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if math.isinf(v):
        return "∞"
    return f"{v / 1000:.2f} s" if v >= 10_000 else f"{v:.0f} ms"


HEADERS = ["configuration", "budget conns", "sustainable msg/s", "limited by", "peak msg/s", "p95 e2e @knee",
           "publish p95 @knee",
           "peak conns/process", "peak conns total", "budget"]


def table_rows(results: Sequence[PointResult]) -> list[list[str]]:
    rows = []
    for r in results:
        b = r.budget
        if r.error:
            rows.append([r.point.label, str(r.point.total_budget), "error", r.error[:60], "–", "–", "–", "–", "–", "–"])
            continue
        rows.append([
            r.point.label, str(r.point.total_budget), _rate(r.knee), r.knee.limited_by, f"{r.knee.peak_rate:.0f}",
            _ms(r.knee.e2e_p95_ms),
            _ms(r.knee.publish_p95_ms), f"{b.per_process_peak} / {b.per_process_formula}",
            f"{b.total_peak} / {b.total_formula}", "ok" if b.ok else "OVERRUN: " + "; ".join(b.flags()),
        ])
    return rows


def markdown(run: SizingRun) -> str:
    lines = [f"# Sizing {run.run_id}", "",
             f"Handler {run.handler.base_ms:g} ± {run.handler.jitter_ms:g} ms; steps of {run.plan.step_users} users × "
             f"{run.plan.user_rate:g} tx/s × {run.plan.batch} msg, {run.plan.step_seconds:g} s each; "
             f"sustained = p95 commit → handler ≤ {run.bound_s:g} s and delivered ≥ {KEEP_UP:g} × published; "
             "\"≥\" = the knee was not reached (lower bound); peak = most msg/s delivered in any step. "
             "Budget per process = max_workers + 2 "
             f"(pool max_workers + 1, LISTEN 1); total = processes × (max_workers + 2).", "",
             "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(run.results)]
    lines += [""]
    if run.recommendation is not None:
        lines += [f"**Recommendation for {run.recommendation.target:g} msg/s:** {run.recommendation.message}", ""]
    for r in run.results:
        if not r.steps:
            continue
        lines += [f"## {r.point.label}", ""]
        if r.stopped_early:
            lines += [f"Load stopped early: {r.stopped_early}.", ""]
        lines += ["| step | users | offered | published/s | delivered/s | p50 | p95 | p99 | publish p95 | sustained |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for s in r.steps:
            lines.append(f"| {s.index} | {s.users} | {s.offered:.0f} | {s.publish_rate:.0f} | {s.delivery_rate:.0f} | "
                         f"{_ms(s.e2e_p50_ms)} | {_ms(s.e2e_p95_ms)} | {_ms(s.e2e_p99_ms)} | {_ms(s.publish_p95_ms)} | "
                         f"{'yes' if s.sustained else 'no'} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def text_table(results: Sequence[PointResult]) -> str:
    rows = [HEADERS, *table_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(rows[0]), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows[1:])])


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else ("inf" if math.isinf(value) else round(value, 3))
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def to_json(run: SizingRun) -> dict[str, Any]:
    points = []
    for r in run.results:
        points.append({
            "config": {**asdict(r.point), "label": r.point.label}, "error": r.error,
            "sustainable_rate": r.knee.sustainable_rate, "sustainable_is_lower_bound": r.knee.lower_bound,
            "limited_by": r.knee.limited_by, "knee": asdict(r.knee), "e2e_p95_ms_at_knee": r.knee.e2e_p95_ms,
            "publish_p95_ms_at_knee": r.knee.publish_p95_ms, "e2e_p95_ms_all": r.e2e_p95_ms,
            "publish_p95_ms_all": r.publish_p95_ms, "published": r.published, "delivered": r.delivered,
            "steps": [asdict(s) for s in r.steps],
            "budget": {**asdict(r.budget), "ok": r.budget.ok, "flags": r.budget.flags()},
            "locust": r.locust, "duration_s": r.duration_s, "files": r.files, "stopped_early": r.stopped_early,
        })
    rec = run.recommendation
    return _jsonable({
        "run_id": run.run_id, "started": run.started, "duration_s": run.duration_s, "interrupted": run.interrupted,
        "bound_s": run.bound_s, "target_rate": run.target, "plan": {**asdict(run.plan), "offered": run.plan.offered()},
        "handler": asdict(run.handler), "grid": [asdict(p) for p in run.grid],
        "formulas": {"pool": "Σ subs × (max_workers + 1)", "listen": "Σ subs", "per_process": "Σ subs × (max_workers + 2)",
                     "max_connections": "replicas × Σ subs × (max_workers + 2)"},
        "points": points,
        "recommendation": None if rec is None else {
            "target": rec.target, "config": asdict(rec.point) if rec.point else None, "rate": rec.rate,
            "message": rec.message},
    })


# -- inline SVG ------------------------------------------------------------------------

_COLORS = ("#2b5fa8", "#e0620d", "#2f9e44", "#9c36b5", "#d6332a", "#0c8599", "#5c940d", "#c2255c", "#495057")
_FONT = 'font-family="system-ui,sans-serif" font-size="11"'


def _nice_ticks(hi: float, n: int = 5) -> list[float]:
    if hi <= 0:
        return [0.0, 1.0]
    raw = hi / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(math.ceil(hi / step)) + 1)]


def _fmt_num(v: float) -> str:
    return f"{v / 1000:g}k" if v >= 1000 and v % 100 == 0 else f"{v:g}"


def bar_svg(title: str, labels: list[str], series: list[tuple[str, list[float | None], list[bool]]], *,
            y_label: str, line: tuple[float, str] | None = None) -> str:
    """Grouped bars; ``series`` = (name, values, hatched-flags: lower bounds drawn lighter with '≥')."""
    w, h, left, right, top, bottom = 680, 310, 62, 14, 46, 78
    vals = [v for _, vs, _ in series for v in vs if v is not None and math.isfinite(v)]
    hi = max(vals + ([line[0]] if line else []) + [1.0]) * 1.1
    ticks = _nice_ticks(hi)
    hi = ticks[-1]
    pw, ph = w - left - right, h - top - bottom
    y = lambda v: top + ph - ph * min(v, hi) / hi  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" {_FONT}>',
           f'<text x="{left}" y="16" font-size="13" font-weight="600">{escape(title)}</text>']
    for t in ticks:
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#e6e8ea"/>'
                   f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{_fmt_num(t)}</text>')
    out.append(f'<text x="14" y="{top + ph / 2}" transform="rotate(-90 14 {top + ph / 2})" text-anchor="middle">'
               f'{escape(y_label)}</text>')
    group = pw / max(1, len(labels))
    bw = group * 0.8 / max(1, len(series))
    for i, label in enumerate(labels):
        gx = left + i * group + group * 0.1
        for j, (name, values, lower) in enumerate(series):
            v = values[i]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            x = gx + j * bw
            shown = min(v, hi) if math.isfinite(v) else hi
            color = _COLORS[j % len(_COLORS)]
            opacity = "0.45" if lower[i] else "1"
            text = ("≥" if lower[i] else "") + (_fmt_num(round(v)) if math.isfinite(v) else "∞")
            out.append(f'<rect x="{x:.1f}" y="{y(shown):.1f}" width="{bw - 2:.1f}" height="{top + ph - y(shown):.1f}" '
                       f'fill="{color}" fill-opacity="{opacity}"><title>{escape(name)} {escape(label)}: {text}</title></rect>'
                       f'<text x="{x + bw / 2 - 1:.1f}" y="{y(shown) - 3:.1f}" text-anchor="middle" font-size="10">{text}</text>')
        out.append(f'<text x="{gx + group * 0.4:.1f}" y="{top + ph + 14}" text-anchor="end" '
                   f'transform="rotate(-30 {gx + group * 0.4:.1f} {top + ph + 14})">{escape(label)}</text>')
    if line is not None:
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y(line[0]):.1f}" y2="{y(line[0]):.1f}" stroke="#d6332a" '
                   f'stroke-dasharray="5 3"/><text x="{w - right - 2}" y="{y(line[0]) - 4:.1f}" text-anchor="end" '
                   f'fill="#d6332a">{escape(line[1])}</text>')
    out.append(f'<line x1="{left}" x2="{w - right}" y1="{top + ph}" y2="{top + ph}" stroke="#555"/>')
    for j, (name, _, _) in enumerate(series):
        out.append(f'<rect x="{left + j * 220}" y="24" width="10" height="10" fill="{_COLORS[j % len(_COLORS)]}"/>'
                   f'<text x="{left + 14 + j * 220}" y="33">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def knee_svg(results: Sequence[PointResult], bound_s: float) -> str:
    """p95 commit → handler (log y) against delivered msgs/s, one line per configuration."""
    w, h, left, right, top, bottom = 680, 320, 62, 170, 34, 44
    pts = [(r.point.label, [(s.delivery_rate, s.e2e_p95_ms, s.sustained) for s in r.steps]) for r in results if r.steps]
    xs = [x for _, ps in pts for x, _, _ in ps] or [1.0]
    x_hi = _nice_ticks(max(xs) * 1.05)[-1]
    finite = [v for _, ps in pts for _, v, _ in ps if math.isfinite(v) and v > 0]
    lo_exp = math.floor(math.log10(max(0.1, min(finite + [bound_s * 1000]))))
    hi_exp = math.ceil(math.log10(max(finite + [bound_s * 1000]) * 1.5))
    hi_exp = max(hi_exp, lo_exp + 1)
    pw, ph = w - left - right, h - top - bottom
    x = lambda v: left + pw * v / x_hi  # noqa: E731

    def y(v: float) -> float:
        v = 10 ** hi_exp if not math.isfinite(v) else min(max(v, 10 ** lo_exp), 10 ** hi_exp)
        return top + ph - ph * (math.log10(v) - lo_exp) / (hi_exp - lo_exp)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" {_FONT}>',
           f'<text x="{left}" y="16" font-size="13" font-weight="600">p95 commit → handler per load step '
           f'(hollow: not sustained; ∞ on the top line)</text>']
    for e in range(lo_exp, hi_exp + 1):
        v = 10.0 ** e
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e6e8ea"/>'
                   f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{_ms(v)}</text>')
    for t in _nice_ticks(x_hi):
        out.append(f'<text x="{x(t):.1f}" y="{top + ph + 14}" text-anchor="middle">{_fmt_num(t)}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{h - 8}" text-anchor="middle">delivered msg/s (per step)</text>')
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(bound_s * 1000):.1f}" y2="{y(bound_s * 1000):.1f}" '
               f'stroke="#d6332a" stroke-dasharray="5 3"/><text x="{left + 4}" y="{y(bound_s * 1000) - 4:.1f}" '
               f'fill="#d6332a">bound {bound_s:g} s</text>')
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#555"/>')
    for j, (label, ps) in enumerate(pts):
        color = _COLORS[j % len(_COLORS)]
        coords = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b, _ in ps)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.6"/>')
        for a, b, ok in ps:  # hollow: a step that was not sustained
            out.append(f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="3.2" fill="{color if ok else "#fff"}" '
                       f'stroke="{color}" stroke-width="1.4"><title>{escape(label)}: {a:.0f} msg/s, p95 {_ms(b)}'
                       f'{"" if ok else " (not sustained)"}</title></circle>')
        ly = top + 12 + j * 16
        out.append(f'<rect x="{left + pw + 12}" y="{ly - 9}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{left + pw + 26}" y="{ly}">{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;color:#222;margin:24px;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse} th,td{border:1px solid #d0d4d8;padding:4px 8px;text-align:right}
th{background:#f3f4f6;font-weight:600} td:first-child,th:first-child{text-align:left}
.over{background:#fde2e1;color:#a61e1e;font-weight:600} .ok{color:#2f9e44}
.rec{background:#eef6ee;border:1px solid #b7dca9;padding:8px 12px;border-radius:4px}
.none{background:#fff4e0;border:1px solid #f7cf9f;padding:8px 12px;border-radius:4px}
.plots{display:flex;flex-wrap:wrap;gap:14px} .plots svg{max-width:100%;height:auto}
.sub{color:#555} a{color:#1a57b0}
"""


def html_page(run: SizingRun) -> str:
    ok = [r for r in run.results if r.error is None]
    labels = [r.point.label for r in ok]
    rate_svg = bar_svg("sustainable delivery rate per configuration", labels,
                       [("sustainable msg/s", [r.knee.sustainable_rate for r in ok], [r.knee.lower_bound for r in ok]),
                        ("peak delivered msg/s", [r.knee.peak_rate for r in ok], [False] * len(ok))],
                       y_label="msg/s", line=(run.target, f"target {run.target:g}") if run.target else None)
    p95_svg = bar_svg("p95 commit → handler", labels,
                      [("at the knee step", [r.knee.e2e_p95_ms for r in ok], [False] * len(ok)),
                       ("whole run", [r.e2e_p95_ms for r in ok], [False] * len(ok))],
                      y_label="ms", line=(run.bound_s * 1000, f"bound {run.bound_s:g} s"))
    conn_svg = bar_svg("backends: observed peak vs formula", labels,
                       [("peak observed", [float(r.budget.total_peak) for r in ok], [False] * len(ok)),
                        ("replicas × (max_workers + 2)", [float(r.budget.total_formula) for r in ok], [False] * len(ok))],
                       y_label="connections")
    head = "".join(f"<th>{escape(h)}</th>" for h in HEADERS)
    body = []
    for r, row in zip(run.results, table_rows(run.results)):
        cells = [f"<td>{escape(c)}</td>" for c in row]
        cells[0] = f'<td><a href="#{r.point.slug}">{escape(row[0])}</a></td>'
        cells[-1] = f'<td class="{"ok" if r.budget.ok and not r.error else "over"}">{escape(row[-1])}</td>'
        body.append("<tr>" + "".join(cells) + "</tr>")
    rec = run.recommendation
    rec_html = ""
    if rec is not None:
        cls = "rec" if rec.point else "none"
        rec_html = f'<p class="{cls}"><b>Recommendation for {rec.target:g} msg/s:</b> {escape(rec.message)}</p>'
    sections = []
    for r in run.results:
        link = ""
        if "locust.html" in r.files:
            link = f' — <a href="points/{r.point.slug}/locust.html">locust report</a>'
        rows = "".join(
            f"<tr><td>{s.index}</td><td>{s.users}</td><td>{s.offered:.0f}</td><td>{s.publish_rate:.0f}</td>"
            f"<td>{s.delivery_rate:.0f}</td><td>{_ms(s.e2e_p50_ms)}</td><td>{_ms(s.e2e_p95_ms)}</td>"
            f"<td>{_ms(s.e2e_p99_ms)}</td><td>{_ms(s.publish_p95_ms)}</td>"
            f"<td class=\"{'ok' if s.sustained else 'over'}\">{'yes' if s.sustained else 'no'}</td></tr>" for s in r.steps)
        b = r.budget
        budget = (f"pool formula {b.pool_formula} + LISTEN {b.listen_formula} = {b.per_process_formula} per process "
                  f"(peak seen {b.per_process_peak}); total formula {b.total_formula} (peak {b.total_peak}); publisher "
                  f"peak {b.publisher_peak}; max_connections {b.max_connections} ({b.reserved} reserved); "
                  f"{b.samples} samples. " + ("OK" if b.ok else "FLAGS: " + "; ".join(b.flags())))
        err = f'<p class="none">{escape(r.error)}</p>' if r.error else ""
        if r.stopped_early:
            err += f'<p class="sub">Load stopped early: {escape(r.stopped_early)}.</p>'
        sections.append(
            f'<h2 id="{r.point.slug}">{escape(r.point.label)}{link}</h2>{err}'
            f'<p class="sub">{escape(budget)}</p>'
            "<table><tr><th>step</th><th>users</th><th>offered</th><th>published/s</th><th>delivered/s</th>"
            "<th>p50</th><th>p95</th><th>p99</th><th>publish p95</th><th>sustained</th></tr>" + rows + "</table>")
    p = run.plan
    return (
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sizing "
        f"{escape(run.run_id)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Outbox sizing {escape(run.run_id)}</h1>"
        f'<p class="sub">Handler {run.handler.base_ms:g} ± {run.handler.jitter_ms:g} ms. Locust step load: +{p.step_users} users '
        f"every {p.step_seconds:g} s, {p.user_rate:g} tx/s per user, {p.batch} message(s) per tx, {p.steps} steps. "
        f"A step is sustained when p95 commit → handler start ≤ {run.bound_s:g} s (undelivered = ∞) and it delivered "
        f"≥ {KEEP_UP:g} × what it published; the sustainable rate "
        "is the best delivery rate among the sustained steps before the first that is not; \"≥\" marks a lower bound "
        "(the knee was not reached: limited by the publisher or by the step plan); peak = most msg/s delivered in any "
        f"step. Run took {run.duration_s:.0f} s.</p>"
        f"{rec_html}<table><tr>{head}</tr>{''.join(body)}</table>"
        f'<h2>Plots</h2><div class="plots">{rate_svg}{p95_svg}{knee_svg(ok, run.bound_s)}{conn_svg}</div>'
        + "".join(sections) + "</body></html>\n"
    )


def write_report(run: SizingRun) -> Path:
    run.out_dir.mkdir(parents=True, exist_ok=True)
    (run.out_dir / "sizing.json").write_text(json.dumps(to_json(run), indent=2, ensure_ascii=False) + "\n")
    (run.out_dir / "sizing.md").write_text(markdown(run))
    (run.out_dir / "sizing.html").write_text(html_page(run))
    return run.out_dir


# -- entry points ------------------------------------------------------------------------

def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def parse_points(specs: Sequence[str]) -> list[GridPoint]:
    """``mw:fb:processes`` strings, e.g. ``8:100:2``."""
    out = []
    for spec in specs:
        try:
            mw, fb, procs = (int(x) for x in spec.split(":"))
        except ValueError as exc:
            raise SystemExit(f"--point {spec!r}: expected max_workers:fetch_batch_size:processes, e.g. 8:100:2") from exc
        out.append(GridPoint(mw, fb, procs))
    return out


def main(ns: argparse.Namespace) -> int:
    """``outbox-harness size``: runs the grid, writes the report, prints the table and the path."""
    quick = bool(getattr(ns, "quick", False))
    grid = parse_points(getattr(ns, "point", None) or []) or (QUICK_GRID if quick else FULL_GRID)
    plan = QUICK_PLAN if quick else FULL_PLAN
    overrides = {k: getattr(ns, k) for k in ("user_rate", "batch", "step_users", "step_seconds", "steps")
                 if getattr(ns, k, None) is not None}
    if overrides:
        plan = LoadPlan(**{**asdict(plan), **overrides})
    handler = Handler(getattr(ns, "handler_ms", None) or Handler.base_ms, getattr(ns, "jitter_ms", None) or Handler.jitter_ms)
    bound = getattr(ns, "bound", None) or DEFAULT_BOUND_S
    run_id = new_run_id()
    run = SizingRun(run_id=run_id, out_dir=Path(getattr(ns, "reports_dir", "reports")) / f"sizing-{run_id}", grid=grid,
                    plan=plan, handler=handler, bound_s=bound, target=getattr(ns, "target_rate", None),
                    started=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    settle = 1.0 if quick else 2.0
    drain = 2.0 if quick else 10.0
    print(f"sizing {run_id}: {len(grid)} point(s), ~{plan.duration:.0f} s of load each, report in {run.out_dir}", flush=True)
    code = 0
    try:
        asyncio.run(run_grid(run, settle_s=settle, drain_timeout=drain, log=lambda m: print(m, flush=True)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        run.interrupted = True
        code = 130
        print("interrupted: every process started was stopped by pid; writing what was measured", flush=True)
    if run.target is not None:
        run.recommendation = recommend(run.results, run.target, bound_s=bound)
    write_report(run)
    print()
    print(text_table(run.results))
    if run.recommendation is not None:
        print(f"\nrecommendation for {run.recommendation.target:g} msg/s: {run.recommendation.message}")
    print(f"\nreport: {run.out_dir / 'sizing.html'}  (sizing.json, sizing.md, points/*/locust*.csv|html)")
    if code == 0 and any(r.error for r in run.results):
        code = 1
    return code


async def consumers(ns: argparse.Namespace) -> None:
    """Schema + N consumer worker processes until Ctrl-C, for running the locustfile by hand."""
    from harness.history import HistoryWriter  # noqa: PLC0415
    from harness.provision.postgres import provision  # noqa: PLC0415
    from harness.supervisor import Supervisor  # noqa: PLC0415

    point = GridPoint(ns.max_workers, ns.fetch_batch_size, ns.workers)
    history_dir = Path(ns.history_dir)
    history_dir.mkdir(parents=True, exist_ok=True)
    server = None
    if ns.dsn:
        from harness.provision.postgres import plain_dsn  # noqa: PLC0415

        dsn = plain_dsn(ns.dsn)
    else:
        server = provision()
        dsn = await server.create_database("sizing_manual")
    history = HistoryWriter(history_dir / "history-runner.jsonl", "sizing")
    supervisor = Supervisor(impl="reference", dsn=dsn, workdir=history_dir, config=await _prepare(dsn, point),
                            handler=asdict(Handler(ns.handler_ms, ns.jitter_ms)), history=history)
    try:
        for i in range(point.processes):
            supervisor.add(f"w{i + 1}")
        supervisor.start_monitor()
        await _require_started(supervisor, 30)
        print(f"{point.processes} consumer(s) running ({point.label}); budget {point.total_budget} connections.\n"
              f"export OUTBOX_LOCUST_DSN='{dsn}' OUTBOX_LOCUST_HISTORY_DIR='{history_dir.resolve()}'\n"
              "then run locust in another shell; Ctrl-C (or SIGTERM) here stops the consumers (and the embedded "
              "server).", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await supervisor.stop_all(timeout=10)
        history.close()
        if server is not None:
            server.stop()


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.sizing", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="the sizing grid (what `outbox-harness size` runs), with more knobs")
    run.add_argument("--quick", action="store_true")
    run.add_argument("--target-rate", type=float)
    run.add_argument("--reports-dir", default="reports")
    run.add_argument("--point", action="append", help="max_workers:fetch_batch_size:processes (repeatable)")
    run.add_argument("--bound", type=float, help=f"p95 bound in seconds (default {DEFAULT_BOUND_S:g})")
    run.add_argument("--handler-ms", type=float)
    run.add_argument("--jitter-ms", type=float)
    for name, typ in (("user-rate", float), ("batch", int), ("step-users", int), ("step-seconds", float), ("steps", int)):
        run.add_argument(f"--{name}", type=typ)
    cons = sub.add_parser("consumers", help="start only the consumers (schema + workers) until Ctrl-C")
    cons.add_argument("--dsn", default=os.environ.get("DATABASE_URL"), help="default: DATABASE_URL, else embedded")
    cons.add_argument("--workers", type=int, default=1, help="worker processes")
    cons.add_argument("--max-workers", type=int, default=8)
    cons.add_argument("--fetch-batch-size", type=int, default=100)
    cons.add_argument("--handler-ms", type=float, default=Handler.base_ms)
    cons.add_argument("--jitter-ms", type=float, default=Handler.jitter_ms)
    cons.add_argument("--history-dir", default="out/consumers")
    ns = parser.parse_args(argv)
    if ns.command == "run":
        return main(ns)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(consumers(ns))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
