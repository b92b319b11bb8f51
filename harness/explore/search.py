"""The search: Hypothesis draws scenarios, each runs once against the implementation, a failure is shrunk, replayed
three times and written out as a reproducer.

Chaos runs depend on timing, so a shrink step may not reproduce: Hypothesis then raises ``Flaky``, and the
smallest case that did fail is kept (every failing run is recorded here, and the shrinker only tries cases smaller
than its best). Shrinking stops early when the budget would not leave time for the three replays. Failing cases
persist in a Hypothesis example database under the reports directory, so the next run tries them first.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.errors import Flaky

from harness import interrupt
from harness.adapter import load_adapter
from harness.explore.strategy import scenarios
from harness.provision.postgres import PostgresServer
from harness.runner import run_scenario
from harness.scenario import Scenario
from harness.verdict import ScenarioResult

REPLAYS = 3
#: Room kept for the replays: this many times the failing case's run time.
REPLAY_RESERVE = REPLAYS + 0.5


class GuaranteeBroken(AssertionError):
    """A generated case got a "fail" verdict (raised from one place, so Hypothesis sees one bug to shrink)."""


class BudgetSpent(BaseException):  # noqa: N818 - a BaseException, so Hypothesis lets it through unrecorded
    """The time budget is spent: stop generating (or shrinking) and report what was found."""


@dataclasses.dataclass
class Finding:
    scenario: Scenario  # the smallest case that failed
    result: ScenarioResult
    first: Scenario  # the case that failed first, before shrinking
    first_after_s: float  # from the start of the search to the first failing run
    first_case: int  # how many cases had run by then
    shrink_runs: int = 0  # runs after the first failure
    shrink_steps: int = 0  # of those, failing ones on a smaller case, each kept
    flaky: bool = False  # Hypothesis's final replay of the smallest case passed


def failed(result: ScenarioResult) -> list[str]:
    return [f"{v.guarantee} ({v.summary})" for v in result.verdicts if v.status == "fail"]


def outcome(result: ScenarioResult) -> str:
    """One line: the failed guarantees, else the status and, when undecided, the first reason why."""
    if broken := failed(result):
        return "FAIL " + "; ".join(broken)
    why = next((f": {v.guarantee} {v.summary}"[:120] for v in result.verdicts if v.status == "unknown"), "")
    return result.status + why


def slug(text: str) -> str:
    return re.sub(r"\W+", "_", text).strip("_")


class Explorer:
    """Runs cases on one server pair, one at a time, and keeps the evidence of failing ones only."""

    def __init__(self, impl: str, seed: int, out_dir: Path, server: PostgresServer, toxiproxy: Any | None,
                 say: Callable[[str], None]) -> None:
        self.impl, self.seed, self.out_dir = impl, seed, out_dir
        self.server, self.toxiproxy, self.say = server, toxiproxy, say
        self.adapter = load_adapter(impl)
        self.cases = 0
        self.errors = 0

    def run(self, scenario: Scenario) -> ScenarioResult:
        """One run under a name of its own (its own database and proxies); the work directory stays if it failed."""
        self.cases += 1
        scenario = dataclasses.replace(scenario, name=f"explore_{self.cases}")
        workdir = self.out_dir / "runs" / scenario.name
        result = interrupt.run(run_scenario(scenario, adapter=self.adapter, impl_spec=self.impl, server=self.server,
                                          workdir=workdir, toxiproxy=self.toxiproxy, seed=self.seed,
                                          toxiproxy_error=None if self.toxiproxy else "no Toxiproxy here"))
        if not failed(result):
            shutil.rmtree(workdir, ignore_errors=True)
        return result

    def search(self, budget_s: float, examples: Path) -> Finding | None:
        t0 = time.monotonic()
        deadline = t0 + budget_s
        finding: Finding | None = None

        def progress(line: str) -> None:
            left = max(0.0, deadline - time.monotonic())
            self.say(f"[explore {self.cases} cases, {1 if finding else 0} failing, {left / 60:.1f} min left] {line}")

        def case(scenario: Scenario) -> None:
            nonlocal finding
            now = time.monotonic()
            if finding is not None:
                if now + REPLAY_RESERVE * finding.result.duration_s > deadline:
                    raise BudgetSpent
                finding.shrink_runs += 1
            elif now > deadline:
                raise BudgetSpent
            try:
                result = self.run(scenario)
            except Exception as exc:  # noqa: BLE001 - a case the harness could not run is no finding; go on
                self.errors += 1
                progress(f"case {self.cases} could not run: {type(exc).__name__}: {exc}")
                return
            broken = failed(result)
            kinds = ", ".join(s.nemesis.kind for s in scenario.faults) or "no faults"
            progress(f"case {self.cases} ({kinds}; {result.duration_s:.0f} s): " + outcome(result))
            if not broken:
                return
            if finding is None:
                finding = Finding(scenario, result, scenario, time.monotonic() - t0, self.cases)
            else:
                finding.shrink_steps += scenario != finding.scenario  # Hypothesis also re-runs its best
                finding.scenario, finding.result = scenario, result
            raise GuaranteeBroken("; ".join(broken))

        # The seed makes the search replayable; settings go on last, since @seed alone turns the database off.
        search = settings(database=DirectoryBasedExampleDatabase(str(examples / slug(self.impl))), deadline=None,
                          max_examples=1_000_000, phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
                          report_multiple_bugs=False, suppress_health_check=list(HealthCheck), print_blob=False,
                          verbosity=Verbosity.quiet)(
            hypothesis_seed(self.seed)(given(scenarios(network=self.toxiproxy is not None))(case)))
        try:
            search()
        except (GuaranteeBroken, BudgetSpent):
            pass
        except Flaky:
            assert finding is not None
            finding.flaky = True
        return finding

    def replay(self, scenario: Scenario, times: int = REPLAYS) -> list[ScenarioResult]:
        results = []
        for i in range(times):
            result = self.run(scenario)
            self.say(f"[replay {i + 1}/{times}] {outcome(result)} ({result.duration_s:.0f} s)")
            results.append(result)
        return results


def stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
