"""Positive controls: a correct outbox unlike the reference must not be blamed.

The checkers were written beside the reference outbox and may lean on its habits. Here a correct,
independently written lease outbox with another design (``tests/correct/prefetch.py``: claims into an
in-memory buffer, no database-clock lease times) runs through stock scenarios (their definitions taken
from the catalogue in ``harness/scenarios/`` as they are, renamed for their own database), the same way the negative controls
do, and every verdict must be "pass" or "not_applicable": a "fail" is a false alarm, an "unknown" a
scenario that did not exercise what it claims to.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.adapter import load_adapter
from harness.scenario import Scenario
from harness.scenarios import by_name
from harness.verdict import ScenarioResult
from tests.controls import Run, describe

PREFETCH = "tests.correct.prefetch:adapter"


@pytest.fixture
def run_correct(run_impl: Callable[[str, Scenario, str], ScenarioResult]) -> Run:
    def run(impl: str, scenario: Scenario) -> ScenarioResult:
        return run_impl(impl, scenario, f"correct_{load_adapter(impl).name}")

    return run


def assert_not_blamed(result: ScenarioResult) -> None:
    bad = [v.guarantee for v in result.verdicts if v.status in ("fail", "unknown")]
    assert not bad, f"a correct implementation was blamed or left undecided on {bad}:\n{describe(result)}"


def test_specs_load_in_a_worker_like_process(workers_import_the_repo: None, tmp_path: Path) -> None:
    """Workers import these by spec string from a fresh interpreter: a typo would only show as workers
    refusing to start, so check every correct outbox and its broken twins first, cheaply."""
    specs = [PREFETCH, "tests.correct.prefetch:eager", "tests.correct.prefetch:silent",
             "tests.correct.heartbeat:adapter", "tests.correct.heartbeat:fixed_timeout",
             "tests.broken.prefetch_variants:worker_clock_prefetch",
             "tests.broken.prefetch_variants:never_reconnects", "tests.broken.prefetch_variants:heartbeat_tokenless"]
    code = f"from harness.adapter import load_adapter\nprint(','.join(load_adapter(s).name for s in {specs!r}))\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().split(",") == ["prefetch", "prefetch_eager", "prefetch_silent", "heartbeat",
                                             "heartbeat_fixed_timeout",
                                             "broken:worker_clock_prefetch", "broken:never_reconnects",
                                             "broken:heartbeat_tokenless"]


def test_prefetch_survives_a_sigkill_storm(run_correct: Run) -> None:
    assert_not_blamed(run_correct(PREFETCH, by_name("sigkill_storm")))


def test_prefetch_stale_acks_under_slow_handlers(run_correct: Run) -> None:
    assert_not_blamed(run_correct(PREFETCH, by_name("slow_handlers")))


def test_prefetch_is_not_blamed_under_clock_skew(run_correct: Run) -> None:
    """The false alarm this harness used to raise: rows that wait in a prefetch buffer make handler starts look
    like early reclaims. Judged on the claims it reports, the correct outbox passes."""
    assert_not_blamed(run_correct(PREFETCH, by_name("clock_skew")))


def test_a_prefetching_outbox_that_reports_nothing_is_never_failed_on_leases(run_correct: Run) -> None:
    """No claims, no lease times: handler starts cannot date its claims, so doubtful reclaims are "unknown", and
    only a reclaim inside the lease of any possible claim would fail it (none happens: it is correct)."""
    result = run_correct("tests.correct.prefetch:silent", by_name("clock_skew"))
    assert not [v for v in result.verdicts if v.status == "fail"], describe(result)


def test_a_heartbeat_outbox_gets_a_decided_d6_from_the_zombie_worker(run_correct: Run) -> None:
    """slow_handlers cannot exercise D6 on an implementation whose heartbeats keep slow handlers' leases; cutting
    one worker off alone does, and the correct heartbeat outbox passes it."""
    assert_not_blamed(run_correct("tests.correct.heartbeat:adapter", by_name("zombie_worker")))


def test_a_heartbeat_outbox_with_its_own_timeout_passes_the_stretched_zombie(run_correct: Run) -> None:
    """Its 6 s heartbeat timeout is longer than the scenario's lease: the scenario stretches to the timings it
    declares, and the correct outbox passes there (its broken twin does not: see the negative controls)."""
    assert_not_blamed(run_correct("tests.correct.heartbeat:fixed_timeout", by_name("zombie_worker")))
