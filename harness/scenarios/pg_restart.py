"""PostgreSQL crash-restart (P2): ``pg_ctl stop -m immediate`` mid-run, then start.

Every connection dies; committed messages survive and are delivered (D1), publishes whose COMMIT raised are
resolved as committed or not, and nothing unexpected shows up. Both workers are frozen (SIGSTOP) from half a second
before the crash until after the restart, so that a backlog of committed, unhandled messages is in the tables when
the server goes down: otherwise consumers that keep up leave nothing for durability to be judged on (an UNLOGGED
outbox table, emptied by crash recovery, would pass).
"""

from harness.adapter import ConsumerConfig
from harness.nemesis.database import CrashRestart
from harness.nemesis.pause import Pause
from harness.scenario import FaultStep, Scenario, Workload

CRASH_AT, DOWN = 1.5, 1.0
WORKERS = 2

PG_CRASH_RESTART = Scenario(
    name="pg_crash_restart",
    guarantees=["P2", "D1", "D2", "P1", "D3"],
    config=ConsumerConfig(lease_ttl_seconds=2.0, max_fetch_interval=0.5, statement_timeout_seconds=3.0),
    workers=WORKERS,
    handler={"base_ms": 20, "jitter_ms": 10},
    workload=Workload(messages=400, rate=100),
    faults=[
        *(FaultStep(at=CRASH_AT - 0.5, nemesis=Pause, params={"name": f"w{i + 1}"}, hold=DOWN + 1.0)
          for i in range(WORKERS)),
        FaultStep(at=CRASH_AT, nemesis=CrashRestart, hold=DOWN),
    ],
    drain_deadline=45,
)
