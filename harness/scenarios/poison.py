"""Poison messages (R1, R2, R3): a handler that always fails is retried on the
configured schedule by the database clock, never delivered more than
``max_deliveries`` times when that is set, and lands in the dead-letter table
exactly once; healthy messages around it are unaffected (D1)."""

from harness.adapter import ConsumerConfig, RetryConfig
from harness.scenario import Scenario, Workload

RETRY = RetryConfig(kind="exponential", initial_delay_seconds=0.3, multiplier=2.0, max_delay_seconds=5.0,
                    max_attempts=4, jitter_factor=0.2)


POISON_RETRIES_EXHAUSTED = Scenario(
    name="poison_retries",
    guarantees=["R1", "R3", "D1", "D2"],
    config=ConsumerConfig(lease_ttl_seconds=3.0, max_fetch_interval=0.2, retry=RETRY),
    workers=2,
    workload=Workload(messages=200, rate=100, poison=8),
    drain_deadline=30,
    requires=("dlq", "retry_schedule"),
)


POISON_MAX_DELIVERIES = Scenario(
    name="poison_max_deliveries",
    guarantees=["R2", "R3", "D1", "D2"],
    # Retries alone would allow 10 attempts; max_deliveries caps them at 3.
    config=ConsumerConfig(lease_ttl_seconds=3.0, max_fetch_interval=0.2, max_deliveries=3,
                          retry=RetryConfig(kind="constant", initial_delay_seconds=0.2, max_attempts=10)),
    workers=2,
    workload=Workload(messages=200, rate=100, poison=8),
    drain_deadline=30,
    requires=("dlq", "max_deliveries"),
)
