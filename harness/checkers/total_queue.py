"""D1, D2, P1: Jepsen's total-queue check over publishes, deliveries and the final read of the tables."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from harness.checkers._index import FinalRead, drain_end, drained, examples, final_read, last_heal, poison
from harness.checkers.context import CheckContext, checker
from harness.history import Event
from harness.verdict import Verdict

NAME = "total_queue"


@dataclass(frozen=True)
class QueueTally:
    committed: set[str]  # publish ok, or publish info resolved as committed
    rolled_back: set[str]  # publish fail, or publish info resolved as absent: definitely not committed
    uncertain: set[str]  # publish info left unresolved: commit outcome unknown
    handled: Counter[str]  # deliver ok per mid
    delivered: set[str]  # mids with any deliver invoke
    deliveries: int  # deliver invokes
    phantoms: list[str]  # delivered mids never committed nor possibly committed (rolled back counts)
    corrupt: list[str]  # delivered payloads that failed their checksum or could not be read
    lost: set[str]  # committed, never handled, not dead-lettered, not dropped by design
    dropped: set[str]  # poison mids gone without a DLQ to land in: expected
    final: FinalRead  # the tables after the drain
    drained: bool  # the drain reached an empty outbox
    poison: set[str]  # mids published as poison

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.handled.values() if n > 1)


def tally(history: list[Event], ctx: CheckContext) -> QueueTally:
    """The total-queue bookkeeping, shared with the checkers that must not lose messages either (L3)."""
    outcome: dict[str, set[str]] = {"ok": set(), "fail": set(), "info": set()}
    found: set[str] = set()  # the runner's ``resolve`` of uncertain commits: business row present...
    absent: set[str] = set()  # ...or absent (same transaction as the outbox row, so definitely not committed)
    for e in history:
        if e.f == "publish" and e.type in outcome:
            outcome[e.type].update(str(m) for m in e.value.get("mids") or ())
        elif e.f == "resolve" and e.type == "info":
            found.update(str(m) for m in e.value.get("committed") or ())
            absent.update(str(m) for m in e.value.get("absent") or ())
    committed = outcome["ok"] | (outcome["info"] & found)
    rolled_back = (outcome["fail"] | (outcome["info"] & absent)) - committed
    uncertain = outcome["info"] - committed - rolled_back
    handled: Counter[str] = Counter()
    delivered: set[str] = set()
    deliveries = 0
    phantoms: list[str] = []
    corrupt: list[str] = []
    for e in history:
        if e.f != "deliver":
            continue
        mid = e.mid
        if e.type == "ok" and mid is not None:
            handled[mid] += 1
        if e.type != "invoke":
            continue
        deliveries += 1
        if mid is None or e.value.get("intact") is False:
            corrupt.append(str(mid))
            continue
        delivered.add(mid)
        if mid not in committed and mid not in uncertain:
            phantoms.append(mid)
    final, bad = final_read(history), poison(history)
    has_dlq = ctx.config.dlq and ctx.capabilities.dlq
    gone = committed - set(handled) - set(final.dead)
    dropped = set() if has_dlq else (gone & bad) - set(final.pending)
    return QueueTally(committed, rolled_back, uncertain, handled, delivered, deliveries, phantoms, corrupt,
                      gone - dropped, dropped, final, drained(history), bad)


@dataclass(frozen=True)
class Overdue:
    """Committed messages a consumer left behind after a proven heal: still pending when the drain gave up, later
    than the liveness bound after both the last heal and their commit, with no delivery at all in the bound's
    last stretch. A healthy consumer cannot leave such a message; "still draining" cannot explain it."""

    mids: set[str]
    bound_s: float
    why_undecided: str | None  # when no message can be called overdue, what is missing


def overdue(history: list[Event], q: QueueTally, ctx: CheckContext) -> Overdue:
    bound = ctx.liveness_bound
    stuck = q.lost & set(q.final.pending)
    if q.drained or not stuck:
        return Overdue(set(), bound, None)
    heal, clean = last_heal(history)
    end = drain_end(history)
    if not clean:
        return Overdue(set(), bound, "a fault did not heal")
    if end is None:
        return Overdue(set(), bound, "the drain was not recorded")
    since = max(heal or float("-inf"), min((e.t for e in history), default=end))
    if end - since < bound:
        return Overdue(set(), bound, f"the drain ended {end - since:.1f} s after the last heal, within the liveness"
                       f" bound ({ctx.describe_liveness_bound()})")
    if any(e.f == "deliver" and e.type == "invoke" and end - bound < e.t <= end for e in history):
        return Overdue(set(), bound, "deliveries were still being made when the drain ended")
    committed_at = {str(m): e.t for e in history if e.f in ("publish", "resolve") and e.type in ("ok", "info")
                    for m in (e.value.get("mids") or e.value.get("committed") or ())}
    late = {m for m in stuck if end - max(since, committed_at.get(m, end)) >= bound}
    return Overdue(late, bound, None if late else "the messages left were committed within the bound")


@checker(NAME, decides=("D1", "D2", "P1"))
def check_total_queue(history: list[Event], ctx: CheckContext) -> list[Verdict]:
    """D1 at-least-once, D2 no unexpected delivery, P1 atomic publish.

    Why: the outbox's whole promise is that a committed message is eventually handled (or dead-lettered) and
    that nothing else is. Duplicates are allowed by at-least-once, so they are counted, never failed; a publish
    whose commit outcome is unknown may go either way, so it is reported, never failed."""
    q = tally(history, ctx)
    return [_d1(q, overdue(history, q, ctx), ctx), _d2(q), _p1(q, ctx)]


def _d1(q: QueueTally, late: Overdue, ctx: CheckContext) -> Verdict:
    in_tables = set(q.final.pending) | set(q.final.dead)
    recovered = q.uncertain & (q.delivered | in_tables)
    figures = {
        "committed": len(q.committed),
        "handled": len(q.committed & set(q.handled)),
        "dead_lettered": len(q.committed & set(q.final.dead)),
        "lost": len(q.lost),
        "lost_examples": examples(sorted(q.lost)),
        "lost_still_pending": len(q.lost & set(q.final.pending)),
        "dropped_poison_without_dlq": len(q.dropped),
        "duplicates": q.duplicates,
        "duplicated_examples": examples(sorted(m for m, n in q.handled.items() if n > 1)),
        "uncertain_publishes": len(q.uncertain),
        "uncertain_recovered": len(recovered),
        "uncertain_not_seen": len(q.uncertain - recovered),
        "drained": q.drained,
    }
    vanished = q.lost - set(q.final.pending) if q.final.done else set()
    if not q.committed:
        return Verdict("D1", NAME, "unknown", "no message was committed, so none could be lost", figures)
    if q.lost and not q.drained and not (vanished or late.mids):
        return Verdict("D1", NAME, "unknown", f"{len(q.lost)} committed messages unaccounted for, but the drain did"
                       f" not finish and {late.why_undecided}", figures)
    if q.lost and not q.drained:
        figures.update(vanished=len(vanished), overdue=len(late.mids), overdue_examples=examples(sorted(late.mids)),
                       liveness_bound_s=round(late.bound_s, 1))
        return Verdict("D1", NAME, "fail", f"{len(vanished)} committed messages vanished unhandled and"
                       f" {len(late.mids)} were left pending with the consumers idle, past the liveness bound of"
                       f" {ctx.describe_liveness_bound()} after the last heal", figures)
    if q.lost:
        return Verdict("D1", NAME, "fail",
                       f"{len(q.lost)} of {len(q.committed)} committed messages were lost", figures)
    return Verdict("D1", NAME, "pass", f"all {len(q.committed)} committed messages were handled or dead-lettered"
                   f" ({q.duplicates} duplicate deliveries)", figures)


def _d2(q: QueueTally) -> Verdict:
    figures = {
        "deliveries": q.deliveries,
        "phantoms": len(q.phantoms),
        "phantom_examples": examples(sorted(set(q.phantoms))),
        "corrupt": len(q.corrupt),
        "corrupt_examples": examples(q.corrupt),
    }
    if q.phantoms or q.corrupt:
        return Verdict("D2", NAME, "fail", f"{len(q.phantoms)} deliveries of unpublished messages and"
                       f" {len(q.corrupt)} corrupted payloads", figures)
    if not q.deliveries:
        return Verdict("D2", NAME, "unknown", "nothing was delivered", figures)
    return Verdict("D2", NAME, "pass", f"all {q.deliveries} deliveries were of published, intact messages", figures)


def _p1(q: QueueTally, ctx: CheckContext) -> Verdict:
    seen_delivered = q.rolled_back & q.delivered
    seen_in_tables = q.rolled_back & (set(q.final.pending) | set(q.final.dead))
    figures = {
        "rolled_back": len(q.rolled_back),
        "delivered_after_rollback": len(seen_delivered),
        "in_tables_after_rollback": len(seen_in_tables),
        "examples": examples(sorted(seen_delivered | seen_in_tables)),
    }
    if seen_delivered or seen_in_tables:
        return Verdict("P1", NAME, "fail", f"{len(seen_delivered | seen_in_tables)} rolled-back messages became"
                       " visible (phantoms)", figures)
    if not q.rolled_back:
        return Verdict("P1", NAME, "unknown", "no rolled-back publish to test", figures)
    return Verdict("P1", NAME, "pass", f"none of {len(q.rolled_back)} rolled-back messages became visible", figures)
