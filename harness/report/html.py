"""report.html: the page a person opens first after a run.

Self-contained (inline CSS and SVG, no scripts, no network) so it can be
attached to a CI job or mailed and still open offline. It leads with the answer
(:mod:`harness.report.answer`: the banner, then the failures with their evidence;
a conformance run's matrix before them), then the verdict table, whose cells link
to the scenario sections with the figures, the counts behind them and the plots
that show when it broke, and what was tested (:mod:`harness.report.tested`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from harness.guarantees import order_key
from harness.history import Event, Saved
from harness.report.answer import banner, findings
from harness.report.plots import latency_svg, publish_outcomes, series, throughput_svg
from harness.report.results import Entry, by_guarantee, guarantee_ids, worst_verdicts
from harness.report.tested import run_section, scenario_rows

_LABEL = {"pass": "pass", "fail": "fail", "unknown": "unknown", "not_applicable": "n/a", "skipped": "skipped"}
_LIST_ITEMS = 5
_TEXT_CHARS = 140

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;color:#222;margin:24px;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:16px;margin:0 0 6px}
table{border-collapse:collapse} th,td{border:1px solid #d0d4d8;padding:4px 8px;vertical-align:top}
th{background:#f3f4f6;font-weight:600;text-align:left}
table.grid td.cell,table.grid th.gid{text-align:center;min-width:3.4em;padding:4px 4px}
table.grid td.cell a{color:inherit;text-decoration:none;display:block}
table.grid td.cell a:hover{text-decoration:underline}
.st-pass{background:#2f9e44;color:#fff} .st-fail{background:#d6332a;color:#fff;font-weight:700}
.st-unknown{background:#f2a900;color:#222} .st-not_applicable{background:#c8ccd0;color:#333}
.st-skipped{background:#e6e8ea;color:#555} .st-none{color:#bbb}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;vertical-align:middle}
.legend span.badge{margin-right:6px}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:8px 0}
dl.meta dt{color:#666} dl.meta dd{margin:0;font-family:ui-monospace,monospace;font-size:13px}
section.scenario{border:1px solid #d0d4d8;border-radius:6px;padding:12px 16px;margin:16px 0}
section.scenario:target{outline:3px solid #f2a900}
.sub{color:#555} .counts{background:#f6f7f9;padding:6px 10px;border-radius:4px}
table.verdicts td.figs{font-family:ui-monospace,monospace;font-size:12px;max-width:46em}
.fig{display:inline-block;margin-right:12px} .fig b{color:#555;font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:12px;margin-top:10px} .plots svg{max-width:100%;height:auto}
a{color:#1a57b0}
.banner{padding:12px 16px;border-radius:6px;font-size:15px;margin:12px 0}
.banner .word{font-size:22px;margin-right:8px;letter-spacing:.04em} .banner .tally{font-size:13px;opacity:.9}
.finding{border:1px solid #d0d4d8;border-left:6px solid #c8ccd0;border-radius:4px;padding:8px 14px;margin:10px 0}
.finding h3{margin:2px 0 4px} .finding .where{color:#555;margin:0 0 4px} .finding .reason{margin:4px 0;font-size:15px}
.st-edge-fail{border-left-color:#d6332a} .st-edge-unknown{border-left-color:#f2a900}
.figs{font-family:ui-monospace,monospace;font-size:12px;color:#444;margin:4px 0}
pre.evidence{background:#f6f7f9;border:1px solid #e1e4e8;border-radius:4px;padding:8px 10px;font-size:12px;
 line-height:1.35;overflow-x:auto;white-space:pre;margin:6px 0 2px}
details.tested{margin:6px 0} details.tested summary{cursor:pointer;color:#1a57b0}
ol.faults{margin:0;padding-left:20px} code{font-size:12px;word-break:break-all}
"""


@dataclass(frozen=True)
class Counts:
    """The raw numbers behind the verdicts, in messages (mids), not operations."""

    committed: int
    rolled_back: int
    unknown: int
    delivered: int  # distinct mids whose handler returned
    duplicates: int  # handler successes beyond the first per mid
    dlq: int

    @classmethod
    def of(cls, events: Iterable[Event]) -> Counts:
        """From events read in three passes (a list, or a :class:`~harness.history.Saved` history)."""
        published: Counter[str] = Counter()
        for e, mids in publish_outcomes(events):
            published[e.type] += len(mids)
        ok = Counter(e.mid for e in events if e.f == "deliver" and e.type == "ok" and e.mid)
        dlq = {e.mid for e in events if e.f == "settle" and e.type == "ok" and e.value.get("outcome") == "dead_lettered"}
        return cls(published["ok"], published["fail"], published["info"], len(ok), sum(ok.values()) - len(ok), len(dlq))

    def html(self) -> str:
        return (f"published <b>{self.committed}</b> committed / <b>{self.rolled_back}</b> rolled back / "
                f"<b>{self.unknown}</b> unknown · delivered <b>{self.delivered}</b> · "
                f"duplicates <b>{self.duplicates}</b> · DLQ <b>{self.dlq}</b>")


def _short(value: Any) -> str:
    """Compact rendering of a figure: long lists keep their head, long text is cut."""
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        head = json.dumps(items[:_LIST_ITEMS], default=str)
        text = head if len(items) <= _LIST_ITEMS else f"{head[:-1]}, … +{len(items) - _LIST_ITEMS} more]"
    elif isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, default=str, separators=(",", ":"))
    return text if len(text) <= _TEXT_CHARS else text[: _TEXT_CHARS - 1] + "…"


def _figures(figures: dict[str, Any]) -> str:
    """Every figure but the quoted evidence, which the failures at the top of the page show in full."""
    shown = [f'<span class="fig"><b>{escape(str(k))}</b> {escape(_short(v))}</span>'
             for k, v in figures.items() if k != "evidence"]
    return " ".join(shown + (['<span class="fig"><a href="#fail">evidence quoted above</a></span>']
                             if "evidence" in figures else []))


def _badge(status: str) -> str:
    return f'<span class="badge st-{status}">{_LABEL[status]}</span>'


def _cell(status: str, tooltip: str, href: str) -> str:
    return (f'<td class="cell st-{status}" title="{escape(tooltip)}">'
            f'<a href="{escape(href)}">{_LABEL[status]}</a></td>')


def _verdict_table(entries: list[Entry], gids: list[str], multi: bool) -> str:
    head = "<th>scenario</th>" + ("<th>impl</th>" if multi else "")
    rows = [f'<table class="grid verdict-table"><tr>{head}'
            + "".join(f'<th class="gid">{escape(g)}</th>' for g in gids) + "</tr>"]
    for e in entries:
        groups = by_guarantee(e.result)
        cells = [f'<th><a href="#{e.anchor}">{escape(e.result.scenario)}</a></th>']
        cells += [f"<td>{escape(e.result.impl)}</td>"] if multi else []
        for g in gids:
            if g not in groups:
                cells.append('<td class="cell st-none" title="not checked in this scenario">–</td>')
                continue
            status, deciders = worst_verdicts(groups[g])
            tip = f"{g} {status}: " + " | ".join(f"{v.checker}: {v.summary}" for v in deciders)
            cells.append(_cell(status, tip, f"#{e.anchor}"))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(rows) + "</table>"


def _matrix_table(matrix: dict[str, dict[str, dict[str, Any]]]) -> str:
    gids = sorted({g for row in matrix.values() for g in row}, key=order_key)
    rows = ['<table class="grid matrix-table"><tr><th>impl</th>'
            + "".join(f'<th class="gid">{escape(g)}</th>' for g in gids) + "</tr>"]
    for impl, row in matrix.items():
        cells = [f"<th>{escape(impl)}</th>"]
        for g in gids:
            if g not in row:
                cells.append('<td class="cell st-none" title="not checked">–</td>')
                continue
            c = row[g]
            tip = f"{impl} {g} {c['status']} over: {', '.join(c['scenarios'])}"
            cells.append(_cell(c["status"], tip, c["evidence"].removeprefix("report.html")))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(rows) + "</table>"


def _section(e: Entry, run_dir: Path) -> str:
    r = e.result
    parts = [f'<section class="scenario" id="{e.anchor}">',
             f"<h3>{escape(r.scenario)} <span class=\"sub\">on {escape(r.impl)}</span> {_badge(r.status)}</h3>"]
    history = f' · history <a href="{escape(e.history)}">{escape(e.history)}</a>' if e.history else " · no history"
    seed = f" · seed {e.run.get('seed')}" if e.run is not None else ""
    parts.append(f'<p class="sub">duration {r.duration_s:.1f} s{seed}{history}</p>')
    parts.append(scenario_rows(e, run_dir))
    events = Saved(run_dir / e.history) if e.history else None  # a long run's history is read, never held
    if events is not None:
        parts.append(f'<p class="counts">Counts behind the verdicts: {Counts.of(events).html()}</p>')
    if r.notes:
        parts.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in r.notes) + "</ul>")
    parts.append('<table class="verdicts"><tr><th>guarantee</th><th>checker</th><th>status</th>'
                 "<th>summary</th><th>figures</th></tr>")
    for gid, verdicts in by_guarantee(r).items():
        for v in verdicts:
            parts.append(f"<tr><td>{escape(gid)}</td><td>{escape(v.checker)}</td><td>{_badge(v.status)}</td>"
                         f'<td>{escape(v.summary)}</td><td class="figs">{_figures(v.figures)}</td></tr>')
    parts.append("</table>")
    if events is not None:
        s = series(events)
        parts.append(f'<div class="plots">{latency_svg(s)}\n{throughput_svg(s)}</div>')
    parts.append("</section>")
    return "\n".join(parts)


def write_html(path: Path, doc: dict[str, Any], entries: list[Entry]) -> None:
    """The answer (banner; a conformance run's matrix; failures and undecided verdicts with their evidence), the
    verdict table, what was tested, then one section per scenario."""
    results = [e.result for e in entries]
    multi = len({r.impl for r in results}) > 1
    summary = " ".join(f"{_badge(s)} {n}" for s, n in doc["summary"].items() if n)
    legend = " ".join(_badge(s) for s in _LABEL) + ' <span class="st-none">– not checked</span>'
    body = [f"<h1>Outbox harness report</h1><p class=\"sub\">run <b>{escape(doc['run_id'])}</b></p>",
            banner(doc, entries)]
    if multi:
        body += ["<h2>Conformance matrix</h2>",
                 '<p class="sub">Worst verdict over the scenarios per implementation and guarantee; a decided verdict outranks skipped and not applicable ones.</p>',
                 _matrix_table(doc["matrix"])]
    body += [findings(entries),
             "<h2>Verdicts</h2>",
             f"<p>Verdict cells (scenario × guarantee): {summary or 'none'}</p>",
             f'<p class="legend sub">{legend}. Hover a cell for its summary; click it for the scenario.</p>',
             _verdict_table(entries, guarantee_ids(results), multi),
             run_section(doc)]
    body.append("<h2>Scenarios</h2>")
    body += [_section(e, path.parent) for e in entries]
    page = ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Outbox harness report {escape(doc['run_id'])}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    path.write_text(page, encoding="utf-8")
