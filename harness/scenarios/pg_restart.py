"""PostgreSQL crash-restart (P2): ``pg_ctl stop -m immediate`` mid-run, then start.
Every connection dies; committed messages survive and are delivered (D1), publishes
whose COMMIT raised are resolved as committed or not, and nothing unexpected shows up."""

from harness.adapter import ConsumerConfig
from harness.nemesis.database import CrashRestart
from harness.scenario import FaultStep, Scenario, Workload


PG_CRASH_RESTART = Scenario(
    name="pg_crash_restart",
    guarantees=["P2", "D1", "D2", "P1", "D3"],
    config=ConsumerConfig(lease_ttl_seconds=2.0, max_fetch_interval=0.5, statement_timeout_seconds=3.0),
    workers=2,
    handler={"base_ms": 20, "jitter_ms": 10},
    workload=Workload(messages=400, rate=100),
    faults=[FaultStep(at=1.5, nemesis=CrashRestart, hold=1.0)],
    drain_deadline=45,
)
