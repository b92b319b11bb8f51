"""The top of report.html: the answer first.

A reader opens the page to learn whether the run passed, and if not, what broke. So the page starts with a
banner (PASS, FAIL, UNDECIDED, NOT RUN or INTERRUPTED), then every failing verdict with its guarantee's promise,
the checker's reason in plain text (no hovering) and the history lines the checker quotes, then the verdicts that
stayed undecided with theirs.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from harness.guarantees import title
from harness.report.results import Entry, interruption_text
from harness.verdict import Verdict

_BANNER = {
    "pass": ("PASS", "st-pass", "every guarantee checked held"),
    "fail": ("FAIL", "st-fail", "a guarantee failed: the failures follow, each with its evidence"),
    "unknown": ("UNDECIDED", "st-unknown", "nothing failed, but some verdicts stayed undecided: not a pass"),
    "skipped": ("NOT RUN", "st-skipped", "no guarantee was exercised: every verdict was skipped or not applicable"),
    "not_applicable": ("NOT RUN", "st-skipped",
                       "no guarantee was exercised: every verdict was skipped or not applicable"),
}


def banner(doc: dict[str, Any], entries: list[Entry]) -> str:
    """One line with the run's answer; a run cut short is INTERRUPTED whatever its verdicts say."""
    counts = doc["summary"]
    tally = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in counts.items() if n) or "no verdicts"
    scenarios = f"{len(entries)} scenario run{'s' if len(entries) != 1 else ''} · verdicts: {tally}"
    if doc.get("interrupted"):
        word, css, text = "INTERRUPTED", "st-fail", interruption_text(doc["interrupted"])
    else:
        word, css, text = _BANNER[doc["status"]]
    return (f'<div class="banner {css}" id="answer"><b class="word">{word}</b> {escape(text)}.'
            f'<br><span class="tally">{escape(scenarios)}</span></div>')


def _evidence(v: Verdict) -> str:
    quoted = v.figures.get("evidence")
    if not isinstance(quoted, dict) or not quoted.get("history"):
        return ""
    head = f"history of {', '.join(map(str, quoted.get('messages') or []))} (times from the run's start):"
    return f'<pre class="evidence">{escape(head)}\n' + escape("\n".join(map(str, quoted["history"]))) + "</pre>"


def _figures(v: Verdict) -> str:
    shown = {k: x for k, x in v.figures.items() if k != "evidence"}
    if not shown:
        return ""
    text = json.dumps(shown, default=str, separators=(", ", ": "))
    return f'<p class="figs">{escape(text if len(text) <= 400 else text[:399] + "…")}</p>'


def _finding(e: Entry, v: Verdict) -> str:
    return (f'<div class="finding st-edge-{v.status}">'
            f'<h3><span class="badge st-{v.status}">{v.status}</span> {escape(v.guarantee)}: '
            f'{escape(title(v.guarantee))}</h3>'
            f'<p class="where">{escape(e.result.impl)} / <a href="#{e.anchor}">{escape(e.result.scenario)}</a> · '
            f'checker {escape(v.checker)}</p>'
            f'<p class="reason">{escape(v.summary)}</p>{_figures(v)}{_evidence(v)}</div>')


def findings(entries: list[Entry]) -> str:
    """Failing verdicts, then undecided ones, in run order; empty when there are none."""
    parts = []
    for status, heading in (("fail", "Failures"), ("unknown", "Undecided")):
        found = [_finding(e, v) for e in entries for v in e.result.verdicts if v.status == status]
        if found:
            parts += [f'<h2 id="{status}">{heading} ({len(found)})</h2>', *found]
    return "\n".join(parts)
