"""The verdict table printed at the end of a run: scenario rows, guarantee columns in catalogue order."""

from __future__ import annotations

from typing import Any

from harness.guarantees import ordered
from harness.report.results import interruption_text
from harness.verdict import ScenarioResult, worst

SYMBOL = {"pass": "ok", "fail": "FAIL", "unknown": "?", "not_applicable": "n/a", "skipped": "skip"}


def verdict_table(results: list[ScenarioResult]) -> list[str]:
    ids = ordered({v.guarantee for r in results for v in r.verdicts})
    rows = []
    for r in results:
        cells = []
        for g in ids:
            statuses = [v.status for v in r.verdicts if v.guarantee == g]
            cells.append(SYMBOL[worst(statuses)] if statuses else "")
        rows.append((f"{r.impl}/{r.scenario}", r.status, cells))
    name_w = max([len("scenario")] + [len(n) for n, _, _ in rows])
    widths = [max(len(g), 4) for g in ids]
    head = f"{'scenario':<{name_w}}  {'verdict':<14}  " + " ".join(f"{g:<{w}}" for g, w in zip(ids, widths))
    lines = [head, "-" * len(head)]
    for name, status, cells in rows:
        lines.append(f"{name:<{name_w}}  {status:<14}  " + " ".join(f"{c:<{w}}" for c, w in zip(cells, widths)))
    return lines


def interrupted_line(interrupted: dict[str, Any]) -> str:
    return f"INCOMPLETE: {interruption_text(interrupted)}"
