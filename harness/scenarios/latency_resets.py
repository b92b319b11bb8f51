"""Latency with jitter, connection resets and a thin pipe (L4): slow or broken
traffic between workers and PostgreSQL must not lose (D1), duplicate a live lease (D3)
or invent (D2) messages."""

from harness.adapter import ConsumerConfig
from harness.nemesis.network import Bandwidth, Latency, ResetPeer
from harness.scenario import FaultStep, Scenario, Workload

CONFIG = ConsumerConfig(lease_ttl_seconds=3.0, max_fetch_interval=0.5, statement_timeout_seconds=2.0)


LATENCY_AND_RESETS = Scenario(
    name="latency_resets",
    guarantees=["L4", "D1", "D2", "P1", "D3"],
    config=CONFIG,
    workers=2,
    handler={"base_ms": 20, "jitter_ms": 10},
    workload=Workload(messages=400, rate=60),
    faults=[
        FaultStep(at=1.0, nemesis=Latency, params={"latency_ms": 150, "jitter_ms": 50}, hold=2.0),
        FaultStep(at=3.5, nemesis=ResetPeer, hold=0.5),
        FaultStep(at=5.5, nemesis=Bandwidth, params={"rate_kb_s": 50}, hold=1.5),
    ],
    drain_deadline=45,
)
