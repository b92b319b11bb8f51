"""Adapter for pg-boss (Node, pg-boss 12.38, node-postgres 8.23) through the process contract.

pg-boss cannot join a Python transaction, so everything runs in its own program, ``adapters/pgboss`` (Node,
installed by ``npm ci`` from its lock file: ``bin/setup`` does it): pg-boss's uninstall plans and migrations for the
schema, ``getQueues`` / ``findJobs`` for the state, an insert-only ``PgBoss`` whose ``insert(..., {db})`` runs on
the program's own client inside its ``BEGIN``, beside the harness's business rows (committed or rolled back as the
harness decides: P1), and a working ``PgBoss`` as the consumer, whose process the supervisor starts and kills
directly.

What pg-boss does instead of a lease, and why the timings below: a fetched job is ``active`` with ``started_on =
now()`` (database clock) and nothing renews it (heartbeats are opt-in and at least 10 s). ``expireInSeconds``
(``lease_ttl_seconds`` rounded up to a whole second) is a job timeout: the live worker abandons the handler at it
and fails the job, and every instance's supervisor (``superviseIntervalSeconds``, set to its least, 1 s) fails an
active job older than it, that of a dead worker included. A failed job with attempts left goes to ``retry`` with
``start_after`` = now + the retry delay, and a worker's next poll (``pollingIntervalSeconds``, at least 0.5 s) picks
it up: retried jobs send no NOTIFY.
"""

from __future__ import annotations

import math
from pathlib import Path

from harness.adapter import Capabilities, ConsumerConfig, Timings
from harness.adapters.nodeprogram import node_library_version, node_program
from harness.adapters.process import ProcessAdapter

SOURCE = Path(__file__).resolve().parents[2] / "adapters" / "pgboss"
SUPERVISE_INTERVAL_S = 1.0  # superviseIntervalSeconds / monitorIntervalSeconds in options.mjs: the least allowed
MIN_POLL_S = 0.5  # pg-boss's least pollingIntervalSeconds

CAPABILITIES = Capabilities(
    dlq=True,  # a dead-letter queue per queue: a job whose retries are spent is copied there
    max_deliveries=True,  # retry_count goes up at every start after the first, expiries included
    retry_schedule=False,  # whole-second delays and pg-boss's own backoff: RetryConfig is not expressible
    lease_ttl=False,  # a job timeout swept by the supervisor, then a retry delay: declared as Timings
    lease_times=True,  # started_on = job_now() in the fetch statement
    settle_outcomes=False,  # work() settles the job itself and says nothing of what its write did
    notify=True,  # useListenNotify with a notify queue, polling every max_fetch_interval as the fallback
    graceful_drain=True,  # stop({graceful: true, timeout: graceful_timeout})
    metrics=False,
    connection_budget=True,  # the pool's max, plus the dedicated LISTEN connection
    prefetch=False,  # batchSize 1: a worker runs the job it fetched at once
    notes=(
        "pg-boss 12.38 (Node, node-postgres) through the process contract: its own program (adapters/pgboss) runs "
        "the consumer (PgBoss.work with localConcurrency = max_workers, batchSize 1), the publisher (insert with "
        "the db option on the program's own client, inside its BEGIN, beside the business rows) and the schema "
        "(uninstall plans, then migrations and createQueue). No lease: expireInSeconds (lease_ttl_seconds rounded up "
        "to whole seconds) is a job timeout; the live worker abandons the handler at it (its signal aborted: "
        "recorded as a deliver fail with error timeout) and fails the job, and every instance's supervisor, each "
        "second, fails an active job past it (a dead worker's too); the job then waits its retry delay in state "
        "retry, so scenarios that need reclaims run stretched to that. Settles are fenced by retry_count (a lapsed "
        "holder's complete() leaves a later attempt alone) but work() reports no outcome, so none is recorded. One "
        "attempt budget, min(retry.max_attempts, max_deliveries), counts expiries and a graceful stop's failed "
        "jobs too. Not expressible: the harness's retry schedule (pg-boss's delays are whole seconds, its backoff "
        "retryDelay × 2^n/2 × (1 + random()) with a base of at least 1 s), fetch_batch_size (a worker runs its "
        "batch to the end before fetching again, so batchSize is 1), sub-second polling (0.5 s at least), a "
        "dead-letter table (dead letters are jobs of the queue's dead-letter queue in pgboss.job), metrics. Node "
        "20 runs it although pg-boss 12 declares node >= 22."
    ),
)


def program() -> list[str]:
    """``node adapters/pgboss/main.mjs``, once node and the packages its lock file pins are installed."""
    return node_program(SOURCE, "pg-boss")


def pool_size(config: ConsumerConfig) -> int:
    """consumer.mjs's poolSize: max_workers handlers, the supervisor and the queue cache."""
    return config.pool_size if config.pool_size is not None else config.max_workers + 2


class PgBossAdapter(ProcessAdapter):
    def __init__(self) -> None:
        super().__init__("pg-boss", CAPABILITIES, program, budget=lambda config: pool_size(config) + 1,
                         version=lambda: node_library_version(SOURCE, "pg-boss"))

    def timings(self, config: ConsumerConfig) -> Timings:
        """A dead worker's job expires expireInSeconds after its start; a supervisor pass fails it within a
        second; it then waits the retry delay of a second failure (a row may expire twice) and a poll."""
        return Timings(reclaim_seconds=float(math.ceil(config.lease_ttl_seconds)),
                       reclaim_window_seconds=SUPERVISE_INTERVAL_S + _retry_delay(config) +
                       max(MIN_POLL_S, config.max_fetch_interval))


def _js_round(seconds: float) -> int:
    """JavaScript's Math.round, which options.mjs uses (halves round up; Python's round() goes to even)."""
    return math.floor(seconds + 0.5)


def _retry_delay(config: ConsumerConfig) -> float:
    """The longest delay pg-boss may put before the retry after a second failure (options.mjs's mapping; its
    backoff is base × 2^n / 2 × (1 + random()), n = 2 there)."""
    retry = config.retry
    if retry.kind == "constant":
        return float(_js_round(retry.initial_delay_seconds))
    if retry.kind == "exponential":
        return float(min(math.ceil(retry.max_delay_seconds), max(1, _js_round(retry.initial_delay_seconds)) * 4))
    return 0.0


adapter = PgBossAdapter()
