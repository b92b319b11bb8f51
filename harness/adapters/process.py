"""Adapters for implementations in any language: the implementation is a program the harness runs.

A Python adapter calls its library in the harness's own processes. A library in Go or Node cannot, so its
adapter is a program in the library's language, with four subcommands (the contract is in
``docs/adapters.md``, "Process adapters"):

- ``schema`` and ``state``: one JSON request on stdin, one JSON reply on stdout;
- ``consume SPEC``: one consumer, started by the supervisor directly (no Python in between, so a SIGKILL
  lands on the implementation), writing its history in the harness's vocabulary;
- ``publish``: a long-lived publisher that runs every transaction the harness decides, in the program's own
  transaction on its own connection, one JSON line per transaction.

:class:`ProcessAdapter` is the Python side of that contract; a concrete adapter only says how to start the
program and declares its capabilities (``harness/adapters/river_adapter.py``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.adapter import (
    Capabilities,
    ConsumerConfig,
    ConsumerContext,
    OutboxState,
    PublishTx,
    TxOutcome,
)
from harness.business import TABLE as BUSINESS_TABLE
from harness.names import PUBLISHER_APP
from harness.provision import guard

COMMAND_TIMEOUT_S = 120.0  # schema and state: a migration on a loaded server may take a while
REPLY_TIMEOUT_S = 30.0  # one publish; the program bounds its own transaction well below this
STDERR_LINES = 20  # the publisher's last stderr lines, quoted when it fails


class ProgramUnavailable(RuntimeError):
    """The implementation's program cannot be had here (its toolchain is missing, its build failed)."""


class ProcessError(RuntimeError):
    """The implementation's program failed or answered something that is not the contract."""


def _b64(payloads: Sequence[bytes]) -> list[str]:
    return [base64.b64encode(p).decode() for p in payloads]


async def ask(command: Sequence[str], request: dict[str, Any], timeout: float = COMMAND_TIMEOUT_S) -> dict[str, Any]:
    """Runs a one-shot subcommand: ``request`` as one JSON line on stdin, one JSON object back on stdout."""
    proc = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                start_new_session=True)
    guard.protect(proc.pid)
    try:
        out, err = await asyncio.wait_for(proc.communicate(json.dumps(request).encode() + b"\n"), timeout)
    except TimeoutError as exc:
        raise ProcessError(f"{' '.join(command)} did not answer within {timeout:.0f} s") from exc
    finally:
        await _reap(proc)
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        reply = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        reply = None
    if proc.returncode != 0 or not isinstance(reply, dict) or reply.get("ok") is False:
        said = reply.get("error") if isinstance(reply, dict) else out.decode(errors="replace")[-500:]
        raise ProcessError(f"{' '.join(command)} exited {proc.returncode}: {said}; "
                           f"stderr: {err.decode(errors='replace').strip()[-800:]}")
    return reply


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL by pid if it still runs, wait for it (asyncio reaps its own children), and tell the guard."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await proc.wait()
    guard.forget(proc.pid)


class ProcessPublisher:
    """The implementation's long-lived publisher program (``PROGRAM publish``), one JSON line per transaction.

    Started on first use and again after it dies. A request it never answered is a definite failure when it
    asked for a rollback or never reached the program, else unknown: the program may have sent COMMIT."""

    def __init__(self, command: Sequence[str], dsn: str, config: ConsumerConfig,
                 application_name: str = PUBLISHER_APP) -> None:
        self.command = list(command)
        self.open_request = {"op": "open", "dsn": dsn, "application_name": application_name,
                             "config": config.to_dict()}
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self._drain: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one transaction at a time on the program's line protocol

    async def publish_tx(self, mids: Sequence[str], payloads: Sequence[bytes], rollback: bool, *, queue: str,
                         business: str | None = BUSINESS_TABLE) -> TxOutcome:
        request = {"op": "publish", "mids": list(mids), "payloads": _b64(payloads), "rollback": rollback,
                   "business": business, "queue": queue}
        async with self._lock:
            try:
                await self._start()
            except (OSError, ProcessError) as exc:
                await self._stop()
                return TxOutcome(False, True, f"publisher program did not start: {exc}"[:300])
            try:
                reply = await self._exchange(request)
            except (OSError, ProcessError, TimeoutError) as exc:
                await self._stop()
                return TxOutcome(False, rollback, f"publisher program failed mid-transaction: {exc}; "
                                 f"stderr: {' | '.join(self.stderr)}"[:300])
        if reply.get("ok") is True:
            return TxOutcome(True)
        return TxOutcome(False, reply.get("definite") is not False, str(reply.get("error"))[:300])

    async def close(self) -> None:
        async with self._lock:
            await self._stop()

    async def _start(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            return
        self.proc = await asyncio.create_subprocess_exec(*self.command, stdin=asyncio.subprocess.PIPE,
                                                         stdout=asyncio.subprocess.PIPE,
                                                         stderr=asyncio.subprocess.PIPE, start_new_session=True)
        guard.protect(self.proc.pid)
        self._drain = asyncio.create_task(self._keep_stderr(self.proc))
        reply = await self._exchange(self.open_request)
        if reply.get("ok") is not True:
            raise ProcessError(f"open refused: {reply.get('error')}")

    async def _exchange(self, request: dict[str, Any]) -> dict[str, Any]:
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(request).encode() + b"\n")
        await proc.stdin.drain()
        line = await asyncio.wait_for(proc.stdout.readline(), REPLY_TIMEOUT_S)
        if not line:
            raise ProcessError(f"publisher program exited ({await proc.wait()}) without answering")
        try:
            reply = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ProcessError(f"publisher program answered {line[:200]!r}") from exc
        if not isinstance(reply, dict):
            raise ProcessError(f"publisher program answered {reply!r}")
        return reply

    async def _keep_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            self.stderr.append(line.decode(errors="replace").rstrip())

    async def _stop(self) -> None:
        """Closes stdin (the program exits at EOF), then stops it by pid if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.returncode is None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
        await _reap(proc)
        if self._drain is not None:
            await asyncio.gather(self._drain, return_exceptions=True)


class ProcessAdapter:
    """The harness's side of a program that implements the process contract.

    ``program`` returns the command that starts it (built on first call if need be), to which the subcommand is
    appended. ``capabilities``, ``dlq_table`` and ``budget`` are declared by the concrete adapter, as for any
    adapter; ``timings`` too, by overriding :meth:`timings` if it reclaims by its own mechanism."""

    def __init__(self, name: str, capabilities: Capabilities, program: Callable[[], Sequence[str]], *,
                 dlq_table: str | None = None,
                 budget: Callable[[ConsumerConfig], int | None] | None = None,
                 version: Callable[[], str] | None = None) -> None:
        self.name = name
        self.capabilities = capabilities
        self.dlq_table = dlq_table
        self._program = program
        self._budget = budget
        self._version = version

    @property
    def version(self) -> str | None:
        """The library version under test (a verdict is about one version), as the concrete adapter reads it from
        what its program runs with: the lock file's installed package, the go.mod requirement. None if undeclared
        or unreadable here; the report then says it is unknown."""
        if self._version is None:
            return None
        try:
            return self._version()
        except (OSError, ValueError, KeyError, ProgramUnavailable):
            return None

    def program(self) -> list[str]:
        return list(self._program())

    def unavailable(self) -> str | None:
        """Why the program cannot run here (built now if need be), or None."""
        try:
            self.program()
        except ProgramUnavailable as exc:
            return str(exc)
        return None

    def command(self, spec_path: Path) -> list[str]:
        """What the supervisor executes for one consumer incarnation (the WorkerSpec JSON at ``spec_path``)."""
        return [*self.program(), "consume", str(spec_path)]

    def connection_budget(self, config: ConsumerConfig) -> int | None:
        return self._budget(config) if self._budget is not None else None

    async def create_schema(self, dsn: str, config: ConsumerConfig) -> None:
        await ask([*self.program(), "schema"], {"dsn": dsn, "config": config.to_dict()})

    async def read_state(self, dsn: str) -> OutboxState:
        reply = await ask([*self.program(), "state"], {"dsn": dsn})
        try:
            return OutboxState(pending=[base64.b64decode(p) for p in reply["pending"]],
                               dead=[base64.b64decode(p) for p in reply["dead"]])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProcessError(f"{self.name} state answered {str(reply)[:200]}") from exc

    def publisher(self, dsn: str, config: ConsumerConfig) -> ProcessPublisher:
        return ProcessPublisher([*self.program(), "publish"], dsn, config)

    async def publish(self, tx: PublishTx, payloads: Sequence[bytes], queue: str) -> None:
        raise NotImplementedError(f"{self.name} publishes in its own program's transaction: use publisher()")

    async def consume(self, ctx: ConsumerContext) -> None:
        raise NotImplementedError(f"{self.name} consumes in its own program: the supervisor runs command()")
