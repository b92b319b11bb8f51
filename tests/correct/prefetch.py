"""A prefetching lease outbox: one fetch loop claims rows into a bounded in-memory buffer, and
``max_workers`` worker tasks take them from there and run the handler.

Rows can therefore wait in the buffer a while after their lease started and before their handler
does, which is the point: the harness must judge leases by when they were taken, not by when a
handler started. The implementation reports no database-clock lease time (``lease_at=None``), so
the harness can only see handler starts.

Shape:

- fetch loop (one connection): claims ``min(fetch_batch_size, free buffer slots)`` rows, leased until
  ``now() + lease_ttl_seconds`` by the database clock; claims again at once after a full batch,
  otherwise polls from ``min_fetch_interval`` up to ``max_fetch_interval``; after a connection error it
  reconnects with a short jittered back-off, forever;
- buffer: an ``asyncio.Queue`` of ``2 × max_workers`` rows;
- workers (one connection each, opened when first needed): a row whose lease has surely run out while
  it was buffered is handed back, not handled (its next holder may be running it already); otherwise
  the handler runs and the row is completed, retried or dead-lettered by its token;
- stop: fetching ends at once, buffered rows are handed back (token-guarded), in-flight handlers get
  ``graceful_timeout`` and are then cancelled (their rows keep the lease and come back after it).

Connections: at most ``max_workers + 1``, the declared budget. No LISTEN: polling only.

``eager`` is the same outbox without the hand-back of expired buffered rows: a handler may then start
on a lease that has already run out (still never two live leases on a row; the stale call's writes
match nothing and are reported ``lease_lost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from harness.adapter import Capabilities, ConsumerConfig
from tests.correct._consumer import Claimed, LeaseAdapter, LeaseConsumer
from tests.correct._lease import LeaseTable, Link, close_all

log = logging.getLogger("tests.correct.prefetch")


class PrefetchConsumer(LeaseConsumer):
    log = log
    hand_back_expired = True  # a buffered row whose lease surely ran out is handed back, not handled
    buffer: asyncio.Queue[Claimed | None]
    space: asyncio.Event  # set when a worker takes a row out of the buffer

    async def run(self, stopping: asyncio.Event) -> None:
        self.stopping = stopping
        self.buffer = asyncio.Queue(maxsize=2 * self.config.max_workers)
        self.space = asyncio.Event()
        fetch_link = self.link()
        worker_links = [self.link() for _ in range(self.config.max_workers)]
        fetcher = self.spawn(self.claim_loop(fetch_link, self.space), "prefetch-fetch")
        workers = [self.spawn(self.work_loop(link), f"prefetch-worker-{i}") for i, link in enumerate(worker_links)]
        try:
            await stopping.wait()
            await self.drain(fetcher, workers, fetch_link)
        finally:
            for task in (fetcher, *workers):
                task.cancel()
            await asyncio.gather(fetcher, *workers, return_exceptions=True)
            await close_all([fetch_link, *worker_links])

    def room(self) -> int:
        return self.buffer.maxsize - self.buffer.qsize()

    def accept(self, rows: list[Claimed]) -> None:
        for row in rows:
            self.buffer.put_nowait(row)  # never blocks: at most room() rows were claimed

    async def drain(self, fetcher: asyncio.Task[None], workers: list[asyncio.Task[None]], link: Link) -> None:
        """Graceful stop within ``graceful_timeout``: no new claims, buffered rows back, handlers finish."""
        deadline = time.monotonic() + self.config.graceful_timeout
        await self.end_claiming(fetcher, deadline)
        unstarted = []
        while not self.buffer.empty():
            row = self.buffer.get_nowait()
            if row is not None:
                unstarted.append(row)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.release(unstarted, link), timeout=max(0.05, deadline - time.monotonic()))
        for _ in workers:  # wakes idle workers; busy ones stop after their current row
            self.buffer.put_nowait(None)
        _, late = await asyncio.wait(workers, timeout=max(0.0, deadline - time.monotonic()))
        if late:
            log.warning("graceful_timeout=%ss passed with %d handlers running; cancelling them, their rows come "
                        "back after lease_ttl_seconds", self.config.graceful_timeout, len(late))

    async def work_loop(self, link: Link) -> None:
        while not self.stopping.is_set():
            row = await self.buffer.get()
            self.space.set()
            if row is None:
                return
            try:
                if self.stopping.is_set():  # taken just as the stop came: hand it back
                    await self.release([row], link)
                    return
                if self.hand_back_expired and time.monotonic() >= row.expires:
                    log.info("row %s waited out its lease in the buffer; handing it back", row.id)
                    await self.release([row], link)
                    continue
                await self.deliver(row, link)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a worker outlives anything; the lease decides the row
                log.exception("worker failed on row %s; it comes back after its lease", row.id)


class PrefetchAdapter(LeaseAdapter):
    name = "prefetch"
    capabilities = Capabilities(
        lease_ttl=True, lease_times=False, settle_outcomes=True, graceful_drain=True, dlq=True,
        max_deliveries=True, retry_schedule=True, connection_budget=True, metrics=False, notify=False,
        prefetch=True,
        notes=("prefetching lease outbox (tests/correct/prefetch.py): rows wait in a 2 × max_workers buffer "
               "before their handler starts; claims are reported (ctx.claimed), no DB-clock lease time; polling "
               "only, no LISTEN; no metrics"),
    )
    consumer_class = PrefetchConsumer
    table = LeaseTable("prefetch_outbox")

    def connection_budget(self, config: ConsumerConfig) -> int:
        return config.max_workers + 1  # the fetch loop's connection and one per worker


class EagerPrefetchConsumer(PrefetchConsumer):
    hand_back_expired = False


class EagerPrefetchAdapter(PrefetchAdapter):
    name = "prefetch_eager"
    consumer_class = EagerPrefetchConsumer


class SilentPrefetchAdapter(PrefetchAdapter):
    """Reports neither claims nor lease times: the harness sees only handler starts of prefetched rows."""

    name = "prefetch_silent"
    reports_claims = False


adapter = PrefetchAdapter()
eager = EagerPrefetchAdapter()
silent = SilentPrefetchAdapter()
