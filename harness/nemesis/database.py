"""Database faults: crash-restart the server, hog its connection slots, break the DLQ schema."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import asyncpg

from harness.names import HOG_APP
from harness.nemesis.base import CAPACITY, CRASH, SCHEMA, Env, Fault, FaultNotApplied
from harness.provision.postgres import PostgresServer, ProvisioningError


class CrashRestart(Fault):
    """``pg_ctl stop -m immediate`` then start: every connection dies, committed data must stay (P2)."""

    kind = "pg_crash_restart"
    category = CRASH
    controls_server = True

    @classmethod
    def build(cls, env: Env, down_seconds: float = 1.0) -> CrashRestart:
        return cls(env.server, down_seconds)

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


class ConnectionHog(Fault):
    """Keeps the server's connection slots full but ``leave_free`` (L3).

    Equivalent, for the consumers, to a ``max_connections`` below their budget,
    without restarting the server: every slot freed (a crashed worker's, say) is
    taken again within ``tick`` seconds, so a restarted consumer must cope with
    "too many clients". Releasing the hog is the repair.
    """

    kind = "max_connections"
    category = CAPACITY

    @classmethod
    def build(cls, env: Env, leave_free: int = 1) -> ConnectionHog:
        return cls(env.server.dsn, leave_free=leave_free)

    def __init__(self, admin_dsn: str, leave_free: int, tick: float = 0.1) -> None:
        self.admin_dsn = admin_dsn
        self.leave_free = leave_free
        self.tick = tick
        self._conns: list[asyncpg.Connection] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak = 0
        self._first_full = threading.Event()
        self._error: str | None = None

    def start(self) -> dict[str, Any]:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._hold()), name="connection-hog", daemon=True)
        self._thread.start()
        if not self._first_full.wait(timeout=30) or self._error:
            self.stop()
            raise FaultNotApplied(f"could not fill the connection slots: {self._error or 'timed out'}")
        return {"held": len(self._conns), "left_free": self.leave_free}

    async def _free_slots(self) -> int:
        conn = self._conns[0]
        limit = int(await conn.fetchval("SHOW max_connections"))
        used = int(await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"))
        return limit - used

    async def _grab(self) -> bool:
        try:
            self._conns.append(await asyncpg.connect(self.admin_dsn, timeout=5,
                                                     server_settings={"application_name": HOG_APP}))
            return True
        except (asyncpg.TooManyConnectionsError, asyncpg.PostgresError, OSError, asyncio.TimeoutError):
            return False

    async def _hold(self) -> None:
        try:
            if not await self._grab():
                self._error = "no slot free for the hog itself"
                return
            while not self._stop.is_set():
                free = await self._free_slots()
                while free > self.leave_free:  # in parallel, so the slots fill in well under a second
                    grabbed = await asyncio.gather(*(self._grab() for _ in range(min(20, free - self.leave_free))))
                    if not all(grabbed):
                        break
                    free -= len(grabbed)
                self._peak = max(self._peak, len(self._conns))
                self._first_full.set()
                await asyncio.sleep(self.tick)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            self._error = f"{type(exc).__name__}: {exc}"
        finally:
            self._first_full.set()
            await asyncio.gather(*(c.close() for c in self._conns), return_exceptions=True)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return {"released": len(self._conns), "peak_held": self._peak}


class DlqDrift(Fault):
    """A DDL change that makes every dead-letter insert fail, then its repair (R3, R4)."""

    kind = "dlq_drift"
    category = SCHEMA

    @classmethod
    def build(cls, env: Env) -> DlqDrift:
        return cls(env.admin_dsn, env.adapter.dlq_table)
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
