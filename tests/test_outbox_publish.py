"""Publishing: P1 (atomic with the caller's transaction, NOTIFY included), P3 (identifier
guard), refusal of bad input before anything is written, and provisioning errors."""

from __future__ import annotations

import asyncio
import math
import socket

import asyncpg
import pytest
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession

from harness.provision import postgres as provisioning
from outbox import (
    ConstantRetry,
    Outbox,
    OutboxConfigError,
    OutboxError,
    PayloadError,
    PayloadTooLargeError,
    make_dlq_table,
    make_outbox_table,
    names_for,
)


class Rollback(Exception):
    pass


@pytest.fixture
async def business(tables):
    name = f"{tables.name}_biz"
    await tables.execute(f"CREATE TABLE {name} (id serial PRIMARY KEY, note text NOT NULL)")
    yield name
    await tables.execute(f"DROP TABLE {name}")


@pytest.fixture
async def listen(dsn, tables):
    """A raw LISTEN connection on the outbox channel; yields the list of payloads received."""
    conn = await asyncpg.connect(dsn)
    got: list[str] = []
    await conn.add_listener(tables.outbox.channel, lambda _c, _p, _ch, payload: got.append(payload))
    yield got
    await conn.close()


async def test_rollback_leaves_no_row_no_delivery_no_notify(tables, business, listen, db, subscribers, wait_until):
    """P1 for all three connection kinds: rolled back → nothing; committed → row, NOTIFY, delivery."""
    delivered = []

    async def handler(msg):
        delivered.append(bytes(msg.payload))

    await subscribers(tables.outbox, tables.engine, handler=handler, max_fetch_interval=0.1)
    ob = tables.outbox

    async def via_connection(tag: str, commit: bool) -> None:
        async with tables.engine.begin() as conn:
            await conn.exec_driver_sql(f"INSERT INTO {business} (note) VALUES ($1)", (tag,))
            await ob.publish(conn, tag, queue="q")
            if not commit:
                raise Rollback

    async def via_session(tag: str, commit: bool) -> None:
        async with AsyncSession(tables.engine) as session, session.begin():
            conn = await session.connection()
            await conn.exec_driver_sql(f"INSERT INTO {business} (note) VALUES ($1)", (tag,))
            await ob.publish(session, tag, queue="q")
            if not commit:
                raise Rollback

    async def via_asyncpg(tag: str, commit: bool) -> None:
        async with db.transaction():
            await db.execute(f"INSERT INTO {business} (note) VALUES ($1)", tag)
            await ob.publish(db, tag, queue="q")
            if not commit:
                raise Rollback

    paths = {"conn": via_connection, "session": via_session, "asyncpg": via_asyncpg}
    for tag, path in paths.items():
        with pytest.raises(Rollback):
            await path(f"rolled-back-{tag}", False)
    await asyncio.sleep(0.6)  # several poll intervals and plenty of time for a NOTIFY to arrive
    assert listen == [] and delivered == []
    assert await tables.count() == 0 and await tables.fetchval(f"SELECT count(*) FROM {business}") == 0

    for tag, path in paths.items():
        await path(tag, True)
    await wait_until(lambda: len(delivered) == 3 and len(listen) == 3, timeout=5, message="committed messages")
    assert sorted(delivered) == sorted(t.encode() for t in paths)
    assert listen == ["q", "q", "q"]  # the NOTIFY payload is the queue
    assert await tables.fetchval(f"SELECT count(*) FROM {business}") == 3
    await wait_until(lambda: _count_is(tables, 0), timeout=5, message="acks")


async def _count_is(tables, n) -> bool:
    return await tables.count() == n


async def test_raw_asyncpg_publish_needs_a_transaction(tables, db, listen):
    with pytest.raises(OutboxError, match="transaction"):
        await tables.outbox.publish(db, b"x", queue="q")
    with pytest.raises(OutboxError, match="transaction"):
        await tables.outbox.publish_batch(db, [b"x", b"y"], queue="q")
    await asyncio.sleep(0.1)
    assert await tables.count() == 0 and listen == []


async def test_publish_batch_and_delay(tables, db):
    """publish_batch writes all rows in one statement, one NOTIFY; delay_seconds is applied by the
    database clock."""
    async with db.transaction():
        ids = await tables.outbox.publish_batch(db, [b"a", "b", {"c": 1}, [1, 2]], queue="q", headers={"h": "v"})
        (later,) = await tables.outbox.publish_batch(db, [b"later"], queue="q", delay_seconds=30)
        now = await db.fetchval("SELECT now()")
    assert ids == sorted(ids) and len(set(ids)) == 4
    rows = {r["id"]: r for r in await db.fetch(f"SELECT * FROM {tables.name}")}
    assert [bytes(rows[i]["payload"]) for i in ids] == [b"a", b"b", b'{"c":1}', b"[1,2]"]
    assert (rows[later]["next_attempt_at"] - now).total_seconds() == pytest.approx(30, abs=0.001)
    assert await db.fetch(tables.outbox.statements.fetch, "q", 60.0, 10) != []
    assert later not in {r["id"] for r in await db.fetch(f"SELECT id FROM {tables.name} WHERE acquired_token IS NOT NULL")}


# -- bad input: a clear error, nothing written, the caller's transaction still commits -----------------

BIG = 1024

BAD_CALLS = [
    ("int payload", PayloadError, dict(payload=123)),
    ("None payload", PayloadError, dict(payload=None)),
    ("set payload", PayloadError, dict(payload={1, 2})),
    ("object payload", PayloadError, dict(payload=object())),
    ("non-JSON dict", PayloadError, dict(payload={"a": object()})),
    ("lone surrogate str", PayloadError, dict(payload="\ud800")),
    ("payload NaN", PayloadError, dict(payload={"x": math.nan})),
    ("payload infinity", PayloadError, dict(payload=[1, {"y": math.inf}])),
    ("payload -infinity", PayloadError, dict(payload={"z": [-math.inf]})),
    ("oversize bytes", PayloadTooLargeError, dict(payload=b"x" * (BIG + 1))),
    ("oversize dict", PayloadTooLargeError, dict(payload={"k": "x" * BIG})),
    ("empty queue", OutboxConfigError, dict(queue="")),
    ("blank queue", OutboxConfigError, dict(queue="   ")),
    ("oversize queue", OutboxConfigError, dict(queue="q" * 129)),
    ("queue not str", OutboxConfigError, dict(queue=7)),
    ("NUL in queue", OutboxConfigError, dict(queue="q\x00")),
    ("headers list", PayloadError, dict(headers=[("a", 1)])),
    ("headers str", PayloadError, dict(headers="{}")),
    ("headers int keys", PayloadError, dict(headers={1: "a"})),
    ("headers not JSON", PayloadError, dict(headers={"a": object()})),
    ("headers NaN", PayloadError, dict(headers={"a": math.nan})),
    ("headers NUL", PayloadError, dict(headers={"a": "x\x00y"})),
    ("negative delay", OutboxConfigError, dict(delay_seconds=-1)),
    ("NaN delay", OutboxConfigError, dict(delay_seconds=math.nan)),
    ("infinite delay", OutboxConfigError, dict(delay_seconds=math.inf)),
    ("absurd delay", OutboxConfigError, dict(delay_seconds=1e300)),
    ("str delay", OutboxConfigError, dict(delay_seconds="5")),
]


@pytest.mark.parametrize("kind", ["sqlalchemy", "asyncpg"])
async def test_bad_input_is_refused_and_the_transaction_still_commits(tables, business, db, listen, kind):
    ob = Outbox(tables.name, tables.dlq, max_payload_bytes=BIG)
    failures = {}

    async def attempt(conn) -> None:
        for label, exc_type, kwargs in BAD_CALLS:
            call = {"payload": b"ok", "queue": "q", **kwargs}
            payload = call.pop("payload")
            with pytest.raises(exc_type) as info:
                await ob.publish(conn, payload, **call)
            failures[label] = str(info.value)
            # the batch form: one bad payload among good ones writes none of them
            with pytest.raises(exc_type):
                await ob.publish_batch(conn, [b"good", payload, b"good"], **call)
        with pytest.raises(PayloadError, match="sequence"):
            await ob.publish_batch(conn, b"not a list", queue="q")

    if kind == "sqlalchemy":
        async with tables.engine.begin() as conn:
            await conn.exec_driver_sql(f"INSERT INTO {business} (note) VALUES ('kept')")
            await attempt(conn)
    else:
        async with db.transaction():
            await db.execute(f"INSERT INTO {business} (note) VALUES ('kept')")
            await attempt(db)
    assert await tables.fetchval(f"SELECT count(*) FROM {business}") == 1  # the business row committed
    assert await tables.count() == 0  # and no outbox row, partial or whole
    await asyncio.sleep(0.05)
    assert listen == []
    # each message says what is wrong
    assert "max_payload_bytes" in failures["oversize bytes"]
    assert "queue" in failures["empty queue"] and "128" in failures["oversize queue"]
    assert "headers" in failures["headers list"] and "delay_seconds" in failures["negative delay"]
    assert "payload" in failures["payload NaN"] and "NaN" in failures["payload NaN"]
    assert failures["payload NaN"].split(": ", 1)[1] == failures["headers NaN"].split(": ", 1)[1]  # one rule


async def test_bad_connection_kind_is_refused(tables):
    with pytest.raises(OutboxConfigError, match="AsyncConnection"):
        await tables.outbox.publish(object(), b"x", queue="q")  # type: ignore[arg-type]


def test_bad_options_are_refused():
    with pytest.raises(OutboxConfigError, match="max_payload_bytes"):
        Outbox("ob", max_payload_bytes=0)


# -- P3: identifiers ------------------------------------------------------------------------------


def test_channel_over_63_bytes_is_refused_at_table_build():
    name = "a" * 57  # channel outbox_<57 chars> = 64 bytes
    with pytest.raises(ValueError, match="channel"):
        make_outbox_table(MetaData(), name)
    with pytest.raises(ValueError, match="channel"):
        Outbox(name)


@pytest.mark.parametrize("length", [52, 56])
def test_derived_index_names_over_63_bytes_are_refused(length):
    """The channel of a 56-character name is exactly 63 bytes, but ``<name>_pending_idx`` would be
    68 and PostgreSQL would silently truncate it; the guard refuses that too, naming the index."""
    name = "b" * length
    assert len(f"outbox_{name}".encode()) <= 63
    with pytest.raises(ValueError, match="pending index") as info:
        make_outbox_table(MetaData(), name)
    assert "51 characters" in str(info.value)  # and says how short is short enough


async def test_longest_name_is_exactly_63_bytes_and_works(engine, dsn):
    """The longest accepted name (51 characters) gives identifiers of at most exactly 63 bytes,
    which PostgreSQL stores untruncated; LISTEN/NOTIFY agree on the channel."""
    name = "c" * 51
    names = names_for(name)
    sizes = {what: len(ident.encode()) for what, ident in names.all().items()}
    assert max(sizes.values()) == 63 and sizes["pending index"] == 63
    md = MetaData()
    table = make_outbox_table(md, name)
    dlq = make_dlq_table(md, "c" * 63)
    async with engine.begin() as conn:
        await conn.run_sync(md.create_all)
    try:
        ob = Outbox(table, dlq)
        conn = await asyncpg.connect(dsn)
        try:
            indexes = {r[0] for r in await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = $1", name)}
            assert {names.pending_index, names.leased_index} <= indexes
            got = []
            await conn.add_listener(ob.channel, lambda *a: got.append(a[3]))
            async with engine.begin() as c:
                await ob.publish(c, b"x", queue="q")
            for _ in range(100):
                if got:
                    break
                await asyncio.sleep(0.01)
            assert got == ["q"]
            assert await ob.schema_issues(conn) == []
        finally:
            await conn.close()
    finally:
        async with engine.begin() as c:
            await c.run_sync(md.drop_all)


RESERVED = [("order", "group"), ("user", "table"), ("select", "offset")]


@pytest.mark.parametrize("name,dlq", RESERVED, ids=[n for n, _ in RESERVED])
async def test_reserved_words_as_table_names_work_end_to_end(engine, dsn, subscribers, wait_until, name, dlq):
    """P3: reserved words are valid table names, so every statement quotes its identifiers: publish
    (NOTIFY included) inside a business transaction that goes on, LISTEN, delivery, retry, dead
    letter, release, drop, validate_schema and its drift checks."""
    def q(ident: str) -> str:
        return f'"{ident}"'

    md = MetaData()
    ob = Outbox(make_outbox_table(md, name), make_dlq_table(md, dlq))
    async with engine.begin() as conn:
        await conn.run_sync(md.create_all)
    conn = await asyncpg.connect(dsn)
    try:
        await ob.validate_schema(engine)
        await ob.validate_schema(conn)
        notified: list[str] = []
        await conn.add_listener(ob.channel, lambda *a: notified.append(a[3]))
        async with engine.begin() as c:
            ids = await ob.publish_batch(c, [b"ok", b"fail"], queue="q")
            ids.append(await ob.publish(c, {"n": 1}, queue="q"))
            assert (await c.exec_driver_sql("SELECT 1")).scalar() == 1  # the caller's transaction goes on
        assert await conn.fetchval(f"SELECT count(*) FROM {q(name)}") == 3

        delivered, outcomes = [], []

        async def handler(msg):
            if bytes(msg.payload) == b"fail":
                raise RuntimeError("poison")
            delivered.append(msg.id)

        sub = await subscribers(ob, engine, handler=handler, retry=ConstantRetry(0.0, max_attempts=2),
                                max_fetch_interval=0.2, on_settled=lambda m, o: outcomes.append(o))
        await wait_until(lambda: sorted(outcomes) == ["acked", "acked", "dead_lettered", "retry"], timeout=10,
                         message="two acks, a retry and a dead letter")
        assert sorted(delivered) == [ids[0], ids[2]] and notified == ["q"]
        (dead,) = await conn.fetch(f"SELECT * FROM {q(dlq)}")
        assert (dead["original_id"], dead["reason"], dead["attempts"]) == (ids[1], "retries_exhausted", 2)
        await asyncio.sleep(0.5)  # the listener re-issues its LISTEN every max_fetch_interval
        assert sub.listener.connected and sub.listener.warnings == 0
        async with engine.begin() as c:
            await ob.publish(c, b"woken", queue="q")
        await wait_until(lambda: outcomes.count("acked") == 3, timeout=5, message="the NOTIFY-woken delivery")
        await sub.stop()

        st, plain = ob.statements, Outbox(name)
        async with conn.transaction():
            kept, gone = await ob.publish_batch(conn, [b"released", b"dropped"], queue="r")
        leased = {r["id"]: r["acquired_token"] for r in await conn.fetch(st.fetch, "r", 60.0, 10)}
        await conn.execute(st.release, [kept], [leased[kept]])
        assert await conn.fetchval(plain.statements.drop, gone, leased[gone]) == gone
        assert [tuple(r) for r in await conn.fetch(f"SELECT id, acquired_token FROM {q(name)}")] == [(kept, None)]
        await ob.validate_schema(engine)

        await conn.execute(f"DROP INDEX {names_for(name).leased_index}")
        await conn.execute(f"ALTER TABLE {q(dlq)} ADD CONSTRAINT drift CHECK (false) NOT VALID")
        issues = await ob.schema_issues(conn)
        assert [(i.kind, i.table) for i in issues] == [("missing_index", name), ("unexpected_check", dlq)], issues
    finally:
        await conn.close()
        async with engine.begin() as c:
            await c.run_sync(md.drop_all)


@pytest.mark.parametrize("bad", ["Outbox", "out box", 'out"box', "", "1outbox", "out-box", "outbox;drop", "ünïcode", None])
def test_bad_table_names_are_refused(bad):
    with pytest.raises(ValueError):
        make_outbox_table(MetaData(), bad)
    with pytest.raises(ValueError):
        make_dlq_table(MetaData(), bad)
    if bad is not None:  # Outbox(table, None) means "no dead-letter table"
        with pytest.raises(ValueError):
            Outbox("outbox", bad)
    with pytest.raises(ValueError):
        Outbox(bad)


def test_dlq_name_over_63_bytes_is_refused():
    make_dlq_table(MetaData(), "d" * 63)
    with pytest.raises(ValueError, match="63"):
        make_dlq_table(MetaData(), "d" * 64)


# -- provisioning -------------------------------------------------------------------------------


def test_unreachable_database_url_names_the_fix(monkeypatch):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("DATABASE_URL", f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres")
    with pytest.raises(provisioning.ProvisioningError) as info:
        provisioning.provision()
    message = str(info.value)
    assert "cannot reach PostgreSQL" in message and "DATABASE_URL" in message
    assert "unset DATABASE_URL" in message  # the fix


def test_non_postgres_database_url_is_refused(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "mysql://root@localhost/db")
    with pytest.raises(provisioning.ProvisioningError, match="postgresql://"):
        provisioning.provision()
