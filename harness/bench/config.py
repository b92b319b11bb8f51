"""What the benchmark runs with: one :class:`BenchConfig`, one consumer configuration for every implementation."""

from __future__ import annotations

from dataclasses import dataclass

from harness.adapter import ConsumerConfig

QUEUE = "bench"


@dataclass(frozen=True)
class BenchConfig:
    messages: int = 100_000
    rounds: int = 7  # floor and implementation drains, interleaved: F I F I ... F
    probes: int = 200  # wake-up probes of an implementation with LISTEN/NOTIFY
    polling_probes: int = 3  # of one without: each may take a whole polling interval
    max_workers: int = 16
    fetch_batch_size: int = 500
    lease_ttl_seconds: float = 60.0
    max_fetch_interval: float = 30.0
    min_fetch_interval: float = 0.05
    floor_loops: int = 2
    floor_batch: int | None = None  # None: fetch_batch_size
    publish_chunk: int = 10_000
    payload_bytes: int = 64
    drain_cap_seconds: float = 60.0  # a drain still running then is stopped; the rate it reached is reported
    impl_budget_seconds: float = 120.0  # no new round of an implementation once its rounds took this long
    timeout_seconds: float = 600.0  # each of: publishing, one floor drain
    probe_timeout_seconds: float = 180.0  # the whole probe phase of one implementation
    settle_timeout_seconds: float = 30.0  # state empty after the last delivery
    start_timeout_seconds: float = 120.0  # worker up to ``ready``
    stop_timeout_seconds: float = 30.0  # worker gone after SIGTERM

    def __post_init__(self) -> None:
        for name in ("messages", "rounds", "probes", "polling_probes", "max_workers", "fetch_batch_size",
                     "floor_loops", "publish_chunk"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")

    @property
    def floor_batch_size(self) -> int:
        return self.floor_batch if self.floor_batch is not None else self.fetch_batch_size


DEFAULTS = BenchConfig()


def consumer_config(config: BenchConfig) -> ConsumerConfig:
    """The one consumer configuration every implementation runs with."""
    return ConsumerConfig(queue=QUEUE, max_workers=config.max_workers, fetch_batch_size=config.fetch_batch_size,
                          lease_ttl_seconds=config.lease_ttl_seconds, max_fetch_interval=config.max_fetch_interval,
                          min_fetch_interval=config.min_fetch_interval)


class PhaseError(RuntimeError):
    """A phase could not be measured; the message goes into the implementation's row."""
