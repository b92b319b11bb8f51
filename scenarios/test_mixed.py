"""Mixed nemesis: crashes, a partition, latency and a database crash-restart in one
run, overlapping. The total-queue promises (D1, D2, P1), lease exclusivity (D3)
and durability (P2) must all survive the combination; w3 is never killed, so its
reconnecting on its own after the network faults and the crash-restart shows L4."""

from harness.adapter import ConsumerConfig
from harness.nemesis.database import CrashRestart
from harness.nemesis.network import Latency, Partition
from harness.nemesis.process import Kill
from harness.runner import FaultStep, Scenario, Workload

CONFIG = ConsumerConfig(lease_ttl_seconds=2.0, max_fetch_interval=0.5, statement_timeout_seconds=2.0)


MIXED_NEMESIS = Scenario(
    name="mixed",
    guarantees=["D1", "D2", "P1", "D3", "L4", "P2"],
    checkers=["total_queue", "lease", "recovery"],
    config=CONFIG,
    workers=3,
    handler={"base_ms": 40, "jitter_ms": 30},
    workload=Workload(messages=600, rate=70),
    faults=[
        FaultStep(at=1.0, make=lambda env: Kill(env.supervisor, "w1")),
        FaultStep(at=2.0, make=lambda env: Latency(env.proxy, env.admin_dsn, latency_ms=100, jitter_ms=50), hold=2.0),
        FaultStep(at=3.0, make=lambda env: Kill(env.supervisor, "w2")),
        FaultStep(at=4.5, make=lambda env: Partition(env.proxy, env.admin_dsn), hold=1.5),
        FaultStep(at=6.5, make=lambda env: CrashRestart(env.server), hold=1.0),
        FaultStep(at=8.0, make=lambda env: Kill(env.supervisor, "w1")),
    ],
    needs_proxy=True,
    controls_server=True,
    drain_deadline=60,
)


def test_mixed_nemesis(run_scenario):
    run_scenario(MIXED_NEMESIS)
