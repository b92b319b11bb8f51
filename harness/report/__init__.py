"""The report writer: one directory per run with everything needed to judge it later.

reports/<run_id>/ holds results.json (machines), junit.xml (CI), report.html
(people), history.jsonl plus histories/<impl>/<scenario>.jsonl (evidence),
logs/ (the workers' logs and specs per scenario, the servers' logs), and
reports/latest points at the newest run so a person does not hunt for it.
"""

from __future__ import annotations

import os
import secrets
import shlex
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.messages import mask_dsn
from harness.names import new_run_id
from harness.report.html import write_html
from harness.report.junit import write_junit
from harness.report.results import copy_server_logs, document, place, write_results
from harness.verdict import ScenarioResult
from harness.version import describe

__all__ = ["write_report"]


def write_report(
    results: list[ScenarioResult], *, reports_dir: Path, run_id: str | None = None,
    interrupted: dict[str, Any] | None = None, server_logs: dict[str, Path | None] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Writes the run directory and returns it; an existing run directory is never overwritten.

    ``interrupted`` (how the run was cut short, and the scenario it cut short) marks every file of it;
    ``server_logs`` (``{"postgresql": path, "toxiproxy": path}``) are copied into it; ``meta`` adds to what
    results.json says of the run (a soak's figures)."""
    run_id = run_id or new_run_id()
    reports_dir = Path(reports_dir)
    run_dir = reports_dir / run_id
    run_dir.mkdir(parents=True)
    meta = {
        "impls": sorted({r.impl for r in results}),
        "harness": describe(),
        "command": mask_dsn(shlex.join(sys.orig_argv)),  # the interpreter and everything after it, as typed
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "server_logs": copy_server_logs(server_logs or {}, run_dir),
        **(meta or {}),
    }
    entries = place(results, run_dir)
    doc = document(run_id, meta, entries, interrupted)
    write_results(run_dir / "results.json", doc)
    write_junit(run_dir / "junit.xml", run_id, entries, interrupted)
    write_html(run_dir / "report.html", doc, entries)
    _point_latest(reports_dir, run_dir)
    return run_dir


def _point_latest(reports_dir: Path, run_dir: Path) -> None:
    """Swaps reports/latest atomically (rename over the old link); where symlinks fail, latest.txt names the run."""
    tmp = reports_dir / f".latest-{secrets.token_hex(4)}"
    try:
        tmp.symlink_to(run_dir.name, target_is_directory=True)
        os.replace(tmp, reports_dir / "latest")
    except OSError:
        tmp.unlink(missing_ok=True)
        tmp.write_text(str(run_dir.resolve()) + "\n", encoding="utf-8")
        os.replace(tmp, reports_dir / "latest.txt")
    else:
        (reports_dir / "latest.txt").unlink(missing_ok=True)
