"""D3, D4: no two deliveries of one row hold a live lease at the same time, skewed clocks or not."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from harness.checkers._index import (
    EPS,
    Delivery,
    by_mid,
    clock_note,
    examples,
    gap,
    index_deliveries,
    skewed_workers,
    uses_db_clock,
)
from harness.checkers.context import CheckContext, checker
from harness.history import Event
from harness.verdict import Verdict

NAME = "lease"
_RELEASES = ("retry", "released")  # settle outcomes that hand the row back before the lease runs out


@dataclass(frozen=True)
class Steal:
    mid: str
    holder: str  # process whose live lease was taken
    thief: str
    gap_s: float

    def as_dict(self) -> dict[str, object]:
        return {"mid": self.mid, "holder": self.holder, "thief": self.thief, "gap_s": round(self.gap_s, 3)}


@checker(NAME, decides=('D3', 'D4'))
def check_lease(history: list[Event], ctx: CheckContext) -> list[Verdict]:
    """D3 no double claim, D4 lease exclusivity under clock skew.

    Why: a second claim while the first lease is live runs one message twice concurrently, which at-least-once
    does not excuse. With leases (capabilities.lease_ttl) the next claim of a row must come at least
    lease_ttl_seconds after the previous one, unless the previous call failed or gave the row back (retry),
    and then not before it ended. Without leases the row is held while handled, so calls must not overlap.
    D4 is the same judgement restricted to pairs that involve a worker the scenario skewed."""
    deliveries = index_deliveries(history)
    groups = by_mid(deliveries)
    db_clock = uses_db_clock(deliveries, ctx.capabilities.lease_times)
    steals = [s for ds in groups.values() for a, b in pairwise(ds) if (s := _steal(a, b, ctx, db_clock))]
    redelivered = sum(len(ds) - 1 for ds in groups.values())
    mode = clock_note(db_clock) if ctx.capabilities.lease_ttl else " (no leases: calls of one row must not overlap)"
    return [_d3(steals, len(deliveries), redelivered, mode), _d4(steals, deliveries, skewed_workers(history), ctx, mode)]


def _steal(a: Delivery, b: Delivery, ctx: CheckContext, db_clock: bool) -> Steal | None:
    if not ctx.capabilities.lease_ttl:
        held_until = a.finished_at
        stolen = held_until is None or b.t < held_until - EPS
    elif a.failed or a.outcome in _RELEASES:
        stolen = a.end is not None and b.t < a.end.t - EPS
    else:
        tolerance = EPS if db_clock else ctx.slack_seconds
        stolen = gap(a, b, db_clock) < ctx.config.lease_ttl_seconds - tolerance
    return Steal(str(a.mid), a.process, b.process, gap(a, b, db_clock)) if stolen else None


def _d3(steals: list[Steal], deliveries: int, redelivered: int, mode: str) -> Verdict:
    figures = {"deliveries": deliveries, "redeliveries": redelivered, "stolen": len(steals),
               "examples": examples(s.as_dict() for s in steals)}
    if steals:
        return Verdict("D3", NAME, "fail", f"{len(steals)} live leases were claimed again{mode}", figures)
    if not deliveries:
        return Verdict("D3", NAME, "unknown", "nothing was delivered", figures)
    if not redelivered:
        return Verdict("D3", NAME, "pass", "no redelivery observed; no double claim possible", figures)
    return Verdict("D3", NAME, "pass", f"{redelivered} redeliveries, none while a lease was live{mode}", figures)


def _d4(steals: list[Steal], deliveries: list[Delivery], skewed: set[str], ctx: CheckContext, mode: str) -> Verdict:
    if not skewed:
        return Verdict("D4", NAME, "not_applicable", "no worker's clock was skewed in this scenario")
    if not ctx.capabilities.lease_ttl:
        return Verdict("D4", NAME, "not_applicable", "the implementation has no lease TTL to skew")
    on_skewed = [s for s in steals if s.holder in skewed or s.thief in skewed]
    skewed_deliveries = sum(1 for d in deliveries if d.process in skewed)
    figures = {"skewed_workers": sorted(skewed), "skewed_deliveries": skewed_deliveries,
               "stolen_with_skewed": len(on_skewed), "examples": examples(s.as_dict() for s in on_skewed)}
    if on_skewed:
        return Verdict("D4", NAME, "fail", f"{len(on_skewed)} live leases were stolen by or from a skewed worker"
                       f"{mode}", figures)
    if not skewed_deliveries:
        return Verdict("D4", NAME, "unknown", "the skewed workers delivered nothing", figures)
    return Verdict("D4", NAME, "pass", f"skewed workers made {skewed_deliveries} deliveries without stealing a"
                   f" live lease{mode}", figures)
