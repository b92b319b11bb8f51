"""D6: a handler that lost its lease cannot remove the row another worker now holds; a row is removed once."""

from __future__ import annotations

from collections import Counter

from harness.checkers._index import Delivery, by_mid, claimed_before, examples, index_deliveries
from harness.checkers.context import CheckContext, checker
from harness.history import Event
from harness.verdict import Verdict

NAME = "stale_ack"
_REMOVALS = ("acked", "dead_lettered")


@checker(NAME, decides=("D6",))
def check_stale_ack(history: list[Event], ctx: CheckContext) -> list[Verdict]:
    """D6 stale ack is harmless.

    Why: when a slow handler's lease expires and another worker claims the row, the slow handler's ack must
    match no row (lease token check) and come back as lease_lost; if it deletes the row instead, the new holder
    works on a row that is gone and the message can be removed twice or lost. A removal by call A after a later
    claim B of the same row has started is that stale write. Only overlapping calls can produce one, so without
    them the verdict is unknown."""
    if not ctx.capabilities.settle_outcomes:
        return [Verdict("D6", NAME, "not_applicable", "the implementation does not report settle outcomes")]
    removals: Counter[str] = Counter(
        str(e.mid) for e in history if e.f == "settle" and e.type == "ok" and e.value.get("outcome") in _REMOVALS
    )
    twice = sorted(m for m, n in removals.items() if n > 1)
    lease_lost = sum(1 for e in history
                     if e.f == "settle" and e.type == "fail" and e.value.get("outcome") == "lease_lost")
    overlapping = 0  # calls that settled after a later claim of their row had started
    unattributed = 0  # such calls whose settle could belong to a concurrent call of the same process
    stale: list[dict[str, object]] = []
    for ds in by_mid(index_deliveries(history)).values():
        for a in ds:
            if a.settle is None:
                continue
            rivals = [b for b in ds if _later(a, b) and b.t < a.settle.t]
            if not rivals:
                continue
            if a.ambiguous:
                unattributed += 1
                continue
            overlapping += 1
            if a.settle.type == "ok" and a.outcome in _REMOVALS:
                stale.append({"mid": a.mid, "stale": a.process, "holder": rivals[0].process, "outcome": a.outcome})
    figures = {"removed_twice": len(twice), "removed_twice_examples": examples(twice), "stale_removals": len(stale),
               "stale_examples": examples(stale), "overlapping_calls": overlapping,
               "unattributed_overlaps": unattributed, "lease_lost": lease_lost}
    if twice or stale:
        return [Verdict("D6", NAME, "fail", f"{len(twice)} rows removed more than once and {len(stale)} removals"
                        " by a call whose lease had been claimed by another", figures)]
    if not overlapping:
        why = (f"; {unattributed} overlaps within one process could not be attributed (completions and settles"
               " do not echo lease_at)") if unattributed else ""
        return [Verdict("D6", NAME, "unknown", "no stale ack happened: no call settled after its row was claimed"
                        f" again{why}", figures)]
    return [Verdict("D6", NAME, "pass", f"{overlapping} calls settled after their row was claimed again; none"
                    f" removed it ({lease_lost} lease_lost reported)", figures)]


def _later(a: Delivery, b: Delivery) -> bool:
    """B claimed the row after A did."""
    return b is not a and claimed_before(a, b)

