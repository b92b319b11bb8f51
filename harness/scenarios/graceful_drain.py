"""Graceful drain (L1): SIGTERM stops fetching at once; in-flight handlers get
``graceful_timeout`` to finish and ack; a handler cut off keeps its lease and is
reclaimed (D5), so nothing is lost (D1)."""

from harness.adapter import ConsumerConfig
from harness.nemesis.process import Term
from harness.scenario import FaultStep, Scenario, Workload

CONFIG = ConsumerConfig(lease_ttl_seconds=2.0, max_fetch_interval=0.5, max_workers=4, graceful_timeout=1.5)


GRACEFUL_DRAIN = Scenario(
    name="graceful_drain",
    guarantees=["L1", "D1", "D2"],
    config=CONFIG,
    workers=2,
    # Most handlers finish well inside graceful_timeout; w1's first two outlive it and must be reclaimed. Two, not a
    # random fraction: 5 % of calls at 4 s kept all four of w1's slots busy at times, and a drain with no slot free
    # cannot show whether fetching went on.
    handler={"base_ms": 200, "jitter_ms": 100},
    worker_handlers={"w1": {"slow_first": 2, "slow_s": 4.0}},
    workload=Workload(messages=160, rate=40),
    faults=[FaultStep(at=2.0, nemesis=Term,
                      params={"name": "w1", "graceful_timeout": CONFIG.graceful_timeout},
                      hold=1.0)],
    requires=("graceful_drain",),
)
