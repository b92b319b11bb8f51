"""River (Go) through the process contract: the supervisor runs River's own program, and a SIGKILL lands on it.

sigkill_storm runs shortened to its first kill, stretched to River's rescuer (about 85 s): every verdict must be
"pass" (a fail is a finding to look at, an unknown a kill that caught nothing in flight), and the history must
show that each killed pid is the one the supervisor spawned and the one the Go program reported as its own.
Skipped, with the reason, where Go is not installed to build the program.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from harness.adapter import load_adapter
from harness.adapters.river_adapter import BINARY_ENV
from harness.runner import run_scenario
from harness.scenarios import by_name
from harness.supervisor import Supervisor
from tests.controls import assert_kills_landed_on_the_consumers

pytestmark = pytest.mark.skipif(shutil.which("go") is None and not os.environ.get(BINARY_ENV),
                                reason=f"River's adapter program is Go: install Go to build it (or set {BINARY_ENV})")


def test_the_supervisor_executes_the_program_itself(tmp_path: Path) -> None:
    supervisor = Supervisor(impl="river", dsn="postgresql://unused", workdir=tmp_path, config={}, handler={},
                            history=None)  # type: ignore[arg-type] - _command records nothing
    cmd = supervisor._command(tmp_path / "w1#1.spec.json")
    assert Path(cmd[0]).name == "river-adapter" and cmd[1:] == ["consume", str(tmp_path / "w1#1.spec.json")]


def test_sigkill_storm_kills_the_go_process(postgres_server: Any, tmp_path: Path) -> None:
    """The storm's first kill, on a fifth of its messages: River's rescuer stretches every scenario that needs a
    reclaim about twentyfold, and the full storm's verdicts are in docs/adapters.md. The kill waits for a handler to
    be running (``busy``), so it catches deliveries in flight and D5 is decided: on a loaded machine a kill on the
    clock alone found every worker idle, and a second one, while the first one's jobs waited for the rescuer."""
    storm = by_name("sigkill_storm")
    short = dataclasses.replace(storm, workload=dataclasses.replace(storm.workload, messages=120),
                                faults=[dataclasses.replace(storm.faults[0], params={"busy": True})])
    result = asyncio.run(run_scenario(short, adapter=load_adapter("river"), impl_spec="river",
                                      server=postgres_server, workdir=tmp_path))
    summary = "\n".join(f"{v.guarantee} {v.status}: {v.summary}" for v in result.verdicts)
    assert {v.status for v in result.verdicts} == {"pass"}, summary

    assert_kills_landed_on_the_consumers(result)
