"""``outbox-harness check RUN_DIR``: judge a saved run again, offline, from its histories alone.

A run directory is self-contained: every ``histories/<impl>/<scenario>.jsonl`` starts with the ``run``
header that holds what was declared, and every observation is an event. Re-checking needs no database,
no implementation and no access to the machine the run came from; after a checker changes, it shows which
verdicts of an old run change with it. A run that was cut short stays marked so: it cannot pass.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from harness.analysis import NotAHistory, recheck
from harness.report.html import write_html
from harness.report.results import document, entries_in_place, write_results
from harness.summary import interrupted_line, verdict_table
from harness.verdict import ScenarioResult


class NotARunDirectory(ValueError):
    pass


@dataclass(frozen=True)
class Difference:
    impl: str
    scenario: str
    guarantee: str
    stored: str
    now: str


def saved_histories(run_dir: Path) -> list[tuple[Path, dict[str, Any] | None]]:
    """Each history of the run with its stored result (from results.json), in the run's order."""
    results = run_dir / "results.json"
    if results.is_file():
        doc = json.loads(results.read_text(encoding="utf-8"))
        return [(run_dir / s["history"], s) for s in doc.get("scenarios", []) if s.get("history")]
    found = sorted((run_dir / "histories").glob("*/*.jsonl"))
    if not found:
        raise NotARunDirectory(f"{run_dir}: no results.json and no histories/<impl>/<scenario>.jsonl; "
                               "pass a report directory written by `outbox-harness run` (e.g. reports/latest)")
    return [(p, None) for p in found]


def stored_interruption(run_dir: Path) -> dict[str, Any] | None:
    """How the saved run was cut short, if it was (its results.json says so)."""
    results = run_dir / "results.json"
    if not results.is_file():
        return None
    return json.loads(results.read_text(encoding="utf-8")).get("interrupted")


def differences(stored: dict[str, Any] | None, now: ScenarioResult) -> list[Difference]:
    if stored is None:
        return []
    before: dict[str, str] = {}
    for v in stored.get("verdicts", []):
        before.setdefault(v["guarantee"], v["status"])
    after: dict[str, str] = {}
    for v in now.verdicts:
        after.setdefault(v.guarantee, v.status)
    return [Difference(now.impl, now.scenario, g, before.get(g, "-"), after.get(g, "-"))
            for g in dict.fromkeys([*before, *after]) if before.get(g) != after.get(g)]


def check_run(run_dir: Path, *, json_out: Path | None = None, html_out: Path | None = None,
              out: TextIO = sys.stdout) -> tuple[list[ScenarioResult], list[Difference]]:
    """Judges every history of ``run_dir`` again; prints the verdict table and what changed; writes the new
    verdicts in results.json's format (``json_out``) and as a report (``html_out``) if asked."""
    if not run_dir.is_dir():
        raise NotARunDirectory(f"{run_dir} is not a directory; pass a report directory such as reports/latest")
    results: list[ScenarioResult] = []
    changed: list[Difference] = []
    for path, stored in saved_histories(run_dir):
        try:
            result = recheck(path, duration_s=stored.get("duration_s") if stored else None)
        except (OSError, NotAHistory) as exc:
            raise NotARunDirectory(f"{path}: {exc}") from exc
        results.append(result)
        changed += differences(stored, result)
    for line in verdict_table(results):
        print(line, file=out)
    if (interrupted := stored_interruption(run_dir)) is not None:
        print(interrupted_line(interrupted), file=out)
    if changed:
        print(f"{len(changed)} verdicts differ from the stored results:", file=out)
        for d in changed:
            print(f"  {d.impl}/{d.scenario} {d.guarantee}: {d.stored} -> {d.now}", file=out)
    else:
        print(f"re-checked {len(results)} scenarios: verdicts as stored", file=out)
    if json_out is not None or html_out is not None:
        stored_doc = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").is_file() else {}
        meta = {**stored_doc.get("meta", {}), "rechecked_from": str(run_dir)}
        entries = entries_in_place(results, run_dir)
        doc = document(stored_doc.get("run_id", run_dir.name), meta, entries, interrupted)
        if json_out is not None:
            write_results(json_out, doc)
        if html_out is not None:
            write_html(html_out, doc, entries)
    return results, changed
