"""L2, L3: a consumer stays within its declared connection budget, and running out of connections is loud."""

from __future__ import annotations

import re

from harness.checkers._index import History, examples, target
from harness.checkers.context import CheckContext, checker
from harness.checkers.total_queue import tally
from harness.names import APP_PREFIX
from harness.nemesis.base import CAPACITY
from harness.verdict import Verdict

NAME = "budget"
CLEAR_ERROR = re.compile(
    r"QueuePool limit|too many connections|too many clients|remaining connection slots|pool|budget|exhaust",
    re.IGNORECASE,
)


@checker(NAME, decides=("L2", "L3"))
def check_budget(h: History, ctx: CheckContext) -> list[Verdict]:
    """L2 connection budget, L3 pool exhaustion is loud, not lossy.

    Why: operators size pools and max_connections from the declared budget; a consumer that takes more starves
    its neighbours. When capacity is short anyway, the failure must be an error someone can read, not
    silently lost messages."""
    return [_l2(h, ctx), _l3(h, ctx)]


def _consumers(h: History) -> set[str]:
    """Processes that ran a consumer: they delivered or have lifecycle notes."""
    return h.delivering | {target(e) for e in h.events("worker")}


def _l2(h: History, ctx: CheckContext) -> Verdict:
    budget = ctx.connection_budget
    if budget is None or not ctx.capabilities.connection_budget:
        return Verdict("L2", NAME, "not_applicable", "the implementation declares no connection budget")
    samples = [{str(name).removeprefix(APP_PREFIX): int(n) for name, n in (e.value.get("backends") or {}).items()}
               for e in h.events("sample") if e.type == "info"]
    peak = {p: max((s.get(p, 0) for s in samples), default=0) for p in _consumers(h)}
    over = {p: n for p, n in sorted(peak.items()) if n > budget}
    figures = {"budget": budget, "samples": len(samples), "peak_by_process": peak, "over_budget": len(over),
               "examples": examples({"process": p, "backends": n} for p, n in over.items())}
    if over:
        return Verdict("L2", NAME, "fail", f"{len(over)} consumer processes held more than {budget} backends"
                       f" (peak {max(over.values())})", figures)
    if not samples or not any(peak.values()):
        return Verdict("L2", NAME, "unknown", "no sample saw a consumer's backends (is application_name set?)",
                       figures)
    return Verdict("L2", NAME, "pass", f"peak {max(peak.values())} backends per consumer, within {budget}", figures)


def _l3(h: History, ctx: CheckContext) -> Verdict:
    if not h.kinds_of(CAPACITY):
        return Verdict("L3", NAME, "not_applicable", "connections were not made scarce in this scenario")
    counts = tally(h, ctx)
    lost = counts.lost
    errors = [str(e.value.get("message") or e.value.get("error") or "") for e in h.others
              if e.f in ("log", "worker") and e.type == "info"]
    clear = [m for m in errors if CLEAR_ERROR.search(m)]
    figures = {"lost": len(lost), "lost_examples": examples(sorted(lost)), "clear_errors": len(clear),
               "error_examples": examples(m[:200] for m in clear), "drained": counts.drained}
    if lost and counts.drained:
        return Verdict("L3", NAME, "fail", f"{len(lost)} committed messages were lost under connection shortage",
                       figures)
    if lost:
        return Verdict("L3", NAME, "unknown", f"{len(lost)} messages unaccounted for, but the drain did not finish",
                       figures)
    if not clear:
        return Verdict("L3", NAME, "unknown", "no error was seen, the exhaustion may not have bitten", figures)
    return Verdict("L3", NAME, "pass", f"the shortage was reported ({len(clear)} clear errors) and nothing was lost",
                   figures)
