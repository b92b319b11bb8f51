"""LISTEN/NOTIFY wake-up and polling fallback (D7, D8): an idle consumer picks up a
single message in milliseconds; with its LISTEN backend terminated it keeps
delivering by polling within ``max_fetch_interval`` (D8) and logs the outage once or twice, not once per poll (O2)."""

from harness.adapter import ConsumerConfig
from harness.nemesis.worker_config import ListenLoss
from harness.scenario import FaultStep, Scenario, Workload

MAX_FETCH = 3.0


LISTEN_LOSS = Scenario(
    name="listen_loss",
    guarantees=["D7", "D8", "O2", "D1"],
    config=ConsumerConfig(lease_ttl_seconds=5.0, max_fetch_interval=MAX_FETCH, max_workers=2),
    workers=2,
    workload=Workload(messages=20, rate=50, probes=30, probe_interval=0.25,
                      probe_fault=FaultStep(at=0.0, nemesis=ListenLoss, hold=MAX_FETCH * 0.8)),
    requires=("notify",),
)
