"""R1-R4: poison messages are retried on schedule, capped, dead-lettered once, and a failing DLQ shows."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from itertools import accumulate

from harness.checkers._index import Delivery, History, examples
from harness.checkers._leases import clock_note, gap, uses_db_clock
from harness.checkers.context import CheckContext, checker
from harness.checkers.total_queue import QueueTally, tally
from harness.nemesis.base import SCHEMA
from harness.verdict import Verdict

NAME = "dlq"
_RETRY_EPS = 0.05  # retry delays are judged with this much rounding on the database clock


@checker(NAME, decides=("R1", "R2", "R3", "R4"))
def check_dlq(h: History, ctx: CheckContext) -> list[Verdict]:
    """R1 retry schedule, R2 bounded deliveries, R3 atomic dead-lettering, R4 divergence is visible.

    Why: a message that always fails must not spin (too-early retries, deliveries past the cap), must end in
    the DLQ exactly once (the move is one statement, so never in both tables, never in neither), and when the
    DLQ write itself fails the metrics must let an operator see terminal nacks outrunning DLQ writes."""
    counts = tally(h, ctx)
    poison = counts.committed_poison
    groups = {m: h.group(m) for m in poison}
    return [_r1(groups, poison, ctx), _r2(h, poison, ctx), _r3(poison, counts, ctx), _r4(h, groups, poison, counts, ctx)]


def _no_poison(guarantee: str) -> Verdict:
    return Verdict(guarantee, NAME, "unknown", "no committed poison message to test with")


class Failures:
    """One mid's calls in claim order: each call's failure number among them (1-based, counting it when it failed),
    and which failures the configured policy makes the last."""

    def __init__(self, ds: list[Delivery], ctx: CheckContext) -> None:
        self.numbers = list(accumulate(int(d.failed) for d in ds))
        retry, cap = ctx.config.retry, ctx.config.max_deliveries
        self.last_attempt = 1 if retry.kind == "none" else retry.max_attempts
        self.cap = cap if cap is not None and ctx.capabilities.max_deliveries else None

    def terminal(self, i: int) -> bool:
        """max_attempts reached (the first failure under NoRetry) or the delivery cap."""
        return self.numbers[i] >= self.last_attempt or (self.cap is not None and i + 1 >= self.cap)


def _r1(groups: dict[str, list[Delivery]], poison: set[str], ctx: CheckContext) -> Verdict:
    retry = ctx.config.retry
    if not ctx.capabilities.retry_schedule:
        return Verdict("R1", NAME, "not_applicable", "the implementation does not take a retry schedule")
    if retry.kind == "none":
        return Verdict("R1", NAME, "not_applicable", "NoRetry: there is no retry schedule to follow")
    if not poison:
        return _no_poison("R1")
    calls = [d for m in poison for d in groups[m]]
    db_clock = uses_db_clock(calls, ctx.capabilities.lease_times)
    rounding = _RETRY_EPS if db_clock else ctx.slack_seconds
    cfg, j = ctx.config, retry.jitter_factor
    gaps = early = late = 0
    bad: list[dict[str, object]] = []
    undated: list[dict[str, object]] = []
    for m in poison:
        ds = groups[m]
        failures = Failures(ds, ctx)
        for i, (a, b) in enumerate(zip(ds, ds[1:])):
            retried = a.settle is None or a.settle.type == "fail" or a.outcome == "retry"
            if not a.failed or a.end is None or not retried or failures.terminal(i):
                continue  # reclaims and terminal failures are not retries (D5, R4 judge those)
            n = failures.numbers[i]
            delay = retry.delay(n)
            reclaim = a.settle is not None and a.settle.type == "fail"  # the retry write did not land
            low = delay * (1 - j) - rounding
            high = (a.end.t - a.t) + delay * (1 + j) + cfg.max_fetch_interval + ctx.slack_seconds
            high += cfg.lease_ttl_seconds if reclaim else 0.0
            # the next claim, as well as it is known: its lease time, its reported claim, or its handler start
            g = gap(a, b, db_clock) if db_clock or b.claim_t is None else b.claim_t - a.t
            gaps += 1
            row = {"mid": m, "failure": n, "gap_s": round(g, 3), "bounds_s": [round(low, 3), round(high, 3)]}
            if g < low and not reclaim:
                early += 1
                bad.append(row)
            elif g > high and not db_clock and b.claim_t is None and ctx.capabilities.prefetch:
                undated.append(row)  # claimed on time, perhaps, and kept in a prefetch buffer
            elif g > high:
                late += 1
                bad.append(row)
    figures = {"retry_gaps": gaps, "too_early": early, "too_late": late, "examples": examples(bad),
               "retry": {"kind": retry.kind, "initial": retry.initial_delay_seconds, "multiplier": retry.multiplier,
                         "jitter": j}}
    note = clock_note(db_clock, any(d.claim_t is not None for ds in groups.values() for d in ds))
    if early or late:
        return Verdict("R1", NAME, "fail", f"of {gaps} retries, {early} came too early and {late} too late{note}",
                       figures)
    if not gaps:
        return Verdict("R1", NAME, "unknown", "no poison message was retried", figures)
    if undated:
        figures.update(undated=len(undated), examples=examples(undated))
        return Verdict("R1", NAME, "unknown", f"{len(undated)} retries look late by handler starts, which cannot"
                       " date the claims of an implementation that prefetches; report claims (ctx.claimed) or"
                       " database-clock lease times to decide", figures)
    return Verdict("R1", NAME, "pass", f"{gaps} retries followed the schedule{note}", figures)


def _r2(h: History, poison: set[str], ctx: CheckContext) -> Verdict:
    cap = ctx.config.max_deliveries
    if not cap or not ctx.capabilities.max_deliveries:
        return Verdict("R2", NAME, "not_applicable", "no max_deliveries cap in force")
    if not poison:
        return _no_poison("R2")
    counts = h.m_calls
    over = sorted((m, n) for m, n in zip(h.mids, counts) if n > cap)
    reached = counts.count(cap)
    figures = {"max_deliveries": cap, "most_deliveries": max(counts, default=0), "over_cap": len(over),
               "reached_cap": reached, "examples": examples({"mid": m, "deliveries": n} for m, n in over)}
    if over:
        return Verdict("R2", NAME, "fail", f"{len(over)} messages were delivered more than {cap} times", figures)
    if not reached:
        return Verdict("R2", NAME, "unknown", f"no message reached the cap of {cap} deliveries", figures)
    return Verdict("R2", NAME, "pass", f"{reached} messages reached the cap of {cap} and went no further", figures)


def _r3(poison: set[str], counts: QueueTally, ctx: CheckContext) -> Verdict:
    if not (ctx.capabilities.dlq and ctx.config.dlq):
        return Verdict("R3", NAME, "not_applicable", "no dead-letter table in force")
    if not poison:
        return _no_poison("R3")
    dead = Counter(counts.final.dead)
    pending = set(counts.final.pending)
    twice = sorted(m for m, n in dead.items() if n > 1)
    both = sorted(poison & pending & set(dead))
    neither = sorted(poison - pending - set(dead))
    waiting = sorted((poison & pending) - set(dead))
    figures = {"poison": len(poison), "dead_lettered": len(poison & set(dead)), "dead_lettered_twice": len(twice),
               "in_both_tables": len(both), "in_neither_table": len(neither), "still_pending": len(waiting),
               "examples": examples(twice + both + neither)}
    if twice or both or neither:
        return Verdict("R3", NAME, "fail", f"{len(twice)} rows dead-lettered twice, {len(both)} poison messages in"
                       f" both tables, {len(neither)} in neither", figures)
    if waiting:
        return Verdict("R3", NAME, "unknown", f"{len(waiting)} poison messages had not gone terminal yet", figures)
    return Verdict("R3", NAME, "pass", f"all {len(poison)} poison messages are in the DLQ exactly once", figures)


def _counters(h: History, until: float) -> defaultdict[str, float]:
    """Cumulative counters at ``until``: the last value per (process, name, labels), summed per name."""
    last: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
    for e in h.events("metric"):
        if e.t > until:
            break
        if e.type == "info" and "name" in e.value:
            labels = tuple(sorted((str(k), str(v)) for k, v in (e.value.get("labels") or {}).items()))
            last[(e.process, str(e.value["name"]), labels)] = float(e.value.get("value") or 0)
    total: defaultdict[str, float] = defaultdict(float)
    for (_, name, _), value in last.items():
        total[name] += value
    return total


@dataclass(frozen=True)
class _Drift:
    """What one DLQ drift window showed: counter increments while it lasted, and terminal failures in it."""

    terminal_failures: int
    nacked_terminal: float
    dlq_written: float
    lease_lost: float
    healed: bool

    @property
    def visible(self) -> bool:
        return self.nacked_terminal > self.dlq_written or self.lease_lost > 0


def _terminal_failures(groups: dict[str, list[Delivery]], start: float, end: float, ctx: CheckContext) -> int:
    """Failures in [start, end] that the configured policy makes terminal."""
    count = 0
    for ds in groups.values():
        failures = Failures(ds, ctx)
        count += sum(1 for i, d in enumerate(ds) if d.failed and start <= d.t <= end and failures.terminal(i))
    return count


def _r4(h: History, groups: dict[str, list[Delivery]], poison: set[str], counts: QueueTally,
        ctx: CheckContext) -> Verdict:
    drift_kinds = h.kinds_of(SCHEMA)
    if not drift_kinds:
        return Verdict("R4", NAME, "not_applicable", "the DLQ write was not made to fail in this scenario")
    if not (ctx.capabilities.metrics and ctx.capabilities.dlq and ctx.config.dlq):
        return Verdict("R4", NAME, "not_applicable", "the implementation reports no metrics or has no DLQ")
    if not poison:
        return _no_poison("R4")
    windows = [w for w in h.windows_of(SCHEMA) if w.applied is not None]
    if not windows:
        return Verdict("R4", NAME, "unknown", "the DLQ drift never took effect")
    drifts: list[_Drift] = []
    for w in windows:
        end = w.healed if w.healed is not None else h.last_t
        before, after = _counters(h, w.invoked), _counters(h, end)
        delta = {name: after[name] - before[name] for name in ("nacked_terminal", "dlq_written", "lease_lost")}
        drifts.append(_Drift(_terminal_failures(groups, w.invoked, end, ctx), **delta,
                             healed=w.healed is not None))
    dead = Counter(counts.final.dead)
    not_once = sorted(m for m in poison if dead[m] != 1)
    figures = {"windows": [asdict(d) for d in drifts], "poison": len(poison), "poison_not_dead_once": len(not_once),
               "examples": examples(not_once)}
    tested = [d for d in drifts if d.terminal_failures]
    if any(not d.visible for d in tested):
        return Verdict("R4", NAME, "fail", "divergence not visible: terminal failures during the DLQ drift did not"
                       " put nacked_terminal ahead of dlq_written", figures)
    if any(dead[m] > 1 for m in not_once) or (not_once and counts.drained):
        return Verdict("R4", NAME, "fail", f"after the heal {len(not_once)} poison messages did not reach the DLQ"
                       " exactly once", figures)
    if not tested:
        return Verdict("R4", NAME, "unknown", "no terminal failure happened during the DLQ drift", figures)
    if not_once or not all(d.healed for d in drifts):
        return Verdict("R4", NAME, "unknown", "the divergence showed, but the heal or the drain did not finish",
                       figures)
    return Verdict("R4", NAME, "pass", "terminal failures during the drift showed in the metrics and every poison"
                   " message reached the DLQ once after the heal", figures)
