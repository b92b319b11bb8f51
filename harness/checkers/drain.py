"""L1: on SIGTERM a worker stops fetching at once, lets in-flight handlers finish, and exits in time."""

from __future__ import annotations

from harness.checkers._index import Delivery, History, examples, target
from harness.checkers.context import CheckContext, checker
from harness.history import Event
from harness.nemesis.base import STOP
from harness.verdict import Verdict

NAME = "drain"
EXIT_GRACE = 2.0  # seconds beyond graceful_timeout + slack for the process to be gone
#: A claim that started, by the database clock, this long after SIGTERM was sent came from a worker that had seen
#: the signal: its event loop handles it within milliseconds, and a claim already in flight started before.
SIGNAL_REACTION_S = 0.5


@checker(NAME, decides=("L1",))
def check_drain(h: History, ctx: CheckContext) -> list[Verdict]:
    """L1 graceful drain.

    Why: deploys stop workers with SIGTERM. A worker that keeps fetching after it delays the stop and strands
    new leases; one that kills its handlers mid-way or hangs forever breaks rolling deploys. What a stop cuts
    off must keep its lease and come back (another delivery later, or the DLQ), or it is lost. The stop is
    dated by the fault invoke (the signal follows it at once; the ok may wait for the exit) and the process
    by the figures of the fault ok."""
    if not ctx.capabilities.graceful_drain:
        return [Verdict("L1", NAME, "not_applicable", "the implementation does not drain on stop")]
    stops = [w for w in h.windows_of(STOP) if w.applied is not None]
    if not stops:
        return [Verdict("L1", NAME, "unknown", "no worker was sent SIGTERM")]
    in_tables = set(h.final.dead) | set(h.final.pending)
    cfg, slack = ctx.config, ctx.slack_seconds
    late_fetch: list[dict[str, object]] = []
    in_flight = finished = 0
    cut_off: list[str] = []
    cut_off_lost: list[str] = []
    overran: list[str] = []
    no_exit: list[str] = []
    for stop in stops:
        w, t0 = str(stop.figures.get("process") or stop.invoke.value.get("process")), stop.invoked
        deadline = t0 + cfg.graceful_timeout + slack
        exited = _lifecycle(h, w, "exited", t0)
        life_end = min(t for t in (exited, _lifecycle(h, w, "started", t0), float("inf")) if t is not None)
        mine = [d for d in h.calls_of(w) if d.t <= life_end]
        fetched_late = [d for d in mine if _fetched_after(d, stop.invoke, ctx)]
        late = set(fetched_late)
        late_fetch += [{"process": w, "mid": d.mid, "after_s": round(d.t - t0, 3)} for d in fetched_late]
        if exited is None or exited > deadline + EXIT_GRACE:
            no_exit.append(w)
        for d in mine:
            if d in late or (d.finished_at is not None and d.finished_at <= t0):
                continue
            in_flight += 1
            if _done_by(d, deadline, ctx.capabilities.settle_outcomes):
                finished += 1
            elif d.settle is not None and d.settle.type == "ok" and d.outcome == "acked":
                overran.append(str(d.mid))
            else:
                cut_off.append(str(d.mid))
                if not _comes_back(h, d, in_tables):
                    cut_off_lost.append(str(d.mid))
    figures = {"sigterms": len(stops), "in_flight": in_flight, "finished_in_time": finished,
               "cut_off": len(cut_off), "cut_off_lost": len(cut_off_lost), "overran_and_acked": len(overran),
               "fetched_after_sigterm": len(late_fetch), "did_not_exit_in_time": no_exit,
               "examples": examples(late_fetch + [{"mid": m, "cut_off_lost": True} for m in cut_off_lost]
                                    + [{"mid": m, "overran": True} for m in overran])}
    problems = []
    if late_fetch:
        problems.append(f"{len(late_fetch)} deliveries started after SIGTERM")
    if cut_off_lost:
        problems.append(f"{len(cut_off_lost)} cut-off handlers never came back")
    if overran:
        problems.append(f"{len(overran)} handlers ran past graceful_timeout and were acked")
    if no_exit:
        problems.append(f"{len(no_exit)} workers did not exit in time")
    if problems:
        return [Verdict("L1", NAME, "fail", "; ".join(problems), figures)]
    if not in_flight:
        return [Verdict("L1", NAME, "pass", f"{len(stops)} stops: fetching stopped and the workers exited in time;"
                        " no handler was in flight", figures)]
    return [Verdict("L1", NAME, "pass", f"{len(stops)} stops: {finished} of {in_flight} in-flight handlers finished"
                    f" in time, {len(cut_off)} cut off and came back", figures)]


def _lifecycle(h: History, process: str, event: str, after: float) -> float | None:
    """When ``process`` first noted ``event`` (exited, started) after ``after``."""
    return next((e.t for e in h.events("worker") if e.t >= after and target(e) == process
                 and e.value.get("event") == event), None)


def _fetched_after(d: Delivery, sent: Event, ctx: CheckContext) -> bool:
    """The row was claimed after SIGTERM was sent: by its database-clock lease against the wall clock of the
    signalling process when known (a row fetched before may start its handler later), allowing the signal's
    reaction time; else by the handler start, allowing the scheduling slack. Judged by the slack alone, a claim
    within graceful_timeout (often no longer than the slack) would never show, however long fetching went on."""
    if ctx.capabilities.lease_times and d.lease_at is not None:
        return d.lease_at > sent.wall + min(SIGNAL_REACTION_S, ctx.slack_seconds)
    return d.t > sent.t + ctx.slack_seconds


def _done_by(d: Delivery, deadline: float, settles: bool) -> bool:
    ended = d.end is not None and d.end.t <= deadline
    return ended and (not settles or (d.settle is not None and d.settle.t <= deadline))


def _comes_back(h: History, d: Delivery, in_tables: set[str]) -> bool:
    """A cut-off call's row is delivered again later, dead-lettered, or still in the outbox: not lost."""
    if d.mid is None:
        again = any(m < 0 and t > d.t for m, t in zip(h.calls.mid, h.calls.t))
    else:
        again = any(o.t > d.t for o in h.group(d.mid))
    return again or d.mid in in_tables
