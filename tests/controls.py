"""What the negative and positive controls share: running one implementation through one stock scenario with
the real harness, and reading the result (fixtures ``workers_import_the_repo`` and ``run_impl`` in conftest)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from harness.history import read_events

from harness.scenario import Scenario
from harness.verdict import ScenarioResult, Verdict

REPO = Path(__file__).resolve().parents[1]

#: ``run(impl_spec, scenario)`` → its result; the scenario is renamed so it gets a database of its own.
Run = Callable[[str, Scenario], ScenarioResult]


def describe(result: ScenarioResult) -> str:
    lines = [f"{result.impl} / {result.scenario} ({result.duration_s:.1f}s), history {result.history_path}"]
    lines += [f"  {v.guarantee} {v.status} [{v.checker}]: {v.summary} {v.figures}" for v in result.verdicts]
    lines += [f"  note: {n}" for n in result.notes]
    return "\n".join(lines)


def verdict(result: ScenarioResult, guarantee: str) -> Verdict:
    found = [v for v in result.verdicts if v.guarantee == guarantee]
    assert found, f"no verdict for {guarantee}:\n{describe(result)}"
    return found[0]


def processes_in(path: Path) -> list[int]:
    """Pids whose working directory is ``path`` or below: every process a run started inherits its directory
    (workers, Toxiproxy, the postmaster and its backends, locust)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if cwd == str(path) or cwd.startswith(f"{path}/"):
                found.append(int(entry.name))
    return found


def assert_kills_landed_on_the_consumers(result: ScenarioResult) -> None:
    """Every SIGKILL of the run took effect on the pid the supervisor spawned, which is the pid the consumer
    reported as its own: the kill hit the implementation's process, not a wrapper around it."""
    events = list(read_events(Path(result.history_path)))
    spawned = {e.value["process"]: e.value["pid"] for e in events
               if e.f == "worker" and e.value.get("event") == "spawned"}
    started = {e.process: e.value["pid"] for e in events if e.f == "worker" and e.value.get("event") == "started"}
    assert started == spawned, "a worker's own pid differs from the one the supervisor spawned"
    kills = [e.value for e in events if e.f == "fault" and e.type == "ok" and e.value.get("kind") == "sigkill"]
    assert kills, "no SIGKILL took effect"
    for kill in kills:
        assert spawned[kill["process"]] == kill["pid"] and kill["exit"] == -9, json.dumps(kill)
