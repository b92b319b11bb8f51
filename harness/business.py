"""The business table: one row per published message, written in the same transaction as the outbox rows.

It is what makes P1 observable (a rolled-back transaction leaves neither) and what resolves a publish
whose COMMIT raised: the row is there if and only if the transaction committed.
"""

from __future__ import annotations

import asyncpg

TABLE = "harness_business"
CREATE = f"CREATE TABLE IF NOT EXISTS {TABLE} (mid text PRIMARY KEY, at timestamptz DEFAULT now())"
#: One parameter: the message ids (text[]). asyncpg placeholder style; psycopg users convert it.
INSERT = f"INSERT INTO {TABLE} (mid) SELECT unnest($1::text[])"
LOOKUP = f"SELECT mid FROM {TABLE} WHERE mid = ANY($1::text[])"


async def create(dsn: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(CREATE)
    finally:
        await conn.close()


async def committed(dsn: str, mids: list[str]) -> set[str]:
    """Which of ``mids`` have their business row: their transaction committed."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return {r[0] for r in await conn.fetch(LOOKUP, mids)}
    finally:
        await conn.close()
