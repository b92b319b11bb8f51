"""Stops every process the harness started, by pid, and removes what they left, even if the harness is SIGKILLed.

A small guard process reads pids and paths from a pipe held by the harness. The
harness stops its processes and removes its temporary directories itself on
normal exit, Ctrl-C and test failure; if it dies without doing so, the pipe
closes and the guard SIGKILLs what is left, waits for those processes (and any
other still working inside a registered directory, such as PostgreSQL's
backends) to be gone, then removes the registered paths. Pids are remembered
with their start time, so a recycled pid is never killed.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

_lock = threading.Lock()
_guard: subprocess.Popen[bytes] | None = None
_protected: dict[int, str] = {}


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (None if it is gone): identity beyond the number."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has already exited
        return None
    return fields[19]


def alive(pid: int, started: str | None = None) -> bool:
    now = start_time(pid)
    return now is not None and (started is None or now == started)


def _send(line: str) -> None:
    global _guard
    if _guard is None or _guard.poll() is not None:
        _guard = subprocess.Popen(
            [sys.executable, "-m", "harness.provision.guard", str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True,
        )
    assert _guard.stdin is not None
    try:
        _guard.stdin.write(line.encode() + b"\n")
        _guard.stdin.flush()
    except BrokenPipeError:  # pragma: no cover - the guard died; it will be restarted next time
        _guard = None


def protect(pid: int) -> None:
    """Registers ``pid`` to be killed when the harness exits, however it exits."""
    started = start_time(pid)
    if started is None:
        return
    with _lock:
        _protected[pid] = started
        _send(f"+{pid} {started}")


def forget(pid: int) -> None:
    with _lock:
        _protected.pop(pid, None)
        _send(f"-{pid}")


def protect_path(path: str | os.PathLike[str]) -> None:
    """Registers a temporary file or directory to be removed if the harness dies without removing it."""
    with _lock:
        _send(f"+{Path(path).resolve()}")


def forget_path(path: str | os.PathLike[str]) -> None:
    """The owner removed (or keeps) ``path``; the guard must not touch it."""
    with _lock:
        _send(f"-{Path(path).resolve()}")


def kill_and_forget(pid: int, sig: int = signal.SIGKILL, wait: float = 10.0) -> None:
    """Sends ``sig`` to ``pid`` if it is still the process we started, and waits for it to go."""
    started = _protected.get(pid)
    if alive(pid, started):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait
        while alive(pid, started) and time.monotonic() < deadline:
            try:  # reap it if it is our child
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.01)
    forget(pid)


@atexit.register
def _stop_all() -> None:
    for pid in list(_protected):
        kill_and_forget(pid)
    if _guard is not None and _guard.stdin is not None:
        _guard.stdin.close()


def _working_in(paths: set[str]) -> bool:
    """Whether any process still works inside one of ``paths`` (PostgreSQL backends outlive their postmaster)."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry.name}/cwd")
            except OSError:
                continue
            if any(cwd == p or cwd.startswith(p + "/") for p in paths):
                return True
    return False


def _clean_up(pids: dict[int, str], paths: set[str], wait: float = 10.0) -> None:
    for pid, started in pids.items():
        if alive(pid, started):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + wait
    while (any(alive(p, s) for p, s in pids.items()) or _working_in(paths)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            Path(path).unlink(missing_ok=True)


def _serve(parent: int) -> None:
    """Guard main loop: track pids and paths until stdin closes, then kill and remove whatever is left."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal is for the harness
    pids: dict[int, str] = {}
    paths: set[str] = set()
    for line in sys.stdin:
        line = line.rstrip("\n")
        op, item = line[:1], line[1:]
        if item.startswith("/"):
            (paths.add if op == "+" else paths.discard)(item)
        elif op == "+":
            pid, started = item.split()
            pids[int(pid)] = started
        elif op == "-":
            pids.pop(int(item), None)
    _clean_up(pids, paths)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
