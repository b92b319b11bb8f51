"""pg-boss (Node) through the process contract: the supervisor runs node itself, and a SIGKILL lands on it.

sigkill_storm runs as the catalogue has it (stretched to pg-boss's job timeout and supervisor sweep, about 40 s):
every verdict must be "pass" (a fail is a finding to look at, an unknown a storm that killed nothing in flight),
and the history must show that each killed pid is the one the supervisor spawned and the one node reported as
its own. The Node delivery counter must count with the Python one, file for file. Skipped, with the reason,
where node or the adapter's packages are missing.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.adapter import load_adapter, unavailable
from harness.adapters import pgboss_adapter
from harness.deliveries import DeliveryCounter
from harness.runner import run_scenario
from harness.scenarios import by_name
from harness.supervisor import Supervisor
from tests.controls import assert_kills_landed_on_the_consumers

WHY = unavailable(pgboss_adapter.adapter)
needs_program = pytest.mark.skipif(WHY is not None, reason=WHY or "")


def test_a_missing_install_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "package-lock.json").write_text((pgboss_adapter.SOURCE / "package-lock.json").read_text())
    monkeypatch.setattr(pgboss_adapter, "SOURCE", tmp_path)
    why = pgboss_adapter.adapter.unavailable()
    assert why is not None and "bin/setup" in why and "npm ci" in why, why


@needs_program
def test_the_supervisor_executes_node_itself(tmp_path: Path) -> None:
    supervisor = Supervisor(impl="pg-boss", dsn="postgresql://unused", workdir=tmp_path, config={}, handler={},
                            history=None)  # type: ignore[arg-type] - _command records nothing
    cmd = supervisor._command(tmp_path / "w1#1.spec.json")
    assert Path(cmd[0]).name == "node" and cmd[1:] == [str(pgboss_adapter.SOURCE / "main.mjs"), "consume",
                                                       str(tmp_path / "w1#1.spec.json")]


@needs_program
def test_node_counts_deliveries_with_the_harness(tmp_path: Path) -> None:
    python = DeliveryCounter(tmp_path)
    script = ("import('./adapters/harnessproc-js/deliveries.mjs').then(async ({DeliveryCounter}) => {"
              f"const c = new DeliveryCounter({json.dumps(str(tmp_path))});"
              "console.log(JSON.stringify(await Promise.all([1, 2, 3].map(() => c.next('m/1')))));})")
    assert python.next("m/1") == 1
    node = subprocess.run(["node", "-e", script], cwd=pgboss_adapter.SOURCE.parents[1], capture_output=True,
                          text=True, check=True, timeout=30)
    assert sorted(json.loads(node.stdout)) == [2, 3, 4]
    assert python.next("m/1") == 5 and (tmp_path / "m_1").read_bytes() == b"....."


@needs_program
def test_sigkill_storm_kills_the_node_process(postgres_server: Any, tmp_path: Path) -> None:
    result = asyncio.run(run_scenario(by_name("sigkill_storm"), adapter=load_adapter("pg-boss"),
                                      impl_spec="pg-boss", server=postgres_server, workdir=tmp_path))
    summary = "\n".join(f"{v.guarantee} {v.status}: {v.summary}" for v in result.verdicts)
    assert {v.status for v in result.verdicts} == {"pass"}, summary

    assert_kills_landed_on_the_consumers(result)
