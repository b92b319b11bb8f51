"""A run's seed replays its random choices: the publisher's rollbacks, the kill targets, each worker's handler
timing (harness.seeds)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import pytest

from harness import seeds
from harness.adapter import load_adapter
from harness.history import read_events
from harness.nemesis.process import Kill
from harness.runner import run_scenario
from harness.scenario import FaultStep, Workload
from harness.scenarios import by_name
from harness.verdict import ScenarioResult
from harness.worker import HandlerSpec


def test_each_stream_is_fixed_by_the_seed_and_its_name() -> None:
    assert seeds.derive(7, "w1#1") == seeds.derive(7, "w1#1")
    assert len({seeds.derive(7, "w1#1"), seeds.derive(7, "w1#2"), seeds.derive(8, "w1#1")}) == 3
    spec = HandlerSpec(base_ms=40, jitter_ms=30, slow_fraction=0.2, slow_s=1.0)
    timings = [[spec.duration(n, rng) for n in range(1, 50)] for rng in (seeds.stream(7, "w1#1"), seeds.stream(7, "w1#1"))]
    assert timings[0] == timings[1] and len(set(timings[0])) > 10


class Slots:
    """A supervisor's view as the Kill nemesis reads it: which workers are alive."""

    def __init__(self, names: list[str], down: set[str]) -> None:
        self.slots = {n: dataclasses.make_dataclass("Slot", ["process"])(f"{n}#1") for n in names}
        self.down = down

    def alive(self, name: str) -> bool:
        return name not in self.down


def test_kill_targets_follow_the_seed_and_skip_what_is_idle_or_down() -> None:
    def picks(seed: int, idle: set[str], down: set[str]) -> list[str]:
        rng = seeds.stream(seed, "nemesis")
        kill = Kill(Slots(["w1", "w2", "w3"], down), in_flight=lambda p: 0 if p[:2] in idle else 1,  # type: ignore[arg-type]
                    rng=rng)
        return [kill._pick() for _ in range(8)]

    assert picks(5, set(), set()) == picks(5, set(), set())
    assert len(set(picks(5, set(), set()))) > 1
    assert "w2" not in picks(5, {"w2"}, set()) and "w3" not in picks(5, set(), {"w3"})
    named = Kill(Slots(["w1", "w2"], set()), "w2", rng=random.Random(1))  # type: ignore[arg-type]
    assert named._pick() == "w2"


def replay_scenario() -> Any:
    """sigkill_storm, shorter: every worker stays busy (slow handlers), kills far enough apart that a restarted
    worker is up and busy again before the next one."""
    base = by_name("sigkill_storm")
    return dataclasses.replace(base, handler={"base_ms": 200, "jitter_ms": 100},
                               workload=Workload(messages=480, rate=60, after_heal=8),
                               faults=[FaultStep(at=2.0, nemesis=Kill), FaultStep(at=7.0, nemesis=Kill)])


def choices(result: ScenarioResult, workdir: Path) -> dict[str, Any]:
    history = list(read_events(Path(str(result.history_path))))
    assert next(e for e in history if e.f == "run").value["seed"] == 4242
    return {
        "rollbacks": [(e.value["mids"], e.value.get("rollback")) for e in history
                      if e.f == "publish" and e.type == "invoke"],
        "killed": [e.value["process"] for e in history if e.f == "fault" and e.type == "ok"
                   and e.value.get("kind") == "sigkill"],
        "handler_seeds": {p.name: json.loads(p.read_text())["seed"] for p in sorted(workdir.glob("*.spec.json"))},
    }


def test_two_runs_with_one_seed_make_the_same_choices(postgres_server: Any, tmp_path: Path) -> None:
    adapter = load_adapter("reference")
    runs = []
    for i in (1, 2):
        scenario = dataclasses.replace(replay_scenario(), name=f"seed_replay_{i}")  # a database of its own
        workdir = tmp_path / f"run{i}"
        result = asyncio.run(run_scenario(scenario, adapter=adapter, impl_spec="reference", server=postgres_server,
                                          workdir=workdir, seed=4242))
        runs.append(choices(result, workdir))
    first, second = runs
    assert any(rollback for _, rollback in first["rollbacks"]), "no rollback drawn: nothing was replayed"
    assert len(first["killed"]) == 2, first
    assert first == second


@pytest.mark.parametrize("value", ["-1", "x"])
def test_a_seed_must_be_a_whole_number_of_at_least_zero(value: str) -> None:
    from harness.argtypes import seed  # noqa: PLC0415

    with pytest.raises(Exception, match="whole number"):
        seed(value)
