"""The nemesis contract: a fault with a start and a stop, each returning the figures that prove it."""

from __future__ import annotations

from typing import Any, Protocol


class FaultNotApplied(RuntimeError):
    """The fault could not be applied or did not take effect; a scenario must not pass on it."""


class Nemesis(Protocol):
    kind: str

    def start(self) -> dict[str, Any]:
        """Applies the fault and returns figures that show it took effect."""

    def stop(self) -> dict[str, Any]:
        """Heals the fault and returns figures that show traffic flows again."""
