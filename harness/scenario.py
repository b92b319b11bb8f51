"""The scenario model: a scenario is data, so it can be printed, stored in a report, generated and replayed.

A :class:`Scenario` names the guarantees it checks (the checkers follow from them), the consumer's knobs,
the handler's timing, what to publish (:class:`Workload`, run by :mod:`harness.generator`) and a fault
schedule (:class:`FaultStep`, run by :mod:`harness.schedule`). What it needs from the environment (a proxy,
the harness's own server) follows from the nemeses it names.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from harness.adapter import ConsumerConfig
from harness.nemesis.base import Nemesis

#: A ``requires`` entry: the implementation reclaims a dead holder's rows, by a lease TTL or its own declared time.
RECLAIM = "reclaim"


@dataclass
class FaultStep:
    """At ``at`` seconds after the start, apply ``nemesis`` built with ``params``; heal after ``hold`` seconds.

    ``inner`` steps are scheduled relative to the moment this fault took effect, during its hold:
    a fault that needs another in place first (kill a worker once the connection slots are full).
    """

    at: float
    nemesis: type[Nemesis]
    hold: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    inner: list[FaultStep] = field(default_factory=list)

    def scaled(self, f: float) -> FaultStep:
        return replace(self, at=self.at * f, hold=self.hold * f, inner=[s.scaled(f) for s in self.inner])

    def walk(self) -> Iterator[FaultStep]:
        yield self
        for step in self.inner:
            yield from step.walk()

    def describe(self) -> dict[str, Any]:
        """The step as plain data, for reports."""
        out: dict[str, Any] = {"at": self.at, "nemesis": self.nemesis.kind, "hold": self.hold}
        if self.params:
            out["params"] = self.params
        if self.inner:
            out["inner"] = [s.describe() for s in self.inner]
        return out


@dataclass
class Workload:
    """The generator's plan: what the publishers send, and when."""

    messages: int = 400
    batch: int = 4  # messages per transaction
    rate: float = 200.0  # messages per second
    rollback_fraction: float = 0.1  # transactions rolled back on purpose (P1)
    poison: int = 0  # messages whose handler always raises
    probes: int = 0  # idle single-message publishes after the faults, for wake-up latency
    probe_interval: float = 0.2
    probe_fault: FaultStep | None = None  # a fault active during the second half of the probes (D8); ``at`` unused
    pad: int = 64  # payload padding bytes
    after_heal: int = 20  # messages published once every fault has healed
    script: list[dict[str, Any]] = field(default_factory=list)  # per-delivery handler steps (harness.payload)
    script_every: int = 0  # every n-th message carries the script (0: none)


@dataclass
class Scenario:
    name: str
    guarantees: list[str]  # ids this scenario checks; the checkers that decide them run
    config: ConsumerConfig = field(default_factory=ConsumerConfig)
    workers: int = 2
    handler: dict[str, Any] = field(default_factory=dict)  # HandlerSpec fields
    worker_handlers: dict[str, dict[str, Any]] = field(default_factory=dict)  # per worker (w1: {...}) over handler
    workload: Workload = field(default_factory=Workload)
    faults: list[FaultStep] = field(default_factory=list)
    requires: tuple[str, ...] = ()  # Capabilities flags without which it is not applicable; "reclaim": a lease
    # TTL or a declared reclaim time (Timings); such a scenario stretches to the implementation's reclaim time
    drain_deadline: float = 60.0

    def scaled(self, f: float) -> Scenario:
        """The same scenario on a clock ``f`` times slower: leases, retry delays, drain timeouts, handler times,
        fault times and the drain deadline stretch, the publish rate slows (the same messages over a longer run);
        polling intervals and statement timeouts stay. For implementations whose reclaim takes longer than the
        scenario's lease (a heartbeat timeout of a minute), and for manual runs (``--time-scale``)."""
        if f == 1:
            return self
        c, w = self.config, self.workload
        retry = replace(c.retry, initial_delay_seconds=c.retry.initial_delay_seconds * f,
                        max_delay_seconds=c.retry.max_delay_seconds * f)
        return replace(
            self,
            config=replace(c, lease_ttl_seconds=c.lease_ttl_seconds * f, graceful_timeout=c.graceful_timeout * f,
                           retry=retry),
            handler=_scaled_handler(self.handler, f),
            worker_handlers={k: _scaled_handler(v, f) for k, v in self.worker_handlers.items()},
            workload=replace(w, rate=w.rate / f, probe_fault=w.probe_fault.scaled(f) if w.probe_fault else None,
                             script=[{**s, **({"ms": s["ms"] * f} if "ms" in s else {})} for s in w.script]),
            faults=[s.scaled(f) for s in self.faults],
            drain_deadline=self.drain_deadline * f,
        )

    def steps(self) -> Iterator[FaultStep]:
        """Every fault step, nested ones and the probe fault included."""
        for step in self.faults:
            yield from step.walk()
        if self.workload.probe_fault is not None:
            yield from self.workload.probe_fault.walk()

    @property
    def needs_proxy(self) -> bool:
        return any(s.nemesis.needs_proxy for s in self.steps())

    @property
    def controls_server(self) -> bool:
        """Crashes PostgreSQL: needs the harness's own server."""
        return any(s.nemesis.controls_server for s in self.steps())

    def describe(self) -> dict[str, Any]:
        """What ran, as plain data: stored in the history's run header and shown in reports."""
        w = self.workload
        return {
            "name": self.name,
            "guarantees": list(self.guarantees),
            "workers": self.workers,
            "handler": dict(self.handler),
            **({"worker_handlers": self.worker_handlers} if self.worker_handlers else {}),
            "workload": {k: v for k, v in vars(w).items() if k != "probe_fault"}
                        | ({"probe_fault": w.probe_fault.describe()} if w.probe_fault else {}),
            "faults": [s.describe() for s in self.faults],
            "requires": list(self.requires),
            "drain_deadline": self.drain_deadline,
        }


_HANDLER_TIMES = ("base_ms", "jitter_ms", "slow_s")


def _scaled_handler(spec: dict[str, Any], f: float) -> dict[str, Any]:
    return {k: v * f if k in _HANDLER_TIMES else v for k, v in spec.items()}
