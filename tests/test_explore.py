"""``outbox-harness explore``: the strategy generates only valid, decidable cases (no database), a reproducer
round-trips, the budget is checked by the parser, and one short search finds a broken variant end to end."""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from harness import exits
from harness.argtypes import duration
from harness.explore.reproducer import NotAReproducer, Reproducer, load, write
from harness.explore.strategy import LAST_HEAL_S, PUBLISH_S, compatible, scenarios
from harness.guarantees import BY_ID
from harness.nemesis.database import CrashRestart
from harness.nemesis.pause import Pause
from harness.nemesis.process import Kill
from harness.nemesis.worker_config import ClockSkew
from harness.scenario import RECLAIM, FaultStep, Scenario

ROOT = Path(__file__).resolve().parent.parent


def _window(step: FaultStep) -> tuple[float, float]:
    return step.at, step.at + step.hold


def _overlap(a: FaultStep, b: FaultStep) -> bool:
    (a0, a1), (b0, b1) = _window(a), _window(b)
    return a0 <= b1 and b0 <= a1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_generated_cases_are_valid_short_and_decidable(case: Scenario) -> None:
    steps = list(case.steps())
    for step in steps:  # every step's params are ones its nemesis's build takes
        inspect.signature(step.nemesis.build).bind(None, **step.params)
        assert step.at + step.hold <= LAST_HEAL_S
    assert case.workload.messages / case.workload.rate <= PUBLISH_S
    assert sum(s.nemesis is CrashRestart for s in steps) <= 1 and sum(s.nemesis is ClockSkew for s in steps) <= 1
    network = [s for s in steps if s.nemesis.needs_proxy]
    assert not any(_overlap(a, b) for i, a in enumerate(network) for b in network[i + 1:])
    pauses = [s for s in steps if s.nemesis is Pause]
    assert not any(_overlap(k, p) for k in steps if k.nemesis is Kill for p in pauses)
    kinds = {s.nemesis for s in steps}
    ids = set(case.guarantees)
    assert ids <= set(BY_ID) and {"D1", "D2", "P1", "D3"} <= ids
    assert ("L4" in ids) == bool(network) and ("D4" in ids) == (ClockSkew in kinds)
    assert ("P2" in ids) == bool(kinds & {Kill, CrashRestart})
    quick = case.handler["base_ms"] <= 100 and not case.workload.script and not case.handler.get("slow_fraction")
    if "D5" in ids:  # a reclaim is timed only when kills are the only fault and handlers are quick
        assert kinds == {Kill} and quick
    if ids & {"R1", "R2", "R3"}:  # so is a retry
        assert not steps and case.workload.poison > 0 and quick
    if ids & {"D5", "D6"}:
        assert RECLAIM in case.requires


@settings(max_examples=50, deadline=None)
@given(scenarios(network=False))
def test_without_toxiproxy_no_case_needs_it(case: Scenario) -> None:
    assert not case.needs_proxy and "L4" not in case.guarantees


def test_colliding_steps_are_dropped_in_time_order() -> None:
    kept = compatible([FaultStep(at=2.0, nemesis=Kill), FaultStep(at=1.0, nemesis=Pause, params={"name": "w1"},
                                                                   hold=2.0),
                       FaultStep(at=3.0, nemesis=CrashRestart, hold=1.0), FaultStep(at=5.0, nemesis=CrashRestart)])
    assert [(s.nemesis, s.at) for s in kept] == [(Pause, 1.0), (CrashRestart, 3.0)]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=scenarios())
def test_a_reproducer_loads_back_as_the_same_scenario(case: Scenario, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("rep") / "reproducer.py"
    write(path, Reproducer(case, 42, "reference"), "outbox-harness explore --replay reproducer.py")
    assert load(path) == Reproducer(case, 42, "reference")


def test_a_file_that_is_not_a_reproducer_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.py").write_text("SCENARIO = 1\n")
    with pytest.raises(NotAReproducer):
        load(tmp_path / "x.py")


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("1h", 3600), ("1.5h", 5400)])
def test_budget_durations(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "0m", "-5s", "1d", "m", "1h30", "nanm", ""])
def test_a_bad_budget_is_one_usage_error(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import build_parser

    with pytest.raises(argparse.ArgumentTypeError):
        duration(text)
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["explore", f"--budget={text}"])
    assert info.value.code == exits.USAGE
    assert "give a number with its unit" in capsys.readouterr().err.splitlines()[-1]


def test_explore_finds_a_broken_variant_and_writes_a_reproducer_that_replays(tmp_path: Path) -> None:
    """publish_outside_tx leaks rolled-back messages in any case at all: the first, simplest generated case fails
    P1, so a fixed seed and a one-minute budget find it in seconds."""
    env = {**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "harness.cli", "explore", "--impl",
                           "tests.broken.variants:publish_outside_tx", "--budget", "60s", "--seed", "3",
                           "--replays", "2", "--reports-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=180, check=False, env=env, cwd=ROOT)
    assert done.returncode == exits.FINDINGS, done.stdout[-2000:] + done.stderr[-3000:]
    (summary_path,) = tmp_path.glob("explore/*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["replayed"][0]["replays_failed"] == 2 and any(f.startswith("P1") for f in summary["failed"])
    found = load(Path(summary["reproducer"]))
    assert isinstance(found.scenario, Scenario) and "P1" in found.scenario.guarantees and found.seed == 3
    assert list((tmp_path / "explore" / "examples").rglob("*")), "the failure was not kept for the next run"
    assert "--replay" in done.stdout
