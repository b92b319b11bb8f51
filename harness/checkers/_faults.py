"""Faults in a history: their windows from invoke to heal, by kind and by the category their nemesis declared."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from harness.history import Event

#: Fault categories that can end PostgreSQL backends (and with them the locks they hold).
BACKEND_ENDING = ("network", "crash")


def target(event: Event) -> str:
    """The process an event is about: ``value["process"]`` for notes written by others, else the writer."""
    return str(event.value.get("process") or event.process)


def ends_process(event: Event) -> bool:
    """The event says a process ended: a fault that ends one took effect, or the process exited, died, stopped or
    was started again (a new incarnation under the same name)."""
    if event.f == "fault" and event.type == "ok":
        return bool(event.value.get("ends_process"))
    return event.f == "worker" and event.value.get("event") in ("exited", "died", "stopped", "started")


@dataclass
class FaultWindow:
    """One fault from its invoke to its heal; ``applied`` is the ``fault`` ok that proves it took effect."""

    invoke: Event
    applied: Event | None = None
    healed: float | None = None  # fault info; None if it never healed in the history
    failed: bool = False  # fault fail: it could not be applied

    @property
    def invoked(self) -> float:
        return self.invoke.t

    @property
    def applied_at(self) -> float | None:
        return self.applied.t if self.applied is not None else None

    @property
    def figures(self) -> dict[str, Any]:
        """What the nemesis reported when it took effect, e.g. the process it signalled."""
        return self.applied.value if self.applied is not None else {}

    def active(self, t: float) -> bool:
        """Between taking effect and healing."""
        start = self.applied_at
        return start is not None and start <= t and (self.healed is None or t <= self.healed)


def windows(faults: Iterable[Event], kind: str) -> list[FaultWindow]:
    """Windows of one fault kind that did not fail; invoke, ok/fail and info pair up first in, first out."""
    opened: list[FaultWindow] = []
    for e in faults:
        if e.value.get("kind") != kind:
            continue
        if e.type == "invoke":
            opened.append(FaultWindow(e))
        elif e.type in ("ok", "fail"):
            w = next((w for w in opened if w.applied is None and not w.failed), None)
            if w is not None:
                w.applied, w.failed = (e, False) if e.type == "ok" else (None, True)
        else:
            w = next((w for w in opened if w.applied is not None and w.healed is None), None)
            if w is not None:
                w.healed = e.t
    return [w for w in opened if not w.failed]


def kinds_of(faults: Iterable[Event], category: str) -> list[str]:
    """Fault kinds of one category (as their nemeses declared it) that ran, in first-run order."""
    return list(dict.fromkeys(str(e.value.get("kind")) for e in faults
                              if e.type == "invoke" and e.value.get("category") == category))


def last_heal(faults: Iterable[Event]) -> tuple[float | None, bool]:
    """When the last fault healed, and whether every fault healed (a heal that raised did not)."""
    opened: dict[str, int] = {}
    last: float | None = None
    clean = True
    for e in faults:
        kind = str(e.value.get("kind"))
        if e.type == "ok":
            opened[kind] = opened.get(kind, 0) + 1
        elif e.type == "info":
            opened[kind] = opened.get(kind, 0) - 1
            last = e.t
            clean = clean and not e.value.get("heal_error")
    return last, clean and all(n <= 0 for n in opened.values())
