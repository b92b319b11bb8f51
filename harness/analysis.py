"""From a history to a scenario's verdicts: one pure function for live runs and for ``outbox-harness check``.

The history carries everything: its ``run`` header holds what was declared (the scenario, the consumer's
knobs, the implementation's capabilities and connection budget), and every observation is an event. So a
saved history judged again gives the same verdicts, on any machine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.checkers import CheckContext, History, checkers_for, run_checkers
from harness.history import Event
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
    def of(cls, history: History | Iterable[Event]) -> Header:
        e = History.of(history).run
        if e is None:
            raise NotAHistory("no run header (f='run') in the history")
        v = e.value
        return cls(v["scenario"], str(v["impl"]), CheckContext.from_dict(v["context"]), str(v.get("notes") or ""),
                   v.get("seed"), v.get("not_run"))


def failed_faults(faults: Iterable[Event]) -> list[str]:
    """Faults that could not be applied or healed: a scenario must not pass on them."""
    out = []
    for e in faults:
        if e.type == "fail":
            out.append(f"{e.value.get('kind')}: {e.value.get('error')}")
        elif e.type == "info" and e.value.get("heal_error"):
            out.append(f"{e.value.get('kind')} heal: {e.value['heal_error']}")
    return out


def fault_notes(faults: Iterable[Event]) -> list[str]:
    """What each fault reported when it took effect, for the report."""
    return [f"{e.value.get('kind')}: " + json.dumps({k: v for k, v in e.value.items() if k not in _FAULT_TAGS},
                                                     default=str)
            for e in faults if e.type == "ok"]


def judge(history: History | Iterable[Event]) -> tuple[list[Verdict], list[str]]:
    """The verdicts of the scenario this history recorded, and the notes shown beside them; the history (its
    events in ``Event.t`` order) is indexed once for every checker."""
    history = History.of(history)
    header = Header.of(history)
    guarantees = header.guarantees
    own = [header.notes] if header.notes else []
    if header.not_run is not None:
        status, reason = header.not_run["status"], header.not_run["reason"]
        return [Verdict(g, "runner", status, reason) for g in guarantees], [reason] + own  # type: ignore[arg-type]
    verdicts = [v for v in run_checkers(checkers_for(guarantees), history, header.context) if v.guarantee in guarantees]
    verdicts.sort(key=lambda v: guarantees.index(v.guarantee))
    verdicts = [explain(v, history) for v in _require_faults(verdicts, failed_faults(history.faults), guarantees)]
    return verdicts, fault_notes(history.faults) + own


_MID = re.compile(r"m\d+")
EVIDENCE_MIDS = 2  # messages whose story a failing verdict quotes
EVIDENCE_LINES = 24


def explain(v: Verdict, history: History) -> Verdict:
    """A fail quotes the history behind it: every event of the first messages it names (publish, claims, calls,
    settles), the faults, and the lifecycle of the processes involved, with times relative to the run's start.
    The index keeps no per-message events, so this reads the history once more, for fails only."""
    if v.status != "fail" or not history.size:
        return v
    mids = list(dict.fromkeys(_mids_in(v.figures)))[:EVIDENCE_MIDS]
    if not mids:
        return v
    wanted = set(mids)
    quoted: list[tuple[Event, bool]] = []  # (event, one of the messages' own), in order
    processes: set[str] = set()
    for e in history.replay():
        own = e.mid in wanted or bool(wanted & {str(m) for m in e.value.get("mids") or ()})
        if own:
            processes.add(e.process)
        if own or e.f in ("fault", "worker"):
            quoted.append((e, own))
    t0 = history.min_t
    lines = [_quote(e, t0) for e, own in quoted
             if own or e.f == "fault" or (e.f == "worker" and str(e.value.get("process")) in processes)]
    reads = [e for e in history.events("read") if e.type == "ok"]
    if reads:
        pending, dead = set(reads[-1].value.get("pending") or ()), set(reads[-1].value.get("dead") or ())
        lines = lines[:EVIDENCE_LINES - 1] + [_quote(reads[-1], t0).split(" {")[0] + " " + ", ".join(
            f"{m}: {'pending' if m in pending else 'dead-lettered' if m in dead else 'in neither table'}" for m in mids)]
    return replace(v, figures={**v.figures, "evidence": {"messages": mids, "history": lines[:EVIDENCE_LINES]}})


def _mids_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if _MID.fullmatch(value) else []
    if isinstance(value, dict):
        return [m for k, x in value.items() if k != "evidence" for m in _mids_in(x)]
    if isinstance(value, list | tuple):
        return [m for x in value for m in _mids_in(x)]
    return []


def _quote(e: Event, t0: float) -> str:
    keep = {k: x for k, x in e.value.items() if k not in ("pad", "intact") and x is not None}
    return f"+{e.t - t0:8.3f}s {e.process} {e.type} {e.f} {json.dumps(keep, default=str, separators=(',', ':'))[:200]}"


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
    """A saved history judged again, streamed from its file into the checkers' index."""
    history = History.read(path)
    header = Header.of(history)
    verdicts, notes = judge(history)
    span = history.last_t - history.min_t if history.size > 1 else 0.0
    return ScenarioResult(header.name, header.impl, verdicts, span if duration_s is None else duration_s,
                          history_path=str(path), notes=notes)
