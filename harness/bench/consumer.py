"""The measured phases: an implementation's consumer draining a backlog, then woken by single messages.

The consumer is ``harness.worker`` under :class:`harness.supervisor.Supervisor`, the same process the
chaos and sizing runs start, never restarted here (a crash is a finding). Its figures come from its
history as it is written: the :class:`harness.worker.Noop` handler's ``worker`` events for the drain,
its ``deliver`` invokes for the wake-up probes.
"""

from __future__ import annotations

import asyncio
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
        self.progress: list[Event] = []  # the no-op handler's ``progress`` events read so far
        self.exit: Event | None = None  # its ``exited`` or ``refused`` event

    async def wait_for(self, match: Callable[[Event], bool], timeout: float) -> Event:
        """The next event ``match`` accepts; PhaseError on a timeout, or if the consumer ends first."""
        deadline = time.monotonic() + timeout
        while True:
            running = self.supervisor.alive(self.NAME)  # before reading: a late exit's events are still read
            for event in self.tail.read():
                self.unread.append(event)
                if event.f == "worker" and event.value.get("event") == "progress":
                    self.progress.append(event)
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


async def measure_drain(adapter: Adapter, impl: str, dsn: str, config: BenchConfig, workdir: Path,
                        history: HistoryWriter) -> dict[str, Any]:
    """One drain of the ``messages`` already in ``dsn``: from the consumer's ``ready`` until ``read_state``
    shows nothing pending (acknowledgements included). A drain still running after ``drain_cap_seconds`` is
    stopped and reports the delivery rate it had reached (``capped``). Memory: resident set at ``ready``
    (start), at the end, its peak (``VmHWM``), and how it moved from a tenth of the drain to the end. CPU: the
    consumer process's CPU time per message from ``ready`` to the last delivery."""
    n = config.messages
    consumer = Consumer(impl, dsn, consumer_config(config), {"noop": True, "expect": n}, workdir, history)
    figures: dict[str, Any] = {"notes": [], "capped": False}
    try:
        ready = await consumer.wait_for(worker_event("ready"), config.start_timeout_seconds)
        try:
            done = await consumer.wait_for(worker_event("drained"), config.drain_cap_seconds)
        except PhaseError as exc:
            if not str(exc).startswith("timed out"):
                raise PhaseError(f"drain: {exc}") from None
            return _capped(figures, ready, consumer, n, config.drain_cap_seconds)
        first, last_t = done.value["first"], done.value["last"]
        figures["startup_ms"] = round((first - ready.t) * 1000, 1)
        figures["delivery_msgs_per_s"] = round(n / (last_t - ready.t), 1)
        figures["rss_mb"] = _memory(ready, consumer.progress, done)
        figures["cpu_us_per_msg"] = round((done.value["cpu_s"] - ready.value["cpu_s"]) / n * 1e6, 2)
        emptied, state = await until_empty(adapter, dsn, config.settle_timeout_seconds)
        if emptied is None:
            end = last_t
            figures["notes"].append(f"drain: {len(state.pending)} of {n} still pending "
                                    f"{config.settle_timeout_seconds:.0f} s after the last delivery; "
                                    f"throughput counts deliveries only")
        else:
            end = max(emptied, last_t)
            figures["ack_tail_ms"] = round((end - last_t) * 1000, 1)
        if state.dead:
            figures["notes"].append(f"drain: {len(state.dead)} dead-lettered")
        figures["drain_seconds"] = round(end - ready.t, 3)
        figures["throughput_msgs_per_s"] = round(n / (end - ready.t), 1)
    finally:
        exit_event = await consumer.stop(config.stop_timeout_seconds)
        if exit_event is None:
            figures["notes"].append(f"drain: the consumer did not stop within {config.stop_timeout_seconds:.0f} s "
                                    f"of SIGTERM")
        else:
            figures["duplicates"] = exit_event.value["deliveries"] - exit_event.value["unique"]
            if exit_event.value.get("message"):
                figures["notes"].append(f"drain: stop: {exit_event.value['message']}")
    return figures


def _capped(figures: dict[str, Any], ready: Event, consumer: Consumer, n: int, cap: float) -> dict[str, Any]:
    """The rate a drain stopped at its cap had reached, from its last ``progress`` event."""
    if not consumer.progress:
        raise PhaseError(f"drain: fewer than {max(1, n // 100)} of {n} delivered within the {cap:.0f} s cap")
    last = consumer.progress[-1]
    figures["capped"] = True
    figures["delivered"] = last.value["unique"]
    figures["drain_seconds"] = round(last.t - ready.t, 3)
    figures["throughput_msgs_per_s"] = figures["delivery_msgs_per_s"] = round(
        last.value["unique"] / (last.t - ready.t), 1)
    figures["rss_mb"] = _memory(ready, consumer.progress, last)
    figures["notes"].append(f"drain stopped at the {cap:.0f} s cap with {last.value['unique']:,} of {n:,} "
                            f"delivered: the rate it had reached (deliveries, acks not counted)")
    return figures


def _memory(ready: Event, progress: list[Event], end: Event) -> dict[str, float]:
    """Resident MiB at ``ready``, at a tenth of the drain (warmed up), at its end, and the peak (``VmHWM``):
    a consumer whose memory grows with the number of messages shows ``end`` above ``tenth``."""
    tenth = progress[max(0, len(progress) // 10 - 1)] if progress else end
    return {"start": ready.value["rss_mb"], "tenth": tenth.value["rss_mb"], "end": end.value["rss_mb"],
            "peak": end.value["peak_rss_mb"]}


async def measure_probes(adapter: Adapter, impl: str, dsn: str, config: BenchConfig, notify: bool,
                         figures: dict[str, Any], workdir: Path, history: HistoryWriter) -> None:
    """Idle wake-up latency: single messages, each published once the previous one has left the state;
    from just before COMMIT (``time.monotonic`` here) to the handler's ``deliver`` invoke
    (``time.monotonic`` in the worker: one clock on Linux). ``probes`` of them for an implementation with a
    wake-up mechanism; ``polling_probes`` for one without, since each may wait a whole polling interval.
    Figures go into ``figures`` as they are known (``notes`` a list), so a failed probe keeps the others."""
    cc = consumer_config(config)
    count = config.probes if notify else config.polling_probes
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
        for k in range(count):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                figures["notes"].append(f"probes: {len(latencies)} of {count} within the "
                                        f"{config.probe_timeout_seconds:.0f} s probe phase")
                break
            seq = warm + 1 + k
            t0 = await publish(adapter, dsn, [numbered(seq, config.payload_bytes)], 1)
            try:
                event = await consumer.wait_for(delivered(seq), min(wait, remaining))
            except PhaseError as exc:
                if "timed out" in str(exc) and remaining < wait:
                    figures["notes"].append(f"probes: {len(latencies)} of {count} within the "
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
            figures["probes"] = len(latencies)
            figures["notify_p50_ms"] = round(percentile(latencies, 50) * 1000, 3)
            figures["notify_p99_ms"] = round(percentile(latencies, 99) * 1000, 3)
            figures["notify_max_ms"] = round(max(latencies) * 1000, 3)
        exit_event = await consumer.stop(config.stop_timeout_seconds)
        if exit_event is not None and exit_event.value.get("message"):
            figures["notes"].append(f"probes: stop: {exit_event.value['message']}")
