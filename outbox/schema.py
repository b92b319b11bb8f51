"""Table definitions and every identifier derived from a table name (P3).

Identifiers are derived here and only here, and checked against PostgreSQL's
63-byte limit when the table is built: an over-long name is refused with
``ValueError`` instead of being silently truncated by the server (which would
make LISTEN and NOTIFY disagree on the channel). The limit is on the name
itself; the quotes every statement puts around it do not count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from outbox.errors import OutboxConfigError

MAX_IDENTIFIER_BYTES = 63
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Names:
    """Every identifier the outbox derives from its table name."""

    table: str

    @property
    def channel(self) -> str:
        return f"outbox_{self.table}"

    @property
    def pending_index(self) -> str:
        return f"{self.table}_pending_idx"

    @property
    def leased_index(self) -> str:
        return f"{self.table}_leased_idx"

    def all(self) -> dict[str, str]:
        return {"table": self.table, "channel": self.channel,
                "pending index": self.pending_index, "leased index": self.leased_index}


def check_identifier(name: str, what: str = "table name") -> str:
    """A plain lower-case identifier, so quoted and unquoted references to it agree (no case folding).

    Reserved words (``order``, ``user``) are plain identifiers too; statements quote every name.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise OutboxConfigError(
            f"{what} {name!r} is not a plain lower-case identifier; "
            "use letters, digits and underscores, starting with a letter or underscore"
        )
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise OutboxConfigError(f"{what} {name!r} is over PostgreSQL's {MAX_IDENTIFIER_BYTES}-byte identifier limit")
    return name


def quote_identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier, for every statement that names a table or channel."""
    return '"' + name.replace('"', '""') + '"'


def names_for(table_name: str) -> Names:
    """Validates ``table_name`` and every identifier derived from it."""
    names = Names(check_identifier(table_name))
    for what, ident in names.all().items():
        size = len(ident.encode())
        if size > MAX_IDENTIFIER_BYTES:
            raise OutboxConfigError(
                f"table name {table_name!r} gives the {what} {ident!r} of {size} bytes, over PostgreSQL's "
                f"{MAX_IDENTIFIER_BYTES}-byte identifier limit; shorten the table name to at most "
                f"{len(table_name) - (size - MAX_IDENTIFIER_BYTES)} characters"
            )
    return names


def make_outbox_table(metadata: MetaData, table_name: str = "outbox") -> Table:
    """The outbox table, with the two partial indexes the fetch query uses."""
    names = names_for(table_name)
    table = Table(
        table_name,
        metadata,
        Column("id", BigInteger, Identity(always=False), primary_key=True),
        Column("queue", Text, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("deliveries", Integer, nullable=False, server_default=text("0")),
        Column("acquired_token", UUID(as_uuid=True), nullable=True),
        Column("acquired_at", DateTime(timezone=True), nullable=True),
        Column("last_error", Text, nullable=True),
    )
    Index(names.pending_index, table.c.queue, table.c.next_attempt_at,
          postgresql_where=table.c.acquired_token.is_(None))
    Index(names.leased_index, table.c.queue, table.c.acquired_at,
          postgresql_where=table.c.acquired_token.isnot(None))
    return table


def make_dlq_table(metadata: MetaData, table_name: str = "outbox_dlq") -> Table:
    """The dead-letter table: one row per terminally failed message, written atomically (R3)."""
    check_identifier(table_name, "dead-letter table name")
    return Table(
        table_name,
        metadata,
        Column("id", BigInteger, Identity(always=False), primary_key=True),
        Column("original_id", BigInteger, nullable=False),
        Column("queue", Text, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("failed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("attempts", Integer, nullable=False),
        Column("deliveries", Integer, nullable=False),
        Column("reason", Text, nullable=False),
        Column("last_error", Text, nullable=True),
    )
