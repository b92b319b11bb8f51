"""A worker paused past its leases (D6, D3, D1, D2): SIGSTOP mid-handler for three lease TTLs, then SIGCONT.

Its rows are reclaimed and handled by the others while it is frozen; when it resumes, its handlers finish and
it writes with leases that are long gone. Those writes must match nothing (``lease_lost``), no row may be
removed by the zombie while another worker holds it, and nothing is lost.

Each message's second delivery takes 1.2 s (inside the lease), so the rows taken over are still held by their
new owners when the zombie resumes: a zombie write that removes a row by id alone lands on a live lease every
run, instead of only when the timing happens to line up.
"""

from harness.adapter import ConsumerConfig
from harness.nemesis.pause import Pause
from harness.scenario import RECLAIM, FaultStep, Scenario, Workload

TTL = 1.5

PAUSED_WORKER = Scenario(
    name="paused_worker",
    guarantees=["D6", "D3", "D1", "D2"],
    config=ConsumerConfig(lease_ttl_seconds=TTL, max_fetch_interval=0.3, max_workers=4, fetch_batch_size=10),
    workers=3,
    handler={"base_ms": 500, "jitter_ms": 100},
    workload=Workload(messages=200, rate=50, script_every=1, script=[{}, {"ms": 1200}]),
    faults=[FaultStep(at=1.5, nemesis=Pause, params={"name": "w1"}, hold=1.2 * TTL)],
    requires=(RECLAIM,),
)
