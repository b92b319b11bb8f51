"""Checkers: pure functions from a merged history and the final read of the tables to verdicts.

Each takes ``(history, ctx)`` with the history ordered by ``Event.t`` and returns one verdict per guarantee it
speaks for. A checker that cannot decide says "unknown", never "pass".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from harness.checkers.budget import check_budget
from harness.checkers.context import CheckContext
from harness.checkers.dlq import check_dlq
from harness.checkers.drain import check_drain
from harness.checkers.lease import check_lease
from harness.checkers.reclaim import check_reclaim
from harness.checkers.recovery import check_recovery
from harness.checkers.stale_ack import check_stale_ack
from harness.checkers.total_queue import QueueTally, check_total_queue, tally
from harness.checkers.wakeup import check_wakeup
from harness.history import Event
from harness.verdict import Verdict

Checker = Callable[[list[Event], CheckContext], list[Verdict]]

ALL_CHECKERS: dict[str, Checker] = {
    "total_queue": check_total_queue,
    "lease": check_lease,
    "reclaim": check_reclaim,
    "stale_ack": check_stale_ack,
    "dlq": check_dlq,
    "budget": check_budget,
    "drain": check_drain,
    "wakeup": check_wakeup,
    "recovery": check_recovery,
}

#: Guarantee ids each checker speaks for, in the order it returns them.
GUARANTEES: dict[str, tuple[str, ...]] = {
    "total_queue": ("D1", "D2", "P1"),
    "lease": ("D3", "D4"),
    "reclaim": ("D5",),
    "stale_ack": ("D6",),
    "dlq": ("R1", "R2", "R3", "R4"),
    "budget": ("L2", "L3"),
    "drain": ("L1",),
    "wakeup": ("D7", "D8"),
    "recovery": ("P2", "L4"),
}


def run_checkers(names: Iterable[str], history: list[Event], ctx: CheckContext) -> list[Verdict]:
    """Runs the named checkers in order. An unknown name raises KeyError before any runs; a checker that crashes
    yields "unknown" for its guarantees with the error, so one bug does not hide the other verdicts."""
    chosen = list(names)
    if missing := [n for n in chosen if n not in ALL_CHECKERS]:
        raise KeyError(f"unknown checkers {missing}; known: {sorted(ALL_CHECKERS)}")
    verdicts: list[Verdict] = []
    for name in chosen:
        try:
            verdicts += ALL_CHECKERS[name](history, ctx)
        except Exception as exc:  # noqa: BLE001 - reported as the checker's verdicts
            verdicts += [Verdict(g, name, "unknown", f"checker crashed: {type(exc).__name__}: {exc}")
                         for g in GUARANTEES[name]]
    return verdicts


__all__ = [
    "ALL_CHECKERS",
    "GUARANTEES",
    "CheckContext",
    "Checker",
    "QueueTally",
    "check_budget",
    "check_dlq",
    "check_drain",
    "check_lease",
    "check_reclaim",
    "check_recovery",
    "check_stale_ack",
    "check_total_queue",
    "check_wakeup",
    "run_checkers",
    "tally",
]
