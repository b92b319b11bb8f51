"""Clock skew both ways (D4): one worker's wall clock runs ahead and one behind by
more than the lease TTL. Leases are judged by the database clock, so neither
steals a live lease nor keeps a dead one (D3, D4), and nothing is lost (D1)."""

from harness.adapter import ConsumerConfig
from harness.nemesis.worker_config import ClockSkew
from harness.scenario import FaultStep, Scenario, Workload

TTL = 2.0
CONFIG = ConsumerConfig(lease_ttl_seconds=TTL, max_fetch_interval=0.5, max_workers=4, fetch_batch_size=10)


CLOCK_SKEW = Scenario(
    name="clock_skew",
    guarantees=["D3", "D4", "D1", "D2"],
    config=CONFIG,
    workers=3,
    handler={"base_ms": 250, "jitter_ms": 150, "slow_fraction": 0.05, "slow_s": TTL * 1.5},
    workload=Workload(messages=300, rate=60),
    faults=[
        FaultStep(at=0.0, nemesis=ClockSkew, params={"name": "w2", "offset_seconds": +5 * TTL}, hold=6.0),
        FaultStep(at=0.1, nemesis=ClockSkew, params={"name": "w3", "offset_seconds": -5 * TTL}, hold=6.0),
    ],
    requires=("lease_ttl",),
)
