"""Mixed nemesis: crashes, a partition, latency and a database crash-restart in one
run, overlapping. The total-queue promises (D1, D2, P1), lease exclusivity (D3)
and durability (P2) must all survive the combination; w3 is never killed, so its
reconnecting on its own after the network faults and the crash-restart shows L4."""

from harness.adapter import ConsumerConfig
from harness.nemesis.database import CrashRestart
from harness.nemesis.network import Latency, Partition
from harness.nemesis.process import Kill
from harness.scenario import FaultStep, Scenario, Workload

CONFIG = ConsumerConfig(lease_ttl_seconds=2.0, max_fetch_interval=0.5, statement_timeout_seconds=2.0)


MIXED_NEMESIS = Scenario(
    name="mixed",
    guarantees=["D1", "D2", "P1", "D3", "L4", "P2"],
    config=CONFIG,
    workers=3,
    handler={"base_ms": 40, "jitter_ms": 30},
    workload=Workload(messages=600, rate=70),
    faults=[
        FaultStep(at=1.0, nemesis=Kill, params={"name": "w1"}),
        FaultStep(at=2.0, nemesis=Latency, params={"latency_ms": 100, "jitter_ms": 50}, hold=2.0),
        FaultStep(at=3.0, nemesis=Kill, params={"name": "w2"}),
        FaultStep(at=4.5, nemesis=Partition, hold=1.5),
        FaultStep(at=6.5, nemesis=CrashRestart, hold=1.0),
        FaultStep(at=8.0, nemesis=Kill, params={"name": "w1"}),
    ],
    drain_deadline=60,
)
