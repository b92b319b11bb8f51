"""Verdicts: what a checker concludes about one guarantee, with the figures behind it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["pass", "fail", "unknown", "not_applicable", "skipped"]

#: When several verdicts speak of one guarantee, the worst wins; a decided verdict outranks
#: "skipped" and "not applicable", so a pass in one scenario is not hidden by another that
#: could not exercise the guarantee.
SEVERITY: dict[str, int] = {"fail": 4, "unknown": 3, "pass": 2, "skipped": 1, "not_applicable": 0}


@dataclass(frozen=True)
class Verdict:
    guarantee: str  # id from guarantees.md, e.g. "D1"
    checker: str  # which checker decided, e.g. "total_queue"
    status: Status
    summary: str  # one sentence a person reads first
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def worst(statuses: list[str]) -> str:
    return max(statuses, key=lambda s: SEVERITY[s]) if statuses else "unknown"


@dataclass
class ScenarioResult:
    """One scenario run against one implementation: verdicts plus where the evidence is."""

    scenario: str  # e.g. "sigkill_storm"
    impl: str  # adapter name
    verdicts: list[Verdict]
    duration_s: float
    history_path: str | None = None  # merged history.jsonl of this scenario
    notes: list[str] = field(default_factory=list)  # fault figures, skips, adapter notes

    @property
    def status(self) -> str:
        return worst([v.status for v in self.verdicts])

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "impl": self.impl,
            "status": self.status,
            "duration_s": round(self.duration_s, 3),
            "history_path": self.history_path,
            "notes": self.notes,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }
