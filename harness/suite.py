"""The chaos suite as a pytest module: every scenario of the catalogue (:mod:`harness.scenarios`) against each
``--impl``. It ships inside the package, so ``outbox-harness run`` names this file to pytest wherever the package
is installed; ``scenarios/test_scenarios.py`` re-exports it for ``pytest scenarios/`` in a checkout.

Pick scenarios by name with ``-k``, e.g. ``-k "sigkill or clock_skew"``. Each run's saved history is judged a
second time, from the file alone, and must give the same verdicts: the history is the whole record
(``outbox-harness check`` relies on it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from harness.analysis import recheck
from harness.pytest_plugin import assert_held
from harness.scenario import Scenario
from harness.scenarios import SCENARIOS
from harness.verdict import ScenarioResult


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(run_scenario: Callable[..., ScenarioResult], scenario: Scenario, pytestconfig: pytest.Config) -> None:
    result = run_scenario(scenario, check=False)
    assert result.history_path is not None, "the runner wrote no history"
    again = recheck(Path(result.history_path))
    assert [v.to_dict() for v in again.verdicts] == [v.to_dict() for v in result.verdicts], \
        "the saved history judged again gave other verdicts"
    assert_held(result, allow_unknown=pytestconfig.getoption("allow_unknown"))
