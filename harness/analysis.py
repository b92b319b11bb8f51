"""From a history to a scenario's verdicts: one pure function for live runs and for ``outbox-harness check``.

The history carries everything: its ``run`` header holds what was declared (the scenario, the consumer's
knobs, the implementation's capabilities and connection budget), and every observation is an event. So a
saved history judged again gives the same verdicts, on any machine.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.checkers import CheckContext, checkers_for, run_checkers
from harness.history import Event, read_events
from harness.verdict import ScenarioResult, Verdict

_FAULT_TAGS = ("kind", "category", "ends_process")


class NotAHistory(ValueError):
    """The file holds no ``run`` header: it was not written by this harness's runner."""


@dataclass(frozen=True)
class Header:
    """The ``run`` event: what ran and what was declared."""

    scenario: dict[str, Any]  # Scenario.describe()
    impl: str
    context: CheckContext
    notes: str  # the implementation's own notes (capabilities)
    seed: int | None
    not_run: dict[str, str] | None  # {"status", "reason"} for a scenario that could not run here

    @property
    def name(self) -> str:
        return str(self.scenario["name"])

    @property
    def guarantees(self) -> list[str]:
        return list(self.scenario["guarantees"])

    @classmethod
    def of(cls, history: Iterable[Event]) -> Header:
        for e in history:
            if e.f == "run" and e.type == "info":
                v = e.value
                return cls(v["scenario"], str(v["impl"]), CheckContext.from_dict(v["context"]), str(v.get("notes") or ""),
                           v.get("seed"), v.get("not_run"))
        raise NotAHistory("no run header (f='run') in the history")


def failed_faults(history: Iterable[Event]) -> list[str]:
    """Faults that could not be applied or healed: a scenario must not pass on them."""
    out = []
    for e in history:
        if e.f != "fault":
            continue
        if e.type == "fail":
            out.append(f"{e.value.get('kind')}: {e.value.get('error')}")
        elif e.type == "info" and e.value.get("heal_error"):
            out.append(f"{e.value.get('kind')} heal: {e.value['heal_error']}")
    return out


def fault_notes(history: Iterable[Event]) -> list[str]:
    """What each fault reported when it took effect, for the report."""
    return [f"{e.value.get('kind')}: " + json.dumps({k: v for k, v in e.value.items() if k not in _FAULT_TAGS},
                                                     default=str)
            for e in history if e.f == "fault" and e.type == "ok"]


def judge(history: list[Event]) -> tuple[list[Verdict], list[str]]:
    """The verdicts of the scenario this history recorded, and the notes shown beside them."""
    header = Header.of(history)
    guarantees = header.guarantees
    own = [header.notes] if header.notes else []
    if header.not_run is not None:
        status, reason = header.not_run["status"], header.not_run["reason"]
        return [Verdict(g, "runner", status, reason) for g in guarantees], [reason] + own  # type: ignore[arg-type]
    verdicts = [v for v in run_checkers(checkers_for(guarantees), history, header.context) if v.guarantee in guarantees]
    verdicts.sort(key=lambda v: guarantees.index(v.guarantee))
    return _require_faults(verdicts, failed_faults(history), guarantees), fault_notes(history) + own


def _require_faults(verdicts: list[Verdict], failed: list[str], guarantees: list[str]) -> list[Verdict]:
    """A scenario whose fault did not happen cannot pass; and every guarantee gets a verdict."""
    out = list(verdicts)
    if failed:
        why = "; ".join(failed)
        out = [Verdict(v.guarantee, v.checker, "unknown", f"fault did not take effect ({why}); {v.summary}", v.figures)
               if v.status == "pass" else v for v in out]
    seen = {v.guarantee for v in out}
    out += [Verdict(g, "runner", "unknown", "no checker decided this guarantee") for g in guarantees if g not in seen]
    return out


def recheck(path: Path, *, duration_s: float | None = None) -> ScenarioResult:
    """A saved history judged again."""
    history = sorted(read_events(path), key=lambda e: e.t)
    header = Header.of(history)
    verdicts, notes = judge(history)
    span = history[-1].t - history[0].t if len(history) > 1 else 0.0
    return ScenarioResult(header.name, header.impl, verdicts, span if duration_s is None else duration_s,
                          history_path=str(path), notes=notes)
