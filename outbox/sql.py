"""Every SQL statement of the reference outbox, built once per table pair.

One place to read what touches the database. Statements use asyncpg's ``$n``
parameters and run on the driver connection under SQLAlchemy's pool. Every
write after a claim is guarded by the row's id and its lease token (a fresh
one per claim): a write that matches no row means the lease was lost (D6).
Lease expiry is judged by the server's clock, ``now() - make_interval(secs =>
...)``, never by the worker's (D4). Table and channel names are quoted: a
reserved word (``order``, ``user``) is a valid name.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from outbox.schema import check_identifier, names_for, quote_identifier


@dataclass(frozen=True)
class Statements:
    table: str
    dlq_table: str | None = None

    def __post_init__(self) -> None:
        names_for(self.table)
        if self.dlq_table is not None:
            check_identifier(self.dlq_table, "dead-letter table name")

    @property
    def channel(self) -> str:
        """The NOTIFY channel as a string value (pg_notify, asyncpg's add_listener); LISTEN quotes it."""
        return names_for(self.table).channel

    @cached_property
    def quoted_table(self) -> str:
        return quote_identifier(self.table)

    @cached_property
    def quoted_dlq_table(self) -> str:
        if self.dlq_table is None:
            raise ValueError("no dead-letter table configured")
        return quote_identifier(self.dlq_table)

    @property
    def listen(self) -> str:
        """LISTEN takes an identifier, not a string: quoted, it is exactly the channel pg_notify uses."""
        return f"LISTEN {quote_identifier(self.channel)}"

    @property
    def insert(self) -> str:
        """$1 queue, $2 payloads bytea[], $3 headers text[] (JSON), $4 delay seconds, $5 channel.

        Insert and NOTIFY in one round trip; NOTIFY is transactional, so a
        rollback drops the wake-up with the rows (P1).
        """
        return (
            f"WITH ins AS (INSERT INTO {self.quoted_table} (queue, payload, headers, next_attempt_at) "
            f"SELECT $1, p, h::jsonb, now() + make_interval(secs => $4) "
            f"FROM unnest($2::bytea[], $3::text[]) AS x(p, h) RETURNING id), "
            f"n AS (SELECT pg_notify($5, $1)) "
            f"SELECT ins.id FROM ins, n ORDER BY ins.id"
        )

    @property
    def fetch(self) -> str:
        """$1 queue, $2 lease TTL seconds, $3 limit. Claims and leases in one statement (D3).

        One fresh token per claim, shared by the rows it leases: every guarded write matches on
        (id, token), so a row's token still changes at every claim of it, which is all the guard needs,
        and the claim draws one random UUID instead of one per row (gen_random_uuid is a getrandom
        call: a third of the statement's time at 500 rows). Times come back as microseconds since 1970
        (exact: ``extract`` is numeric): asyncpg decodes a timestamptz into a datetime at about 0.6 us, more
        than the rest of the row, and the subscriber needs one lease start per claim."""
        return (
            f"WITH picked AS (SELECT id FROM {self.quoted_table} "
            f"WHERE queue = $1 AND next_attempt_at <= now() "
            f"AND (acquired_token IS NULL OR acquired_at < now() - make_interval(secs => $2)) "
            f"ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED), "
            f"lease AS MATERIALIZED (SELECT gen_random_uuid() AS token) "
            f"UPDATE {self.quoted_table} AS o SET acquired_token = lease.token, acquired_at = now(), "
            f"deliveries = o.deliveries + 1 "
            f"FROM picked, lease WHERE o.id = picked.id "
            f"RETURNING o.id, o.payload, o.headers::text, o.acquired_token, "
            f"(extract(epoch FROM o.acquired_at) * 1000000)::int8 AS acquired_at_us, o.deliveries, o.attempts, "
            f"(extract(epoch FROM o.created_at) * 1000000)::int8 AS created_at_us"
        )

    @property
    def ack(self) -> str:
        """$1 ids bigint[], $2 tokens uuid[]. Deletes only rows still leased by these tokens; returns
        (id, token) pairs, since one batch may hold a row twice (a stale holder and its reclaimer)."""
        return (
            f"DELETE FROM {self.quoted_table} AS o USING unnest($1::bigint[], $2::uuid[]) AS a(id, token) "
            f"WHERE o.id = a.id AND o.acquired_token = a.token RETURNING o.id, o.acquired_token"
        )

    @property
    def release(self) -> str:
        """$1 ids, $2 tokens. Hands back rows fetched but never started (graceful stop)."""
        return (
            f"UPDATE {self.quoted_table} AS o SET acquired_token = NULL, acquired_at = NULL, "
            f"deliveries = o.deliveries - 1 "
            f"FROM unnest($1::bigint[], $2::uuid[]) AS r(id, token) "
            f"WHERE o.id = r.id AND o.acquired_token = r.token"
        )

    @property
    def retry(self) -> str:
        """$1 id, $2 token, $3 delay seconds, $4 error. Schedules by the database clock (R1)."""
        return (
            f"UPDATE {self.quoted_table} SET acquired_token = NULL, acquired_at = NULL, attempts = attempts + 1, "
            f"next_attempt_at = now() + make_interval(secs => $3), last_error = $4 "
            f"WHERE id = $1 AND acquired_token = $2 RETURNING id"
        )

    @property
    def drop(self) -> str:
        """$1 id, $2 token. Terminal failure without a dead-letter table."""
        return f"DELETE FROM {self.quoted_table} WHERE id = $1 AND acquired_token = $2 RETURNING id"

    @property
    def dead_letter(self) -> str:
        """$1 id, $2 token, $3 reason, $4 error, $5 failed attempts to add.

        DELETE ... RETURNING feeds the INSERT in one statement (R3): if the
        insert fails (schema drift) the delete rolls back with it, and the row
        waits for its lease to expire (R4).
        """
        return (
            f"WITH moved AS (DELETE FROM {self.quoted_table} WHERE id = $1 AND acquired_token = $2 "
            f"RETURNING id, queue, payload, headers, created_at, attempts, deliveries) "
            f"INSERT INTO {self.quoted_dlq_table} (original_id, queue, payload, headers, created_at, "
            f"attempts, deliveries, reason, last_error) "
            f"SELECT id, queue, payload, headers, created_at, attempts + $5, deliveries, $3, $4 FROM moved "
            f"RETURNING original_id"
        )
