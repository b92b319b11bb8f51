"""Latency with jitter, connection resets and a thin pipe (L4): slow or broken
traffic between workers and PostgreSQL must not lose (D1), duplicate a live lease (D3)
or invent (D2) messages."""

from harness.adapter import ConsumerConfig
from harness.nemesis.network import Bandwidth, Latency, ResetPeer
from harness.runner import FaultStep, Scenario, Workload

CONFIG = ConsumerConfig(lease_ttl_seconds=3.0, max_fetch_interval=0.5, statement_timeout_seconds=2.0)


LATENCY_AND_RESETS = Scenario(
    name="latency_resets",
    guarantees=["L4", "D1", "D2", "P1", "D3"],
    checkers=["total_queue", "lease", "recovery"],
    config=CONFIG,
    workers=2,
    handler={"base_ms": 20, "jitter_ms": 10},
    workload=Workload(messages=400, rate=60),
    faults=[
        FaultStep(at=1.0, make=lambda env: Latency(env.proxy, env.admin_dsn, latency_ms=150, jitter_ms=50), hold=2.0),
        FaultStep(at=3.5, make=lambda env: ResetPeer(env.proxy, env.admin_dsn), hold=0.5),
        FaultStep(at=5.5, make=lambda env: Bandwidth(env.proxy, env.admin_dsn, rate_kb_s=50), hold=1.5),
    ],
    needs_proxy=True,
    drain_deadline=45,
)


def test_latency_and_resets(run_scenario):
    run_scenario(LATENCY_AND_RESETS)
