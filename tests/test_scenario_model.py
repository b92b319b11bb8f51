"""The scenario model: scenarios are data that scale, describe themselves and say what they need."""

from __future__ import annotations

from harness.adapter import ConsumerConfig, Timings
from harness.nemesis.network import Partition
from harness.nemesis.process import Kill
from harness.runner import _reclaim_scale
from harness.scenario import RECLAIM, FaultStep, Scenario, Workload
from harness.scenarios import SCENARIOS, by_name


def test_a_scaled_scenario_runs_the_same_story_on_a_slower_clock() -> None:
    s = Scenario(name="x", guarantees=["D1"], config=ConsumerConfig(lease_ttl_seconds=2.0, max_fetch_interval=0.5),
                 handler={"base_ms": 40, "jitter_ms": 10, "slow_first": 3},
                 workload=Workload(messages=100, rate=50, script=[{"ms": 100}, {"fail": True}]),
                 faults=[FaultStep(at=1.0, nemesis=Kill, hold=0.5, inner=[FaultStep(at=0.2, nemesis=Kill)])],
                 drain_deadline=30)
    t = s.scaled(10)
    assert t.config.lease_ttl_seconds == 20 and t.config.max_fetch_interval == 0.5  # polling stays
    assert t.handler == {"base_ms": 400, "jitter_ms": 100, "slow_first": 3}
    assert (t.workload.messages, t.workload.rate, t.workload.script) == (100, 5, [{"ms": 1000}, {"fail": True}])
    assert (t.faults[0].at, t.faults[0].hold, t.faults[0].inner[0].at) == (10, 5, 2)
    assert t.drain_deadline == 300 and s.scaled(1) is s


def test_scenarios_that_need_reclaims_stretch_to_the_implementations_own_reclaim_time() -> None:
    storm = by_name("sigkill_storm")
    assert RECLAIM in storm.requires
    assert _reclaim_scale(storm, Timings(reclaim_seconds=storm.config.lease_ttl_seconds)) == 1
    assert _reclaim_scale(storm, Timings(reclaim_seconds=60, reclaim_window_seconds=10)) == 70 / 2.0
    assert _reclaim_scale(by_name("listen_loss"), Timings(reclaim_seconds=60)) == 1  # needs no reclaim


def test_needs_follow_from_the_nemeses() -> None:
    cut = Scenario(name="y", guarantees=["L4"], faults=[FaultStep(at=0, nemesis=Partition, params={"target": "w1"})])
    assert cut.needs_proxy and not cut.controls_server
    assert by_name("mixed").needs_proxy and by_name("mixed").controls_server
    assert not by_name("sigkill_storm").needs_proxy


def test_every_scenario_describes_itself_as_plain_data() -> None:
    import json  # noqa: PLC0415

    for s in SCENARIOS:
        described = json.loads(json.dumps(s.describe()))
        assert described["name"] == s.name and described["guarantees"] == s.guarantees
