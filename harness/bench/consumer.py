"""The measured phases: an implementation's consumer draining a backlog, then woken by single messages.

The consumer is ``harness.worker`` under :class:`harness.supervisor.Supervisor`, the same process the
chaos and sizing runs start, never restarted here (a crash is a finding). Its figures come from its
history as it is written: the :class:`harness.worker.Noop` handler's ``worker`` events for the drain,
its ``deliver`` invokes for the wake-up probes.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.adapter import Adapter, ConsumerConfig
from harness.bench.config import BenchConfig, PhaseError, consumer_config
from harness.bench.db import publish, until_empty
from harness.history import Event, HistoryWriter, Tail
from harness.payload import numbered
from harness.stats import percentile
from harness.supervisor import Supervisor

#: How often the consumer's history is read while waiting for one of its events: seldom enough to
#: take next to no CPU from the consumer being measured (polling every millisecond cost 5-7 % of a core).
POLL_SECONDS = 0.005


def worker_event(name: str) -> Callable[[Event], bool]:
    return lambda e: e.f == "worker" and e.value.get("event") == name


def delivered(seq: int) -> Callable[[Event], bool]:
    mid = str(seq)
    return lambda e: e.f == "deliver" and e.type == "invoke" and e.mid == mid


class Consumer:
    """One consumer process for one phase, and its history as it is written."""

    NAME = "w1"

    def __init__(self, impl: str, dsn: str, config: ConsumerConfig, handler: dict[str, Any], workdir: Path,
                 history: HistoryWriter) -> None:
        workdir.mkdir(parents=True)
        self.supervisor = Supervisor(impl=impl, dsn=dsn, workdir=workdir, config=config.to_dict(), handler=handler,
                                     history=history)
        slot = self.supervisor.add(self.NAME)
        self.process = slot.process
        self.tail = Tail(self.supervisor.history_path(slot.process))
        self.unread: deque[Event] = deque()  # read from the history, not yet waited for
        self.exit: Event | None = None  # its ``exited`` or ``refused`` event

    async def wait_for(self, match: Callable[[Event], bool], timeout: float) -> Event:
        """The next event ``match`` accepts; PhaseError on a timeout, or if the consumer ends first."""
        deadline = time.monotonic() + timeout
        while True:
            running = self.supervisor.alive(self.NAME)  # before reading: a late exit's events are still read
            self.unread.extend(self.tail.read())
            while self.unread:
                event = self.unread.popleft()
                if self._ended(event):
                    message = event.value.get("message") or "consume returned before it was asked to stop"
                    raise PhaseError(f"consumer failed: {message}{self._log_tail()}")
                if match(event):
                    return event
            if not running:
                code = self.supervisor.wait_exit(self.NAME, 5.0)
                raise PhaseError(f"consumer process exited (code {code}) without reporting{self._log_tail()}")
            if time.monotonic() > deadline:
                raise PhaseError(f"timed out after {timeout:.0f} s")
            await asyncio.sleep(POLL_SECONDS)

    async def stop(self, timeout: float) -> Event | None:
        """SIGTERM, then SIGKILL by pid after ``timeout``; its exit event (None if it never wrote one)."""
        await self.supervisor.stop_all(timeout)
        for event in (*self.unread, *self.tail.read()):
            self._ended(event)
        self.unread.clear()
        return self.exit

    def _ended(self, event: Event) -> bool:
        if event.f == "worker" and event.value.get("event") in ("exited", "refused"):
            self.exit = event
            return True
        return False

    def _log_tail(self) -> str:
        try:
            text = self.supervisor.log_path(self.process).read_text(errors="replace")
        except OSError:
            return ""
        lines = [s.rstrip() for s in text.splitlines() if s.strip()]
        return (" | last stderr: " + " / ".join(lines[-3:]))[:600] if lines else ""


async def measure_drain(adapter: Adapter, impl: str, dsn: str, config: BenchConfig, row: dict[str, Any],
                        workdir: Path, history: HistoryWriter) -> None:
    """Drain throughput of the ``messages`` already published: from the consumer's ``ready`` until
    ``read_state`` shows nothing pending (acknowledgements included)."""
    n = config.messages
    consumer = Consumer(impl, dsn, consumer_config(config), {"noop": True, "expect": n}, workdir, history)
    try:
        ready = await consumer.wait_for(worker_event("ready"), config.start_timeout_seconds)
        row["ready_rss_mb"] = ready.value["rss_mb"]
        try:
            done = await consumer.wait_for(worker_event("drained"), config.timeout_seconds)
        except PhaseError as exc:
            last = consumer.exit or await consumer.stop(config.stop_timeout_seconds)
            got = f"; {last.value['unique']} of {n} delivered" if last else ""
            raise PhaseError(f"drain: {exc}{got}") from None
        first, last_t = done.value["first"], done.value["last"]
        row["peak_rss_mb"] = done.value["peak_rss_mb"]
        row["startup_ms"] = round((first - ready.t) * 1000, 1)
        row["delivery_msgs_per_s"] = round(n / (last_t - ready.t), 1)
        emptied, state = await until_empty(adapter, dsn, config.settle_timeout_seconds)
        if emptied is None:
            end = last_t
            row["notes"].append(f"drain: {len(state.pending)} of {n} still pending "
                                f"{config.settle_timeout_seconds:.0f} s after the last delivery; "
                                f"throughput counts deliveries only")
        else:
            end = max(emptied, last_t)
            row["ack_tail_ms"] = round((end - last_t) * 1000, 1)
        if state.dead:
            row["notes"].append(f"drain: {len(state.dead)} dead-lettered")
        row["drain_seconds"] = round(end - ready.t, 3)
        row["throughput_msgs_per_s"] = round(n / (end - ready.t), 1)
    finally:
        exit_event = await consumer.stop(config.stop_timeout_seconds)
    if exit_event is None:
        row["notes"].append(f"drain: the consumer did not stop within {config.stop_timeout_seconds:.0f} s of SIGTERM")
    else:
        row["duplicates"] = exit_event.value["deliveries"] - exit_event.value["unique"]
        if exit_event.value.get("message"):
            row["notes"].append(f"drain: stop: {exit_event.value['message']}")


async def measure_probes(adapter: Adapter, impl: str, dsn: str, config: BenchConfig, row: dict[str, Any],
                         workdir: Path, history: HistoryWriter) -> None:
    """Idle wake-up latency: single messages, each published once the previous one has left the state;
    from just before COMMIT (``time.monotonic`` here) to the handler's ``deliver`` invoke
    (``time.monotonic`` in the worker: one clock on Linux)."""
    cc = consumer_config(config)
    consumer = Consumer(impl, dsn, cc, {"noop": True}, workdir, history)
    wait = cc.max_fetch_interval + 10  # a delivery may take one polling interval without a wake-up
    latencies: list[float] = []
    try:
        await consumer.wait_for(worker_event("ready"), config.start_timeout_seconds)
        warm = config.messages  # sequence numbers after the drain's
        await publish(adapter, dsn, [numbered(warm, config.payload_bytes)], 1)
        try:
            await consumer.wait_for(delivered(warm), wait + 20)
        except PhaseError as exc:
            raise PhaseError(f"probes: warm-up message: {exc}") from None
        await until_empty(adapter, dsn, 10.0)
        await asyncio.sleep(1.0)  # idle: every start-up fetch is over
        deadline = time.monotonic() + config.probe_timeout_seconds
        for k in range(config.probes):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                row["notes"].append(f"probes: {len(latencies)} of {config.probes} within the "
                                    f"{config.probe_timeout_seconds:.0f} s probe phase")
                break
            seq = warm + 1 + k
            t0 = await publish(adapter, dsn, [numbered(seq, config.payload_bytes)], 1)
            try:
                event = await consumer.wait_for(delivered(seq), min(wait, remaining))
            except PhaseError as exc:
                if "timed out" in str(exc) and remaining < wait:
                    row["notes"].append(f"probes: {len(latencies)} of {config.probes} within the "
                                        f"{config.probe_timeout_seconds:.0f} s probe phase")
                    break
                raise PhaseError(f"probes: probe {k + 1}: {exc}") from None
            latencies.append(event.t - t0)
            emptied, _ = await until_empty(adapter, dsn, 10.0)
            if emptied is None:
                raise PhaseError(f"probes: probe {k + 1} delivered but still pending 10 s later")
            await asyncio.sleep(0.01)
    finally:
        if latencies:
            row["probes"] = len(latencies)
            row["notify_p50_ms"] = round(statistics.median(latencies) * 1000, 3)
            row["notify_p99_ms"] = round(percentile(latencies, 99) * 1000, 3)
            row["notify_max_ms"] = round(max(latencies) * 1000, 3)
        exit_event = await consumer.stop(config.stop_timeout_seconds)
        if exit_event is not None and exit_event.value.get("message"):
            row["notes"].append(f"probes: stop: {exit_event.value['message']}")
