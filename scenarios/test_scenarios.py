"""The chaos suite: every scenario of the catalogue (``harness/scenarios/``) against each ``--impl``.

Pick scenarios by name with ``-k``, e.g. ``pytest scenarios -k "sigkill or clock_skew"``. Each run's saved
history is judged a second time, from the file alone, and must give the same verdicts: the history is the
whole record (``outbox-harness check`` relies on it).
"""

from pathlib import Path

import pytest

from harness.analysis import recheck
from harness.pytest_plugin import assert_held
from harness.scenarios import SCENARIOS


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(run_scenario, scenario, pytestconfig):
    result = run_scenario(scenario, check=False)
    again = recheck(Path(result.history_path))
    assert [v.to_dict() for v in again.verdicts] == [v.to_dict() for v in result.verdicts], \
        "the saved history judged again gave other verdicts"
    assert_held(result, allow_unknown=pytestconfig.getoption("allow_unknown"))
