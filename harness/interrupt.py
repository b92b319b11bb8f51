"""SIGTERM stops the harness the way Ctrl-C does.

A cancelled CI job or a stopped container sends SIGTERM; by default it ends the harness like SIGKILL, with no
report and only the guard left to clean up. Raised in the main thread as a :class:`KeyboardInterrupt`,
it takes Ctrl-C's path instead: scenario clean-up runs, every process is stopped by pid, and the report is
written and marked interrupted.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM, where Ctrl-C's KeyboardInterrupt would be."""


class SigtermAsInterrupt:
    """While installed (main thread only), SIGTERM raises :class:`Terminated`; ``received`` says whether it came."""

    def __init__(self) -> None:
        self.received = False
        self._previous: Any = None
        self._installed = False

    def _raise(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        raise Terminated("SIGTERM")

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._raise)
            self._installed = True

    def restore(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False

    def __enter__(self) -> SigtermAsInterrupt:
        self.install()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.restore()

    @property
    def signal_name(self) -> str:
        """The signal behind the KeyboardInterrupt the harness saw."""
        return "SIGTERM" if self.received else "SIGINT"
