"""The harness's version as a person needs it to reproduce a run: the package version, and the git commit
when running from a checkout (a report judged by uncommitted checkers says so)."""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def version() -> str:
    """``0.1.0 (git 1a2b3c4)``; ``, modified`` when tracked files differ from that commit."""
    try:
        text = package_version("outbox-harness")
    except PackageNotFoundError:
        text = "unknown"
    if not (ROOT / ".git").exists():
        return text
    commit = _git("rev-parse", "--short", "HEAD")
    if commit is None:
        return text
    modified = ", modified" if _git("status", "--porcelain", "--untracked-files=no") else ""
    return f"{text} (git {commit}{modified})"
