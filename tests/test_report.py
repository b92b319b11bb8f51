"""The report writer: files, worst-status logic, JUnit counts, and an offline, linked HTML page."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.history import Event, write_history
from harness.report import write_report
from harness.report.plots import MAX_POINTS, downsample, latency_svg, series
from harness.verdict import ScenarioResult, Verdict


def ev(t: float, process: str, type_: str, f: str, **value: object) -> Event:
    return Event(t, 1_700_000_000 + t, process, type_, f, dict(value))  # type: ignore[arg-type]


def sigkill_history() -> list[Event]:
    """4 messages: m3 rolled back, m4 outcome unknown; m1 delivered twice around a SIGKILL; a partition never healed."""
    return [
        ev(100.0, "pub-0", "invoke", "publish", mids=["m1", "m2"], rollback=False),
        ev(100.1, "pub-0", "ok", "publish", mids=["m1", "m2"]),
        ev(100.2, "pub-0", "invoke", "publish", mids=["m3"], rollback=True),
        ev(100.3, "pub-0", "fail", "publish"),
        ev(100.4, "pub-0", "invoke", "publish", mids=["m4"], rollback=False),
        ev(100.5, "pub-0", "info", "publish"),
        ev(100.6, "w-0", "invoke", "deliver", mid="m1", delivery=1),
        ev(101.0, "nemesis", "invoke", "fault", kind="sigkill", target="w-0"),
        ev(101.1, "nemesis", "ok", "fault", kind="sigkill"),
        ev(102.0, "nemesis", "info", "fault", kind="sigkill"),
        ev(102.5, "nemesis", "invoke", "fault", kind="clock_skew"),
        ev(102.6, "nemesis", "fail", "fault", kind="clock_skew"),
        ev(103.0, "w-1", "invoke", "deliver", mid="m1", delivery=2),
        ev(103.1, "w-1", "ok", "deliver", mid="m1"),
        ev(103.2, "w-1", "ok", "settle", mid="m1", outcome="acked"),
        ev(103.3, "w-1", "invoke", "deliver", mid="m2", delivery=1),
        ev(103.4, "w-1", "ok", "deliver", mid="m2"),
        ev(103.45, "w-1", "ok", "deliver", mid="m2"),
        ev(103.5, "w-1", "ok", "settle", mid="m2", outcome="dead_lettered"),
        ev(104.0, "nemesis", "invoke", "fault", kind="partition"),
        ev(106.0, "runner", "info", "worker", event="exited"),
    ]


def write_hist(path: Path, events: list[Event], torn: bool = False) -> str:
    write_history(events, path)
    if torn:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write('{"t": 107.0, "wall": 1, "proc')
    return str(path)


def V(g: str, status: str, checker: str = "chk", **figures: object) -> Verdict:  # noqa: N802
    return Verdict(g, checker, status, f"{g} is {status}", dict(figures))  # type: ignore[arg-type]


@pytest.fixture
def results(tmp_path: Path) -> list[ScenarioResult]:
    h = tmp_path / "h"
    h.mkdir()
    return [
        ScenarioResult("sigkill", "ref",
                       [V("D1", "pass", lost=[], delivered=list(range(40))), V("D2", "pass"),
                        V("D5", "unknown", reclaim_s=61.234567), V("P3", "not_applicable")],
                       12.5, write_hist(h / "a.jsonl", sigkill_history(), torn=True), ["killed w-0 once"]),
        ScenarioResult("partition", "ref",
                       [V("D1", "pass", "total_queue"), V("D1", "fail", "dlq"), V("D2", "pass"), V("L4", "pass")],
                       30.0, write_hist(h / "b.jsonl", sigkill_history())),
        ScenarioResult("sigkill", "alt", [V("D1", "pass"), V("D2", "skipped"), V("D5", "pass")],
                       11.0, write_hist(h / "c.jsonl", sigkill_history())),
        ScenarioResult("partition", "alt", [V("D1", "unknown"), V("D2", "pass")], 9.0, None),
    ]


@pytest.fixture
def run_dir(results: list[ScenarioResult], tmp_path: Path) -> Path:
    return write_report(results, reports_dir=tmp_path / "reports", run_id="R1")


def test_files_and_latest(run_dir: Path, results: list[ScenarioResult], tmp_path: Path) -> None:
    assert run_dir == tmp_path / "reports" / "R1"
    for name in ("results.json", "junit.xml", "history.jsonl", "report.html",
                 "histories/ref/sigkill.jsonl", "histories/ref/partition.jsonl", "histories/alt/sigkill.jsonl"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "histories/alt/partition.jsonl").exists()
    latest = tmp_path / "reports" / "latest"
    assert latest.is_symlink() and latest.resolve() == run_dir.resolve()
    second = write_report(results, reports_dir=tmp_path / "reports")
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", second.name)
    assert latest.resolve() == second.resolve()
    with pytest.raises(FileExistsError):
        write_report(results, reports_dir=tmp_path / "reports", run_id="R1")


def test_histories(run_dir: Path, results: list[ScenarioResult]) -> None:
    copy = run_dir / "histories/ref/sigkill.jsonl"
    assert copy.read_bytes() == Path(results[0].history_path or "").read_bytes()
    lines = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert len(lines) == 3 * len(sigkill_history())  # the torn line is dropped
    assert {(x["impl"], x["scenario"]) for x in lines} == {("ref", "sigkill"), ("ref", "partition"), ("alt", "sigkill")}
    assert all({"t", "f", "type", "value"} <= x.keys() for x in lines)


def test_results_json_matrix(run_dir: Path) -> None:
    doc = json.loads((run_dir / "results.json").read_text())
    assert doc["run_id"] == "R1"
    assert doc["meta"]["impls"] == ["alt", "ref"]
    # decided verdicts outrank skipped / not applicable ones: alt/sigkill passed what it could decide
    assert [s["status"] for s in doc["scenarios"]] == ["unknown", "fail", "pass", "unknown"]
    assert doc["scenarios"][3]["history"] is None
    m = doc["matrix"]
    assert m["ref"]["D1"]["status"] == "fail"  # a fail in one scenario fails the cell
    assert m["ref"]["D1"]["scenarios"] == ["sigkill", "partition"]
    assert m["ref"]["D1"]["evidence"] == "report.html#s-ref--partition"
    assert m["ref"]["D2"]["status"] == "pass"
    assert m["ref"]["D5"]["status"] == "unknown"
    assert m["alt"]["D1"]["status"] == "unknown"  # unknown beats pass
    assert m["alt"]["D2"]["status"] == "pass"  # decided in partition, skipped in sigkill
    assert m["ref"]["P3"]["status"] == "not_applicable"
    assert list(m["ref"]) == ["P3", "D1", "D2", "D5", "L4"]  # catalog order
    assert doc["summary"] == {"pass": 7, "not_applicable": 1, "skipped": 1, "unknown": 2, "fail": 1}


def test_junit(run_dir: Path) -> None:
    root = ET.parse(run_dir / "junit.xml").getroot()
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"ref", "alt"}
    ref, alt = suites["ref"], suites["alt"]
    assert (ref.get("tests"), ref.get("failures"), ref.get("skipped")) == ("7", "1", "2")
    assert (alt.get("tests"), alt.get("failures"), alt.get("skipped")) == ("5", "0", "2")
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("12", "1", "4")
    assert len(ref.findall("testcase")) == 7 and len(ref.findall("testcase/failure")) == 1
    failure = ref.find("testcase/failure")
    assert failure is not None and failure.get("message") == "D1 is fail" and failure.get("type") == "dlq"
    messages = [s.get("message") or "" for s in root.iter("skipped")]
    assert sorted(m.split(":")[0] for m in messages) == ["not_applicable", "skipped", "unknown", "unknown"]
    case = next(c for c in alt.iter("testcase") if c.get("classname") == "alt.partition" and c.get("name") == "D1")
    assert (case.find("skipped").get("message") or "").startswith("unknown:")  # type: ignore[union-attr]


def test_html(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text()
    assert 'class="grid verdict-table"' in page and 'class="grid matrix-table"' in page
    anchors = set(re.findall(r'<section class="scenario" id="([^"]+)"', page))
    assert anchors == {"s-ref--sigkill", "s-ref--partition", "s-alt--sigkill", "s-alt--partition"}
    assert set(re.findall(r'href="#([^"]+)"', page)) == anchors
    assert re.search(r'<td class="cell st-fail" title="D1 fail: dlq: D1 is fail"><a href="#s-ref--partition">', page)
    assert 'class="cell st-unknown"' in page and 'class="cell st-not_applicable"' in page
    assert page.count("<svg") == 6  # two plots per scenario with a history
    assert len(re.findall(r'<rect class="fault" data-kind="sigkill"', page)) == 6
    assert len(re.findall(r'<rect class="fault" data-kind="partition"', page)) == 6
    assert 'data-kind="clock_skew"' not in page  # a fault that failed to apply is not a window
    assert re.search(r'class="fault-label"[^>]*>sigkill</text>', page)
    assert re.search(r'class="fault-label"[^>]*>partition \(not healed\)</text>', page)
    assert "published <b>2</b> committed / <b>1</b> rolled back / <b>1</b> unknown" in page
    assert "delivered <b>2</b> · duplicates <b>1</b> · DLQ <b>1</b>" in page
    assert "[0, 1, 2, 3, 4, … +35 more]" in page  # long figure lists are cut
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page, re.I)
    assert "http://" not in page and "https://" not in page and "<script" not in page and "<link" not in page


def test_series() -> None:
    s = series(sigkill_history())
    assert s.duration == pytest.approx(6.0)
    kinds = [(w.kind, round(w.start, 2), round(w.end, 2), w.healed) for w in s.windows]
    assert kinds == [("sigkill", 1.0, 2.0, True), ("partition", 4.0, 6.0, False)]  # unhealed runs to the end
    lat = [(round(x, 2), round(y, 2), again) for x, y, again in s.latencies]
    assert lat == [(0.6, 0.5, False), (3.0, 2.9, True), (3.3, 3.2, False)]
    assert len(s.delivered) == 3


def test_downsample_caps_points() -> None:
    events = [ev(0.0, "pub", "invoke", "publish", mids=[f"m{i}" for i in range(20_000)]),
              ev(0.01, "pub", "ok", "publish")]  # ok without mids takes its invoke's
    events += [ev(1 + i * 0.001, "w", "invoke", "deliver", mid=f"m{i}") for i in range(20_000)]
    s = series(events)
    assert len(s.latencies) == 20_000
    assert len(downsample(s.latencies)) <= MAX_POINTS
    assert max(y for _, y, _ in downsample(s.latencies)) == max(y for _, y, _ in s.latencies)
    svg = latency_svg(s)
    assert svg.count("<circle") <= MAX_POINTS + 2 and len(svg) < 400_000


def test_latest_txt_when_symlinks_fail(results: list[ScenarioResult], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise OSError("symlinks not supported")

    monkeypatch.setattr(Path, "symlink_to", refuse)
    run = write_report(results, reports_dir=tmp_path / "r")
    assert (tmp_path / "r" / "latest.txt").read_text().strip() == str(run.resolve())
    assert not (tmp_path / "r" / "latest").exists()
    assert [p.name for p in (tmp_path / "r").iterdir() if p.name.startswith(".latest")] == []


def test_a_pass_is_not_hidden_by_a_scenario_that_could_not_exercise_it(tmp_path: Path) -> None:
    results = [
        ScenarioResult("poison", "peer", [V("D1", "not_applicable")], 0.1),
        ScenarioResult("sigkill", "peer", [V("D1", "pass")], 0.1),
        ScenarioResult("partition", "peer", [V("L4", "skipped"), V("D3", "not_applicable")], 0.1),
    ]
    run = write_report(results, reports_dir=tmp_path, run_id="R2")
    m = json.loads((run / "results.json").read_text())["matrix"]["peer"]
    assert (m["D1"]["status"], m["L4"]["status"], m["D3"]["status"]) == ("pass", "skipped", "not_applicable")


def test_the_guarantees_doc_shows_the_catalogue_as_generated() -> None:
    """docs/guarantees.md carries the table generated from the catalogue, the checkers and the scenarios."""
    from harness.guarantees import markdown_table  # noqa: PLC0415

    doc = (Path(__file__).resolve().parents[1] / "docs" / "guarantees.md").read_text(encoding="utf-8")
    assert markdown_table() in doc, "regenerate the table: python -m harness.guarantees --write docs/guarantees.md"


# -- what was tested, and the answer first ---------------------------------------------------------

HEADER = {"scenario": {"name": "sigkill", "guarantees": ["D1", "D6"], "workers": 2, "handler": {"base_ms": 5},
                       "workload": {"messages": 4}, "faults": [{"at": 1.0, "nemesis": "sigkill", "hold": 0.0,
                                                                "params": {"name": "w2"}}]},
          "impl": "ref", "impl_spec": "reference", "context": {"config": {"max_workers": 3, "lease_ttl_seconds": 2.0}},
          "notes": "", "seed": 4242, "time_scale": 1.0,
          "versions": {"impl": "outbox-harness 0.1.0", "harness": "0.1.0", "postgresql": "18.6", "toxiproxy": "v2.12.0"}}
EVIDENCE = {"messages": ["m1"], "history": ["+   0.600s w-0 invoke deliver {\"mid\":\"m1\"}",
                                            "+   1.100s nemesis ok fault {\"kind\":\"sigkill\"}"]}


def run_with_evidence(tmp_path: Path, *, status: str = "fail") -> Path:
    """A run whose scenario work dir holds a history with its header, worker logs and specs; and the servers' logs."""
    work = tmp_path / "work" / "ref" / "sigkill"
    work.mkdir(parents=True)
    history = write_hist(work / "history.jsonl", [ev(99.0, "runner", "info", "run", **HEADER), *sigkill_history()])
    (work / "w1#1.log").write_text("worker says hello\n")
    (work / "w1#1.spec.json").write_text('{"dsn": "postgresql://u:***@h/db"}\n')
    (tmp_path / "pg.log").write_text("LOG:  database system is ready\n")
    verdicts = [V("D1", "pass"), Verdict("D6", "stale_ack", status, "m1 vanished while a lapsed holder ran",  # type: ignore[arg-type]
                                         {"wrongly_removed": 1, "evidence": EVIDENCE})]
    return write_report([ScenarioResult("sigkill", "ref", verdicts, 3.0, history)], reports_dir=tmp_path / "reports",
                        run_id="T", server_logs={"postgresql": tmp_path / "pg.log", "toxiproxy": None})


def test_results_json_says_what_was_tested(tmp_path: Path) -> None:
    import shlex
    import sys

    run_dir = run_with_evidence(tmp_path)
    text = (run_dir / "results.json").read_text()
    doc = json.loads(text)
    assert doc["format_version"] == 1
    assert doc["tested"] == {"implementations": {"ref": "outbox-harness 0.1.0"}, "postgresql": ["18.6"],
                             "toxiproxy": ["v2.12.0"], "harness": ["0.1.0"]}
    scenario = doc["scenarios"][0]
    assert scenario["run"] == HEADER  # the header, quoted: config, faults, seed, versions
    assert (scenario["history"], scenario["logs"]) == ("histories/ref/sigkill.jsonl", "logs/ref/sigkill")
    assert str(tmp_path) not in text  # every path is relative to the run directory
    assert "history_path" not in scenario
    assert (run_dir / "logs/ref/sigkill/w1#1.log").read_text() == "worker says hello\n"
    assert (run_dir / "logs/ref/sigkill/w1#1.spec.json").is_file()
    meta = doc["meta"]
    assert meta["server_logs"] == {"postgresql": "logs/postgresql.log", "toxiproxy": None}
    assert (run_dir / "logs/postgresql.log").read_text() == "LOG:  database system is ready\n"
    assert meta["command"] == shlex.join(sys.orig_argv) and meta["cwd"] == str(Path.cwd())
    assert set(meta["harness"]) == {"version", "commit", "modified"}


def _order(page: str, *needles: str) -> list[int]:
    found = [page.find(n) for n in needles]
    assert -1 not in found, [n for n, i in zip(needles, found) if i == -1]
    return found


def test_the_page_leads_with_the_answer_and_the_failures(tmp_path: Path) -> None:
    from harness.guarantees import title

    run_dir = run_with_evidence(tmp_path)
    page = (run_dir / "report.html").read_text()
    positions = _order(page, '<div class="banner st-fail" id="answer"><b class="word">FAIL</b>', '<h2 id="fail">Failures (1)',
                       f"D6: {title('D6')}", '<p class="reason">m1 vanished while a lapsed holder ran</p>',
                       '<pre class="evidence">', "+   1.100s nemesis ok fault", "<h2>Verdicts</h2>",
                       '<h2 id="tested">What was tested</h2>', "<h2>Scenarios</h2>")
    assert positions == sorted(positions)
    for shown in ("outbox-harness 0.1.0", "18.6", "v2.12.0", "seed 4242", "+1 s <b>sigkill</b>",
                  '<a href="logs/ref/sigkill/w1%231.log">w1#1.log</a>', '<a href="logs/postgresql.log">',
                  "&quot;lease_ttl_seconds&quot;: 2.0"):
        assert shown in page, shown


@pytest.mark.parametrize("status,word", [("pass", "PASS"), ("unknown", "UNDECIDED")])
def test_the_banner_says_pass_only_when_everything_held(tmp_path: Path, status: str, word: str) -> None:
    run_dir = run_with_evidence(tmp_path, status=status)
    page = (run_dir / "report.html").read_text()
    assert f'<b class="word">{word}</b>' in page
    assert ('<h2 id="unknown">Undecided (1)' in page) == (status == "unknown") and '<h2 id="fail">' not in page


def test_an_interrupted_run_is_never_a_pass_banner(results: list[ScenarioResult], tmp_path: Path) -> None:
    run = write_report(results[2:3], reports_dir=tmp_path, interrupted={
        "signal": "SIGTERM", "reason": "interrupted by SIGTERM", "impl": "alt", "scenario": "partition", "test": "t"})
    page = (run / "report.html").read_text()
    assert '<b class="word">INTERRUPTED</b> Interrupted by SIGTERM while running alt / partition' in page


def test_a_conformance_page_shows_the_matrix_first(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text()
    positions = _order(page, 'id="answer"', "<h2>Conformance matrix</h2>", '<h2 id="fail">Failures',
                       '<h2 id="unknown">Undecided', "<h2>Verdicts</h2>")
    assert positions == sorted(positions)


def test_a_scenario_run_reports_what_it_tested_and_tells_pytests_junitxml(tmp_path: Path) -> None:
    """A real run (a network scenario, so both servers are involved): provenance from the history's header, the
    servers' and workers' logs in the run directory, and the verdicts in pytest's own --junitxml."""
    import os
    import shlex
    import subprocess
    import sys

    from harness.scenarios import by_name
    from harness.version import version

    root = Path(__file__).resolve().parent.parent
    reports, junit = tmp_path / "reports", tmp_path / "pytest.xml"
    argv = [sys.executable, "-m", "pytest", str(root / "harness" / "suite.py"), "-k", "partition_black_hole", "-p",
            "no:cacheprovider", f"--reports-dir={reports}", f"--junitxml={junit}", f"--basetemp={tmp_path / 'tmp'}"]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TOXIPROXY_URL")}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
                          env={**env, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    run_dir = reports / "latest"
    doc = json.loads((run_dir / "results.json").read_text())
    assert doc["meta"]["command"] == shlex.join(argv)
    assert doc["tested"]["implementations"] == {"reference": f"outbox-harness {version()}"}
    assert re.fullmatch(r"\d+\.\d+.*", doc["tested"]["postgresql"][0]) and doc["tested"]["toxiproxy"] == ["v2.12.0"]
    scenario = by_name("partition_black_hole")
    run = doc["scenarios"][0]["run"]
    assert run["scenario"]["faults"] == scenario.describe()["faults"]
    assert run["context"]["config"] == scenario.config.to_dict() and isinstance(run["seed"], int)
    assert "database system is ready" in (run_dir / "logs/postgresql.log").read_text()
    assert "Starting Toxiproxy" in (run_dir / "logs/toxiproxy.log").read_text()
    assert {p.name for p in (run_dir / doc["scenarios"][0]["logs"]).iterdir()} >= {"w1#1.log", "w1#1.spec.json"}
    case = ET.parse(junit).getroot().find(".//testcase")
    properties = {p.get("name"): p.get("value") or "" for p in case.iter("property")}  # type: ignore[union-attr]
    assert set(properties) == set(scenario.guarantees) and all(v.startswith("pass (") for v in properties.values())
