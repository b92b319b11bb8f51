"""What a checker needs besides the history: the consumer's knobs and the final read of the tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.adapter import Capabilities, ConsumerConfig


@dataclass
class CheckContext:
    config: ConsumerConfig
    capabilities: Capabilities
    final_pending: list[str]  # mids still in the outbox after the drain
    final_dead: list[str]  # mids in the DLQ, one entry per DLQ row (a duplicate shows double dead-lettering)
    drained: bool  # the drain reached an empty outbox before its deadline
    poison: set[str]  # mids published as poison: the handler always raises
    connection_budget: int | None  # most backends one consumer process may hold (L2); None if undeclared
    slack_seconds: float = 1.5  # scheduling slack on the monotonic clock
    extra: dict[str, Any] = field(default_factory=dict)  # scenario hints: skewed_workers, dlq_drift, exhaustion, d7_*
