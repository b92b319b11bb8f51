"""O2: losing LISTEN is logged a bounded number of times per outage, not once per poll."""

from __future__ import annotations

import re
from collections import Counter

from harness.checkers._index import History, examples
from harness.checkers.context import CheckContext, checker
from harness.verdict import Verdict

NAME = "warnings"
LISTEN_WORDS = re.compile(r"listen|notify", re.IGNORECASE)
#: Lines one worker may log about one outage: the loss and the recovery. faststream-outbox and the reference log
#: one; a library that also says it is reconnecting is no flood.
BOUNDED = 2
#: From this many lines in one outage of a few seconds, the log grows with the polls, not with the outage: an idle
#: consumer polling with backoff from its minimum interval logs 5-6 times in the scenario's 2.4 s outage.
FLOOD = 4


@checker(NAME, decides=("O2",))
def check_warnings(h: History, ctx: CheckContext) -> list[Verdict]:
    """O2 a LISTEN outage is logged, not flooded: at most BOUNDED lines per worker and outage pass, FLOOD or more
    fail, and in between is "unknown" (a few lines cannot be told from one per poll in a short outage).

    Why: an operator alerts on WARNINGs; a lost LISTEN connection that logs on every poll buries every other
    line, and one that logs nothing hides why wake-ups got slow. Only lines that reach the history count (the
    worker records WARNING and above from Python logging), so silence is "unknown", not a failure: the
    implementation may log somewhere the harness cannot see. Delivery during the outage is D8's business."""
    if not ctx.capabilities.notify:
        return [Verdict("O2", NAME, "not_applicable", "the implementation has no LISTEN/NOTIFY wake-up")]
    outages = [w for w in h.listen_outages() if w.applied is not None]
    if not outages:
        return [Verdict("O2", NAME, "unknown", "LISTEN was never lost in this run")]
    per: Counter[tuple[int, str]] = Counter()
    lines: dict[tuple[int, str], list[str]] = {}
    for i, w in enumerate(outages):
        end = float("inf") if w.healed is None else w.healed + ctx.slack_seconds
        for e in h.events("log"):  # from the invoke: the loss may be logged before the nemesis reports back
            message = str(e.value.get("message", ""))
            if w.invoked <= e.t <= end and LISTEN_WORDS.search(message):
                per[(i, e.process)] += 1
                lines.setdefault((i, e.process), []).append(f"{e.value.get('level')} {e.value.get('logger')}: "
                                                            f"{message[:160]}")
    repeated = {f"outage {i + 1} / {proc}": n for (i, proc), n in per.items() if n > BOUNDED}
    figures = {"outages": len(outages), "listen_warnings": sum(per.values()), "repeated": repeated,
               "most_per_outage": max(per.values(), default=0), "bounded": BOUNDED, "flood": FLOOD,
               "examples": examples(f"outage {i + 1} / {proc}: {line}" for (i, proc), ls in lines.items()
                                    if (i, proc) in {k for k, n in per.items() if n > BOUNDED} for line in ls)}
    if repeated:
        worst_key = max(repeated, key=repeated.__getitem__)
        worst = repeated[worst_key]
        if worst >= FLOOD:
            return [Verdict("O2", NAME, "fail", f"the LISTEN loss was logged {worst} times by one worker in one"
                            f" outage ({worst_key}): once per poll, not once per outage", figures)]
        return [Verdict("O2", NAME, "unknown", f"the LISTEN loss was logged {worst} times by one worker in one outage"
                        f" ({worst_key}): more than a loss and a recovery, too few to tell from one per poll in an"
                        f" outage this short", figures)]
    if not per:
        return [Verdict("O2", NAME, "unknown", "no LISTEN/NOTIFY warning reached the history during the outages;"
                        " the implementation may log where the harness cannot see", figures)]
    return [Verdict("O2", NAME, "pass", f"{sum(per.values())} warnings over {len(outages)} outages, at most"
                    f" {max(per.values())} per worker and outage", figures)]
