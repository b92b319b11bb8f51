"""Adapter for River (github.com/riverqueue/river v0.51, Go, pgx v5) through the process contract.

River cannot join a Python transaction, so everything runs in its own program, ``adapters/river`` (Go, built
once into the cache by :mod:`harness.adapters.gobuild`): ``rivermigrate`` for the schema, ``JobList`` for the
state, an insert-only ``river.Client`` whose ``InsertManyTx`` writes the jobs in the program's own pgx
transaction beside the harness's business rows (committed or rolled back as the harness decides: P1), and a
working ``river.Client`` as the consumer, whose process the supervisor starts and kills directly.

What River does instead of a lease, and why the timings below: a fetched job is ``running`` with
``attempted_at = now()`` (database clock) and nothing renews it. Only the elected leader's rescuer, every 30 s
(``JobRescuerIntervalDefault``; ``river.Config`` does not expose it), takes back jobs running longer than
``RescueStuckJobsAfter`` and past their ``JobTimeout`` (both set to ``lease_ttl_seconds``: the rescuer never takes
back a job without a timeout), making them ``retryable`` at the retry policy's next
time; the leader's scheduler, every 5 s, makes them ``available`` again. A new leader runs its rescuer at once
(after a start stagger of up to 1 s), so a dead leader does not add to that bound.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.adapter import Capabilities, ConsumerConfig, Timings
from harness.adapters.gobuild import go_program, required_version
from harness.adapters.process import ProcessAdapter

SOURCE = Path(__file__).resolve().parents[2] / "adapters" / "river"
BINARY_ENV = "OUTBOX_HARNESS_RIVER_BIN"  # a prebuilt adapter program instead of building one
RESCUER_INTERVAL_S = 30.0  # maintenance.JobRescuerIntervalDefault
SCHEDULER_INTERVAL_S = 5.0  # maintenance.JobSchedulerIntervalDefault: retryable -> available
STAGGER_S = 1.0  # a maintenance service's start stagger on a new leader

CAPABILITIES = Capabilities(
    dlq=True,  # discarded jobs stay in river_job, state 'discarded'
    max_deliveries=True,  # attempt counts every fetch, rescues included
    retry_schedule=True,  # the harness's RetryConfig as a ClientRetryPolicy
    lease_ttl=False,  # a rescuer sweep every 30 s, not a lease that lapses at its TTL: declared as Timings
    lease_times=True,  # attempted_at = now() in the fetch statement
    settle_outcomes=False,  # completions are fenced by state only, and no lease_lost is reported
    notify=True,  # LISTEN for insert notifications, FetchPollInterval polling as the fallback
    graceful_drain=True,  # Start's context ends: soft stop, SoftStopTimeout = graceful_timeout, then cancel
    metrics=False,
    connection_budget=False,
    prefetch=False,  # a producer fetches only as many jobs as it has free workers, and starts them at once
    notes=(
        "River 0.51 (Go) through the process contract: its own program (adapters/river) runs the consumer "
        "(river.Client), the publisher (InsertManyTx in its own pgx transaction beside the business rows) and "
        "the schema (rivermigrate). No lease: a job stays running until the leader's rescuer (every 30 s, not "
        "configurable through river.Config) finds it older than RescueStuckJobsAfter (= lease_ttl_seconds) and "
        "makes it retryable at the retry policy's next time; the leader's scheduler (every 5 s) makes it "
        "available, so scenarios that need reclaims run stretched to that. Completions are fenced by "
        "state = 'running' only, not by attempt: a lapsed holder can complete the row of a later attempt, and "
        "River reports no lease_lost; its completion events also come for rows a stale write left unchanged, so "
        "settles are River's word. attempt counts every fetch, so max_attempts = min(retry.max_attempts, "
        "max_deliveries) caps rescues too, except that a call cut off by a graceful stop gives its attempt "
        "back. JobTimeout is the lease too: River's rescuer skips a running job until its timeout has passed "
        "(never, without one), so a handler's context ends at lease_ttl_seconds and the call fails (recorded "
        "with error timeout), to be retried. Not expressible: fetch_batch_size (River fetches as many jobs as it "
        "has free workers), a dead-letter "
        "table (dead letters are discarded rows of river_job), a documented per-process connection budget (the "
        "pgx pool's MaxConns, plus the LISTEN connection River hijacks out of it), metrics. libfaketime cannot "
        "skew a Go binary's clock."
    ),
)


def program() -> list[str]:
    """``$OUTBOX_HARNESS_RIVER_BIN``, else the adapter program built from ``adapters/river`` (once per version)."""
    return [os.environ.get(BINARY_ENV) or str(go_program(SOURCE, "river-adapter"))]


def version() -> str:
    """River and its pgx v5 driver, as adapters/river/go.mod pins them (what the program is built with)."""
    mod = SOURCE / "go.mod"
    return (f"river {required_version(mod, 'github.com/riverqueue/river')} (riverpgxv5 "
            f"{required_version(mod, 'github.com/riverqueue/river/riverdriver/riverpgxv5')})")


class RiverAdapter(ProcessAdapter):
    def __init__(self) -> None:
        super().__init__("river", CAPABILITIES, program, version=version)

    def timings(self, config: ConsumerConfig) -> Timings:
        """A dead worker's job is stuck after RescueStuckJobsAfter; then up to a rescuer period (plus a new
        leader's start stagger), the retry delay (that of a second failure: a row may be rescued twice) and a
        scheduler period pass before it is available."""
        retry = config.retry
        delay = retry.delay(2) * (1 + retry.jitter_factor if retry.kind == "exponential" else 1)
        return Timings(reclaim_seconds=config.lease_ttl_seconds,
                       reclaim_window_seconds=RESCUER_INTERVAL_S + STAGGER_S + delay + SCHEDULER_INTERVAL_S)


adapter = RiverAdapter()

if __name__ == "__main__":  # bin/setup builds the program ahead of the first run
    print(program()[0])
