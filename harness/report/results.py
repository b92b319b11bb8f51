"""The machine-readable side of a report: results.json and the copied histories.

Everything a reader or a CI job needs to trace a verdict back to its evidence
lives under the run directory, because the scenario work dirs the histories
came from are temporary. The helpers here (guarantee order, worst status per
guarantee, section anchors) are shared by the JUnit and HTML writers so the
three files always agree.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.guarantees import order_key
from harness.verdict import SEVERITY, ScenarioResult, Verdict, worst



@dataclass(frozen=True)
class Entry:
    """One scenario result placed in the run directory."""

    result: ScenarioResult
    anchor: str  # id of the scenario's section in report.html, unique in the run
    history: str | None  # copied history, relative to the run dir; None if the scenario left none

    @property
    def evidence(self) -> str:
        return f"report.html#{self.anchor}"


def guarantee_ids(results: list[ScenarioResult]) -> list[str]:
    return sorted({v.guarantee for r in results for v in r.verdicts}, key=order_key)


def by_guarantee(result: ScenarioResult) -> dict[str, list[Verdict]]:
    """Verdicts of one scenario grouped by guarantee id, in catalog order."""
    groups: dict[str, list[Verdict]] = {}
    for v in result.verdicts:
        groups.setdefault(v.guarantee, []).append(v)
    return dict(sorted(groups.items(), key=lambda kv: order_key(kv[0])))


def worst_verdicts(verdicts: list[Verdict]) -> tuple[str, list[Verdict]]:
    """The worst status among verdicts and the verdicts that carry it (they explain the cell)."""
    status = worst([v.status for v in verdicts])
    return status, [v for v in verdicts if v.status == status]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "x"


def entry_names(results: list[ScenarioResult]) -> list[str]:
    """``<impl>/<scenario>`` per result, unique in the run (a repeated scenario gets ``-2``, ``-3``...)."""
    used: Counter[str] = Counter()
    names = []
    for r in results:
        base = f"{slug(r.impl)}/{slug(r.scenario)}"
        used[base] += 1
        names.append(base if used[base] == 1 else f"{base}-{used[base]}")
    return names


def history_file(name: str) -> str:
    """Where an entry's history lives, relative to the run directory."""
    return f"histories/{name}.jsonl"


def entries_in_place(results: list[ScenarioResult], run_dir: Path) -> list[Entry]:
    """Entries for results whose histories already sit in ``run_dir`` (a re-check of a saved run)."""
    out = []
    for r, name in zip(results, entry_names(results)):
        rel = Path(r.history_path).resolve().relative_to(run_dir.resolve()).as_posix() if r.history_path else None
        out.append(Entry(r, "s-" + name.replace("/", "--"), rel))
    return out


def place(results: list[ScenarioResult], run_dir: Path) -> list[Entry]:
    """Copies each history under histories/<impl>/<scenario>.jsonl and writes the merged history.jsonl.

    The merged file tags every line with its scenario and impl so one grep finds
    an event across the run; torn lines (SIGKILL mid-write) are skipped there
    but kept verbatim in the per-scenario copies.
    """
    entries: list[Entry] = []
    with open(run_dir / "history.jsonl", "w", encoding="utf-8") as merged:
        for r, name in zip(results, entry_names(results)):
            anchor = "s-" + name.replace("/", "--")
            src = Path(r.history_path) if r.history_path else None
            if src is None or not src.is_file():
                entries.append(Entry(r, anchor, None))
                continue
            rel = history_file(name)
            (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, run_dir / rel)
            with open(src, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        raw = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(raw, dict):
                        raw.update(scenario=r.scenario, impl=r.impl)
                        merged.write(json.dumps(raw, separators=(",", ":"), default=str) + "\n")
            entries.append(Entry(r, anchor, rel))
    return entries


def matrix(entries: list[Entry]) -> dict[str, dict[str, dict[str, Any]]]:
    """impl x guarantee: worst status over scenarios, linking to the scenario that decided it."""
    cells: dict[str, dict[str, list[tuple[str, Entry]]]] = {}
    for e in entries:
        for gid, verdicts in by_guarantee(e.result).items():
            status, _ = worst_verdicts(verdicts)
            cells.setdefault(e.result.impl, {}).setdefault(gid, []).append((status, e))
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for impl, row in cells.items():
        out[impl] = {}
        for gid in sorted(row, key=order_key):
            pairs = row[gid]
            status = worst([s for s, _ in pairs])
            decider = next(e for s, e in pairs if s == status)
            out[impl][gid] = {
                "status": status,
                "scenarios": [e.result.scenario for _, e in pairs],
                "evidence": decider.evidence,
            }
    return out


def summary(entries: list[Entry]) -> dict[str, int]:
    """Counts per status of (impl, scenario, guarantee) cells: the same unit as junit testcases."""
    counts = dict.fromkeys(sorted(SEVERITY, key=SEVERITY.__getitem__), 0)
    for e in entries:
        for verdicts in by_guarantee(e.result).values():
            counts[worst_verdicts(verdicts)[0]] += 1
    return counts


def interruption_text(interrupted: dict[str, Any]) -> str:
    """The sentence every part of a report uses to say the run is incomplete, and what was cut short."""
    cause = (f"Interrupted by {interrupted['signal']}" if interrupted.get("signal")
             else f"Stopped early ({interrupted['reason']})")
    if not interrupted.get("scenario"):
        return f"{cause}: this run is incomplete; scenarios not listed here did not run"
    return (f"{cause} while running {interrupted['impl']} / {interrupted['scenario']}: this run is incomplete; "
            "that scenario was not judged and scenarios not listed here did not run")


def document(run_id: str, meta: dict[str, Any], entries: list[Entry],
             interrupted: dict[str, Any] | None = None) -> dict[str, Any]:
    """results.json: ``status`` is the worst verdict cell of a complete run, "interrupted" for one cut short."""
    scenarios = [{**e.result.to_dict(), "evidence": e.evidence, "history": e.history} for e in entries]
    counts = summary(entries)
    return {
        "run_id": run_id,
        "status": "interrupted" if interrupted else worst([s for s, n in counts.items() if n]),
        "interrupted": interrupted,
        "meta": meta,
        "scenarios": scenarios,
        "matrix": matrix(entries),
        "summary": counts,
    }


def write_results(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
