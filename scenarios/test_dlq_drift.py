"""DLQ schema drift and repair (R3, R4): while a migration has broken the
dead-letter table, the dead-letter statement rolls back whole, the row stays in
the outbox, and the metrics show nacked_terminal running ahead of dlq_written;
once repaired, every poison message reaches the DLQ exactly once."""

from harness.adapter import ConsumerConfig, RetryConfig
from harness.nemesis.database import DlqDrift
from harness.runner import FaultStep, Scenario, Workload


DLQ_DRIFT = Scenario(
    name="dlq_drift",
    guarantees=["R4", "R3", "D1"],
    checkers=["dlq", "total_queue"],
    config=ConsumerConfig(lease_ttl_seconds=1.0, max_fetch_interval=0.2, retry=RetryConfig(kind="none")),
    workers=2,
    workload=Workload(messages=100, rate=100, poison=6),
    faults=[FaultStep(at=0.0, make=lambda env: DlqDrift(env.admin_dsn, env.adapter.dlq_table), hold=3.5)],
    extra={"dlq_drift": True},
    drain_deadline=30,
    requires=("dlq", "metrics"),
)


def test_dlq_drift(run_scenario):
    run_scenario(DLQ_DRIFT)
