"""SIGKILL storm: workers die mid-handler again and again and are restarted.

Checks D1 (nothing lost), D2 and P1 (nothing unexpected, rollbacks stay invisible),
D3 (no double claim), D5 (reclaim after a kill lands within [ttl, ttl + max_fetch_interval]),
P2 (committed rows survive worker crashes).
"""

from harness.adapter import ConsumerConfig
from harness.nemesis.process import Kill
from harness.scenario import RECLAIM, FaultStep, Scenario, Workload

CONFIG = ConsumerConfig(lease_ttl_seconds=2.0, max_fetch_interval=0.5, max_workers=4, fetch_batch_size=20)


SIGKILL_STORM = Scenario(
    name="sigkill_storm",
    guarantees=["D1", "D2", "P1", "D3", "D5", "P2"],
    config=CONFIG,
    workers=3,
    handler={"base_ms": 40, "jitter_ms": 30},
    workload=Workload(messages=600, rate=120),
    faults=[FaultStep(at=1.0 + 1.2 * i, nemesis=Kill)
            for i in range(4)],
    requires=(RECLAIM,),
)
