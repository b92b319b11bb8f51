"""Retry strategies: how long a failed message waits before its next delivery (R1).

Strategies only compute delays; the wait itself is ``next_attempt_at = now() +
delay`` on the database clock, so a skewed worker cannot shorten it. Their
knobs are checked when built (see :mod:`outbox.config`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol

from outbox.config import MAX_COUNT, MAX_SECONDS, check_number


class RetryStrategy(Protocol):
    def delay(self, failures: int) -> float | None:
        """Seconds before the next attempt after ``failures`` failures (1-based); None: give up."""


@dataclass(frozen=True)
class ExponentialRetry:
    initial_delay_seconds: float = 1.0
    multiplier: float = 2.0
    max_delay_seconds: float = 300.0
    max_attempts: int = 10
    jitter_factor: float = 0.2

    def __post_init__(self) -> None:
        check_number("ExponentialRetry.initial_delay_seconds", self.initial_delay_seconds, 0, MAX_SECONDS)
        check_number("ExponentialRetry.multiplier", self.multiplier, 1)
        check_number("ExponentialRetry.max_delay_seconds", self.max_delay_seconds, 0, MAX_SECONDS)
        check_number("ExponentialRetry.max_attempts", self.max_attempts, 1, MAX_COUNT, integer=True)
        check_number("ExponentialRetry.jitter_factor", self.jitter_factor, 0, 1, below=True)

    def delay(self, failures: int) -> float | None:
        if failures >= self.max_attempts:
            return None
        try:
            grown = self.initial_delay_seconds * self.multiplier ** (failures - 1)
        except OverflowError:  # multiplier ** n beyond float range (after ~1000 failures): long past the cap
            grown = math.inf if self.initial_delay_seconds else 0.0
        base = min(self.max_delay_seconds, grown)
        return base * (1 + random.uniform(-self.jitter_factor, self.jitter_factor))


@dataclass(frozen=True)
class ConstantRetry:
    delay_seconds: float = 1.0
    max_attempts: int = 10

    def __post_init__(self) -> None:
        check_number("ConstantRetry.delay_seconds", self.delay_seconds, 0, MAX_SECONDS)
        check_number("ConstantRetry.max_attempts", self.max_attempts, 1, MAX_COUNT, integer=True)

    def delay(self, failures: int) -> float | None:
        return None if failures >= self.max_attempts else self.delay_seconds


@dataclass(frozen=True)
class NoRetry:
    """The first failure is terminal (an audit feed that must not replay)."""

    def delay(self, failures: int) -> float | None:
        return None
