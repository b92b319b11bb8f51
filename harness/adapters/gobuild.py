"""Adapter programs written in Go, built once per source version into the user's cache.

The binary's directory is named after a hash of the module's sources (``go.mod``, ``go.sum``, every ``.go``
file), so an edited adapter is rebuilt and an unchanged one never is. Builds take a file lock: several test
processes that need the program at once build it once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from harness.adapters.process import ProgramUnavailable

BUILD_TIMEOUT_S = 600.0  # a cold module cache downloads the library first


class GoUnavailable(ProgramUnavailable):
    """The adapter program cannot be built here (no Go toolchain, or the build failed)."""


def cache_dir() -> Path:
    """``$OUTBOX_HARNESS_CACHE``, else ``$XDG_CACHE_HOME/outbox-harness``, else ``~/.cache/outbox-harness``."""
    explicit = os.environ.get("OUTBOX_HARNESS_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "outbox-harness"


def source_hash(*sources: Path) -> str:
    """Hash of the Go sources and module files under ``sources`` (a module and the local ones it replaces)."""
    digest = hashlib.sha256()
    for source in sources:
        for path in sorted([*source.rglob("*.go"), source / "go.mod", source / "go.sum"]):
            if path.is_file():
                digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def go_program(source: Path, name: str, *replaced: Path) -> Path:
    """The binary built from the Go module at ``source``, built now if this version has not been yet.
    ``replaced``: local modules it uses through ``replace`` directives, whose changes also call for a build."""
    binary = cache_dir() / f"{name}-{source_hash(source, *replaced)}" / name
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise GoUnavailable(f"{name} is a Go program ({source}) and Go is not installed to build it: install Go "
                            f"1.26 or newer (https://go.dev/dl/) and run again; it is built once into {binary.parent}")
    binary.parent.mkdir(parents=True, exist_ok=True)
    with open(binary.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists():  # built by another process meanwhile
            return binary
        partial = binary.with_suffix(".partial")
        try:
            proc = subprocess.run([go, "build", "-trimpath", "-o", str(partial), "."], cwd=source,
                                  capture_output=True, text=True, check=False, timeout=BUILD_TIMEOUT_S,
                                  env={**os.environ, "GOFLAGS": "-mod=readonly"})
        except subprocess.TimeoutExpired as exc:
            raise GoUnavailable(f"`go build` of {source} took over {BUILD_TIMEOUT_S:.0f} s") from exc
        if proc.returncode != 0:
            raise GoUnavailable(f"`go build` of {source} failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")
        partial.replace(binary)
    return binary


def required_version(go_mod: Path, module: str) -> str:
    """The version of ``module`` that ``go_mod`` requires (what the program is built with), e.g. ``v0.51.2``."""
    for line in go_mod.read_text().splitlines():
        words = line.split()
        if words[:1] == ["require"]:
            words = words[1:]
        if len(words) >= 2 and words[0] == module:
            return words[1]
    raise ValueError(f"{go_mod} does not require {module}")
