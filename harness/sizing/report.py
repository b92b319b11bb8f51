"""The sizing report: ``sizing.json`` (every figure), ``sizing.md`` (the tables), ``sizing.html``
(tables, recommendation and plots drawn with :mod:`harness.report.svg`; no scripts, opens offline),
and the table printed at the end of a run."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.report import svg
from harness.sizing.analysis import KEEP_UP, PointResult, StepFigures, fmt_ms
from harness.sizing.plan import FORMULAS

if TYPE_CHECKING:
    from harness.sizing.run import SizingRun

HEADERS = ["configuration", "budget conns", "sustainable msg/s", "limited by", "peak msg/s", "p95 e2e @knee",
           "publish p95 @knee", "peak conns/process", "peak conns total", "budget"]


def table_rows(results: Sequence[PointResult]) -> list[list[str]]:
    rows = []
    for r in results:
        b = r.budget
        if r.error:
            rows.append([r.point.label, str(r.point.total_budget), "error", r.error[:60], "–", "–", "–", "–", "–", "–"])
            continue
        rows.append([
            r.point.label, str(r.point.total_budget), r.knee.rate_text, r.knee.limited_by, f"{r.knee.peak_rate:.0f}",
            fmt_ms(r.knee.e2e_p95_ms), fmt_ms(r.knee.publish_p95_ms), f"{b.per_process_peak} / {b.per_process_formula}",
            f"{b.total_peak} / {b.total_formula}", "ok" if b.ok else "OVERRUN: " + "; ".join(b.flags()),
        ])
    return rows


STEP_HEADERS = ["step", "users", "offered", "published/s", "delivered/s", "p50", "p95", "p99", "publish p95", "sustained",
                "limited by", "publisher CPU", "consumers CPU", "database CPU", "host busy (other)"]


def _cores(total: float | None, busiest: float | None = None, wait: float | None = None) -> str:
    """Cores used; the busiest process's share of its one core; its share of time waiting for a CPU."""
    if total is None:
        return "–"
    out = f"{total:.2f}"
    if busiest is not None:
        out += f" (max {busiest:.0%}" + (f", wait {wait:.0%}" if wait is not None else "") + ")"
    return out


def step_row(s: StepFigures) -> list[str]:
    c = s.cpu
    cpu = ["–"] * 4 if c is None else [
        _cores(c.publisher, c.publisher_max, c.publisher_wait), _cores(c.consumers, c.consumers_max, c.consumers_wait),
        "not here" if c.database is None else _cores(c.database) + (
            f" (wait {c.database_wait:.2f})" if c.database_wait is not None else ""),
        "–" if c.host_busy is None else f"{c.host_busy:.2f}/{c.host_cores} ({_cores(c.other)})"]
    return [str(s.index), str(s.users), f"{s.offered:.0f}", f"{s.publish_rate:.0f}", f"{s.delivery_rate:.0f}",
            fmt_ms(s.e2e_p50_ms), fmt_ms(s.e2e_p95_ms), fmt_ms(s.e2e_p99_ms), fmt_ms(s.publish_p95_ms),
            "yes" if s.sustained else "no", s.side or "–", *cpu]


CPU_NOTE = ("CPU in cores over the step; for publisher and consumers, in brackets, the busiest process's share of "
            "its one core (gevent and asyncio run on one) and the most time one spent waiting for a CPU; for the "
            "database, the time its processes waited for a CPU, summed (cores' worth); "
            "host busy = all cores of the harness's host, other = what no process of this run used there.")


def text_table(results: Sequence[PointResult]) -> str:
    rows = [HEADERS, *table_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(rows[0]), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows[1:])])


def markdown(run: SizingRun) -> str:
    lines = [f"# Sizing {run.run_id}", "",
             f"Handler {run.handler.base_ms:g} ± {run.handler.jitter_ms:g} ms; steps of {run.plan.step_users} users × "
             f"{run.plan.user_rate:g} tx/s × {run.plan.batch} msg, {run.plan.step_seconds:g} s each; "
             f"sustained = p95 commit → handler ≤ {run.bound_s:g} s and delivered ≥ {KEEP_UP:g} × published; "
             "\"≥\" = the knee was not reached (lower bound); peak = most msg/s delivered in any step. "
             "Budget per process = max_workers + 2 "
             f"(pool max_workers + 1, LISTEN 1); total = processes × (max_workers + 2).", "",
             "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(run.results)]
    lines += [""]
    if run.recommendation is not None:
        lines += [f"**Recommendation for {run.recommendation.target:g} msg/s:**", "",
                  *(f"- {line}" for line in run.recommendation.lines), ""]
    e = run.engine
    lines += [f"Load: a locust master and {e.local_workers} worker(s) on this host"
              + (f" + {e.remote_workers} on other hosts" if e.remote_workers else "") + ". " + CPU_NOTE, ""]
    for r in run.results:
        if not r.steps:
            continue
        lines += [f"## {r.point.label}", "", f"Limited by **{r.knee.limited_by}**: {r.knee.evidence}.", ""]
        if r.clock:
            lines += [f"Commit → handler: {r.clock.get('how', '')}.", ""]
        if r.stopped_early:
            lines += [f"Load stopped early: {r.stopped_early}.", ""]
        lines += ["| " + " | ".join(STEP_HEADERS) + " |", "|" + "---|" * len(STEP_HEADERS)]
        lines += ["| " + " | ".join(step_row(s)) + " |" for s in r.steps]
        lines.append("")
    return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else ("inf" if math.isinf(value) else round(value, 3))
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def to_json(run: SizingRun) -> dict[str, Any]:
    points = []
    for r in run.results:
        points.append({
            "config": {**asdict(r.point), "label": r.point.label}, "error": r.error,
            "sustainable_rate": r.knee.sustainable_rate, "sustainable_is_lower_bound": r.knee.lower_bound,
            "limited_by": r.knee.limited_by, "knee": asdict(r.knee), "e2e_p95_ms_at_knee": r.knee.e2e_p95_ms,
            "publish_p95_ms_at_knee": r.knee.publish_p95_ms, "e2e_p95_ms_all": r.e2e_p95_ms,
            "publish_p95_ms_all": r.publish_p95_ms, "published": r.published, "delivered": r.delivered,
            "steps": [asdict(s) for s in r.steps],
            "budget": {**asdict(r.budget), "ok": r.budget.ok, "flags": r.budget.flags()},
            "locust": r.locust, "duration_s": r.duration_s, "files": r.files, "stopped_early": r.stopped_early,
            "handler_p99_ms": r.handler_p99_ms, "limit_evidence": r.knee.evidence, "clock": r.clock,
        })
    rec = run.recommendation
    return _jsonable({
        "run_id": run.run_id, "started": run.started, "duration_s": run.duration_s, "interrupted": run.interrupted,
        "bound_s": run.bound_s, "target_rate": run.target, "plan": {**asdict(run.plan), "offered": run.plan.offered()},
        "handler": asdict(run.handler), "grid": [asdict(p) for p in run.grid], "engine": asdict(run.engine),
        "formulas": FORMULAS,
        "points": points,
        "recommendation": None if rec is None else {
            "target": rec.target, "config": asdict(rec.point) if rec.point else None, "rate": rec.rate,
            "headroom": rec.headroom, "lease_ttl_seconds_min": rec.lease_ttl_s, "lines": list(rec.lines),
            "message": rec.message},
    })


def knee_svg(results: Sequence[PointResult], bound_s: float) -> str:
    """p95 commit → handler (log y) against delivered msgs/s, one line per configuration."""
    pts = [(r.point.label, [(s.delivery_rate, s.e2e_p95_ms, s.sustained) for s in r.steps]) for r in results if r.steps]
    xs = [x for _, ps in pts for x, _, _ in ps] or [1.0]
    finite = [v for _, ps in pts for _, v, _ in ps if math.isfinite(v) and v > 0] + [bound_s * 1000]
    frame = svg.Frame(680, 320, (62, 170, 34, 44), x_ticks=svg.ticks(max(xs) * 1.05, 5),
                      y_ticks=svg.decades(max(0.1, min(finite)), max(finite) * 1.5), log_y=True)
    body = frame.axes(x_label="delivered msg/s (per step)", x_fmt=svg.fmt_num, y_fmt=fmt_ms)
    body.append(frame.hline(bound_s * 1000, f"bound {bound_s:g} s", label_at="start"))
    for j, (label, ps) in enumerate(pts):
        colour = svg.colour(j)
        body.append(svg.polyline([(frame.x(a), frame.y(b)) for a, b, _ in ps], colour, 1.6))
        body += [svg.dot(frame.x(a), frame.y(b), colour, r=3.2, hollow=not ok,
                         tooltip=f"{label}: {a:.0f} msg/s, p95 {fmt_ms(b)}{'' if ok else ' (not sustained)'}")
                 for a, b, ok in ps]
    body += svg.legend_column([("box", svg.colour(j), label) for j, (label, _) in enumerate(pts)],
                              frame.x1 + 12, frame.y1 + 12)
    return svg.chart(frame, "p95 commit → handler per load step (hollow: not sustained; ∞ on the top line)", body)


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;color:#222;margin:24px;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse} th,td{border:1px solid #d0d4d8;padding:4px 8px;text-align:right}
th{background:#f3f4f6;font-weight:600} td:first-child,th:first-child{text-align:left}
.over{background:#fde2e1;color:#a61e1e;font-weight:600} .ok{color:#2f9e44}
.rec{background:#eef6ee;border:1px solid #b7dca9;padding:8px 12px;border-radius:4px}
.none{background:#fff4e0;border:1px solid #f7cf9f;padding:8px 12px;border-radius:4px}
.plots{display:flex;flex-wrap:wrap;gap:14px} .plots svg{max-width:100%;height:auto}
.sub{color:#555} a{color:#1a57b0}
"""


def html_page(run: SizingRun) -> str:
    ok = [r for r in run.results if r.error is None]
    labels = [r.point.label for r in ok]
    plain = [False] * len(ok)
    rate_svg = svg.grouped_bars(
        "sustainable delivery rate per configuration", labels,
        [("sustainable msg/s", [r.knee.sustainable_rate for r in ok], [r.knee.lower_bound for r in ok]),
         ("peak delivered msg/s", [r.knee.peak_rate for r in ok], plain)],
        y_label="msg/s", line=(run.target, f"target {run.target:g}") if run.target else None)
    p95_svg = svg.grouped_bars(
        "p95 commit → handler", labels,
        [("at the knee step", [r.knee.e2e_p95_ms for r in ok], plain), ("whole run", [r.e2e_p95_ms for r in ok], plain)],
        y_label="ms", line=(run.bound_s * 1000, f"bound {run.bound_s:g} s"))
    conn_svg = svg.grouped_bars(
        "backends: observed peak vs formula", labels,
        [("peak observed", [float(r.budget.total_peak) for r in ok], plain),
         ("replicas × (max_workers + 2)", [float(r.budget.total_formula) for r in ok], plain)],
        y_label="connections")
    head = "".join(f"<th>{escape(h)}</th>" for h in HEADERS)
    body = []
    for r, row in zip(run.results, table_rows(run.results)):
        cells = [f"<td>{escape(c)}</td>" for c in row]
        cells[0] = f'<td><a href="#{r.point.slug}">{escape(row[0])}</a></td>'
        cells[-1] = f'<td class="{"ok" if r.budget.ok and not r.error else "over"}">{escape(row[-1])}</td>'
        body.append("<tr>" + "".join(cells) + "</tr>")
    rec = run.recommendation
    rec_html = ""
    if rec is not None:
        cls = "rec" if rec.point else "none"
        rest = "".join(f"<li>{escape(line)}</li>" for line in rec.lines[1:])
        rec_html = (f'<div class="{cls}"><p><b>Recommendation for {rec.target:g} msg/s:</b> {escape(rec.lines[0])}</p>'
                    f"<ul>{rest}</ul></div>")
    sections = []
    for r in run.results:
        link = ""
        if "locust.html" in r.files:
            link = f' — <a href="points/{r.point.slug}/locust.html">locust report</a>'
        rows = ""
        for s in r.steps:
            cells = [f"<td>{escape(c)}</td>" for c in step_row(s)]
            cells[9] = f"<td class=\"{'ok' if s.sustained else 'over'}\">{'yes' if s.sustained else 'no'}</td>"
            rows += "<tr>" + "".join(cells) + "</tr>"
        b = r.budget
        budget = (f"pool formula {b.pool_formula} + LISTEN {b.listen_formula} = {b.per_process_formula} per process "
                  f"(peak seen {b.per_process_peak}); total formula {b.total_formula} (peak {b.total_peak}); publisher "
                  f"peak {b.publisher_peak}; max_connections {b.max_connections} ({b.reserved} reserved); "
                  f"{b.samples} samples. " + ("OK" if b.ok else "FLAGS: " + "; ".join(b.flags()))
                  + f" Handler p99 {fmt_ms(r.handler_p99_ms)}.")
        err = f'<p class="none">{escape(r.error)}</p>' if r.error else ""
        if r.stopped_early:
            err += f'<p class="sub">Load stopped early: {escape(r.stopped_early)}.</p>'
        if r.steps:
            err += f"<p>Limited by <b>{escape(r.knee.limited_by)}</b>: {escape(r.knee.evidence)}.</p>"
        if r.clock:
            err += f'<p class="sub">Commit → handler: {escape(str(r.clock.get("how", "")))}.</p>'
        sections.append(
            f'<h2 id="{r.point.slug}">{escape(r.point.label)}{link}</h2>{err}'
            f'<p class="sub">{escape(budget)}</p>'
            "<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in STEP_HEADERS) + "</tr>" + rows + "</table>")
    p = run.plan
    return (
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sizing "
        f"{escape(run.run_id)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Outbox sizing {escape(run.run_id)}</h1>"
        f'<p class="sub">Handler {run.handler.base_ms:g} ± {run.handler.jitter_ms:g} ms. Locust step load from a master and '
        f'{run.engine.local_workers} worker(s) on this host'
        + (f" + {run.engine.remote_workers} on other hosts" if run.engine.remote_workers else "")
        + f': +{p.step_users} users '
        f"every {p.step_seconds:g} s, {p.user_rate:g} tx/s per user, {p.batch} message(s) per tx, {p.steps} steps. "
        f"A step is sustained when p95 commit → handler start ≤ {run.bound_s:g} s (undelivered = ∞) and it delivered "
        f"≥ {KEEP_UP:g} × what it published; the sustainable rate "
        "is the best delivery rate among the sustained steps before the first that is not; \"≥\" marks a lower bound "
        "(the knee was not reached: limited by the publisher or by the step plan); peak = most msg/s delivered in any "
        f"step. {escape(CPU_NOTE)} Run took {run.duration_s:.0f} s.</p>"
        f"{rec_html}<table><tr>{head}</tr>{''.join(body)}</table>"
        f'<h2>Plots</h2><div class="plots">{rate_svg}{p95_svg}{knee_svg(ok, run.bound_s)}{conn_svg}</div>'
        + "".join(sections) + "</body></html>\n"
    )


def write_report(run: SizingRun) -> Path:
    run.out_dir.mkdir(parents=True, exist_ok=True)
    (run.out_dir / "sizing.json").write_text(json.dumps(to_json(run), indent=2, ensure_ascii=False) + "\n")
    (run.out_dir / "sizing.md").write_text(markdown(run))
    (run.out_dir / "sizing.html").write_text(html_page(run))
    return run.out_dir
