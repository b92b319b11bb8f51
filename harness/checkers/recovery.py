"""Recovery after crashes and network faults (P2, L4).

P2 holds when a crash took effect (a PostgreSQL crash-restart, or a worker
SIGKILL) and, once drained, no committed message is missing. L4 holds when a
network fault took effect, a worker incarnation that lived through it (no
restart) delivered again after the heal (it reconnected on its own), and
nothing committed is missing. Without the fault, both are unknown.
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.checkers._index import FaultWindow, History, examples, target
from harness.checkers.context import CheckContext, checker
from harness.checkers.total_queue import Overdue, QueueTally, overdue, tally
from harness.history import Event
from harness.names import APP_PREFIX
from harness.nemesis.base import CAPACITY, CRASH, NETWORK
from harness.verdict import Verdict

NAME = "recovery"


@checker(NAME, decides=("P2", "L4"))
def check_recovery(h: History, ctx: CheckContext) -> list[Verdict]:
    counts = tally(h, ctx)
    lost = sorted(counts.lost)
    loss = {"committed": counts.committed, "lost": len(lost), "lost_examples": examples(lost),
            "drained": counts.drained}
    return [_durability(h, counts, loss), _network(h, counts, loss, overdue(h, counts, ctx), ctx)]


def _durability(h: History, counts: QueueTally, loss: dict) -> Verdict:
    crashes = {k: sum(1 for w in h.windows(k) if w.applied) for k in h.kinds_of(CRASH)}
    figures = {**loss, "crashes": crashes}
    if not any(crashes.values()):
        return Verdict("P2", NAME, "unknown", "no crash took effect; durability was not exercised", figures)
    if not counts.drained:  # a message still pending may yet be delivered: undecided, not lost
        return Verdict("P2", NAME, "unknown", "the outbox did not drain; durability undecided", figures)
    if loss["lost"]:
        return Verdict("P2", NAME, "fail", f"{loss['lost']} committed messages did not survive the crashes", figures)
    return Verdict("P2", NAME, "pass", f"all {loss['committed']} committed messages survived {crashes}", figures)


def _cut_off(windows: list[FaultWindow]) -> set[str] | None:
    """Worker slots whose own path the network faults cut (``target`` of the fault), or None when a fault cut every
    path: L4 asks the workers that were cut off to come back, not the ones that never were."""
    targets = {str(w.figures.get("target", "all")) for w in windows}
    return None if "all" in targets else targets


def _through(h: History) -> tuple[list[FaultWindow], float | None, set[str], list[str]]:
    """Network fault windows, the last heal, the workers that lived through the faults cut off, and those of them
    that delivered again after the heal."""
    windows = [w for w in h.windows_of(NETWORK) if w.applied]
    if not windows:
        return [], None, set(), []
    last_heal = max((w.healed for w in windows if w.healed is not None), default=None)
    first_fault = min(w.applied_at for w in windows if w.applied_at is not None)
    ended = {target(e) for e in h.events("worker") if e.value.get("event") in ("died", "stopped", "refused")}
    before = {p for p, first in zip(h.procs, h.proc_first_t) if first < first_fault}
    cut = _cut_off(windows)  # the workers whose path was cut; None: every path
    survivors = {p for p in before - ended if cut is None or p.partition("#")[0] in cut}
    resumed = sorted(p for p, last in zip(h.procs, h.proc_last_t)
                     if last_heal is not None and last > last_heal and p in survivors)
    return windows, last_heal, survivors, resumed


def silent_since_heal(history: History | Iterable[Event], ctx: CheckContext) -> tuple[set[str], float]:
    """Workers cut off by the network faults that have neither delivered nor held a connection since the last
    heal, and the monotonic time at which their silence passes the liveness bound (for the runner, which keeps
    offering them work until then)."""
    h = History.of(history)
    windows, last_heal, survivors, resumed = _through(h)
    if not windows or last_heal is None:
        return set(), 0.0
    back, _ = _connected_after(h, survivors, last_heal)
    return survivors - set(resumed) - back, last_heal + ctx.liveness_bound + 1.0


def _network(h: History, counts: QueueTally, loss: dict, late: Overdue, ctx: CheckContext) -> Verdict:
    windows, last_heal, survivors, resumed = _through(h)
    if not windows:
        return Verdict("L4", NAME, "unknown", "no network fault took effect", {**loss, "network_faults": 0})
    figures = {**loss, "network_faults": len(windows), "kinds": sorted({w.invoke.value.get("kind") for w in windows}),
               "workers_through_faults": sorted(survivors), "delivered_again_after_heal": resumed}
    gave_up = died_by_themselves(h, min(w.applied_at for w in windows if w.applied_at is not None))
    if gave_up:
        first = gave_up[0]
        figures.update(died_by_themselves=[f"{target(e)} (exit {e.value.get('code')})" for e in gave_up])
        return Verdict("L4", NAME, "fail", f"{len(gave_up)} workers exited by themselves once the network faults"
                       f" began instead of reconnecting ({target(first)}: exit {first.value.get('code')} at"
                       f" +{first.t - h.min_t:.1f} s)", figures)
    if last_heal is not None and late.mids:
        figures.update(overdue=len(late.mids), overdue_examples=examples(sorted(late.mids)),
                       liveness_bound_s=round(late.bound_s, 1))
        return Verdict("L4", NAME, "fail", f"{len(late.mids)} committed messages were still pending when the drain"
                       f" gave up, with no delivery for longer than the liveness bound of"
                       f" {ctx.describe_liveness_bound()} after the proven heal: the workers did not recover",
                       figures)
    if last_heal is None or not counts.drained:
        why = ("the faults did not heal" if last_heal is None
               else "the outbox did not drain" + (f" and {late.why_undecided}" if late.why_undecided else
                                                  ", and no message left pending can be called overdue"))
        return Verdict("L4", NAME, "unknown", why, figures)
    if loss["lost"]:
        return Verdict("L4", NAME, "fail", f"{loss['lost']} committed messages lost through the network faults", figures)
    after_heal = sum(1 for t in h.calls.t if t > last_heal)
    if not resumed:
        if not after_heal or not survivors:
            return Verdict("L4", NAME, "unknown", "no delivery after the last heal by a worker that lived through "
                           "the faults, so reconnection was not exercised", figures)
        # Others may simply have taken all the work: a survivor that holds connections again has reconnected.
        back, watched = _connected_after(h, survivors, last_heal)
        figures.update(connected_again_after_heal=sorted(back), watched_after_heal_s=round(watched, 1))
        silent = sorted(survivors - back)
        if not silent:
            return Verdict("L4", NAME, "pass", f"{len(back)} workers cut off held connections again after the heal"
                           " (the others took all the work); nothing lost", figures)
        if watched >= ctx.liveness_bound:
            return Verdict("L4", NAME, "fail", f"{', '.join(silent)} lived through the faults and, for {watched:.0f} s"
                           f" after the heal (past the liveness bound of {ctx.describe_liveness_bound()}), neither"
                           f" delivered nor held a connection while {after_heal} deliveries went to others",
                           figures)
        return Verdict("L4", NAME, "unknown", f"{', '.join(silent)} neither delivered nor held a connection after the"
                       f" heal, but the run watched only {watched:.0f} s, within the liveness bound", figures)
    return Verdict("L4", NAME, "pass", f"{len(resumed)} workers reconnected on their own after "
                   f"{len(windows)} network faults; nothing lost", figures)


def died_by_themselves(h: History, since: float) -> list[Event]:
    """Deaths after ``since`` that no fault caused, of workers that were consuming (up before the faults began, or
    delivered at least once): a consumer that gave up on a transient fault. Excused: one that never got going (a
    restart that cannot initialise while the network is cut may fail fast; the supervisor starts it again), and
    a death while connections are scarce (a capacity fault, from its invoke to a second after its heal: refusing a
    pool below the budget is by design, and L3 judges it)."""
    ended = h.process_ends()
    first = dict(zip(h.procs, h.proc_first_t))
    scarce = [(w.invoked, w.healed if w.healed is not None else float("inf"))
              for w in h.windows_of(CAPACITY) if w.applied is not None]
    consuming = {p for p in h.procs if first[p] < since or h.calls_of(p)}
    return [e for e in h.events("worker") if e.value.get("event") == "died" and e.t >= since
            and target(e) not in ended and target(e) in consuming
            and not any(start <= e.t <= end + 1.0 for start, end in scarce)]


STALE_BACKEND_S = 1.0  # a backend whose client was cut may linger this long in pg_stat_activity


def _connected_after(h: History, processes: set[str], since: float) -> tuple[set[str], float]:
    """Processes seen holding a backend in a connection sample after ``since`` (not counting the first second, when
    backends of cut connections may linger), and how long the samples watched."""
    samples = [e for e in h.events("sample") if e.t > since + STALE_BACKEND_S]
    seen = {p for p in processes for e in samples
            if int((e.value.get("backends") or {}).get(f"{APP_PREFIX}{p}", 0)) > 0}
    return seen, (samples[-1].t - since if samples else 0.0)
