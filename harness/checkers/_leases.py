"""When a call's lease began, as far as the history tells: the order of one message's claims, and the gaps between
them, by the best evidence the calls carry (database-clock lease times, reported claims, claim counts, handler
starts)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from harness.checkers._calls import Delivery


def claim_order(ds: list[Delivery]) -> list[Delivery]:
    """One mid's calls (given in invoke order) in claim order, by the best evidence every one of them carries:
    database-clock lease times, reported claims, the implementation's claim count (``delivery``), else handler
    starts. A prefetched row's handler may start after a later claim's, so handler starts come last."""
    if all(d.lease_at is not None for d in ds):
        ds.sort(key=lambda d: (d.lease_at, d.t))
    elif all(d.claim_t is not None for d in ds):
        ds.sort(key=lambda d: (d.claim_t, d.t))
    elif _distinct_counts(ds):
        ds.sort(key=lambda d: (d.count, d.t))
    return ds


def _distinct_counts(ds: list[Delivery]) -> bool:
    counts = [d.count for d in ds]
    return None not in counts and len(set(counts)) == len(counts)


def claimed_before(a: Delivery, b: Delivery) -> bool:
    """A's row was claimed before B's, by the best evidence both carry (as :func:`claim_order` orders them)."""
    if a.lease_at is not None and b.lease_at is not None:
        return a.lease_at < b.lease_at
    if a.claim_t is not None and b.claim_t is not None:
        return a.claim_t < b.claim_t
    if _distinct_counts([a, b]):
        return a.count < b.count  # type: ignore[operator]
    return a.t < b.t


def gap(a: Delivery, b: Delivery, db_clock: bool) -> float:
    """Seconds from lease A to lease B: database clock if asked and both carry lease_at, else monotonic invokes."""
    if db_clock and a.lease_at is not None and b.lease_at is not None:
        return b.lease_at - a.lease_at
    return b.t - a.t


def uses_db_clock(deliveries: Iterable[Delivery], lease_times: bool) -> bool:
    """Lease gaps are judged by the database clock only when the adapter claims it and every delivery carries it."""
    return lease_times and all(d.lease_at is not None for d in deliveries)


def clock_note(db_clock: bool, claims: bool = False) -> str:
    """What a timing verdict was judged on, when it was not the database clock: the reader of a "pass" or an
    "unknown" should know how much it rests on."""
    if db_clock:
        return ""
    if claims:
        return (" (no DB-clock lease times: leases dated by the claims the implementation reported, within their"
                " round trip, on the monotonic clock)")
    return " (no DB-clock lease times: judged on handler starts, on the monotonic clock with scheduling slack)"


@dataclass(frozen=True)
class LeaseStart:
    """When a call's lease began, as far as the history tells, on the monotonic clock: within [lo, hi]."""

    lo: float
    hi: float
    source: str  # the evidence: "claim", "handler start", "handler start, possibly prefetched"


def lease_start(d: Delivery, slack: float, prefetch: bool) -> LeaseStart:
    """The bounds of a call's lease start without a database-clock lease time.

    A reported claim dates it within the claim statement's round trip (``slack``). Without a claim, the handler
    start bounds it from above; from below, by the scheduling slack when the implementation hands claimed rows
    straight to its handlers, or only by the message's publish when it may hold them in a prefetch buffer first
    (for as long as it likes)."""
    if d.claim_t is not None:
        return LeaseStart(d.claim_t - slack, d.claim_t, "claim")
    if prefetch:
        lo = d.published if d.published is not None else float("-inf")
        return LeaseStart(lo, d.t, "handler start, possibly prefetched")
    return LeaseStart(d.t - slack, d.t, "handler start")
