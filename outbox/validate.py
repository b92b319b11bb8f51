"""Schema validation (L5): compare the live tables with the definitions, report every drift.

Meant for a health check or a deploy step; the subscriber never calls it on
start, so a pending migration cannot crash-loop the consumers.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from sqlalchemy import MetaData, Table
from sqlalchemy.dialects import postgresql

from outbox.schema import make_dlq_table, make_outbox_table, names_for

_UDT = {"BIGINT": "int8", "INTEGER": "int4", "TEXT": "text", "BYTEA": "bytea", "JSONB": "jsonb",
        "TIMESTAMP WITH TIME ZONE": "timestamptz", "UUID": "uuid"}


@dataclass(frozen=True)
class SchemaIssue:
    kind: str  # missing_table | missing_column | wrong_type | wrong_nullability | missing_index | wrong_index
    #            | extra_required_column | unexpected_check
    table: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} on {self.table}: {self.detail}"


async def find_issues(conn: asyncpg.Connection, table: str, dlq_table: str | None) -> list[SchemaIssue]:
    meta = MetaData()
    issues = await _table_issues(conn, make_outbox_table(meta, table))
    names = names_for(table)
    if not any(i.kind == "missing_table" for i in issues):
        indexes = dict(await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $1", table))
        for name, predicate in ((names.pending_index, "acquired_token IS NULL"),
                                (names.leased_index, "acquired_token IS NOT NULL")):
            definition = indexes.get(name)
            if definition is None:
                issues.append(SchemaIssue("missing_index", table, f"index {name} is missing; the fetch query scans the table"))
            elif "(queue," not in definition or f"WHERE ({predicate})" not in definition:
                issues.append(SchemaIssue("wrong_index", table, f"index {name} is {definition!r}, expected (queue, ...) WHERE ({predicate})"))
    if dlq_table is not None:
        issues += await _table_issues(conn, make_dlq_table(meta, dlq_table))
    return issues


async def _table_issues(conn: asyncpg.Connection, expected: Table) -> list[SchemaIssue]:
    name = expected.name
    rows = await conn.fetch(
        "SELECT column_name, udt_name, is_nullable = 'YES' AS nullable, column_default IS NOT NULL OR is_identity = 'YES' "
        "AS has_default FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1", name)
    if not rows:
        return [SchemaIssue("missing_table", name, f"table {name} does not exist; run your migrations")]
    live = {r["column_name"]: r for r in rows}
    issues: list[SchemaIssue] = []
    for col in expected.columns:
        row = live.get(col.name)
        want = _UDT[col.type.compile(dialect=postgresql.dialect())]
        if row is None:
            issues.append(SchemaIssue("missing_column", name, f"column {col.name} ({want}) is missing"))
        elif row["udt_name"] != want:
            issues.append(SchemaIssue("wrong_type", name, f"column {col.name} is {row['udt_name']}, expected {want}"))
        elif row["nullable"] != bool(col.nullable):
            issues.append(SchemaIssue("wrong_nullability", name,
                                      f"column {col.name} is {'NULL' if row['nullable'] else 'NOT NULL'}, expected "
                                      f"{'NULL' if col.nullable else 'NOT NULL'}"))
    for col_name, row in live.items():
        if col_name not in expected.columns and not row["nullable"] and not row["has_default"]:
            issues.append(SchemaIssue("extra_required_column", name,
                                      f"column {col_name} is NOT NULL without a default; inserts by the outbox fail"))
    checks = await conn.fetch(
        "SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint "
        "WHERE conrelid = to_regclass($1) AND contype = 'c'", name)
    issues += [SchemaIssue("unexpected_check", name, f"CHECK constraint {c['conname']} {c['def']} may refuse the outbox's rows")
               for c in checks]
    return issues
