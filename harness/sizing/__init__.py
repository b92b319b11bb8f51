"""Sizing runs: locust step load over a (max_workers, fetch_batch_size, worker processes) grid.

For each grid point: a fresh database (on the server of ``--dsn``, else of ``DATABASE_URL``, else on
a fresh embedded PostgreSQL), the reference schema, N consumer worker processes under
:class:`harness.supervisor.Supervisor` (reference adapter, no faults, a handler of ``handler_ms`` ±
``jitter_ms``), then the load: locust in its own distributed mode, a master and ``--load-processes``
workers (plus any that join from other hosts), each a subprocess registered with the guard and
stopped by pid. While it runs, ``pg_stat_activity`` is sampled by ``application_name``
(:func:`harness.sampler.sample_connections`) and CPU by role from ``/proc``
(:mod:`~harness.sizing.cpu`); the load stops once a growing backlog shows the consumer side is the
limit (with a target rate, not before a step offering what a recommendation must sustain has run).
Figures come from the raw data, not from locust's bucketed percentiles: every locust worker's commit
log (collected by the master over locust's message channel) and the consumer workers' histories,
placed on one clock (:mod:`~harness.sizing.clock`: exact on one host, through the database's
``clock_timestamp()`` across hosts), give every message's end-to-end latency.

Per load step (its first ``settle`` seconds skipped): messages committed per second, first
deliveries per second, p95 of commit → handler start over the messages committed in the step (a
message never delivered counts as infinitely late), publish p95, CPU by role, and which side kept it
from passing. A step is *sustained* when that p95 is within the bound (default 1 s) and it delivered
at least 90 % of what it published (a short step can stay under the bound while its backlog grows).
The point's **sustainable rate** is the best delivery rate among the steps before the first one that
is not sustained, and ``limited_by`` names that step's side (``consumer``, ``database``, ``host CPU``)
with the figures that show it; if no step failed, it is a lower bound (``publisher``: locust could not
offer more; ``load``: the plan reached its cap). The recommendation for a target rate keeps headroom
above it (:data:`~harness.sizing.analysis.HEADROOM`), is never a point the publisher limited, states
the shortest safe ``lease_ttl_seconds`` from the measured handler p99, and says what a connection
pooler changes.

Connection use is checked against the budget the adapter declares (``connection_budget``; for the
reference outbox, per subscriber: pool ``max_workers + 1`` and one LISTEN, so per process
``max_workers + 2``), and ``max_connections ≥ replicas × Σ subs × (max_workers + 2)``.

The modules, by role: :mod:`~harness.sizing.plan` (grid, load plan, handler),
:mod:`~harness.sizing.analysis` (pure figures: steps, sides, knee, budget, recommendation),
:mod:`~harness.sizing.data` (reading and merging the raw files), :mod:`~harness.sizing.clock` (one
timeline across hosts), :mod:`~harness.sizing.cpu` (``/proc``), :mod:`~harness.sizing.load` (the
locust master and workers), :mod:`~harness.sizing.run` (a point, the grid, consumers alone),
:mod:`~harness.sizing.report` (JSON, Markdown, HTML) and :mod:`~harness.sizing.cli` (one set of
options for both entry points). ``main(ns)`` (``outbox-harness size``) writes
``reports/sizing-<run-id>/``: ``sizing.json``, ``sizing.md``, ``sizing.html`` (inline SVG, no
scripts), and per point the locust CSV/HTML, the commit logs, worker histories (gzipped) and logs.
``python -m harness.sizing consumers`` starts only the consumers, for running the locustfile by hand
(``docs/sizing.md``).
"""

from harness.sizing.analysis import (
    HEADROOM,
    KEEP_UP,
    Budget,
    Commit,
    Knee,
    PointResult,
    Recommendation,
    Step,
    StepFigures,
    check_budget,
    find_knee,
    recommend,
    step_figures,
)
from harness.sizing.cli import cli, main
from harness.sizing.plan import FULL_GRID, FULL_PLAN, QUICK_GRID, QUICK_PLAN, GridPoint, Handler, LoadPlan, backlog_limit
from harness.sizing.report import write_report
from harness.sizing.run import SizingRun

__all__ = ["FULL_GRID", "FULL_PLAN", "HEADROOM", "KEEP_UP", "QUICK_GRID", "QUICK_PLAN", "Budget", "Commit", "GridPoint", "Handler",
           "Knee", "LoadPlan", "PointResult", "Recommendation", "SizingRun", "Step", "StepFigures", "backlog_limit",
           "check_budget", "cli", "find_knee", "main", "recommend", "step_figures", "write_report"]
