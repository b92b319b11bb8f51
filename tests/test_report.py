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
    return write_report(results, reports_dir=tmp_path / "reports", run_id="R1", meta={"versions": {"ref": "0.1"}})


def test_files_and_latest(run_dir: Path, results: list[ScenarioResult], tmp_path: Path) -> None:
    assert run_dir == tmp_path / "reports" / "R1"
    for name in ("results.json", "junit.xml", "history.jsonl", "report.html",
                 "histories/ref/sigkill.jsonl", "histories/ref/partition.jsonl", "histories/alt/sigkill.jsonl"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "histories/alt/partition.jsonl").exists()
    latest = tmp_path / "reports" / "latest"
    assert latest.is_symlink() and latest.resolve() == run_dir.resolve()
    second = write_report(results, reports_dir=tmp_path / "reports", meta={})
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", second.name)
    assert latest.resolve() == second.resolve()
    with pytest.raises(FileExistsError):
        write_report(results, reports_dir=tmp_path / "reports", run_id="R1", meta={})


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
    assert doc["meta"]["versions"] == {"ref": "0.1"} and doc["meta"]["impls"] == ["alt", "ref"]
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
    run = write_report(results, reports_dir=tmp_path / "r", meta={})
    assert (tmp_path / "r" / "latest.txt").read_text().strip() == str(run.resolve())
    assert not (tmp_path / "r" / "latest").exists()
    assert [p.name for p in (tmp_path / "r").iterdir() if p.name.startswith(".latest")] == []


def test_a_pass_is_not_hidden_by_a_scenario_that_could_not_exercise_it(tmp_path: Path) -> None:
    results = [
        ScenarioResult("poison", "peer", [V("D1", "not_applicable")], 0.1),
        ScenarioResult("sigkill", "peer", [V("D1", "pass")], 0.1),
        ScenarioResult("partition", "peer", [V("L4", "skipped"), V("D3", "not_applicable")], 0.1),
    ]
    run = write_report(results, reports_dir=tmp_path, run_id="R2", meta={})
    m = json.loads((run / "results.json").read_text())["matrix"]["peer"]
    assert (m["D1"]["status"], m["L4"]["status"], m["D3"]["status"]) == ("pass", "skipped", "not_applicable")


def test_the_guarantees_doc_shows_the_catalogue_as_generated() -> None:
    """docs/guarantees.md carries the table generated from the catalogue, the checkers and the scenarios."""
    from harness.guarantees import markdown_table  # noqa: PLC0415

    doc = (Path(__file__).resolve().parents[1] / "docs" / "guarantees.md").read_text(encoding="utf-8")
    assert markdown_table() in doc, "regenerate the table: python -m harness.guarantees --write docs/guarantees.md"
