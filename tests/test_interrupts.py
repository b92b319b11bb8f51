"""Ctrl-C (SIGINT) and SIGTERM mid-scenario: every process the harness started is stopped, and the report it
writes says the run was interrupted and which scenario was cut short; it never looks green."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from harness import exits

ROOT = Path(__file__).resolve().parent.parent


class Harness:
    """``outbox-harness run`` in its own session, its output read line by line."""

    def __init__(self, workspace: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env.update(PYTHONPATH=str(ROOT), TMPDIR=str(workspace), PYTHONUNBUFFERED="1")
        self.reports = workspace / "reports"
        self.proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--reports-dir", str(self.reports),
                                      *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env, cwd=workspace, start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, *words: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, "".join(self.seen[-40:])
                continue
            self.seen.append(line)
            if all(w in line for w in words):
                return
        raise AssertionError(f"no line with {words} in {timeout}s:\n" + "".join(self.seen[-40:]))

    def stop_with(self, sig: int, timeout: float = 90) -> int:
        os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

    def report(self) -> Path:
        latest = self.reports / "latest"
        assert latest.is_dir(), f"no report: {list(self.reports.glob('*')) if self.reports.exists() else []}"
        return latest


def assert_marked_interrupted(run_dir: Path, signal_name: str, scenario: str, completed: list[str]) -> None:
    doc = json.loads((run_dir / "results.json").read_text())
    assert doc["status"] == "interrupted"
    assert doc["interrupted"]["signal"] == signal_name
    assert doc["interrupted"]["scenario"] == scenario and doc["interrupted"]["impl"] == "reference"
    assert [s["scenario"] for s in doc["scenarios"]] == completed
    junit = ET.parse(run_dir / "junit.xml").getroot()
    assert junit.get("errors") == "1"
    (error,) = junit.iter("error")
    assert scenario in error.get("message", "") and signal_name in error.get("message", "")
    html = (run_dir / "report.html").read_text()
    assert 'class="banner' in html and f"Interrupted by {signal_name}" in html and scenario in html


def test_ctrl_c_mid_scenario_marks_the_report_interrupted(workspace: Path) -> None:
    run = Harness(workspace, "-k", "sigkill or slow_handlers")
    run.wait_for("[slow_handlers", "workers up")
    time.sleep(1.0)
    code = run.stop_with(signal.SIGINT)
    out = "".join(run.seen) + "".join(iter_queue(run.lines))
    assert code == exits.INTERRUPTED, out[-3000:]
    assert_marked_interrupted(run.report(), "SIGINT", "slow_handlers", ["sigkill_storm"])


def test_sigterm_is_treated_as_ctrl_c(workspace: Path) -> None:
    run = Harness(workspace, "-k", "sigkill")
    run.wait_for("[sigkill_storm", "workers up")
    time.sleep(1.0)
    code = run.stop_with(signal.SIGTERM)
    out = "".join(run.seen) + "".join(iter_queue(run.lines))
    assert code == exits.INTERRUPTED, out[-3000:]
    assert_marked_interrupted(run.report(), "SIGTERM", "sigkill_storm", [])
    assert not list(workspace.glob("outbox-harness-pg-*")), "the embedded server was not stopped and removed"


def iter_queue(lines: queue.Queue[str]) -> Iterator[str]:
    while True:
        try:
            yield lines.get_nowait()
        except queue.Empty:
            return


def test_check_never_passes_a_run_that_was_cut_short(tmp_path: Path) -> None:
    from harness.report import write_report
    from harness.verdict import ScenarioResult, Verdict

    passed = ScenarioResult("sigkill_storm", "reference", [Verdict("D1", "total_queue", "pass", "none lost")], 1.0)
    complete = write_report([passed], reports_dir=tmp_path / "a")
    assert json.loads((complete / "results.json").read_text())["status"] == "pass"
    cut = write_report([passed], reports_dir=tmp_path / "b", interrupted={
        "signal": "SIGINT", "reason": "interrupted by SIGINT", "impl": "reference", "scenario": "slow_handlers",
        "test": "scenarios/test_scenarios.py::test_scenario[reference-slow_handlers]"})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for run_dir, code in ((complete, exits.OK), (cut, exits.FINDINGS)):
        done = subprocess.run([sys.executable, "-m", "harness.cli", "check", str(run_dir), "--allow-unknown"],
                              capture_output=True, text=True, timeout=60, check=False, env=env)
        assert done.returncode == code, done.stdout + done.stderr
    assert "Interrupted by SIGINT while running reference / slow_handlers" in done.stdout
