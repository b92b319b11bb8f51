"""Slow handlers across the lease (D6): a handler slower than ``lease_ttl_seconds`` loses its row to another
worker; its late ack, retry or dead-letter write matches nothing (``lease_lost``); the row is removed exactly once.

Every fifth message is scripted so that the harness sees a stale completion whether or not the implementation
reports what its writes did: its first delivery runs past the lease and succeeds, its second fails once. A
completion by the lapsed first holder must not remove the row the second holder will retry.
"""

from harness.adapter import ConsumerConfig
from harness.scenario import RECLAIM, Scenario, Workload

TTL = 1.5
CONFIG = ConsumerConfig(lease_ttl_seconds=TTL, max_fetch_interval=0.3, max_workers=4, fetch_batch_size=10)


SLOW_HANDLERS = Scenario(
    name="slow_handlers",
    guarantees=["D6", "D3", "D1", "D2"],
    config=CONFIG,
    workers=3,
    # Reclaiming calls last long enough that a stale ack lands while they still hold the row.
    handler={"base_ms": 300, "jitter_ms": 100, "slow_fraction": 0.1, "slow_s": TTL * 1.2},
    workload=Workload(messages=200, rate=50, script_every=5,
                      script=[{"ms": TTL * 1600}, {"ms": 300, "fail": True}]),
    requires=(RECLAIM,),
)
