"""One worker cut off alone mid-handler, past its leases (D6, D3, D1, D2, L4): a zombie that comes back and writes.

Only w1's own path to PostgreSQL is cut, for longer than the lease; its heartbeats (if it has any) are cut with it,
and its first handlers outlive the cut. The others carry on and take its rows over once the leases run out; each
message's second delivery fails once and is retried after 4 s. When the cut heals, w1's handlers finish and w1
writes with leases that are long gone: those writes must be refused or harmless (a stale completion must not
remove the row waiting for its retry), no row may be claimed twice while live, nothing is lost, and w1 itself
must come back.
"""

from harness.adapter import ConsumerConfig, RetryConfig
from harness.nemesis.network import Partition
from harness.scenario import RECLAIM, FaultStep, Scenario, Workload

TTL = 3.0

ZOMBIE_WORKER = Scenario(
    name="zombie_worker",
    guarantees=["D6", "D3", "D1", "D2", "L4"],
    config=ConsumerConfig(lease_ttl_seconds=TTL, max_fetch_interval=0.3, max_workers=4, fetch_batch_size=4,
                          statement_timeout_seconds=2.0,
                          retry=RetryConfig(kind="constant", initial_delay_seconds=4.0, max_attempts=5)),
    workers=3,
    handler={"base_ms": 1000, "jitter_ms": 200},  # well inside the lease, prefetch buffer waits included
    worker_handlers={"w1": {"slow_first": 8, "slow_s": 5.0}},  # the zombie's first handlers outlive the cut
    workload=Workload(messages=60, rate=6, script_every=1, script=[{}, {"ms": 300, "fail": True}]),
    faults=[FaultStep(at=1.5, nemesis=Partition, params={"target": "w1", "busy": True}, hold=TTL + 0.5)],
    requires=(RECLAIM,),
)
