"""A heartbeat lease outbox: short leases that live only as long as the holder keeps renewing them.

A claimed row is leased until ``now() + lease_ttl_seconds`` (database clock) and handed at once to a
handler task of its own; a heartbeat renews every held lease to ``now() + lease_ttl_seconds`` every
``lease_ttl_seconds / 3``, in one token-guarded statement. A live handler therefore never loses its row
however slow it is, while a dead worker's rows come back at most ``lease_ttl_seconds`` after its last
heartbeat. A lease the heartbeat could not renew (it was taken over after an outage longer than the
TTL) is logged; the handler's completion then matches nothing and is reported ``lease_lost``.

Shape: one claim loop (claims only as many rows as there are free handler slots, so nothing waits in
memory), one heartbeat loop, at most ``max_workers`` handler tasks. Each task borrows one of
``max_workers`` connections for its completion write. Connections: at most ``max_workers + 2``.
Stop: claiming ends at once, handlers get ``graceful_timeout`` with their leases still renewed, then
are cancelled; the heartbeat stops last, so a cut-off row comes back one TTL later.
No database-clock lease time is reported; polling only.
"""

from __future__ import annotations

from dataclasses import replace

import asyncio
import logging
import time
import uuid

from harness.adapter import Capabilities, ConsumerConfig, ConsumerContext, Timings
from tests.correct._consumer import Claimed, LeaseAdapter, LeaseConsumer
from tests.correct._lease import LeaseTable, Link, Outage, close_all

log = logging.getLogger("tests.correct.heartbeat")


class HeartbeatConsumer(LeaseConsumer):
    log = log
    held: dict[uuid.UUID, Claimed]  # rows whose handler is running, by lease token
    tasks: set[asyncio.Task[None]]
    links: asyncio.Queue[Link]  # completion connections, one per handler slot
    slot_freed: asyncio.Event

    async def run(self, stopping: asyncio.Event) -> None:
        self.stopping = stopping
        self.held, self.tasks, self.slot_freed = {}, set(), asyncio.Event()
        self.links = asyncio.Queue()
        own = [self.link() for _ in range(self.config.max_workers)]
        for link in own:
            self.links.put_nowait(link)
        claim_link, beat_link = self.link(), self.link()
        claimer = self.spawn(self.claim_loop(claim_link, self.slot_freed), "heartbeat-claim")
        beater = self.spawn(self.heartbeat_loop(beat_link), "heartbeat-renew")
        try:
            await stopping.wait()
            deadline = time.monotonic() + self.config.graceful_timeout
            await self.end_claiming(claimer, deadline)
            if self.tasks:
                _, late = await asyncio.wait(set(self.tasks), timeout=max(0.0, deadline - time.monotonic()))
                if late:
                    log.warning("graceful_timeout=%ss passed with %d handlers running; cancelling them, their rows"
                                " come back one lease_ttl_seconds after the last heartbeat",
                                self.config.graceful_timeout, len(late))
        finally:
            tasks = [claimer, *self.tasks, beater]  # a snapshot: done callbacks shrink self.tasks
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await close_all([claim_link, beat_link, *own])

    def room(self) -> int:
        return self.config.max_workers - len(self.tasks)

    def accept(self, rows: list[Claimed]) -> None:
        for row in rows:
            task = self.spawn(self.handle(row), f"heartbeat-row-{row.id}")
            self.tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.slot_freed.set()

    async def handle(self, row: Claimed) -> None:
        link = self.links.get_nowait()  # one connection per slot: never more tasks than slots
        self.held[row.token] = row
        try:
            await self.deliver(row, link)
        finally:
            self.held.pop(row.token, None)
            self.links.put_nowait(link)

    async def heartbeat_loop(self, link: Link) -> None:
        """Renews every held lease each TTL/3; keeps running through the drain, until cancelled."""
        ttl = self.config.lease_ttl_seconds
        outage = Outage(log, "lease heartbeat")
        while True:
            await asyncio.sleep(ttl / 3)
            rows = list(self.held.values())
            if not rows:
                continue
            try:
                renewed = {r[0] for r in await link.fetch(self.table.extend, [r.id for r in rows],
                                                          [r.token for r in rows], ttl)}
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - tried again at the next beat, while the lease lasts
                outage.failed(exc)
                continue
            outage.ok()
            lost = [r.id for r in rows if r.token not in renewed and r.token in self.held]
            if lost:
                log.warning("leases of rows %s were taken over before they could be renewed", lost[:10])
                for r in rows:
                    if r.token not in renewed:
                        self.held.pop(r.token, None)  # stop renewing: the completion will say lease_lost


class HeartbeatAdapter(LeaseAdapter):
    name = "heartbeat"
    capabilities = Capabilities(
        lease_ttl=True, lease_times=False, settle_outcomes=True, graceful_drain=True, dlq=True,
        max_deliveries=True, retry_schedule=True, connection_budget=True, metrics=False, notify=False,
        notes=("heartbeat lease outbox (tests/correct/heartbeat.py): leases of running handlers are renewed "
               "every lease_ttl_seconds / 3, so only a dead or cut-off worker's rows are reclaimed; no DB-clock "
               "lease time is reported; polling only, no LISTEN; no metrics"),
    )
    consumer_class = HeartbeatConsumer
    table = LeaseTable("heartbeat_outbox")

    def connection_budget(self, config: ConsumerConfig) -> int:
        return config.max_workers + 2  # claim loop, heartbeat, and one per handler slot


class FixedTimeoutHeartbeatAdapter(HeartbeatAdapter):
    """The same outbox with a heartbeat timeout of its own, whatever lease the scenario asks for (as libraries with a
    fixed or minimum heartbeat timeout have): it declares when a dead holder's rows come back (``timings``), so the
    scenarios that need reclaims run on a clock slow enough for it."""

    name = "heartbeat_fixed_timeout"
    capabilities = replace(HeartbeatAdapter.capabilities, lease_ttl=False,
                           notes="heartbeat outbox with its own heartbeat timeout of 6 s, every 2 s")
    timeout_s = 6.0

    def timings(self, config: ConsumerConfig) -> Timings:
        beat = self.timeout_s / 3
        return Timings(reclaim_seconds=self.timeout_s - beat, reclaim_window_seconds=beat + 1.0)

    async def consume(self, ctx: ConsumerContext) -> None:
        ctx.config = replace(ctx.config, lease_ttl_seconds=self.timeout_s)
        await super().consume(ctx)


adapter = HeartbeatAdapter()
fixed_timeout = FixedTimeoutHeartbeatAdapter()
