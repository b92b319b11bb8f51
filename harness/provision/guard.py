"""Stops every process the harness started, by pid, even if the harness is SIGKILLed.

A small guard process reads pids from a pipe held by the harness. The harness
stops its processes itself on normal exit, Ctrl-C and test failure; if it dies
without doing so, the pipe closes and the guard SIGKILLs what is left. Pids are
remembered with their start time, so a recycled pid is never killed.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
import time

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


def _serve(parent: int) -> None:
    """Guard main loop: track pids until stdin closes, then kill whatever is left."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal is for the harness
    tracked: dict[int, str] = {}
    for line in sys.stdin:
        line = line.strip()
        if line.startswith("+"):
            pid, started = line[1:].split()
            tracked[int(pid)] = started
        elif line.startswith("-"):
            tracked.pop(int(line[1:]), None)
    for pid, started in tracked.items():
        if alive(pid, started):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
