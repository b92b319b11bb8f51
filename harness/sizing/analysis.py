"""Sizing figures, pure: per load step, the knee of a configuration, its connections against the
budget, and the recommendation. No I/O; :mod:`harness.sizing.data` feeds it from the raw files."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.names import LOCUST_APP, WORKER_APP_LIKE
from harness.sizing.plan import DEFAULT_BOUND_S, GridPoint
from harness.stats import percentile

#: A step keeps up when it delivers at least this fraction of what it publishes: a short step can
#: stay under the latency bound while its backlog grows, and a longer one would not.
KEEP_UP = 0.9
#: A recommended configuration sustains the target plus this fraction: the knee is where p95 reaches the
#: bound, so running at it leaves no margin; traffic bursts above its average; a replica that restarts or
#: fails takes its share away.
HEADROOM = 0.3
#: A lease must outlive the longest a claimed row may take to be handled, this many times over (pauses, a slow
#: ack flush).
LEASE_MARGIN = 2.0
#: The reference outbox's default ``lease_ttl_seconds``.
DEFAULT_LEASE_S = 60.0
#: A process (or the host) at this fraction of its CPU is saturated: locust workers and the consumer
#: workers each run on one core (gevent, asyncio), PostgreSQL on all of its host's cores.
SATURATED = 0.9
_WORKER_PREFIX = WORKER_APP_LIKE.removesuffix("%")


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


@dataclass(frozen=True)
class Cpu:
    """Cores used during a window, by role (None: not measured, e.g. a database on another host)."""

    publisher: float | None = None  # every locust process that published, wherever it ran
    publisher_max: float | None = None  # the busiest of them (1.0 = one core, all a gevent process can use)
    publishers: int = 0
    load_master: float | None = None  # the locust master (statistics, logs, deliver matching)
    consumers: float | None = None  # the consumer worker processes
    consumers_max: float | None = None  # the busiest one (asyncio: one core)
    database: float | None = None  # the PostgreSQL server, when it runs on the harness's host
    harness: float | None = None  # the sizing run itself (sampling, the backlog watch)
    host_busy: float | None = None  # the harness host's busy cores
    host_cores: int | None = None
    other: float | None = None  # host busy that none of the above on this host accounts for
    publisher_wait: float | None = None  # share of the time the most starved locust process waited for a CPU
    consumers_wait: float | None = None  # the same for the most starved consumer process
    database_wait: float | None = None  # the server's processes waiting for a CPU, summed (in cores' worth)

    @property
    def host_saturated(self) -> bool:
        return self.host_busy is not None and bool(self.host_cores) and self.host_busy >= SATURATED * self.host_cores

    @property
    def database_saturated(self) -> bool:
        return self.database is not None and bool(self.host_cores) and self.database >= SATURATED * self.host_cores

    @property
    def publisher_saturated(self) -> bool:
        return self.publisher_max is not None and self.publisher_max >= SATURATED

    @property
    def consumer_saturated(self) -> bool:
        return self.consumers_max is not None and self.consumers_max >= SATURATED

    def text(self) -> str:
        """The figures, for a report line: cores by role."""
        def c(v: float | None) -> str:
            return "–" if v is None else f"{v:.2f}"

        def most(busy: float | None, wait: float | None) -> str:
            inner = [f"busiest {busy:.0%} of a core"] if busy is not None else []
            inner += [f"waiting for a CPU up to {wait:.0%} of the time"] if wait is not None else []
            return f" ({', '.join(inner)})" if inner else ""

        parts = [f"publisher {c(self.publisher)} over {self.publishers} process(es)"
                 + most(self.publisher_max, self.publisher_wait),
                 f"consumers {c(self.consumers)}" + most(self.consumers_max, self.consumers_wait),
                 "database " + (c(self.database) if self.database is not None else "not on this host")
                 + ("" if self.database_wait is None else f" (its processes waited for a CPU {self.database_wait:.2f} "
                                                          "cores' worth)"),
                 f"load master {c(self.load_master)}", f"harness {c(self.harness)}"]
        if self.host_busy is not None:
            parts.append(f"host {self.host_busy:.2f} of {self.host_cores} busy (other processes {c(self.other)})")
        return "CPU cores: " + ", ".join(parts)


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
    cpu: Cpu | None = None
    side: str | None = None  # what kept this step from passing at its offered rate (step_side)


def latencies(commits: Iterable[Commit], delivered: dict[str, float]) -> list[float]:
    """Commit → first handler start per message, in seconds; one never delivered is ∞."""
    return [max(0.0, delivered[m] - c.t) if m in delivered else math.inf for c in commits for m in c.mids]


def step_figures(commits: Sequence[Commit], steps: Sequence[Step], delivered: dict[str, float], *,
                 end: float | None = None, bound_s: float = DEFAULT_BOUND_S, settle_s: float = 1.0,
                 keep_up: float = KEEP_UP, cpu: Callable[[float, float], Cpu] | None = None) -> list[StepFigures]:
    """Figures per load step (``users > 0``) from commits, step switches and first-delivery times.

    A step is sustained when the p95 of commit → handler start over the messages committed in it
    (never delivered = ∞) is within ``bound_s`` and it delivered ≥ ``keep_up`` × what it published.
    ``cpu(start, stop)`` gives the cores used in the step's window, by role.
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
        lat = latencies(inside, delivered)
        n_deliv = bisect.bisect_left(deliver_times, stop) - bisect.bisect_left(deliver_times, start)
        p95 = percentile(lat, 95)
        fig = StepFigures(
            index=step.index, users=step.users, offered=step.offered, window_s=window, committed=len(mids),
            publish_rate=len(mids) / window, delivery_rate=n_deliv / window,
            delivered_fraction=(sum(1 for m in mids if m in delivered) / len(mids)) if mids else math.nan,
            e2e_p50_ms=percentile(lat, 50) * 1000, e2e_p95_ms=p95 * 1000, e2e_p99_ms=percentile(lat, 99) * 1000,
            publish_p95_ms=percentile([c.t - c.t0 for c in inside], 95) * 1000,
        )
        fig.sustained = bool(mids) and p95 <= bound_s and fig.delivery_rate >= keep_up * fig.publish_rate
        fig.cpu = cpu(start, stop) if cpu is not None else None
        fig.side = step_side(fig)
        out.append(fig)
    return out


def step_side(f: StepFigures, *, publisher_tolerance: float = KEEP_UP) -> str | None:
    """What kept a step from passing at its offered rate; None when it passed at the offered rate.

    A step that was not sustained is the consumer side's, whatever the publisher reached (the
    consumers could not keep up with what *was* published): ``database`` when the server's CPU was
    saturated; ``consumer`` when a consumer process was CPU-bound, or when the host had CPU to spare
    (then the configuration itself — max_workers × handler time, the fetch batch — is the limit);
    ``host CPU`` when none of those was saturated but the host's CPUs were, shared with the publisher
    and other processes: the knee is the machine's. A sustained step in which locust published less
    than ``publisher_tolerance`` × offered is ``publisher``."""
    c = f.cpu
    if not f.sustained:
        if c is not None and c.database_saturated:
            return "database"
        if c is not None and c.host_saturated and not c.consumer_saturated:
            return "host CPU"
        return "consumer"
    if f.publish_rate < publisher_tolerance * f.offered:
        return "publisher"
    return None


def fmt_ms(v: float | None) -> str:
    """Milliseconds for a person: ``–`` not measured, ``∞`` never delivered, seconds from 10 s on."""
    if v is None or math.isnan(v):
        return "–"
    if math.isinf(v):
        return "∞"
    return f"{v / 1000:.2f} s" if v >= 10_000 else f"{v:.0f} ms"


def evidence(f: StepFigures, side: str) -> str:
    """The figures that show which side limited step ``f``."""
    head = (f"step {f.index}: {f.offered:.0f} msg/s offered, {f.publish_rate:.0f} published/s "
            f"({f.publish_rate / f.offered:.0%} of offered), " if f.offered else f"step {f.index}: ")
    head += f"{f.delivery_rate:.0f} delivered/s, p95 {fmt_ms(f.e2e_p95_ms)}, publish p95 {fmt_ms(f.publish_p95_ms)}"
    if f.cpu is None:
        return head
    text = f"{head}; {f.cpu.text()}"
    if side == "publisher" and not f.cpu.publisher_saturated and f.cpu.publisher_max is not None:
        text += "; no locust process was CPU-bound: its users waited on the database or for a CPU"
    if f.cpu.host_saturated:
        text += "; the host's CPUs were saturated: publisher, consumers, database and other processes competed for them"
    return text


@dataclass(frozen=True)
class Knee:
    sustainable_rate: float  # msgs/s delivered at the best sustained step (0 if none)
    step: int | None  # index of that step
    limited_by: str  # consumer | database | host CPU (knee found) | publisher | load (knee not reached) | none
    lower_bound: bool  # True when the knee was not reached (the real rate is higher)
    e2e_p95_ms: float  # at that step
    publish_p95_ms: float  # at that step
    first_failed_step: int | None
    peak_rate: float = 0.0  # most msgs/s delivered in any step, sustained or not (saturation throughput)
    evidence: str = ""  # the figures behind limited_by
    max_offered: float = 0.0  # the highest rate any step offered
    max_published: float = 0.0  # the highest rate locust published in any step

    @property
    def rate_text(self) -> str:
        """The sustainable rate, ``≥`` in front of a lower bound."""
        return ("≥ " if self.lower_bound else "") + f"{self.sustainable_rate:.0f}"


NO_KNEE = Knee(0.0, None, "none", False, math.nan, math.nan, None)


def find_knee(figures: Sequence[StepFigures], *, publisher_tolerance: float = 0.9) -> Knee:
    """The best sustained step before the first unsustained one, and why the search stopped there.

    Only the steps before the first failure count: a later step that happens to pass again does not
    make a configuration sustainable at that rate. Among them the highest delivery rate wins (a
    publisher that fell behind in the last step must not lower the consumer's figure). When nothing
    failed the figure is a lower bound: ``publisher`` if locust did not reach ``publisher_tolerance``
    of the offered rate in the step that offered most (where the load stopped growing), else
    ``load`` (the plan reached its cap below the knee).
    """
    peak = max((f.delivery_rate for f in figures), default=0.0)
    reach = {"max_offered": max((f.offered for f in figures), default=0.0),
             "max_published": max((f.publish_rate for f in figures), default=0.0)}
    prefix: list[StepFigures] = []
    failed: StepFigures | None = None
    for f in sorted(figures, key=lambda f: f.index):
        if not f.sustained:
            failed = f
            break
        prefix.append(f)
    failed_side = step_side(failed) if failed is not None else None
    if not prefix:
        return Knee(0.0, None, failed_side or "none", False, math.nan, math.nan, failed.index if failed else None,
                    peak, evidence(failed, failed_side) if failed is not None and failed_side else "", **reach)
    best = max(prefix, key=lambda f: f.delivery_rate)
    top = max(prefix, key=lambda f: (f.offered, f.index))  # where the load stopped growing
    if failed is not None and failed_side is not None:
        limited, lower, why = failed_side, False, evidence(failed, failed_side)
    elif step_side(top, publisher_tolerance=publisher_tolerance) == "publisher":
        limited, lower, why = "publisher", True, evidence(top, "publisher")
    else:
        last = prefix[-1]
        limited, lower = "load", True
        why = (f"every step passed, up to {last.offered:.0f} msg/s offered where the plan ended: "
               + evidence(last, "load"))
    return Knee(best.delivery_rate, best.index, limited, lower, best.e2e_p95_ms, best.publish_p95_ms,
                failed.index if failed else None, peak, why, **reach)


@dataclass(frozen=True)
class Budget:
    pool_formula: int  # engine pool per process: the budget less its LISTEN connections
    listen_formula: int  # LISTEN connections per process
    per_process_formula: int  # the adapter's connection_budget × subscribers
    total_formula: int  # replicas × that
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
                 reserved: int = 0) -> Budget:
    """Observed backends (samples of ``{application_name: count}``) against the adapter's budget."""
    per_process = total = publisher = n = 0
    for sample in samples:
        n += 1
        workers = {k: v for k, v in sample.items() if k.startswith(_WORKER_PREFIX)}
        per_process = max(per_process, max(workers.values(), default=0))
        total = max(total, sum(workers.values()))
        publisher = max(publisher, sum(v for k, v in sample.items() if k.startswith(LOCUST_APP)))
    short = max_connections is not None and max_connections - reserved < point.total_budget + publisher
    return Budget(
        pool_formula=point.per_process_budget - point.listen_budget, listen_formula=point.listen_budget,
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
    handler_p99_ms: float = math.nan  # handler start to end, over every call of the point
    clock: dict[str, Any] = field(default_factory=dict)  # hosts, anchors, how far commit→handler can be off


@dataclass(frozen=True)
class Recommendation:
    target: float
    point: GridPoint | None
    rate: float
    lines: tuple[str, ...]  # the choice (or why there is none), then what it needs: headroom, lease, connections
    headroom: float = HEADROOM
    lease_ttl_s: float | None = None  # the shortest safe lease_ttl_seconds for the choice, when measured

    @property
    def message(self) -> str:
        return " ".join(self.lines)


def lease_floor(point: GridPoint, handler_p99_ms: float) -> float | None:
    """The shortest safe ``lease_ttl_seconds``: a claimed row waits in its subscriber's queue behind up to
    ⌈fetch_batch_size / max_workers⌉ handlers of its batch before its own runs, so its lease must outlive that
    many handler p99s plus one, :data:`LEASE_MARGIN` times over. None when no handler call was measured."""
    if not math.isfinite(handler_p99_ms):
        return None
    return LEASE_MARGIN * (math.ceil(point.fetch_batch_size / point.max_workers) + 1) * handler_p99_ms / 1000


def _lease_line(point: GridPoint, handler_p99_ms: float) -> str:
    floor = lease_floor(point, handler_p99_ms)
    if floor is None:
        return ("lease_ttl_seconds: no handler call was measured at this point, so no floor can be given; it must "
                "outlive a batch's wait plus its own handler, with margin.")
    ahead = math.ceil(point.fetch_batch_size / point.max_workers)
    verdict = "is above it" if DEFAULT_LEASE_S >= floor else "is too short: raise it"
    return (f"lease_ttl_seconds ≥ {floor:.3g} s: handler p99 {handler_p99_ms:.0f} ms measured here (a stand-in "
            f"handler: give --handler-ms and --jitter-ms your handler's times), and a claimed row may wait behind "
            f"⌈{point.fetch_batch_size}/{point.max_workers}⌉ = {ahead} handlers of its batch before its own runs, so "
            f"a lease must outlive {ahead + 1} × p99, {LEASE_MARGIN:g} times over; the default of "
            f"{DEFAULT_LEASE_S:g} s {verdict}. A lease below it redelivers work still running (duplicates, "
            "lease_lost acks); a longer one only delays the redelivery of a crashed worker's rows.")


POOLER = ("Behind a connection pooler (PgBouncer and the like): LISTEN needs a session-pooled connection, since "
          "transaction pooling hands the backend to other clients between transactions and the registration and its "
          "notifications go with it (pickup would fall back to polling every max_fetch_interval); give the subscriber "
          "listen_connect_args for PostgreSQL itself or a session-mode pool. The engine's pool_size then counts "
          "against the pooler's pool, and max_connections against the pooler's server connections plus one LISTEN "
          "connection per subscriber.")


def recommend(results: Sequence[PointResult], target: float, *, bound_s: float = DEFAULT_BOUND_S,
              headroom: float = HEADROOM) -> Recommendation:
    """Smallest configuration (fewest budgeted connections) that sustains the target plus ``headroom`` within the
    bound, with the lease, connections and pooler advice it comes with.

    Never one whose figure the publisher limited: that figure says how fast locust was, not the consumer."""
    need = target * (1 + headroom)
    measured = [r for r in results if r.error is None and r.knee.sustainable_rate >= need
                and r.knee.e2e_p95_ms <= bound_s * 1000]
    fits = [r for r in measured if r.knee.limited_by != "publisher"]
    clean = [r for r in fits if r.budget.ok]
    if not clean:
        best = max((r for r in results if r.error is None), key=lambda r: r.knee.sustainable_rate, default=None)
        why = (f"none of the measured points sustains {need:g} msg/s ({target:g} with {headroom:.0%} headroom) with "
               f"p95 ≤ {bound_s:g} s")
        if fits:
            why += f" without a connection-budget flag ({', '.join(r.point.label for r in fits)} would, but overran)"
        if len(measured) > len(fits):
            why += (f" on a load the publisher did not limit ({', '.join(r.point.label for r in measured if r not in fits)}"
                    " reached it with the publisher as the limit: add --load-processes or workers on other hosts)")
        if best is not None:
            why += f"; the best measured is {best.point.label} at {best.knee.rate_text} msg/s"
        return Recommendation(target, None, 0.0, (why + ".", POOLER), headroom)
    pick = min(clean, key=lambda r: r.point.cost())
    p = pick.point
    lines = (
        f"{p.label}: max_workers={p.max_workers}, fetch_batch_size={p.fetch_batch_size}, {p.processes} worker "
        f"process(es).",
        f"It sustained {pick.knee.rate_text} msg/s with p95 {pick.knee.e2e_p95_ms:.0f} ms, at least {need:g} msg/s: "
        f"the target with {headroom:.0%} headroom, because the knee is where p95 reaches the bound (running there "
        "leaves no margin), traffic bursts above its average, and a replica that restarts or fails takes its share "
        "away.",
        _lease_line(p, pick.handler_p99_ms),
        f"pool_size ≥ {pick.budget.pool_formula} per process; max_connections ≥ {p.total_budget} for these replicas "
        "(× 2 during a rolling deploy that doubles them), plus your publishers.",
        POOLER,
    )
    return Recommendation(target, p, pick.knee.sustainable_rate, lines, headroom, lease_floor(p, pick.handler_p99_ms))
