"""D3, D4: no two deliveries of one row hold a live lease at the same time, skewed clocks or not."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from harness.checkers._index import EPS, Delivery, History, examples
from harness.checkers._leases import clock_note, gap, lease_start
from harness.checkers.context import CheckContext, checker
from harness.nemesis.base import NETWORK
from harness.nemesis.database import CrashRestart
from harness.verdict import Verdict

NAME = "lease"
_RELEASES = ("retry", "released")  # settle outcomes that hand the row back before the lease runs out


@dataclass(frozen=True)
class Steal:
    mid: str
    holder: str  # process whose live lease was taken
    thief: str
    gap_s: float
    evidence: str  # what dated the two leases

    def as_dict(self) -> dict[str, object]:
        return {"mid": self.mid, "holder": self.holder, "thief": self.thief, "gap_s": round(self.gap_s, 3),
                "evidence": self.evidence}


@checker(NAME, decides=("D3", "D4"))
def check_lease(h: History, ctx: CheckContext) -> list[Verdict]:
    """D3 no double claim, D4 lease exclusivity under clock skew.

    Why: a second claim while the first lease is live runs one message twice concurrently, which at-least-once
    does not excuse. With leases (capabilities.lease_ttl) the next claim of a row must come at least
    lease_ttl_seconds after the previous one, unless the previous call failed or gave the row back (retry),
    and then not before it ended. Without leases the row is held while handled, so calls must not overlap.
    D4 is the same judgement restricted to pairs that involve a worker the scenario skewed.

    A steal fails only on definite evidence: database-clock lease times, reported claims, or handler starts of an
    implementation that hands claimed rows straight to its handlers. A reclaim that merely looks early (rows may
    have waited in a prefetch buffer; a lock may have died with its backend in a network fault) is "unknown"."""
    db_clock = ctx.capabilities.lease_times and h.all_lease_times
    ends = h.backend_ends()
    # Faults that cut a live worker's connections (its heartbeats with them): network faults, a server restart.
    cuts = [(w.invoked, w.healed if w.healed is not None else float("inf"))
            for w in [*h.windows_of(NETWORK), *h.windows(CrashRestart.kind)]]
    definite: list[Steal] = []
    suspect: list[Steal] = []
    for ds in h.redelivered():
        for a, b in pairwise(ds):
            found = _steal(a, b, ctx, db_clock, ends, cuts)
            if found is not None:
                (definite if found[0] else suspect).append(found[1])
    mode = (clock_note(db_clock, h.claimed_calls > 0) if ctx.reclaim_after is not None
            else " (no leases: calls of one row must not overlap)")
    return [_d3(definite, suspect, len(h.calls), h.redeliveries, mode), _d4(definite, suspect, h, ctx, mode)]


def _steal(a: Delivery, b: Delivery, ctx: CheckContext, db_clock: bool, ends: list[tuple[float, float]],
           cuts: list[tuple[float, float]]) -> tuple[bool, Steal] | None:
    """(definite, steal) when B's claim may have come while A's lease was live; None when it clearly did not."""
    def steal(gap_s: float, evidence: str) -> Steal:
        return Steal(str(a.mid), a.process, b.process, gap_s, evidence)

    if ctx.reclaim_after is None:  # no lease nor declared reclaim: a row is held while handled, no overlaps
        held_until = a.finished_at
        if held_until is not None and b.t >= held_until - EPS:
            return None
        # a lock dies with its backend: a fault that can end backends during A leaves the overlap undecided
        cut = any(start <= b.t and end >= a.t for start, end in ends)
        return (not cut, steal(b.t - a.t, "overlapping calls" + (" across a backend-ending fault" if cut else "")))
    within = _within_lease(a, b, ctx, db_clock)
    if within is None:
        return None
    if not ctx.capabilities.lease_ttl and within[0] and _heartbeats_may_have_lapsed(a, b, ctx, cuts):
        return False, steal(within[1].gap_s, f"{within[1].evidence}, across a fault that may have stopped the"
                            " holder's heartbeats before its claim")
    if a.failed or a.outcome in _RELEASES:  # A gave the row back early: a claim after it did is no steal
        given_back = a.end.t if a.end is not None else None
        claimed = b.claim_t if b.claim_t is not None else b.t
        if given_back is not None and claimed >= given_back - EPS:
            return None
        return within[0], steal(within[1].gap_s, f"{within[1].evidence}, claimed before the row was given back")
    return within


def _within_lease(a: Delivery, b: Delivery, ctx: CheckContext, db_clock: bool) -> tuple[bool, Steal] | None:
    """(definite, steal) when B's claim came within A's lease (or declared reclaim time) by the evidence at hand."""
    ttl = ctx.reclaim_after
    assert ttl is not None
    if db_clock:
        g = gap(a, b, True)
        return (True, Steal(str(a.mid), a.process, b.process, g, "database-clock lease times")) if g < ttl - EPS else None
    la = lease_start(a, ctx.slack_seconds, ctx.capabilities.prefetch)
    lb = lease_start(b, ctx.slack_seconds, ctx.capabilities.prefetch)
    steal = Steal(str(a.mid), a.process, b.process, lb.hi - la.hi, f"{la.source} / {lb.source}")
    if lb.hi < la.lo + ttl - EPS:
        return True, steal
    if lb.hi - la.hi < ttl - ctx.slack_seconds:
        return False, steal
    return None


def _heartbeats_may_have_lapsed(a: Delivery, b: Delivery, ctx: CheckContext, cuts: list[tuple[float, float]]) -> bool:
    """A declared reclaim time (no lease TTL) counts from the holder's last heartbeat, taken to be at most one
    heartbeat before its claim; a fault that cuts connections between a reclaim time before A's claim and B's claim
    may have stopped A's heartbeats earlier than that (A still claiming on another connection), and a reclaim
    measured from the last heartbeat is then on time."""
    since = (a.claim_t if a.claim_t is not None else a.t) - (ctx.reclaim_after or 0.0)
    until = b.claim_t if b.claim_t is not None else b.t
    return any(start <= until and end >= since for start, end in cuts)


def _undecided(suspect: list[Steal]) -> str:
    kinds = sorted({s.evidence for s in suspect})
    return (f"{len(suspect)} claims came sooner than the lease by {', '.join(kinds)}, but that evidence cannot"
            " tell whether the earlier lease had ended (rows may wait in a prefetch buffer; a lock ends with its"
            " backend; heartbeats may have stopped in a network fault); report claims (ctx.claimed) or"
            " database-clock lease times to decide")


def _d3(definite: list[Steal], suspect: list[Steal], deliveries: int, redelivered: int, mode: str) -> Verdict:
    figures = {"deliveries": deliveries, "redeliveries": redelivered, "stolen": len(definite),
               "undecided": len(suspect), "examples": examples(s.as_dict() for s in definite + suspect)}
    if definite:
        return Verdict("D3", NAME, "fail", f"{len(definite)} live leases were claimed again{mode}", figures)
    if not deliveries:
        return Verdict("D3", NAME, "unknown", "nothing was delivered", figures)
    if suspect:
        return Verdict("D3", NAME, "unknown", _undecided(suspect), figures)
    if not redelivered:
        return Verdict("D3", NAME, "pass", "no redelivery observed; no double claim possible", figures)
    return Verdict("D3", NAME, "pass", f"{redelivered} redeliveries, none while a lease was live{mode}", figures)


def _d4(definite: list[Steal], suspect: list[Steal], h: History, ctx: CheckContext, mode: str) -> Verdict:
    skewed = h.skewed
    if not skewed:
        return Verdict("D4", NAME, "not_applicable", "no worker's clock was skewed in this scenario")
    if not ctx.capabilities.lease_ttl:
        return Verdict("D4", NAME, "not_applicable", "the implementation has no lease TTL to skew")
    on_skewed = [s for s in definite if s.holder in skewed or s.thief in skewed]
    doubtful = [s for s in suspect if s.holder in skewed or s.thief in skewed]
    skewed_deliveries = sum(n for p, n in zip(h.procs, h.proc_calls) if p in skewed)
    figures = {"skewed_workers": sorted(skewed), "skewed_deliveries": skewed_deliveries,
               "stolen_with_skewed": len(on_skewed), "undecided_with_skewed": len(doubtful),
               "examples": examples(s.as_dict() for s in on_skewed + doubtful)}
    if on_skewed:
        return Verdict("D4", NAME, "fail", f"{len(on_skewed)} live leases were stolen by or from a skewed worker"
                       f"{mode}", figures)
    if not skewed_deliveries:
        return Verdict("D4", NAME, "unknown", "the skewed workers delivered nothing", figures)
    if doubtful:
        return Verdict("D4", NAME, "unknown", _undecided(doubtful), figures)
    return Verdict("D4", NAME, "pass", f"skewed workers made {skewed_deliveries} deliveries without stealing a"
                   f" live lease{mode}", figures)
