"""Checkers: pure functions from a merged history to verdicts.

Each takes ``(history, ctx)``, the history being its one-pass index (:class:`harness.checkers._index.History`) or its
events ordered by ``Event.t``, and returns one verdict per guarantee it decides. A checker that cannot decide says "unknown", never "pass". Every module in this package that registers
a checker with ``@checker(name, decides=...)`` is found here: adding a checker is adding one module.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable

from harness.checkers._index import History
from harness.checkers.context import REGISTRY, Checker, CheckContext, checker
from harness.history import Event
from harness.verdict import Verdict

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "context":
        importlib.import_module(f"{__name__}.{_module.name}")

from harness.checkers.budget import check_budget  # noqa: E402 - after discovery, for callers' convenience
from harness.checkers.dlq import check_dlq  # noqa: E402
from harness.checkers.drain import check_drain  # noqa: E402
from harness.checkers.lease import check_lease  # noqa: E402
from harness.checkers.reclaim import check_reclaim  # noqa: E402
from harness.checkers.recovery import check_recovery  # noqa: E402
from harness.checkers.stale_ack import check_stale_ack  # noqa: E402
from harness.checkers.total_queue import QueueTally, check_total_queue, tally  # noqa: E402
from harness.checkers.wakeup import check_wakeup  # noqa: E402
from harness.checkers.warnings import check_warnings  # noqa: E402

#: Guarantee id -> the checker that decides it.
DECIDED_BY: dict[str, str] = {g: r.name for r in REGISTRY.values() for g in r.decides}


def checkers_for(guarantees: Iterable[str]) -> list[str]:
    """The checkers that decide these guarantees, in the order the guarantees are named."""
    out: list[str] = []
    for g in guarantees:
        name = DECIDED_BY.get(g)
        if name is not None and name not in out:
            out.append(name)
    return out


def run_checkers(names: Iterable[str], history: History | Iterable[Event], ctx: CheckContext) -> list[Verdict]:
    """Runs the named checkers in order on one index of the history. An unknown name raises KeyError before any runs;
    a checker that crashes yields "unknown" for its guarantees with the error, so one bug does not hide the other
    verdicts."""
    chosen = list(names)
    if missing := [n for n in chosen if n not in REGISTRY]:
        raise KeyError(f"unknown checkers {missing}; known: {sorted(REGISTRY)}")
    history = History.of(history)
    verdicts: list[Verdict] = []
    for name in chosen:
        entry = REGISTRY[name]
        try:
            verdicts += entry.run(history, ctx)
        except Exception as exc:  # noqa: BLE001 - reported as the checker's verdicts
            verdicts += [Verdict(g, name, "unknown", f"checker crashed: {type(exc).__name__}: {exc}")
                         for g in entry.decides]
    return verdicts


__all__ = [
    "DECIDED_BY",
    "REGISTRY",
    "CheckContext",
    "Checker",
    "History",
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
    "check_warnings",
    "checker",
    "checkers_for",
    "run_checkers",
    "tally",
]
