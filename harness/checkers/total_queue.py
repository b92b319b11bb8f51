"""D1, D2, P1: Jepsen's total-queue check over publishes, deliveries and the final read of the tables."""

from __future__ import annotations

from dataclasses import dataclass

from harness.checkers._index import ABSENT, DELIVERED, FAIL, FOUND, INFO, OK, FinalRead, History, examples
from harness.checkers.context import CheckContext, checker
from harness.verdict import Verdict

NAME = "total_queue"


@dataclass(frozen=True)
class QueueTally:
    committed: int  # publish ok, or publish info resolved as committed
    rolled_back: set[str]  # publish fail, or publish info resolved as absent: definitely not committed
    uncertain: set[str]  # publish info left unresolved: commit outcome unknown
    handled: int  # committed messages with a deliver ok
    dead_lettered: int  # committed messages in the DLQ
    duplicates: int  # deliver oks beyond each message's first
    duplicated: list[str]  # messages handled more than once, sorted
    delivered_doubtful: set[str]  # rolled-back or uncertain messages that were delivered
    deliveries: int  # deliver invokes
    phantoms: list[str]  # delivered mids never committed nor possibly committed (rolled back counts), per call
    corrupt: list[str]  # delivered payloads that failed their checksum or could not be read
    lost: set[str]  # committed, never handled, not dead-lettered, not dropped by design
    dropped: set[str]  # poison mids gone without a DLQ to land in: expected
    committed_poison: set[str]  # poison mids that were committed
    final: FinalRead  # the tables after the drain
    drained: bool  # the drain reached an empty outbox
    poison: set[str]  # mids published as poison


def tally(h: History, ctx: CheckContext) -> QueueTally:
    """The total-queue bookkeeping, shared with the checkers that must not lose messages either (L3), computed once
    per index."""
    has_dlq = ctx.config.dlq and ctx.capabilities.dlq
    return h.cached(("tally", has_dlq), lambda: _tally(h, has_dlq))


def _tally(h: History, has_dlq: bool) -> QueueTally:
    final, poison = h.final, h.poison
    dead = set(final.dead)
    committed = handled = dead_lettered = duplicates = 0
    duplicated: list[str] = []
    rolled_back: set[str] = set()
    uncertain: set[str] = set()
    doubtful: set[str] = set()
    gone: set[str] = set()  # committed, never handled, not dead-lettered
    committed_poison: set[str] = set()
    phantoms: list[str] = []
    for name, flags, n in zip(h.mids, h.m_flags, h.m_handled):
        if n > 1:
            duplicates += n - 1
            duplicated.append(name)
        if flags & OK or (flags & INFO and flags & FOUND):  # committed
            committed += 1
            handled += n > 0
            dead_lettered += name in dead
            if not n and name not in dead:
                gone.add(name)
            if name in poison:
                committed_poison.add(name)
            continue
        rolled = flags & FAIL or (flags & INFO and flags & ABSENT)
        if rolled:
            rolled_back.add(name)
        elif flags & INFO:
            uncertain.add(name)
        if flags & DELIVERED:
            if rolled or flags & INFO:
                doubtful.add(name)
            if rolled or not flags & INFO:  # neither committed nor possibly committed: each call is a phantom
                phantoms += [name] * sum(1 for d in h.group(name) if not h.calls.corrupt(d.i))
    dropped = set() if has_dlq else (gone & poison) - set(final.pending)
    return QueueTally(committed, rolled_back, uncertain, handled, dead_lettered, duplicates, sorted(duplicated),
                      doubtful, len(h.calls), phantoms, h.corrupt, gone - dropped, dropped,
                      committed_poison, final, h.drained, poison)


@dataclass(frozen=True)
class Overdue:
    """Committed messages a consumer left behind after a proven heal: still pending when the drain gave up, later
    than the liveness bound after both the last heal and their commit, with no delivery at all in the bound's
    last stretch. A healthy consumer cannot leave such a message; "still draining" cannot explain it. One held by a
    worker that died with it in hand counts only where the implementation declares a reclaim: without one (a lock
    freed hours later), the run cannot tell "late" from "never"."""

    mids: set[str]
    bound_s: float
    why_undecided: str | None  # when no message can be called overdue, what is missing


def overdue(h: History, q: QueueTally, ctx: CheckContext) -> Overdue:
    bound = ctx.liveness_bound
    stuck = q.lost & set(q.final.pending)
    if q.drained or not stuck:
        return Overdue(set(), bound, None)
    heal, clean = h.last_heal()
    end = h.drain_end
    if not clean:
        return Overdue(set(), bound, "a fault did not heal")
    if end is None:
        return Overdue(set(), bound, "the drain was not recorded")
    since = max(heal or float("-inf"), h.min_t)
    if end - since < bound:
        return Overdue(set(), bound, f"the drain ended {end - since:.1f} s after the last heal, within the liveness"
                       f" bound ({ctx.describe_liveness_bound()})")
    if any(end - bound < t <= end for t in h.calls.t):
        return Overdue(set(), bound, "deliveries were still being made when the drain ended")
    late = {m for m in stuck if end - max(since, h.committed_at(m, end)) >= bound}
    held = held_by_the_dead(h, late, end) if ctx.reclaim_after is None else set()
    if late - held:
        return Overdue(late - held, bound, None)
    if held:
        return Overdue(set(), bound, f"{len(held)} of them may be held by workers that died (e.g. {min(held)}: its"
                       " handler call was cut, or it was committed before a worker died and never delivered, so a"
                       " dead worker may have claimed it), and the implementation declares no reclaim, so they may"
                       " come back only after the run")
    return Overdue(set(), bound, "the messages left were committed within the bound")


def held_by_the_dead(h: History, mids: set[str], until: float) -> set[str]:
    """Messages a worker that is gone may still hold: its handler call never ended and its process did, or it was
    never delivered and committed before a worker ended, which may have claimed it without calling its handler."""
    ended = worker_ends(h, until)
    last_end = max(ended.values(), default=float("-inf"))

    def held(m: str) -> bool:
        calls = h.group(m)
        if calls:
            return calls[-1].end is None and (calls[-1].cut_at is not None or calls[-1].process in ended)
        return h.committed_at(m, until) <= last_end

    return {m for m in mids if held(m)}


def worker_ends(h: History, until: float) -> dict[str, float]:
    """Worker incarnations that ended before ``until``, and when: a fault ended one, it died or was stopped, or a
    later incarnation of its slot was spawned (``w1#3`` ends ``w1#1`` and ``w1#2``)."""
    out = {p: t for p, t in h.process_ends().items() if t < until}
    for e in h.events("worker"):
        if e.t >= until:
            continue
        event, process = e.value.get("event"), str(e.value.get("process") or e.process)
        if event in ("died", "stopped"):
            out.setdefault(process, e.t)
        elif event == "spawned":
            slot, _, n = process.partition("#")
            for k in range(1, int(n) if n.isdigit() else 1):
                out.setdefault(f"{slot}#{k}", e.t)
    return out


@checker(NAME, decides=("D1", "D2", "P1"))
def check_total_queue(h: History, ctx: CheckContext) -> list[Verdict]:
    """D1 at-least-once, D2 no unexpected delivery, P1 atomic publish.

    Why: the outbox's whole promise is that a committed message is eventually handled (or dead-lettered) and
    that nothing else is. Duplicates are allowed by at-least-once, so they are counted, never failed; a publish
    whose commit outcome is unknown may go either way, so it is reported, never failed."""
    q = tally(h, ctx)
    return [_d1(q, overdue(h, q, ctx), ctx), _d2(q), _p1(q, ctx)]


def _d1(q: QueueTally, late: Overdue, ctx: CheckContext) -> Verdict:
    in_tables = set(q.final.pending) | set(q.final.dead)
    recovered = q.uncertain & (q.delivered_doubtful | in_tables)
    figures = {
        "committed": q.committed,
        "handled": q.handled,
        "dead_lettered": q.dead_lettered,
        "lost": len(q.lost),
        "lost_examples": examples(sorted(q.lost)),
        "lost_still_pending": len(q.lost & set(q.final.pending)),
        "dropped_poison_without_dlq": len(q.dropped),
        "duplicates": q.duplicates,
        "duplicated_examples": examples(q.duplicated),
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
                       f"{len(q.lost)} of {q.committed} committed messages were lost", figures)
    return Verdict("D1", NAME, "pass", f"all {q.committed} committed messages were handled or dead-lettered"
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
    seen_delivered = q.rolled_back & q.delivered_doubtful
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
