"""Retry strategies: how long a failed message waits before its next delivery (R1).

Strategies only compute delays; the wait itself is ``next_attempt_at = now() +
delay`` on the database clock, so a skewed worker cannot shorten it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol


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
        if self.initial_delay_seconds < 0 or self.multiplier < 1 or self.max_delay_seconds < 0:
            raise ValueError("ExponentialRetry needs initial_delay_seconds >= 0, multiplier >= 1, max_delay_seconds >= 0")
        if self.max_attempts < 1 or not 0 <= self.jitter_factor < 1:
            raise ValueError("ExponentialRetry needs max_attempts >= 1 and 0 <= jitter_factor < 1")

    def delay(self, failures: int) -> float | None:
        if failures >= self.max_attempts:
            return None
        base = min(self.max_delay_seconds, self.initial_delay_seconds * self.multiplier ** (failures - 1))
        return base * (1 + random.uniform(-self.jitter_factor, self.jitter_factor))


@dataclass(frozen=True)
class ConstantRetry:
    delay_seconds: float = 1.0
    max_attempts: int = 10

    def __post_init__(self) -> None:
        if self.delay_seconds < 0 or self.max_attempts < 1:
            raise ValueError("ConstantRetry needs delay_seconds >= 0 and max_attempts >= 1")

    def delay(self, failures: int) -> float | None:
        return None if failures >= self.max_attempts else self.delay_seconds


@dataclass(frozen=True)
class NoRetry:
    """The first failure is terminal (an audit feed that must not replay)."""

    def delay(self, failures: int) -> float | None:
        return None
