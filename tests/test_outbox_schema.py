"""L5: validate_schema reports each drift by kind, with a message naming the problem, passes on a
fresh schema, and is never called implicitly by a subscriber's start."""

from __future__ import annotations

import asyncio

import pytest

import outbox
import outbox.validate
from outbox import Outbox, SchemaValidationError


async def _issues(tables):
    return await tables.outbox.schema_issues(tables.engine)


async def test_fresh_schema_passes_on_every_kind_of_bind(tables, db):
    await tables.outbox.validate_schema(tables.engine)
    async with tables.engine.connect() as conn:
        await tables.outbox.validate_schema(conn)
    await tables.outbox.validate_schema(db)
    # tolerated changes: an extra nullable column, an extra column with a default, an extra index
    await tables.execute(f"ALTER TABLE {tables.name} ADD COLUMN note text")
    await tables.execute(f"ALTER TABLE {tables.dlq} ADD COLUMN tenant int NOT NULL DEFAULT 0")
    await tables.execute(f"CREATE INDEX ON {tables.name} (created_at)")
    assert await _issues(tables) == []


DRIFTS = [
    # (label, SQL with {t} = outbox table and {d} = DLQ table, expected kind, table ("t"/"d"), words in the message)
    ("missing column", "ALTER TABLE {t} DROP COLUMN last_error", "missing_column", "t", ["last_error"]),
    ("wrong type", "ALTER TABLE {t} ALTER COLUMN attempts TYPE bigint", "wrong_type", "t", ["attempts", "int8", "int4"]),
    ("wrong payload type", "ALTER TABLE {t} ALTER COLUMN payload TYPE text", "wrong_type", "t", ["payload", "bytea"]),
    ("wrong nullability", "ALTER TABLE {t} ALTER COLUMN last_error SET NOT NULL", "wrong_nullability", "t", ["last_error"]),
    ("missing pending index", "DROP INDEX {t}_pending_idx", "missing_index", "t", ["{t}_pending_idx"]),
    ("missing leased index", "DROP INDEX {t}_leased_idx", "missing_index", "t", ["{t}_leased_idx"]),
    ("index without predicate",
     "DROP INDEX {t}_pending_idx; CREATE INDEX {t}_pending_idx ON {t} (queue, next_attempt_at)",
     "wrong_index", "t", ["{t}_pending_idx", "acquired_token IS NULL"]),
    ("index with the wrong predicate",
     "DROP INDEX {t}_leased_idx; CREATE INDEX {t}_leased_idx ON {t} (queue, acquired_at) WHERE acquired_token IS NULL",
     "wrong_index", "t", ["{t}_leased_idx", "IS NOT NULL"]),
    ("index on the wrong columns",
     "DROP INDEX {t}_pending_idx; CREATE INDEX {t}_pending_idx ON {t} (next_attempt_at) WHERE acquired_token IS NULL",
     "wrong_index", "t", ["{t}_pending_idx"]),
    ("outbox extra NOT NULL column", "ALTER TABLE {t} ADD COLUMN tenant int NOT NULL", "extra_required_column", "t", ["tenant"]),
    ("DLQ extra NOT NULL column", "ALTER TABLE {d} ADD COLUMN tenant int NOT NULL", "extra_required_column", "d", ["tenant"]),
    ("DLQ CHECK", "ALTER TABLE {d} ADD CONSTRAINT drift CHECK (false) NOT VALID", "unexpected_check", "d", ["drift"]),
    ("DLQ missing column", "ALTER TABLE {d} DROP COLUMN reason", "missing_column", "d", ["reason"]),
    ("DLQ wrong type", "ALTER TABLE {d} ALTER COLUMN failed_at TYPE timestamp", "wrong_type", "d", ["failed_at", "timestamptz"]),
    ("missing DLQ table", "DROP TABLE {d}", "missing_table", "d", ["{d}", "migrations"]),
]


@pytest.mark.parametrize("label,sql,kind,which,words", DRIFTS, ids=[d[0] for d in DRIFTS])
async def test_each_drift_is_reported_by_kind(tables, label, sql, kind, which, words):
    for statement in sql.split("; "):
        await tables.execute(statement.format(t=tables.name, d=tables.dlq))
    issues = await _issues(tables)
    table = tables.name if which == "t" else tables.dlq
    assert [(i.kind, i.table) for i in issues] == [(kind, table)], issues
    with pytest.raises(SchemaValidationError) as info:
        await tables.outbox.validate_schema(tables.engine)
    assert info.value.issues == issues
    message = str(info.value)
    assert kind in message
    for word in words:
        assert word.format(t=tables.name, d=tables.dlq) in message, (word, message)


async def test_missing_tables_are_reported(engine):
    ob = Outbox("no_such_outbox", "no_such_outbox_dlq")
    issues = await ob.schema_issues(engine)
    assert [(i.kind, i.table) for i in issues] == [("missing_table", "no_such_outbox"),
                                                   ("missing_table", "no_such_outbox_dlq")]
    with pytest.raises(SchemaValidationError, match="no_such_outbox does not exist"):
        await ob.validate_schema(engine)


async def test_several_drifts_are_all_listed(tables):
    await tables.execute(f"DROP INDEX {tables.name}_leased_idx")
    await tables.execute(f"ALTER TABLE {tables.name} DROP COLUMN last_error")
    await tables.execute(f"ALTER TABLE {tables.dlq} ADD CONSTRAINT drift CHECK (false) NOT VALID")
    kinds = sorted(i.kind for i in await _issues(tables))
    assert kinds == ["missing_column", "missing_index", "unexpected_check"]


async def test_start_never_validates(tables, subscribers, wait_until, monkeypatch):
    """A subscriber on a drifted schema (no partial indexes, an extra nullable column) starts and
    delivers; validation is never called on the way."""
    def forbidden(*_a, **_k):
        raise AssertionError("validate_schema / schema_issues called implicitly")

    monkeypatch.setattr(outbox.validate, "find_issues", forbidden)
    monkeypatch.setattr(outbox, "find_issues", forbidden)
    monkeypatch.setattr(Outbox, "schema_issues", forbidden)
    monkeypatch.setattr(Outbox, "validate_schema", forbidden)
    await tables.execute(f"DROP INDEX {tables.name}_pending_idx")
    await tables.execute(f"DROP INDEX {tables.name}_leased_idx")
    seen = []

    async def handler(msg):
        seen.append(msg.id)

    await subscribers(tables.outbox, tables.engine, handler=handler)
    (row_id,) = await tables.publish(b"x")
    await wait_until(lambda: seen == [row_id], timeout=5, message="delivery")


async def test_start_on_a_missing_table_does_not_crash(engine, subscribers, caplog):
    """A pending migration: start succeeds, the fetch loop logs the error and keeps trying."""
    ob = Outbox("not_migrated_yet")
    sub = await subscribers(ob, engine, handler=lambda m: None, max_fetch_interval=0.2)
    await asyncio.sleep(0.3)
    assert sub._fetcher is not None and not sub._fetcher.done()
    errors = [r for r in caplog.records if r.name.startswith("outbox") and r.levelname == "ERROR"]
    assert errors and "not_migrated_yet" in caplog.text  # loud (message or traceback names the table)
