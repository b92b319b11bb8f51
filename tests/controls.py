"""What the negative and positive controls share: running one implementation through one stock scenario with
the real harness, and reading the result (fixtures ``workers_import_the_repo`` and ``run_impl`` in conftest)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
