"""Partition and black hole between workers and PostgreSQL (L4): connections are cut
(partition) or silently swallow traffic (black hole). Workers reconnect on their own;
after healing nothing is lost (D1) or unexpected (D2, P1), publishes whose COMMIT was
cut are resolved, and no lease was shared (D3)."""

from harness.adapter import ConsumerConfig
from harness.nemesis.network import BlackHole, Partition
from harness.scenario import FaultStep, Scenario, Workload

CONFIG = ConsumerConfig(lease_ttl_seconds=2.0, max_fetch_interval=0.5, statement_timeout_seconds=2.0)


PARTITION_AND_BLACK_HOLE = Scenario(
    name="partition_black_hole",
    guarantees=["L4", "D1", "D2", "P1", "D3"],
    config=CONFIG,
    workers=2,
    handler={"base_ms": 20, "jitter_ms": 10},
    workload=Workload(messages=500, rate=60),
    faults=[
        FaultStep(at=1.5, nemesis=Partition, hold=2.0),
        FaultStep(at=5.0, nemesis=BlackHole, hold=2.5),
    ],
    drain_deadline=45,
)
