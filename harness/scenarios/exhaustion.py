"""Pool and connection exhaustion (L2, L3): below the connection budget an
implementation must fail loudly (a clear error) and lose nothing; once capacity
is back, delivery resumes and completes. Backends per worker never exceed the
budget."""

from harness.adapter import ConsumerConfig
from harness.nemesis.database import ConnectionHog
from harness.nemesis.process import Kill
from harness.nemesis.worker_config import PoolBelowBudget
from harness.scenario import FaultStep, Scenario, Workload

CONFIG = ConsumerConfig(lease_ttl_seconds=2.0, max_fetch_interval=0.5, max_workers=4)


POOL_EXHAUSTION = Scenario(
    name="pool_exhaustion",
    guarantees=["L3", "L2", "D1"],
    config=CONFIG,
    workers=2,
    handler={"base_ms": 20, "jitter_ms": 10},
    workload=Workload(messages=300, rate=80),
    faults=[FaultStep(at=1.0, nemesis=PoolBelowBudget, params={"names": ["w1", "w2"], "pool_size": 2},
                      hold=2.0)],
    requires=("connection_budget",),
)


MAX_CONNECTIONS_EXHAUSTION = Scenario(
    name="max_connections",
    guarantees=["L3", "L2", "D1"],
    config=CONFIG,
    workers=2,
    handler={"base_ms": 20, "jitter_ms": 10},
    workload=Workload(messages=300, rate=80),
    faults=[
        # Once the server's slots are full, crash a worker mid-handler: its replacement must connect, and the
        # rows it held must come back.
        FaultStep(at=1.0, nemesis=ConnectionHog, params={"leave_free": 1}, hold=3.0,
                  inner=[FaultStep(at=0.2, nemesis=Kill, params={"name": "w1", "busy": True})]),
    ],
    requires=("connection_budget",),
)
