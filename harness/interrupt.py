"""SIGTERM stops the harness the way Ctrl-C does.

A cancelled CI job or a stopped container sends SIGTERM; by default it ends the harness like SIGKILL, with no
report and only the guard left to clean up. Raised in the main thread as a :class:`KeyboardInterrupt`,
it takes Ctrl-C's path instead: scenario clean-up runs, every process is stopped by pid, and the report is
written and marked interrupted.

While a run goes through :func:`run`, SIGTERM cancels its task instead, as asyncio does for Ctrl-C, and the run
then raises :class:`Terminated`: raised at whatever line the main thread is on, the KeyboardInterrupt can land in
a library that swallows it (it landed in SQLAlchemy's greenlet bridge during a connection ping, once in 8 runs on a
loaded machine, and the scenario went on to its end as if no signal had come).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Coroutine
from types import FrameType, TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

_main: asyncio.Task[Any] | None = None  # the task of the run in progress (run()), which SIGTERM cancels
_cancelled = False  # that task was cancelled by SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, where Ctrl-C's KeyboardInterrupt would be."""


class SigtermAsInterrupt:
    """While installed (main thread only), SIGTERM raises :class:`Terminated`; ``received`` says whether it came."""

    def __init__(self) -> None:
        self.received = False
        self._previous: Any = None
        self._installed = False

    def _raise(self, signum: int, frame: FrameType | None) -> None:
        global _cancelled
        self.received = True
        task = _main
        if task is not None and not task.done():
            _cancelled = True
            task.get_loop().call_soon_threadsafe(task.cancel)
            return
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


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)``, where SIGTERM (while a :class:`SigtermAsInterrupt` is installed) cancels the
    coroutine's task, so its clean-up runs at an await, and then raises :class:`Terminated`."""
    global _cancelled

    async def main() -> T:
        global _main
        _main = asyncio.current_task()
        try:
            return await coro
        finally:
            _main = None

    _cancelled = False
    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        if _cancelled:
            raise Terminated("SIGTERM") from None
        raise
