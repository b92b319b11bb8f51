"""The generator: what the publishers send, and when, in transactions the harness owns.

Each transaction writes one business row per message plus the outbox rows through the adapter, and is
committed or rolled back on purpose (P1). Every step is an event in the history: the invoke names the
message ids, which of them are poison and whether the transaction will be rolled back; the completion says
what happened (ok: committed; fail: definitely not committed; info: the COMMIT raised, outcome unknown until
:func:`resolve_unknown` looks for the business rows).
"""

from __future__ import annotations

import asyncio
import random
import time

from sqlalchemy.ext.asyncio import create_async_engine

from harness import business
from harness.adapter import Adapter, PublishTx, TxPublisher
from harness.history import HistoryWriter
from harness.names import PUBLISHER_APP
from harness.payload import encode
from harness.provision.postgres import asyncpg_url
from harness.scenario import Scenario


class Publisher:
    """Publishes the workload of one scenario; message ids are ``m1``, ``m2``, ... in publish order."""

    def __init__(self, adapter: Adapter, dsn: str, scenario: Scenario, history: HistoryWriter,
                 rng: random.Random) -> None:
        self.adapter = adapter
        self.scenario = scenario
        self.workload = scenario.workload
        self.history = history
        self.rng = rng
        self.count = 0
        self.unknown: set[str] = set()  # COMMIT raised: resolved after the run by the business rows
        self.engine = create_async_engine(
            asyncpg_url(dsn), pool_size=2, max_overflow=0, pool_pre_ping=True,
            connect_args={"timeout": 3, "command_timeout": 5, "server_settings": {"application_name": PUBLISHER_APP}},
        )
        # An implementation that cannot join the harness's transaction runs each one in its own publisher.
        own = getattr(adapter, "publisher", None)
        self.own: TxPublisher | None = own(dsn, scenario.config) if callable(own) else None

    async def run(self, total: int, poison: int = 0) -> None:
        """``total`` messages at the workload's rate, ``poison`` of them spread evenly."""
        w = self.workload
        poison_left = poison
        poison_every = max(1, total // poison) if poison else 0
        interval = w.batch / w.rate if w.rate > 0 else 0.0
        sent = 0
        next_at = time.monotonic()
        while sent < total:
            n = min(w.batch, total - sent)
            kinds = []
            for i in range(n):
                bad = bool(poison_left) and (sent + i) % poison_every == 0
                poison_left -= bad
                kinds.append(bad)
            await self.publish(kinds, rollback=self.rng.random() < w.rollback_fraction)
            sent += n
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def probe(self, n: int, interval: float) -> None:
        """Idle single-message publishes: wake-up latency (D7) and polling fallback (D8)."""
        for _ in range(n):
            await self.publish([False], probe=True)
            await asyncio.sleep(interval)

    async def close(self) -> None:
        if self.own is not None:
            await self.own.close()
        await self.engine.dispose()

    def _next_ids(self, n: int) -> list[str]:
        self.count += n
        return [f"m{i}" for i in range(self.count - n + 1, self.count + 1)]

    def _scripted(self, mid: str) -> bool:
        every = self.workload.script_every
        return bool(every and self.workload.script and int(mid[1:]) % every == 0)

    async def publish(self, kinds: list[bool], *, rollback: bool = False, probe: bool = False) -> None:
        mids = self._next_ids(len(kinds))
        scripted = [m for m in mids if self._scripted(m) and not probe]
        payloads = [encode(m, pad=self.workload.pad, poison=p, script=self.workload.script if m in scripted else None)
                    for m, p in zip(mids, kinds)]
        poison = [m for m, p in zip(mids, kinds) if p]
        self.history.record("invoke", "publish", mids=mids, rollback=rollback, probe=probe,
                            **({"poison": poison} if poison else {}), **({"scripted": scripted} if scripted else {}))
        if self.own is not None:
            await self._publish_own(self.own, mids, payloads, rollback, probe)
            return
        committing = False
        try:
            async with self.engine.connect() as conn:
                tx, ptx = await PublishTx.begin(conn)
                await ptx.connection.execute(business.INSERT, mids)
                await self.adapter.publish(ptx, payloads, self.scenario.config.queue)
                if rollback:
                    await tx.rollback()
                    self.history.record("fail", "publish", mids=mids, rollback=True, probe=probe)
                    return
                committing = True
                await tx.commit()
        except Exception as exc:  # noqa: BLE001 - the outcome is the data
            kind = "info" if committing else "fail"  # a failed COMMIT may or may not have happened
            if committing:
                self.unknown.update(mids)
            self.history.record(kind, "publish", mids=mids, rollback=False, probe=probe,
                                error=f"{type(exc).__name__}: {exc}"[:300])
            return
        self.history.record("ok", "publish", mids=mids, probe=probe)

    async def _publish_own(self, own: TxPublisher, mids: list[str], payloads: list[bytes], rollback: bool,
                           probe: bool) -> None:
        """The same transaction (business rows, messages, commit or roll back as decided) run by the
        implementation's own publisher, which reports what happened."""
        out = await own.publish_tx(mids, payloads, rollback, queue=self.scenario.config.queue)
        if out.ok:
            if rollback:
                self.history.record("fail", "publish", mids=mids, rollback=True, probe=probe)
            else:
                self.history.record("ok", "publish", mids=mids, probe=probe)
            return
        if not out.definite:  # COMMIT was sent: resolved after the run by the business rows
            self.unknown.update(mids)
        self.history.record("fail" if out.definite else "info", "publish", mids=mids, rollback=False, probe=probe,
                            error=out.error or "")

    async def resolve_unknown(self, dsn: str) -> None:
        """A publish whose COMMIT raised is resolved by looking for its business rows."""
        if not self.unknown:
            return
        found = await business.committed(dsn, sorted(self.unknown))
        self.history.record("info", "resolve", committed=sorted(found), absent=sorted(self.unknown - found))
