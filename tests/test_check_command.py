"""``outbox-harness check``: a saved run, copied elsewhere, judged again from its histories alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.analysis import judge
from harness.check import NotARunDirectory, check_run
from harness.history import Event, write_history
from harness.report import write_report
from harness.runner import HISTORY
from harness.verdict import ScenarioResult
from tests.checker_histories import CONFIG, H, ctx


def saved_run(tmp_path: Path, *, lose: bool) -> Path:
    """A report directory written by the report writer from one recorded history (header included)."""
    h = H().publish(0.0, "m1", "m2").deliver(0.5, "m1")
    if not lose:
        h.deliver(0.7, "m2")
    header = Event(-1.0, 0.0, "runner", "info", "run", {
        "scenario": {"name": "tiny", "guarantees": ["D1", "D2", "P1"]}, "impl": "reference",
        "context": ctx().to_dict(), "notes": "", "seed": 7})
    events = [header, *h.build()]
    work = tmp_path / "work"
    work.mkdir()
    write_history(events, work / HISTORY)
    verdicts, notes = judge(events)
    result = ScenarioResult("tiny", "reference", verdicts, 1.0, history_path=str(work / HISTORY), notes=notes)
    run_dir = write_report([result], reports_dir=tmp_path / "reports")
    shutil.rmtree(work)  # the run directory must stand alone
    return run_dir


def test_check_reproduces_the_stored_verdicts_after_a_copy(tmp_path: Path) -> None:
    run_dir = saved_run(tmp_path, lose=True)
    copy = tmp_path / "elsewhere"
    shutil.copytree(run_dir, copy)
    stored = json.loads((copy / "results.json").read_text())
    out = tmp_path / "again.json"
    cmd = [sys.executable, "-m", "harness.cli", "check", str(copy), "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stdout + done.stderr  # D1 fails: m2 was lost
    assert "verdicts as stored" in done.stdout
    again = json.loads(out.read_text())
    assert again["matrix"] == stored["matrix"] and again["summary"] == stored["summary"]
    assert [s["verdicts"] for s in again["scenarios"]] == [s["verdicts"] for s in stored["scenarios"]]


def test_check_reports_verdicts_that_changed(tmp_path: Path) -> None:
    run_dir = saved_run(tmp_path, lose=False)
    doc = json.loads((run_dir / "results.json").read_text())
    doc["scenarios"][0]["verdicts"][0]["status"] = "fail"  # as if an older checker had failed D1
    (run_dir / "results.json").write_text(json.dumps(doc))
    lines: list[str] = []

    class Out:
        def write(self, s: str) -> None:
            lines.append(s)

    html = run_dir / "report-rechecked.html"
    results, changed = check_run(run_dir, html_out=html, out=Out())  # type: ignore[arg-type]
    assert [(d.guarantee, d.stored, d.now) for d in changed] == [("D1", "fail", "pass")]
    assert "1 verdicts differ" in "".join(lines)
    page = html.read_text()  # the report of the new verdicts: D1 passes there, with its evidence link into the run
    assert "all 2 committed messages were handled" in page and 'href="histories/' in page


def test_check_refuses_a_directory_without_histories(tmp_path: Path) -> None:
    with pytest.raises(NotARunDirectory, match="report directory"):
        check_run(tmp_path)
    done = subprocess.run([sys.executable, "-m", "harness.cli", "check", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "not a directory" in done.stderr


def test_config_round_trips_through_the_header() -> None:
    assert type(ctx()).from_dict(ctx().to_dict()) == ctx()
    assert ctx().config == CONFIG


def test_a_fail_quotes_the_history_of_the_messages_behind_it(tmp_path: Path) -> None:
    run_dir = saved_run(tmp_path, lose=True)
    doc = json.loads((run_dir / "results.json").read_text())
    d1 = next(v for v in doc["scenarios"][0]["verdicts"] if v["guarantee"] == "D1")
    evidence = d1["figures"]["evidence"]
    assert evidence["messages"] == ["m2"]
    assert any("invoke publish" in line and '"m2"' in line for line in evidence["history"])
    assert evidence["history"][-1].endswith("m2: in neither table")
