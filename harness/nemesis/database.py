"""Database faults: crash-restart the server, hog its connection slots, break the DLQ schema."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from harness.nemesis.base import FaultNotApplied
from harness.provision.postgres import PostgresServer, ProvisioningError


class CrashRestart:
    """``pg_ctl stop -m immediate`` then start: every connection dies, committed data must stay (P2)."""

    kind = "pg_crash_restart"

    def __init__(self, server: PostgresServer, down_seconds: float = 1.0) -> None:
        self.server = server
        self.down_seconds = down_seconds

    def start(self) -> dict[str, Any]:
        if not self.server.embedded:
            raise FaultNotApplied("crash-restart needs the harness's own server; unset DATABASE_URL")
        old_pid = self.server.pid
        self.server.crash()
        return {"old_pid": old_pid}

    def stop(self) -> dict[str, Any]:
        try:
            self.server.start()
        except ProvisioningError as exc:
            raise FaultNotApplied(f"server did not come back: {exc}") from exc
        return {"new_pid": self.server.pid}


class ConnectionHog:
    """Occupies server connection slots so fewer than the consumers' budget remain (L3).

    Equivalent, for the consumers, to a ``max_connections`` below the budget,
    without restarting the server; releasing the hog is the repair.
    """

    kind = "max_connections"

    def __init__(self, admin_dsn: str, leave_free: int) -> None:
        self.admin_dsn = admin_dsn
        self.leave_free = leave_free
        self._conns: list[asyncpg.Connection] = []
        self._loop = asyncio.new_event_loop()

    def start(self) -> dict[str, Any]:
        return self._loop.run_until_complete(self._hog())

    async def _hog(self) -> dict[str, Any]:
        probe = await asyncpg.connect(self.admin_dsn)
        try:
            limit = int(await probe.fetchval("SHOW max_connections"))
            reserved = int(await probe.fetchval("SHOW superuser_reserved_connections"))
            used = int(await probe.fetchval("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"))
        finally:
            await probe.close()
        # Superusers may use the reserved slots too; hog every slot but leave_free.
        want = limit - used - self.leave_free
        for _ in range(max(0, want)):
            try:
                self._conns.append(await asyncpg.connect(self.admin_dsn, server_settings={"application_name": "harness-hog"}))
            except (asyncpg.TooManyConnectionsError, asyncpg.PostgresError, OSError):
                break
        if len(self._conns) < want - reserved:
            raise FaultNotApplied(f"could hold only {len(self._conns)} of {want} slots")
        return {"max_connections": limit, "held": len(self._conns), "left_free": limit - used - len(self._conns)}

    def stop(self) -> dict[str, Any]:
        held = len(self._conns)
        self._loop.run_until_complete(asyncio.gather(*(c.close() for c in self._conns), return_exceptions=True))
        self._conns.clear()
        self._loop.close()
        return {"released": held}


class DlqDrift:
    """A DDL change that makes every dead-letter insert fail, then its repair (R3, R4)."""

    kind = "dlq_drift"
    CONSTRAINT = "harness_dlq_drift"

    def __init__(self, dsn: str, dlq_table: str | None) -> None:
        if dlq_table is None:
            raise FaultNotApplied("the implementation has no dead-letter table")
        self.dsn = dsn
        self.table = dlq_table

    def _run(self, sql: str) -> None:
        async def go() -> None:
            conn = await asyncpg.connect(self.dsn)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(go())

    def start(self) -> dict[str, Any]:
        # NOT VALID keeps existing rows; every new row is refused, as after a bad migration.
        self._run(f'ALTER TABLE "{self.table}" ADD CONSTRAINT {self.CONSTRAINT} CHECK (false) NOT VALID')
        return {"table": self.table, "ddl": f"CHECK (false) NOT VALID as {self.CONSTRAINT}"}

    def stop(self) -> dict[str, Any]:
        self._run(f'ALTER TABLE "{self.table}" DROP CONSTRAINT IF EXISTS {self.CONSTRAINT}')
        return {"table": self.table, "repaired": True}
