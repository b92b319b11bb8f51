"""What a test session did, by kind, for the report and the CLI's exit code.

A test failed by a verdict is a finding about an implementation; a test that failed any other way is the
harness unable to run it; a session stopped by a signal or a lost server is cut short, and its report says
which scenario it cut short.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.interrupt import SigtermAsInterrupt
from harness.verdict import ScenarioResult


@dataclass(frozen=True)
class Running:
    """The scenario a session is running: what an interrupted report names."""

    impl: str  # the adapter's name, as in the verdicts
    scenario: str
    test: str  # pytest node id


@dataclass
class SessionOutcome:
    """What a test session did, by kind."""

    results: list[ScenarioResult] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)  # tests failed by a verdict: about an implementation
    errors: list[str] = field(default_factory=list)  # tests failed any other way: the harness could not run them
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (test, reason) of scenarios that could not run
    aborted: str | None = None  # why the session stopped early (a server that cannot be had)
    running: Running | None = None  # set while a scenario runs; left set when an interrupt cuts it short
    interrupted: dict[str, Any] | None = None  # how the session was cut short: the report's record
    sigterm: SigtermAsInterrupt = field(default_factory=SigtermAsInterrupt)
    report_dir: Path | None = None
    #: the servers' logs ({"postgresql": path, "toxiproxy": path}), copied aside before the servers stop
    server_logs: dict[str, Path | None] = field(default_factory=dict)

    @property
    def ran(self) -> bool:
        """Whether any scenario was exercised (not every verdict skipped or not applicable)."""
        return any(v.status not in ("skipped", "not_applicable") for r in self.results for v in r.verdicts)

    def cut_short(self, exitstatus: int) -> dict[str, Any] | None:
        """How the session was cut short (None if it was not), and the scenario it cut short."""
        if self.aborted:
            cause = {"signal": None, "reason": self.aborted}
        elif exitstatus == pytest.ExitCode.INTERRUPTED:
            cause = {"signal": self.sigterm.signal_name, "reason": f"interrupted by {self.sigterm.signal_name}"}
        else:
            return None
        running = self.running
        return {**cause, "impl": running and running.impl, "scenario": running and running.scenario,
                "test": running and running.test}
