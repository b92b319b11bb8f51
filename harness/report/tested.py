"""What a run tested, in report.html: the versions and the command for the run, and for each scenario what its
history's ``run`` header holds (the consumer's configuration, the fault schedule, the workload, the seed).

A verdict means little without what it was a verdict about: a reader reproducing a failure needs the
implementation's version, the seed and the exact faults; a reader doubting a pass needs the configuration. The
header is the one source: results.json quotes it, and so does this page.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from harness.report.results import Entry


def _json(value: Any) -> str:
    return json.dumps(value, default=str, separators=(", ", ": "))


def _link(rel: str, text: str | None = None) -> str:
    return f'<a href="{escape(quote(rel))}">{escape(text or rel)}</a>'


def _rows(rows: list[tuple[str, str]]) -> str:
    """A definition list; values are HTML already."""
    return '<dl class="meta">' + "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _harness(meta: dict[str, Any]) -> str:
    h = meta.get("harness") or {}
    commit = f" (git {h['commit']}{', modified' if h.get('modified') else ''})" if h.get("commit") else ""
    return escape(f"outbox-harness {h.get('version', '?')}{commit}")


def _server_log(meta: dict[str, Any], name: str) -> str:
    rel = (meta.get("server_logs") or {}).get(name)
    return f" · log {_link(rel)}" if rel else ""


def run_section(doc: dict[str, Any]) -> str:
    """The run as a whole: implementations and their versions, servers, harness, command line."""
    meta, tested = doc["meta"], doc.get("tested") or {}
    impls = tested.get("implementations") or {}
    rows = [("implementation" + ("s" if len(impls) > 1 else ""),
             "<br>".join(f"<b>{escape(name)}</b> {escape(version)}" for name, version in impls.items()) or "–"),
            ("PostgreSQL", escape(", ".join(tested.get("postgresql") or []) or "–") + _server_log(meta, "postgresql")),
            ("Toxiproxy", escape(", ".join(tested.get("toxiproxy") or []) or "not used")
             + _server_log(meta, "toxiproxy")),
            ("harness", _harness(meta)),
            ("command", f"<code>{escape(str(meta.get('command', '?')))}</code>"),
            ("directory", escape(str(meta.get("cwd", "?")))),
            ("host", escape(f"{meta.get('host', '?')}, finished {meta.get('finished', '?')}"))]
    return "<h2 id=\"tested\">What was tested</h2>" + _rows(rows)


def _fault(step: dict[str, Any]) -> str:
    params = f" {_json(step['params'])}" if step.get("params") else ""
    hold = f", held {step['hold']:g} s" if step.get("hold") else ""
    inner = "".join(f"<li>{_fault(s)}</li>" for s in step.get("inner") or [])
    return (f"+{step.get('at', 0):g} s <b>{escape(str(step.get('nemesis')))}</b>{escape(params + hold)}"
            + (f"<ol>{inner}</ol>" if inner else ""))


def scenario_rows(e: Entry, run_dir: Path) -> str:
    """One scenario's header, as the history recorded it, and the links to its workers' logs and specs."""
    run = e.run
    if run is None:
        return '<p class="sub">No run header: this scenario left no history.</p>'
    scenario, context = run.get("scenario") or {}, run.get("context") or {}
    versions = run.get("versions") or {}
    faults = scenario.get("faults") or []
    schedule = "<ol class=\"faults\">" + "".join(f"<li>{_fault(s)}</li>" for s in faults) + "</ol>" if faults else "none"
    rows = [("implementation", escape(f"{run.get('impl_spec', e.result.impl)} · {versions.get('impl', 'unknown')}")),
            ("seed", escape(f"{run.get('seed')} · time scale {run.get('time_scale', 1):g}")),
            ("consumer configuration", f"<code>{escape(_json(context.get('config') or {}))}</code>"),
            ("fault schedule", schedule),
            ("workload", escape(f"{scenario.get('workers')} workers, handler {_json(scenario.get('handler') or {})}, "
                                f"{_json(scenario.get('workload') or {})}"))]
    if run.get("not_run"):
        rows.append(("not run", escape(f"{run['not_run'].get('status')}: {run['not_run'].get('reason')}")))
    if e.logs:
        files = sorted(p.name for p in (run_dir / e.logs).iterdir())
        rows.append(("worker logs and specs", " · ".join(_link(f"{e.logs}/{name}", name) for name in files)))
    return '<details class="tested"><summary>What this scenario ran</summary>' + _rows(rows) + "</details>"
