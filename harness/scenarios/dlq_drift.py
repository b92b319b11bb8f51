"""DLQ schema drift and repair (R3, R4): while a migration has broken the
dead-letter table, the dead-letter statement rolls back whole, the row stays in
the outbox, and the metrics show nacked_terminal running ahead of dlq_written;
once repaired, every poison message reaches the DLQ exactly once."""

from harness.adapter import ConsumerConfig, RetryConfig
from harness.nemesis.database import DlqDrift
from harness.scenario import FaultStep, Scenario, Workload


DLQ_DRIFT = Scenario(
    name="dlq_drift",
    guarantees=["R4", "R3", "D1"],
    config=ConsumerConfig(lease_ttl_seconds=1.0, max_fetch_interval=0.2, retry=RetryConfig(kind="none")),
    workers=2,
    workload=Workload(messages=100, rate=100, poison=6),
    faults=[FaultStep(at=0.0, nemesis=DlqDrift, hold=3.5)],
    drain_deadline=30,
    requires=("dlq", "metrics"),
)
