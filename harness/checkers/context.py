"""What a checker gets besides the history, and how a checker registers itself.

``CheckContext`` holds only what is declared, not observed: the consumer's knobs, the implementation's
capabilities, its declared connection budget. Every observation (the final read of the tables, whether the
drain finished, which messages were poison, which faults ran) is an event in the history, so a saved history
can be checked again (``outbox-harness check``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from harness.adapter import Capabilities, ConsumerConfig
from harness.history import Event
from harness.verdict import Verdict

Checker = Callable[[list[Event], "CheckContext"], list[Verdict]]


@dataclass(frozen=True)
class CheckContext:
    config: ConsumerConfig
    capabilities: Capabilities
    connection_budget: int | None  # most backends one consumer process may hold (L2); None if undeclared
    slack_seconds: float = 1.5  # scheduling slack on the monotonic clock

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "capabilities": asdict(self.capabilities),
                "connection_budget": self.connection_budget, "slack_seconds": self.slack_seconds}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CheckContext:
        return cls(ConsumerConfig.from_dict(raw["config"]), Capabilities(**raw["capabilities"]),
                   raw.get("connection_budget"), float(raw.get("slack_seconds", 1.5)))


@dataclass(frozen=True)
class Registered:
    name: str
    decides: tuple[str, ...]  # guarantee ids, in the order the checker returns them
    run: Checker


#: Every checker, by name, in registration order; filled by :func:`checker` when its module is imported.
REGISTRY: dict[str, Registered] = {}


def checker(name: str, *, decides: tuple[str, ...]) -> Callable[[Checker], Checker]:
    """Registers a checker: the guarantee ids it decides. One module per checker; nothing else to edit."""

    def register(fn: Checker) -> Checker:
        if name in REGISTRY and REGISTRY[name].run is not fn:
            raise ValueError(f"two checkers named {name!r}")
        REGISTRY[name] = Registered(name, decides, fn)
        return fn

    return register
