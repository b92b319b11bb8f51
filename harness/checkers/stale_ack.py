"""D6: a handler that lost its lease cannot remove the row another worker now holds; a row is removed once."""

from __future__ import annotations

from dataclasses import dataclass

from harness.checkers._index import REMOVALS, REMOVED_TWICE, Delivery, History, examples
from harness.checkers._leases import claimed_before
from harness.checkers.context import CheckContext, checker
from harness.checkers.dlq import Failures
from harness.verdict import Verdict

NAME = "stale_ack"


@checker(NAME, decides=("D6",))
def check_stale_ack(h: History, ctx: CheckContext) -> list[Verdict]:
    """D6 stale ack is harmless.

    Why: when a slow handler's lease expires and another worker claims the row, the slow handler's ack must
    match no row (lease token check) and come back as lease_lost; if it deletes the row instead, the new holder
    works on a row that is gone and the message can be removed twice or lost.

    Two kinds of evidence, either of which fails it: (1) what the implementation reports: a removal settled by
    call A after a later claim B of the same row had started; (2) black-box, for any implementation: a message
    whose last call failed with retries left, while an earlier holder's handler was still running, is gone from
    the tables without a later call or a dead letter: the lapsed holder's completion removed it (scripted messages,
    whose second delivery fails, make this happen). Without overlapping calls nothing was exercised: unknown."""
    groups = h.redelivered()  # a call can overlap another of its row only if there are two
    reported = _reported(h, groups) if ctx.capabilities.settle_outcomes else None
    black_box = _black_box(h, groups, ctx)
    figures = {**(reported.figures if reported else {}), **black_box.figures}
    if reported is not None and reported.bad:
        return [Verdict("D6", NAME, "fail", reported.bad, figures)]
    if black_box.bad:
        return [Verdict("D6", NAME, "fail", black_box.bad, figures)]
    exercised = [f for f in (reported, black_box) if f is not None and f.good]
    if exercised:
        return [Verdict("D6", NAME, "pass", "; ".join(f.good for f in exercised), figures)]
    why = (reported.undecided if reported is not None else "the implementation reports no settle outcomes")
    return [Verdict("D6", NAME, "unknown", f"{why}; and {black_box.undecided}", figures)]


@dataclass
class _Finding:
    figures: dict[str, object]
    bad: str = ""  # a failure, when the evidence shows one
    good: str = ""  # what was exercised and held
    undecided: str = ""  # why nothing was exercised


def _reported(h: History, groups: list[list[Delivery]]) -> _Finding:
    twice = sorted(m for m, flags in zip(h.mids, h.m_flags) if flags & REMOVED_TWICE)
    overlapping = 0  # calls that settled after a later claim of their row had started
    unattributed = 0  # such calls whose settle could belong to a concurrent call of the same process
    stale: list[dict[str, object]] = []
    for ds in groups:
        for a in ds:
            if a.settle is None:
                continue
            rival = next((b for b in ds if _later(a, b) and b.t < a.settle.t), None)
            if rival is None:
                continue
            if a.ambiguous:
                unattributed += 1
                continue
            overlapping += 1
            if a.settle.type == "ok" and a.outcome in REMOVALS:
                stale.append({"mid": a.mid, "stale": a.process, "holder": rival.process, "outcome": a.outcome})
    figures = {"removed_twice": len(twice), "removed_twice_examples": examples(twice), "stale_removals": len(stale),
               "stale_examples": examples(stale), "overlapping_calls": overlapping,
               "unattributed_overlaps": unattributed, "lease_lost": h.lease_lost}
    finding = _Finding(figures)
    if twice or stale:
        finding.bad = (f"{len(twice)} rows removed more than once and {len(stale)} removals by a call whose lease had"
                       " been claimed by another")
    elif overlapping:
        finding.good = (f"{overlapping} calls settled after their row was claimed again; none removed it"
                        f" ({h.lease_lost} lease_lost reported)")
    else:
        why = (f"; {unattributed} overlaps within one process could not be attributed (completions and settles"
               " do not echo lease_at)") if unattributed else ""
        finding.undecided = f"no stale ack happened: no call settled after its row was claimed again{why}"
    return finding


def _black_box(h: History, groups: list[list[Delivery]], ctx: CheckContext) -> _Finding:
    """Failed calls that had a lapsed holder still running beside them, and what became of their messages."""
    final = h.final
    in_tables = set(final.pending) | set(final.dead)
    retries = ctx.capabilities.retry_schedule or (ctx.capabilities.dlq and ctx.config.dlq)
    exposed = 0
    removed: list[dict[str, object]] = []
    for ds in groups:
        failures = Failures(ds, ctx)
        for i, b in enumerate(ds):
            if not b.failed or b.end is None or failures.terminal(i):
                continue
            lapsed = next((a for a in ds[:i] if a.end is not None and a.end.type == "ok" and a.end.t > b.t), None)
            if lapsed is None:
                continue
            exposed += 1
            followed = i + 1 < len(ds) or b.mid in in_tables
            if not followed and final.done and retries:
                removed.append({"mid": b.mid, "lapsed_holder": lapsed.process, "failed_holder": b.process,
                                "lapsed_finished_s": round(lapsed.end.t - b.t, 3)})  # type: ignore[union-attr]
    figures = {"failed_beside_a_lapsed_holder": exposed, "wrongly_removed": len(removed),
               "wrongly_removed_examples": examples(removed)}
    finding = _Finding(figures)
    if removed:
        finding.bad = (f"{len(removed)} messages vanished after a later delivery failed with retries left, while an"
                       " earlier holder whose lease had lapsed was still running and then succeeded: the stale"
                       " holder's completion removed the row and the later delivery's outcome (a retry) was lost")
    elif exposed and retries and final.done:
        finding.good = (f"{exposed} calls failed beside a lapsed holder still running; each message was retried or"
                        " kept (black-box)")
    else:
        finding.undecided = "no call failed while a lapsed holder of its row was still running (black-box)"
    return finding


def _later(a: Delivery, b: Delivery) -> bool:
    """B claimed the row after A did."""
    return b is not a and claimed_before(a, b)

