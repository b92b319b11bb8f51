"""What a sizing run runs: the grid of consumer configurations, the locust step load, the handler."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace

from harness.adapter import ConsumerConfig, load_adapter

#: Sizing runs the reference outbox, through its adapter like every other run.
IMPL = "reference"
ADAPTER = load_adapter(IMPL)
QUEUE = "sizing"
DEFAULT_BOUND_S = 1.0
#: How the reference adapter's ``connection_budget`` reads, for the reports (the figures come from the adapter).
FORMULAS = {"pool": "Σ subs × (max_workers + 1)", "listen": "Σ subs", "per_process": "Σ subs × (max_workers + 2)",
            "max_connections": "replicas × Σ subs × (max_workers + 2)"}


@dataclass(frozen=True)
class GridPoint:
    max_workers: int
    fetch_batch_size: int
    processes: int
    subs: int = 1  # subscribers per worker process (the harness worker runs one)

    @property
    def label(self) -> str:
        return f"mw={self.max_workers} fb={self.fetch_batch_size} p={self.processes}"

    @property
    def slug(self) -> str:
        return f"mw{self.max_workers}-fb{self.fetch_batch_size}-p{self.processes}"

    @property
    def per_process_budget(self) -> int:
        """Backends one worker process may hold: ``connection_budget`` as the adapter declares it, per subscriber."""
        budget = ADAPTER.connection_budget(consumer_config(self))
        if budget is None:
            raise ValueError(f"the {IMPL} adapter declares no connection budget")
        return self.subs * budget

    @property
    def listen_budget(self) -> int:
        """Of those, LISTEN connections outside the engine pool: one per subscriber that listens."""
        return self.subs if ADAPTER.capabilities.notify else 0

    @property
    def total_budget(self) -> int:
        return self.processes * self.per_process_budget

    def cost(self) -> tuple[int, int, int, int]:
        """Smaller is cheaper: connections the formula reserves, then processes, workers, batch."""
        return (self.total_budget, self.processes, self.max_workers, self.fetch_batch_size)


def consumer_config(point: GridPoint) -> ConsumerConfig:
    # A long lease: sizing measures throughput, not reclaims; LISTEN wakes idle consumers.
    return ConsumerConfig(queue=QUEUE, max_workers=point.max_workers, fetch_batch_size=point.fetch_batch_size,
                          lease_ttl_seconds=60.0, graceful_timeout=5.0, min_fetch_interval=0.05,
                          max_fetch_interval=1.0, statement_timeout_seconds=10.0)


#: A plan stretched to a rate takes at most this many steps; beyond it, each step adds more users.
MAX_STEPS = 20


@dataclass(frozen=True)
class LoadPlan:
    """The locust step shape: ``step_users`` more users every ``step_seconds``, each ``user_rate``
    transactions per second of ``batch`` messages. Its last step is the cap: the sizing run steps up
    until the consumer side is the limit (:func:`harness.sizing.run._watch_load`) or the cap is reached."""

    user_rate: float = 25.0
    batch: int = 10
    step_users: int = 2
    step_seconds: float = 8.0
    steps: int = 16
    drain_seconds: float = 3.0
    pad: int = 64

    @property
    def step_rate(self) -> float:
        """Messages per second each step adds."""
        return self.step_users * self.user_rate * self.batch

    def offered(self) -> list[float]:
        return [self.step_rate * k for k in range(1, self.steps + 1)]

    def reaching(self, rate: float, *, max_steps: int = MAX_STEPS) -> LoadPlan:
        """This plan with enough steps to offer ``rate`` (never fewer than it has); when that takes more
        than ``max_steps``, each step adds more users instead."""
        if rate <= max(self.offered(), default=0.0):
            return self
        plan = self
        if math.ceil(rate / self.step_rate) > max_steps:
            plan = replace(self, step_users=math.ceil(rate / (max_steps * self.user_rate * self.batch)))
        return replace(plan, steps=math.ceil(rate / plan.step_rate))

    @property
    def duration(self) -> float:
        return self.steps * self.step_seconds + self.drain_seconds

    def env(self) -> dict[str, str]:
        return {
            "OUTBOX_LOCUST_USER_RATE": str(self.user_rate), "OUTBOX_LOCUST_BATCH": str(self.batch),
            "OUTBOX_LOCUST_STEP_USERS": str(self.step_users), "OUTBOX_LOCUST_STEP_SECONDS": str(self.step_seconds),
            "OUTBOX_LOCUST_STEPS": str(self.steps), "OUTBOX_LOCUST_DRAIN_SECONDS": str(self.drain_seconds),
            "OUTBOX_LOCUST_PAD": str(self.pad), "OUTBOX_LOCUST_SHAPE": "step",
        }


@dataclass(frozen=True)
class Handler:
    """The workers' handler (:class:`harness.worker.HandlerSpec`): a stand-in for real work."""

    base_ms: float = 5.0
    jitter_ms: float = 1.0


QUICK_GRID = [GridPoint(2, 20, 1), GridPoint(4, 50, 1), GridPoint(8, 100, 2)]
QUICK_PLAN = LoadPlan(user_rate=50.0, batch=4, step_users=1, step_seconds=4.0, steps=20, drain_seconds=2.0)  # 200 … 4,000
FULL_GRID = [GridPoint(mw, fb, p) for p in (1, 2) for mw in (2, 8, 16) for fb in (20, 100)]
FULL_PLAN = LoadPlan()  # 500, 1,000 … 8,000 msg/s
#: With a target rate the plan offers at least this multiple of what a recommendation must sustain (the target
#: plus its headroom, :data:`~harness.sizing.analysis.HEADROOM`): a step delivers a little less than it offers.
OFFER_MARGIN = 1.2


def backlog_limit(offered: float, bound_s: float, margin: float = 1.0) -> float:
    """Pending rows beyond which, while the backlog grows, every message committed now misses the bound.

    A growing backlog means the consumers deliver fewer than the C < published ≤ ``offered`` msg/s
    that arrive; a message joining a backlog of B rows waits at least B / C seconds, and with
    B > ``bound_s`` × ``offered`` that is more than ``bound_s``: the consumer side is the limit and the
    load can stop.
    """
    return margin * bound_s * offered


def grid_point(spec: str) -> GridPoint:
    """``--point max_workers:fetch_batch_size:processes``, e.g. ``8:100:2``; anything else is a usage error."""
    usage = (f"{spec!r}: expected max_workers:fetch_batch_size:processes, three whole numbers of at least 1, "
             "e.g. 8:100:2")
    try:
        mw, fb, procs = (int(x) for x in spec.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(usage) from None
    if min(mw, fb, procs) < 1:
        raise argparse.ArgumentTypeError(usage)
    return GridPoint(mw, fb, procs)
