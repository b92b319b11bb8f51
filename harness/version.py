"""The harness's version as a person needs it to reproduce a run: the package version, and the git commit
when running from a checkout (a report judged by uncommitted checkers says so)."""

from __future__ import annotations

import functools
import subprocess
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTION = "outbox-harness"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def describe() -> dict[str, Any]:
    """``{"version", "commit", "modified"}``: commit and modified are None outside a git checkout (an installed
    wheel); modified is true when tracked files differ from that commit. Read once per process."""
    try:
        text = package_version(DISTRIBUTION)
    except PackageNotFoundError:
        text = "unknown"
    commit = _git("rev-parse", "--short", "HEAD") if (ROOT / ".git").exists() else None
    modified = bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else None
    return {"version": text, "commit": commit, "modified": modified}


def version() -> str:
    """``0.1.0 (git 1a2b3c4)``; ``, modified`` when tracked files differ from that commit."""
    d = describe()
    if d["commit"] is None:
        return str(d["version"])
    return f"{d['version']} (git {d['commit']}{', modified' if d['modified'] else ''})"
