"""Adapter for graphile-worker (Node, graphile-worker 0.18.0, node-postgres 8.23) through the process contract.

graphile-worker cannot join a Python transaction, so everything runs in its own program,
``adapters/graphile-worker`` (Node, installed by ``npm ci`` from its lock file: ``bin/setup`` does it): its schema
dropped and ``runMigrations``; the state read from its job table; publishing through its ``add_job`` SQL function
in the program's own transaction, beside the harness's business rows (P1); and a ``run()`` runner as the consumer,
whose process the supervisor starts and kills directly.

No reclaim: a job is locked (``locked_at = now()``, ``locked_by`` = the worker) until its handler returns, and a
lock whose holder died is released only by the sweep for locks older than **4 hours** (``resetLockedAt``, not
configurable). So the adapter declares neither a lease nor a reclaim time, and the scenarios that need a reclaim
(sigkill_storm, slow_handlers, zombie_worker, paused_worker) are not applicable.
"""

from __future__ import annotations

from pathlib import Path

from harness.adapter import Capabilities, ConsumerConfig
from harness.adapters.nodeprogram import node_library_version, node_program
from harness.adapters.process import ProcessAdapter

SOURCE = Path(__file__).resolve().parents[2] / "adapters" / "graphile-worker"

CAPABILITIES = Capabilities(
    dlq=True,  # a job whose attempts are spent stays in the job table, unlocked: failed for good
    max_deliveries=True,  # attempts goes up at every lock
    retry_schedule=False,  # exp(min(attempts, 10)) seconds, not configurable
    lease_ttl=False,  # a lock held until the handler returns; a dead holder's after 4 hours
    lease_times=True,  # locked_at = now() in get_job
    settle_outcomes=False,
    notify=True,  # LISTEN on jobs:insert (add_job's trigger), pollInterval = max_fetch_interval as the fallback
    graceful_drain=True,  # runner.stop(): gracefulShutdownAbortTimeout = graceful_timeout, then abortSignal
    metrics=False,
    connection_budget=True,  # the pool it is given, its LISTEN connection included
    prefetch=False,  # no local queue: each worker locks one job when it is free
    notes=(
        "graphile-worker 0.18 (Node, node-postgres) through the process contract: its own program "
        "(adapters/graphile-worker) runs the consumer (run() with concurrency = max_workers and one task named "
        "after the queue), the publisher (the add_job SQL function, its documented way to enqueue in a "
        "transaction, in the program's own transaction beside the business rows) and the schema (dropped, then "
        "runMigrations; it has no uninstall). The state reads its _private_jobs table: its public jobs view has "
        "no payload and no API lists jobs. No lease and no reclaim within a run: a job stays locked until its "
        "handler returns, and a dead worker's lock is released only after 4 hours (not configurable), so the "
        "reclaim scenarios are not applicable. max_attempts = min(retry.max_attempts, max_deliveries) is stamped "
        "at add_job; attempts counts every lock. Not expressible: the harness's retry schedule (the delay is "
        "exp(min(attempts, 10)) seconds), fetch_batch_size (its local queue would hold locked jobs in memory), "
        "a dead-letter table (dead letters are spent rows of its job table), metrics."
    ),
)


def program() -> list[str]:
    """``node adapters/graphile-worker/main.mjs``, once node and the packages its lock file pins are installed."""
    return node_program(SOURCE, "graphile-worker")


def pool_size(config: ConsumerConfig) -> int:
    """pool.mjs's poolSize: max_workers jobs, the LISTEN connection and one more."""
    return config.pool_size if config.pool_size is not None else config.max_workers + 2


adapter = ProcessAdapter("graphile-worker", CAPABILITIES, program, budget=pool_size,
                         version=lambda: node_library_version(SOURCE, "graphile-worker"))
