"""A Hypothesis state machine over the outbox's own SQL (``Statements``) on the real database.

Rules publish, fetch (the claim CTE), ack, retry (nack), release, dead-letter, expire leases
(acquired_at moved back by more than the TTL), make delayed rows due, and replay writes with stale
tokens. The model tracks which ids are pending, delayed, leased (with their token and whether the
lease has expired), dead-lettered or acked. After every step the tables must equal the model, no
id may be in both the outbox and the DLQ, and every stale-token write must have matched nothing
(D3, D4, D6, R3).

The machine runs on its own event loop (a sync test; each rule drives it with
``run_until_complete``) and one asyncpg connection in autocommit mode, so every statement is its
own transaction, as the subscriber runs them.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test
from sqlalchemy import MetaData
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from outbox import Outbox, make_dlq_table, make_outbox_table

TTL = 30.0  # lease TTL given to the fetch; far longer than an example runs, so leases expire only by rule
LATER = 3600.0  # a retry/publish delay that keeps a row unavailable for the whole example


@dataclass
class Env:
    loop: asyncio.AbstractEventLoop
    conn: asyncpg.Connection
    outbox: Outbox
    table: str
    dlq: str

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


@dataclass
class Row:
    state: str  # pending | delayed | leased
    deliveries: int = 0
    attempts: int = 0
    token: uuid.UUID | None = None
    expired: bool = False


@dataclass
class Dead:
    attempts: int
    deliveries: int
    reason: str


class OutboxMachine(RuleBasedStateMachine):
    env: Env  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        self.sql = self.env.outbox.statements
        self.env.run(self.env.conn.execute(f"TRUNCATE {self.env.table}, {self.env.dlq}"))
        self.rows: dict[int, Row] = {}
        self.dead: dict[int, Dead] = {}
        self.acked: set[int] = set()
        self.stale: list[tuple[int, uuid.UUID]] = []  # (id, token) pairs whose lease was taken over or ended

    # -- helpers -------------------------------------------------------------------------------
    def q(self, method: str, sql: str, *args: Any) -> Any:
        return self.env.run(getattr(self.env.conn, method)(sql, *args))

    def ids(self, *states: str, expired: bool | None = None) -> list[int]:
        return sorted(i for i, r in self.rows.items()
                      if r.state in states and (expired is None or r.expired == expired))

    def end_lease(self, row_id: int) -> None:
        row = self.rows[row_id]
        assert row.token is not None
        self.stale.append((row_id, row.token))
        row.token, row.expired = None, False

    # -- rules -----------------------------------------------------------------------------------
    @initialize(n=st.integers(2, 6), limit=st.integers(1, 4))
    def start_with_leases(self, n: int, limit: int) -> None:
        """Every example starts with some rows leased, so the lease rules have work from step one."""
        self.publish(n, False)
        self.fetch(limit)

    @rule(n=st.integers(1, 4), delayed=st.booleans())
    def publish(self, n: int, delayed: bool) -> None:
        async def go() -> list[int]:
            async with self.env.conn.transaction():
                return await self.env.outbox.publish_batch(self.env.conn, [b"p"] * n, queue="q",
                                                           delay_seconds=LATER if delayed else 0.0)
        for row_id in self.env.run(go()):
            assert row_id not in self.rows and row_id not in self.dead and row_id not in self.acked
            self.rows[row_id] = Row("delayed" if delayed else "pending")

    @rule(limit=st.integers(1, 6))
    def fetch(self, limit: int) -> None:
        available = sorted(self.ids("pending") + self.ids("leased", expired=True))
        expected = available[:limit]
        got = self.q("fetch", self.sql.fetch, "q", TTL, limit)
        assert sorted(r["id"] for r in got) == expected
        for r in got:
            row = self.rows[r["id"]]
            if row.state == "leased":  # a reclaim: the old holder's token is now stale
                self.end_lease(r["id"])
            assert r["acquired_token"] is not None
            row.state, row.token, row.expired = "leased", r["acquired_token"], False
            row.deliveries += 1
            assert r["deliveries"] == row.deliveries and r["attempts"] == row.attempts

    @precondition(lambda self: self.ids("leased"))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        chosen = data.draw(st.lists(st.sampled_from(self.ids("leased")), min_size=1, max_size=4, unique=True))
        got = self.q("fetch", self.sql.ack, chosen, [self.rows[i].token for i in chosen])
        assert sorted(r[0] for r in got) == sorted(chosen)
        for i in chosen:
            self.end_lease(i)
            del self.rows[i]
            self.acked.add(i)

    @precondition(lambda self: self.ids("leased"))
    @rule(data=st.data(), delayed=st.booleans())
    def nack_retry(self, data: st.DataObject, delayed: bool) -> None:
        i = data.draw(st.sampled_from(self.ids("leased")))
        got = self.q("fetchval", self.sql.retry, i, self.rows[i].token, LATER if delayed else 0.0, "boom")
        assert got == i
        self.end_lease(i)
        self.rows[i].state = "delayed" if delayed else "pending"
        self.rows[i].attempts += 1

    @precondition(lambda self: self.ids("leased"))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        chosen = data.draw(st.lists(st.sampled_from(self.ids("leased")), min_size=1, max_size=3, unique=True))
        status = self.q("execute", self.sql.release, chosen, [self.rows[i].token for i in chosen])
        assert status == f"UPDATE {len(chosen)}"
        for i in chosen:
            self.end_lease(i)
            self.rows[i].state = "pending"
            self.rows[i].deliveries -= 1

    @precondition(lambda self: self.ids("leased"))
    @rule(data=st.data(), terminal_failure=st.booleans())
    def dead_letter(self, data: st.DataObject, terminal_failure: bool) -> None:
        i = data.draw(st.sampled_from(self.ids("leased")))
        failed = 1 if terminal_failure else 0
        reason = "retries_exhausted" if terminal_failure else "max_deliveries"
        got = self.q("fetchval", self.sql.dead_letter, i, self.rows[i].token, reason, "err", failed)
        assert got == i
        self.end_lease(i)
        row = self.rows.pop(i)
        self.dead[i] = Dead(row.attempts + failed, row.deliveries, reason)

    @precondition(lambda self: self.ids("leased", expired=False))
    @rule(data=st.data())
    def expire_lease(self, data: st.DataObject) -> None:
        i = data.draw(st.sampled_from(self.ids("leased", expired=False)))
        self.q("execute", f"UPDATE {self.env.table} SET acquired_at = now() - make_interval(secs => $1) WHERE id = $2",
               TTL + 5, i)
        self.rows[i].expired = True

    @precondition(lambda self: self.ids("delayed"))
    @rule(data=st.data())
    def make_due(self, data: st.DataObject) -> None:
        i = data.draw(st.sampled_from(self.ids("delayed")))
        self.q("execute", f"UPDATE {self.env.table} SET next_attempt_at = now() - interval '1 second' WHERE id = $1", i)
        self.rows[i].state = "pending"

    @precondition(lambda self: self.stale)
    @rule(data=st.data(), op=st.sampled_from(["ack", "retry", "dead_letter", "release", "drop"]))
    def stale_write(self, data: st.DataObject, op: str) -> None:
        """A write with an old token matches nothing, whatever became of the row since."""
        i, token = data.draw(st.sampled_from(self.stale))
        if op == "ack":
            assert self.q("fetch", self.sql.ack, [i], [token]) == []
        elif op == "retry":
            assert self.q("fetchval", self.sql.retry, i, token, 0.0, "late") is None
        elif op == "dead_letter":
            assert self.q("fetchval", self.sql.dead_letter, i, token, "late", "late", 1) is None
        elif op == "release":
            assert self.q("execute", self.sql.release, [i], [token]) == "UPDATE 0"
        else:
            assert self.q("fetchval", self.sql.drop, i, token) is None

    # -- invariants --------------------------------------------------------------------------------
    @invariant()
    def tables_equal_the_model(self) -> None:
        live = {r["id"]: r for r in self.q("fetch", f"SELECT id, acquired_token, acquired_at < now() - "
                                                    f"make_interval(secs => $1) AS expired, next_attempt_at > now() "
                                                    f"AS delayed, deliveries, attempts FROM {self.env.table}", TTL)}
        dead = self.q("fetch", f"SELECT original_id, attempts, deliveries, reason FROM {self.env.dlq}")
        dead_ids = [r["original_id"] for r in dead]
        assert len(dead_ids) == len(set(dead_ids)), "a message reached the DLQ twice"
        assert not set(live) & set(dead_ids), "a row is in both the outbox and the DLQ"
        assert not self.acked & (set(live) | set(dead_ids)), "an acked row came back"
        assert set(live) == set(self.rows)
        assert {r["original_id"]: Dead(r["attempts"], r["deliveries"], r["reason"]) for r in dead} == self.dead
        for i, row in self.rows.items():
            r = live[i]
            assert (r["deliveries"], r["attempts"]) == (row.deliveries, row.attempts), i
            assert r["acquired_token"] == row.token, i
            assert bool(r["delayed"]) == (row.state == "delayed"), i
            if row.state == "leased":
                assert bool(r["expired"]) == row.expired, i
            else:
                assert r["acquired_token"] is None and r["expired"] is None, i

    @invariant()
    def stale_tokens_are_never_current(self) -> None:
        current = {(i, r.token) for i, r in self.rows.items() if r.token is not None}
        assert not current & set(self.stale)


def test_outbox_state_machine(postgres_server: Any) -> None:
    loop = asyncio.new_event_loop()
    try:
        dsn = loop.run_until_complete(postgres_server.create_database("t_test_outbox_stateful"))
        conn = loop.run_until_complete(asyncpg.connect(dsn))
        md = MetaData()
        table, dlq = make_outbox_table(md, "sm_outbox"), make_dlq_table(md, "sm_outbox_dlq")
        dialect = postgresql.dialect()
        for ddl in [CreateTable(table), *(CreateIndex(ix) for ix in table.indexes), CreateTable(dlq)]:
            loop.run_until_complete(conn.execute(str(ddl.compile(dialect=dialect))))
        OutboxMachine.env = Env(loop, conn, Outbox(table, dlq), table.name, dlq.name)
        run_state_machine_as_test(OutboxMachine, settings=settings(
            max_examples=40, stateful_step_count=30, deadline=None, derandomize=False,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ))
    finally:
        if getattr(OutboxMachine, "env", None) is not None:
            loop.run_until_complete(OutboxMachine.env.conn.close())
            del OutboxMachine.env
        loop.close()
