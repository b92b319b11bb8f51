"""The machine-readable side of a report: results.json and the copied evidence.

Everything a reader or a CI job needs to trace a verdict back to its evidence
lives under the run directory, because the scenario work dirs the histories
came from are temporary: the histories, the workers' logs and spec files, the
servers' logs; every path in results.json is relative to the run directory.
What was tested (the scenario, the consumer's configuration, the fault schedule,
the seed, the versions) is each history's ``run`` header, quoted as it is.
The helpers here (guarantee order, worst status per guarantee, section anchors)
are shared by the JUnit and HTML writers so the three files always agree.
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
from harness.history import read_events
from harness.verdict import SEVERITY, ScenarioResult, Verdict, worst

#: results.json's layout; bumped when a field changes meaning or goes away.
FORMAT_VERSION = 1
#: What a scenario's work directory holds beside its histories: each worker incarnation's output and spec.
WORKER_FILES = ("*.log", "*.spec.json")


@dataclass(frozen=True)
class Entry:
    """One scenario result placed in the run directory."""

    result: ScenarioResult
    anchor: str  # id of the scenario's section in report.html, unique in the run
    history: str | None  # copied history, relative to the run dir; None if the scenario left none
    run: dict[str, Any] | None = None  # the history's run header: what was tested
    logs: str | None = None  # the workers' logs and specs, relative to the run dir

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


def logs_dir(name: str) -> str:
    """Where an entry's worker logs and specs live, relative to the run directory."""
    return f"logs/{name}"


def run_header(path: Path) -> dict[str, Any] | None:
    """The ``run`` header of a history file: what was tested."""
    header = next(read_events(path, f="run", type_="info"), None)
    return header.value if header is not None else None


def entries_in_place(results: list[ScenarioResult], run_dir: Path) -> list[Entry]:
    """Entries for results whose histories already sit in ``run_dir`` (a re-check of a saved run)."""
    out = []
    for r, name in zip(results, entry_names(results)):
        rel = Path(r.history_path).resolve().relative_to(run_dir.resolve()).as_posix() if r.history_path else None
        logs = logs_dir(name) if (run_dir / logs_dir(name)).is_dir() else None
        out.append(Entry(r, "s-" + name.replace("/", "--"), rel, run_header(run_dir / rel) if rel else None, logs))
    return out


def _copy_worker_files(work: Path, dest: Path) -> bool:
    """The workers' logs and specs (passwords already masked) of one scenario; whether there were any."""
    found = sorted({p for pattern in WORKER_FILES for p in work.glob(pattern) if p.is_file()})
    for path in found:
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest / path.name)
    return bool(found)


def place(results: list[ScenarioResult], run_dir: Path) -> list[Entry]:
    """Copies each history under histories/<impl>/<scenario>.jsonl, the workers' logs and specs under
    logs/<impl>/<scenario>/, and writes the merged history.jsonl.

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
            logs = logs_dir(name) if _copy_worker_files(src.parent, run_dir / logs_dir(name)) else None
            with open(src, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        raw = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(raw, dict):
                        raw.update(scenario=r.scenario, impl=r.impl)
                        merged.write(json.dumps(raw, separators=(",", ":"), default=str) + "\n")
            entries.append(Entry(r, anchor, rel, run_header(src), logs))
    return entries


def copy_server_logs(logs: dict[str, Path | None], run_dir: Path) -> dict[str, str | None]:
    """The servers' logs (``{"postgresql": path, "toxiproxy": path}``) copied to logs/<name>.log; None for a
    server whose log the harness cannot read (one given by DATABASE_URL or TOXIPROXY_URL, or never started)."""
    out: dict[str, str | None] = {}
    for name, path in logs.items():
        out[name] = None
        if path is not None and path.is_file():
            out[name] = f"logs/{name}.log"
            (run_dir / "logs").mkdir(exist_ok=True)
            shutil.copyfile(path, run_dir / out[name])
    return out


def tested(entries: list[Entry]) -> dict[str, Any]:
    """What the run tested, from the histories' headers: each implementation's version, and the versions of
    PostgreSQL, Toxiproxy and the harness that ran the scenarios (more than one only if they changed mid-run)."""
    versions = [(e.result.impl, (e.run or {}).get("versions") or {}) for e in entries]
    impls: dict[str, str] = {}
    for impl, v in versions:
        if v.get("impl"):
            impls.setdefault(impl, str(v["impl"]))

    def seen(key: str) -> list[str]:
        return sorted({str(v[key]) for _, v in versions if v.get(key)})

    return {"implementations": impls, "postgresql": seen("postgresql"), "toxiproxy": seen("toxiproxy"),
            "harness": seen("harness")}


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
    """results.json: ``status`` is the worst verdict cell of a complete run, "interrupted" for one cut short.

    Each scenario carries its history's ``run`` header as ``run`` and the paths of its history and worker logs,
    relative to the run directory."""
    scenarios = []
    for e in entries:
        scenario = {k: v for k, v in e.result.to_dict().items() if k != "history_path"}
        scenarios.append({**scenario, "evidence": e.evidence, "history": e.history, "logs": e.logs, "run": e.run})
    counts = summary(entries)
    return {
        "format_version": FORMAT_VERSION,
        "run_id": run_id,
        "status": "interrupted" if interrupted else worst([s for s, n in counts.items() if n]),
        "interrupted": interrupted,
        "meta": meta,
        "tested": tested(entries),
        "scenarios": scenarios,
        "matrix": matrix(entries),
        "summary": counts,
    }


def write_results(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
