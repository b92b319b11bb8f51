"""Broken twins of the correct prefetching outbox (``tests/correct/prefetch.py``), as adapters.

Each twin subclasses the correct implementation and makes one realistic mistake, so a scenario that
catches it shows the harness sees the mistake itself, not a design it is unused to. Workers load them
by spec string, e.g. ``--impl tests.broken.prefetch_variants:worker_clock_prefetch``.

======================  ===================================================  ===========================
variant                 mistake                                              expected
======================  ===================================================  ===========================
worker_clock_prefetch   lease expiry and leased_until from the worker's      clock_skew: D3, D4 fail
                        time.time(), not the database's now()
never_reconnects        the fetch loop ends at the first connection error;   partition_black_hole: L4
                        the process stays up and never claims again          and D1 fail (liveness bound)
heartbeat_tokenless     the heartbeat outbox (tests/correct/heartbeat.py)     zombie_worker: D6 fail;
                        completes by id alone, ignoring the lease token      slow_handlers cannot see it
                                                                             (heartbeats keep the leases)
fixed_timeout_          the same mistake behind a 6 s heartbeat timeout      zombie_worker stretched to
tokenless               of its own (declared); ``_undeclared`` claims the    its timings: D6 fail; the
                        scenario's lease instead                             unstretched run sees nothing
======================  ===================================================  ===========================
"""

from __future__ import annotations

import logging
import time

from harness.adapter import ConsumerConfig, Timings
from tests.correct._lease import CONNECTION_ERRORS, LeaseTable, Outage
from tests.correct.heartbeat import FixedTimeoutHeartbeatAdapter, HeartbeatAdapter
from tests.correct.prefetch import PrefetchAdapter, PrefetchConsumer

log = logging.getLogger("tests.broken.prefetch")


def _swap_all(sql: str, old: str, new: str) -> str:
    """``sql`` with every ``old`` replaced; loud if the correct SQL no longer contains ``old``."""
    if old not in sql:
        raise AssertionError(f"broken variant out of date: {old!r} not in the correct SQL")
    return sql.replace(old, new)


# -- the worker's clock decides leases (D4, D3) ----------------------------------------------------

class WorkerClockTable(LeaseTable):
    """The claim passes the worker's wall clock where the database's ``now()`` belongs: to judge
    expiry and to set ``leased_until``. A worker ahead by more than the TTL sees every live lease as
    expired and steals it; one behind writes leases that are already over, so others take its rows.
    (Built per claim: the property is read on every claim.)"""

    @property
    def claim(self) -> str:
        return _swap_all(super().claim, "now()", f"to_timestamp({time.time()!r})")


class WorkerClockPrefetchAdapter(PrefetchAdapter):
    name = "broken:worker_clock_prefetch"
    table = WorkerClockTable("prefetch_outbox")


# -- the fetch loop gives up on a lost connection (L4) ----------------------------------------------

class NeverReconnectsConsumer(PrefetchConsumer):
    """Treats a connection error as the end of fetching. Nothing crashes and nothing exits, so no
    supervisor restarts it: after a partition heals the process is alive and idle for good."""

    def recover(self, exc: Exception, outage: Outage) -> bool:
        if isinstance(exc, CONNECTION_ERRORS):
            log.error("claim failed: %s: %s; the fetch loop stops", type(exc).__name__, exc)
            return False
        return super().recover(exc, outage)


class NeverReconnectsAdapter(PrefetchAdapter):
    name = "broken:never_reconnects"
    consumer_class = NeverReconnectsConsumer


# -- a completion that ignores the lease token (D6) ------------------------------------------------

class TokenlessTable(LeaseTable):
    """Completes by id alone: a holder whose lease lapsed deletes the row another worker now holds. With a
    heartbeat, leases lapse only when the holder is cut off (or frozen), so only such a fault shows it."""

    @property
    def complete(self) -> str:
        return _swap_all(super().complete, "WHERE id = $1 AND lease_token = $2", "WHERE id = $1 AND $2::uuid IS NOT NULL")


class TokenlessHeartbeatAdapter(HeartbeatAdapter):
    name = "broken:heartbeat_tokenless"
    table = TokenlessTable("heartbeat_outbox")


class TokenlessFixedTimeoutAdapter(FixedTimeoutHeartbeatAdapter):
    """The tokenless completion again, in the heartbeat outbox with a 6 s heartbeat timeout of its own: a cut shorter
    than that never makes a zombie, so only a scenario stretched to the declared timings can catch it."""

    name = "broken:fixed_timeout_tokenless"
    table = TokenlessTable("heartbeat_outbox")


class TokenlessFixedTimeoutUndeclared(TokenlessFixedTimeoutAdapter):
    """The same, claiming the scenario's own lease as its reclaim time: the scenario is not stretched."""

    name = "broken:fixed_timeout_tokenless_undeclared"

    def timings(self, config: ConsumerConfig) -> Timings:
        return Timings(reclaim_seconds=config.lease_ttl_seconds)


worker_clock_prefetch = WorkerClockPrefetchAdapter()
never_reconnects = NeverReconnectsAdapter()
heartbeat_tokenless = TokenlessHeartbeatAdapter()
fixed_timeout_tokenless = TokenlessFixedTimeoutAdapter()
fixed_timeout_tokenless_undeclared = TokenlessFixedTimeoutUndeclared()

VARIANTS = ("worker_clock_prefetch", "never_reconnects", "heartbeat_tokenless", "fixed_timeout_tokenless",
            "fixed_timeout_tokenless_undeclared")
