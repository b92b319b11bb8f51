"""The raw data of one grid point, read back: the publisher's commit log, the workers' histories,
locust's statistics; :func:`analyse_point` turns them into the point's figures."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.history import read_events
from harness.sizing.analysis import Commit, PointResult, Step, check_budget, find_knee, latencies, step_figures
from harness.sizing.plan import GridPoint
from harness.stats import percentile


def read_commit_log(path: Path) -> tuple[list[Commit], list[Step], float | None]:
    """The locustfile's log: commits (``c``), step switches (``step``) and the end of the test (``end``)."""
    commits: list[Commit] = []
    steps: list[Step] = []
    end: float | None = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for raw in fh:
            if not raw.endswith("\n"):  # a torn last line
                continue
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            kind = rec.get("k")
            if kind == "c":
                commits.append(Commit(float(rec["t0"]), float(rec["t"]), tuple(rec["mids"])))
            elif kind == "step":
                steps.append(Step(int(rec["step"]), float(rec["t"]), int(rec["users"]), float(rec["offered"])))
            elif kind == "end":
                end = float(rec["t"])
    return commits, steps, end


def first_deliveries(paths: Iterable[Path]) -> dict[str, float]:
    """mid → earliest handler start (``deliver`` invoke) over every worker history."""
    first: dict[str, float] = {}
    for path in paths:
        for event in read_events(path, f="deliver", type_="invoke"):
            mid = event.mid
            if isinstance(mid, str) and event.t < first.get(mid, math.inf):
                first[mid] = event.t
    return first


def handler_durations(paths: Iterable[Path]) -> list[float]:
    """Seconds from each handler start to its end (``deliver`` invoke to ok or fail), one history file per worker
    incarnation; a call still running when its history ends is left out."""
    out: list[float] = []
    for path in paths:
        started: dict[str, float] = {}
        for event in read_events(path, f="deliver"):
            mid = event.mid
            if not isinstance(mid, str):
                continue
            if event.type == "invoke":
                started[mid] = event.t
            elif mid in started:
                out.append(event.t - started.pop(mid))
    return out


def read_locust_stats(path: Path) -> dict[str, Any]:
    """The aggregate rows of locust's ``*_stats.csv`` for publish and deliver (cross-check)."""
    out: dict[str, Any] = {}
    if not path.exists():
        return out
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row.get("Type") in ("publish", "deliver"):
                out[row["Type"]] = {
                    "requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                    "p50_ms": _num(row.get("50%")), "p95_ms": _num(row.get("95%")), "p99_ms": _num(row.get("99%")),
                    "rps": _num(row.get("Requests/s")),
                }
    return out


def _num(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "", "N/A") else None
    except ValueError:
        return None


def analyse_point(point: GridPoint, point_dir: Path, samples: list[dict[str, int]], *, max_connections: int | None,
                  reserved: int, bound_s: float, settle_s: float) -> PointResult:
    commits, steps, end = read_commit_log(point_dir / "commits.jsonl")
    histories = sorted(point_dir.glob("worker-*.jsonl"))
    delivered = first_deliveries(histories)
    figures = step_figures(commits, steps, delivered, end=end, bound_s=bound_s, settle_s=settle_s)
    mids = [m for c in commits for m in c.mids]
    return PointResult(
        point=point, steps=figures, knee=find_knee(figures),
        budget=check_budget(point, samples, max_connections=max_connections, reserved=reserved),
        published=len(mids), delivered=sum(1 for m in mids if m in delivered),
        e2e_p95_ms=percentile(latencies(commits, delivered), 95) * 1000,
        publish_p95_ms=percentile([c.t - c.t0 for c in commits], 95) * 1000,
        locust=read_locust_stats(point_dir / "locust_stats.csv"),
        handler_p99_ms=percentile(handler_durations(histories), 99) * 1000,
    )
