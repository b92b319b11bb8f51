"""Adapter programs written for Node: run from the repository with the packages their lock file pins.

``bin/setup`` installs them (``npm ci`` once per lock file); here only the check that node is there and that the
installed version of the library is the pinned one, so a missing or stale install is a clear "unavailable" with
its fix, never a stack trace from inside a scenario.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path

from harness.adapters.process import ProgramUnavailable

NODE_ENV = "OUTBOX_HARNESS_NODE"  # the node binary to run programs with, instead of the one on PATH


def node_program(source: Path, library: str) -> list[str]:
    """``node SOURCE/main.mjs``, once node and the version of ``library`` that ``SOURCE/package-lock.json`` pins
    are installed."""
    node = os.environ.get(NODE_ENV) or shutil.which("node")
    if node is None:
        raise ProgramUnavailable(f"{library}'s adapter program is Node ({source}) and node is not installed: install "
                                 "Node.js 20 or newer with npm, then run bin/setup (or `npm ci` in that directory)")
    lock = json.loads((source / "package-lock.json").read_text())
    want = lock["packages"][f"node_modules/{library}"]["version"]
    installed = source / "node_modules" / library / "package.json"
    have = json.loads(installed.read_text())["version"] if installed.exists() else None
    if have != want:
        found = f"found {have}" if have else "no node_modules"
        raise ProgramUnavailable(f"{library} {want} is not installed for its adapter program ({found} in {source}): "
                                 f"run bin/setup, or `npm ci` in {source}")
    return [node, str(source / "main.mjs")]


@functools.cache
def node_library_version(source: Path, library: str) -> str:
    """``pg-boss 12.38.0 (Node v20.20.0)``: the installed version of ``library`` for the program at ``source`` and
    the node that runs it."""
    node = node_program(source, library)[0]
    installed = json.loads((source / "node_modules" / library / "package.json").read_text())["version"]
    runtime = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    return f"{library} {installed} (Node {runtime.strip()})"
