"""The guarantee catalogue: every id a verdict may cite, its promise in short, and where the promise comes from.

One list in code, in catalogue order. It orders the report's columns and the terminal table, and
``docs/guarantees.md`` is generated from it together with the checker and scenario registries
(``python -m harness.guarantees`` prints the table; a test keeps the doc in step).
Sources: the documents in ``shared/reference`` (000 faststream-outbox's production checklist, 001 Soniq's
production page, 002 eventsource-py's production tutorial, 003 faststream-outbox's lease-only delivery design).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Guarantee:
    id: str
    title: str
    source: str


CATALOGUE: tuple[Guarantee, ...] = (
    Guarantee("P1", "a rolled-back publish is never seen, nor its NOTIFY", "000"),
    Guarantee("P2", "a committed message survives worker crashes and a PostgreSQL crash-restart", "000, 001"),
    Guarantee("P3", "derived identifiers over 63 bytes are refused when the table is built", "000"),
    Guarantee("D1", "after healing and draining, every committed message was handled or dead-lettered", "000, 001"),
    Guarantee("D2", "every delivery was of a published, intact message", "000"),
    Guarantee("D3", "no two live leases on one row", "003"),
    Guarantee("D4", "leases judged by the database clock: a skewed worker neither steals nor keeps", "000, 003"),
    Guarantee("D5", "a killed worker's rows come back within [ttl, ttl + max_fetch_interval]", "003"),
    Guarantee("D6", "a write by a holder whose lease was reclaimed matches nothing (lease_lost)", "000, 003"),
    Guarantee("D7", "an idle consumer wakes on NOTIFY in milliseconds", "000"),
    Guarantee("D8", "without LISTEN, polling keeps delivering within max_fetch_interval; one WARNING", "000"),
    Guarantee("R1", "retries follow the strategy's delays by the database clock", "000"),
    Guarantee("R2", "never more than max_deliveries deliveries, reclaims included", "000"),
    Guarantee("R3", "a terminal failure is in the outbox or the DLQ, never both, never neither, DLQ once", "000, 001"),
    Guarantee("R4", "a failing DLQ write rolls back, shows as nacked_terminal > dlq_written, heals", "000"),
    Guarantee("L1", "SIGTERM: fetching stops, in-flight handlers get graceful_timeout, the rest is reclaimed",
              "000, 001"),
    Guarantee("L2", "a consumer process holds at most its connection budget", "000, 002"),
    Guarantee("L3", "below the budget: a clear error, no loss, recovery once capacity is back", "000, 002"),
    Guarantee("L4", "through partitions, black holes, resets and latency, workers reconnect on their own", "000"),
    Guarantee("L5", "validate_schema() names every drift; never called at start", "000"),
    Guarantee("O1", "the O1 counters reach a metrics recorder with queue labels", "000"),
)

BY_ID: dict[str, Guarantee] = {g.id: g for g in CATALOGUE}
_ORDER = {g.id: i for i, g in enumerate(CATALOGUE)}


def order_key(gid: str) -> tuple[int, str]:
    """Sorts ids in catalogue order; ids outside the catalogue go last, alphabetically."""
    return (_ORDER.get(gid, len(_ORDER)), gid)


def ordered(ids: set[str] | list[str]) -> list[str]:
    return sorted(set(ids), key=order_key)


def title(gid: str) -> str:
    g = BY_ID.get(gid)
    return g.title if g is not None else gid


def markdown_table() -> str:
    """The table of docs/guarantees.md: each id with the checker that decides it and the scenarios that check it."""
    from harness.checkers import DECIDED_BY  # noqa: PLC0415 - the catalogue itself has no dependencies
    from harness.scenarios import SCENARIOS  # noqa: PLC0415

    lines = ["| id | promise, in short | source | checker | scenarios |", "| --- | --- | --- | --- | --- |"]
    for g in CATALOGUE:
        checker = DECIDED_BY.get(g.id, "tests only (`tests/`)")
        scenarios = ", ".join(s.name for s in SCENARIOS if g.id in s.guarantees) or "—"
        lines.append(f"| {g.id} | {g.title} | {g.source} | {checker} | {scenarios} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
