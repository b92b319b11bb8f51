"""The two ways in: ``outbox-harness size`` and ``python -m harness.sizing`` (``run``, the same command, and
``consumers`` for driving locust by hand). Both take the options :func:`add_run_options` adds, so a knob of one is a
knob of the other, checked by the same argument types."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from harness.argtypes import (
    non_negative_finite_float,
    non_negative_int,
    positive_finite_float,
    positive_int,
    writable_dir,
)
from harness.exits import FINDINGS, INTERRUPTED, OK, USAGE
from harness.names import new_run_id
from harness.provision.postgres import database_url, plain_dsn
from harness.sizing.analysis import HEADROOM, recommend
from harness.sizing.plan import (
    DEFAULT_BOUND_S,
    FULL_GRID,
    FULL_PLAN,
    OFFER_MARGIN,
    QUICK_GRID,
    QUICK_PLAN,
    GridPoint,
    Handler,
    LoadPlan,
    grid_point,
)
from harness.sizing.load import Engine
from harness.sizing.report import text_table, write_report
from harness.sizing.run import SizingRun, run_consumers, run_grid

#: The load plan's knobs: option, type, what it sets.
_PLAN_KNOBS = (("user-rate", positive_finite_float, "transactions per second per locust user"),
               ("batch", positive_int, "messages per transaction"),
               ("step-users", positive_int, "users added per step"),
               ("step-seconds", positive_finite_float, "seconds per step"),
               ("steps", positive_int, "number of steps, kept as given even when --target-rate needs more"))
#: The master's port when workers join from other hosts (locust's own default).
REMOTE_MASTER_PORT = 5557


class UsageError(ValueError):
    """Options that are each valid but do not go together; the run exits with :data:`~harness.exits.USAGE`."""


def _add_handler_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--handler-ms", type=non_negative_finite_float, default=Handler.base_ms,
                   help="the stand-in handler's time in ms; 0 is a no-op handler (default: %(default)s)")
    p.add_argument("--jitter-ms", type=non_negative_finite_float, default=Handler.jitter_ms,
                   help="± this many ms around --handler-ms (default: %(default)s)")


def _add_load_options(p: argparse.ArgumentParser) -> None:
    """The load engine and the plan's cap."""
    g = p.add_argument_group("load: a locust master and its workers (docs/sizing.md)")
    g.add_argument("--load-processes", type=non_negative_int, default=1,
                   help="locust workers on this host, beside the master; 0 with --remote-workers only "
                        "(default: %(default)s)")
    g.add_argument("--remote-workers", type=non_negative_int, default=0,
                   help="locust workers that join from other hosts with --master-host; needs --dsn or DATABASE_URL "
                        "(default: %(default)s)")
    g.add_argument("--master-bind-host", default="127.0.0.1",
                   help="where the master listens for workers; 0.0.0.0 for other hosts (default: %(default)s)")
    g.add_argument("--master-port", type=positive_int, default=None,
                   help=f"the master's port (default: a free one; {REMOTE_MASTER_PORT} with --remote-workers)")
    g.add_argument("--max-rate", type=positive_finite_float, default=None,
                   help="raises the plan's cap to this many msg/s (never lowers it): it steps up to it unless the "
                        "consumer side is the limit first (default: the plan's last step; with --target-rate and no "
                        f"--steps, raised to {OFFER_MARGIN:g} × target × (1 + headroom))")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options of a sizing run, for ``outbox-harness size`` and ``python -m harness.sizing run`` alike."""
    p.add_argument("--quick", action="store_true",
                   help="a small grid and a short load plan that stops at the knee, for CI (a few minutes)")
    p.add_argument("--point", action="append", type=grid_point,
                   help="max_workers:fetch_batch_size:processes, repeatable; replaces the grid")
    p.add_argument("--target-rate", type=positive_finite_float, help="messages/s to recommend settings for")
    p.add_argument("--headroom", type=non_negative_finite_float, default=HEADROOM,
                   help="the recommended configuration sustains the target plus this fraction (default: %(default)s)")
    p.add_argument("--bound", type=positive_finite_float, default=DEFAULT_BOUND_S,
                   help="p95 commit → handler bound in seconds (default: %(default)s)")
    p.add_argument("--dsn", help="a PostgreSQL server to size on, a fresh database per point (default: DATABASE_URL, "
                                 "else the embedded server)")
    p.add_argument("--reports-dir", type=writable_dir, default="reports", help="(default: %(default)s)")
    _add_handler_options(p)
    for name, kind, what in _PLAN_KNOBS:
        p.add_argument(f"--{name}", type=kind, help=f"{what} (default: the grid's plan)")
    _add_load_options(p)


def engine_of(ns: argparse.Namespace) -> Engine:
    """The load engine a command line asks for; :class:`UsageError` for options that do not go together."""
    if ns.remote_workers and not (ns.dsn or database_url()):
        raise UsageError("--remote-workers: give --dsn (or set DATABASE_URL) to a PostgreSQL server the other hosts "
                         "can reach (the embedded one listens on 127.0.0.1 only)")
    if ns.load_processes + ns.remote_workers < 1:
        raise UsageError("--load-processes 0 needs --remote-workers: someone has to publish")
    port = ns.master_port or (REMOTE_MASTER_PORT if ns.remote_workers else 0)
    return Engine(local_workers=ns.load_processes, remote_workers=ns.remote_workers, bind_host=ns.master_bind_host,
                  bind_port=port)


def plan_run(ns: argparse.Namespace) -> SizingRun:
    """What a command line asks for, before anything starts. The plan steps up to ``--max-rate``; with a target
    rate and no ``--steps``, to at least :data:`~harness.sizing.plan.OFFER_MARGIN` × what a recommendation must
    sustain."""
    engine = engine_of(ns)
    plan = QUICK_PLAN if ns.quick else FULL_PLAN
    overrides = {k: v for k, v in vars(ns).items() if k in asdict(plan) and v is not None}
    plan = LoadPlan(**{**asdict(plan), **overrides})
    cap = ns.max_rate
    if cap is None and ns.target_rate is not None and ns.steps is None:
        cap = OFFER_MARGIN * ns.target_rate * (1 + ns.headroom)
    if cap is not None:
        plan = plan.reaching(cap)
    run_id = new_run_id()
    return SizingRun(run_id=run_id, out_dir=Path(ns.reports_dir) / f"sizing-{run_id}",
                     grid=ns.point or (QUICK_GRID if ns.quick else FULL_GRID), plan=plan,
                     handler=Handler(ns.handler_ms, ns.jitter_ms), bound_s=ns.bound, target=ns.target_rate,
                     headroom=ns.headroom, dsn=ns.dsn, started=datetime.now(UTC).isoformat(timespec="seconds"),
                     engine=engine)


def main(ns: argparse.Namespace) -> int:
    """``outbox-harness size``: runs the grid, writes the report, prints the table and the path."""
    try:
        run = plan_run(ns)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE
    settle = 1.0 if ns.quick else 2.0
    drain = 2.0 if ns.quick else 10.0
    print(f"sizing {run.run_id}: {len(run.grid)} point(s), up to {run.plan.duration:.0f} s of load each from a locust "
          f"master and {run.engine.workers} worker(s), report in {run.out_dir}", flush=True)
    code = OK
    try:
        asyncio.run(run_grid(run, settle_s=settle, drain_timeout=drain, log=lambda m: print(m, flush=True)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        run.interrupted = True
        code = INTERRUPTED
        print("interrupted: every process started was stopped by pid; writing what was measured", flush=True)
    if run.target is not None:
        run.recommendation = recommend(run.results, run.target, bound_s=run.bound_s, headroom=run.headroom)
    write_report(run)
    print()
    print(text_table(run.results))
    if run.recommendation is not None:
        print(f"\nrecommendation for {run.recommendation.target:g} msg/s:")
        print("\n".join(f"  {line}" for line in run.recommendation.lines))
    print(f"\nreport: {run.out_dir / 'sizing.html'}  (sizing.json, sizing.md, points/*/locust*.csv|html)")
    if code == OK and any(r.error for r in run.results):
        code = FINDINGS
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness.sizing", description="Sizing runs: locust step load "
                                     "over a (max_workers, fetch_batch_size, worker processes) grid.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_options(sub.add_parser("run", help="the sizing grid: what `outbox-harness size` runs"))
    cons = sub.add_parser("consumers", help="start only the consumers (schema + workers) until Ctrl-C")
    cons.add_argument("--dsn", default=os.environ.get("DATABASE_URL"),
                      help="the database to run them on; its outbox tables are dropped and re-created "
                           "(default: DATABASE_URL, else a database on a fresh embedded server)")
    cons.add_argument("--workers", type=positive_int, default=1, help="worker processes (default: %(default)s)")
    cons.add_argument("--max-workers", type=positive_int, default=8, help="(default: %(default)s)")
    cons.add_argument("--fetch-batch-size", type=positive_int, default=100, help="(default: %(default)s)")
    _add_handler_options(cons)
    cons.add_argument("--history-dir", default="out/consumers", help="(default: %(default)s)")
    return parser


def cli(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    if ns.command == "run":
        return main(ns)
    point = GridPoint(ns.max_workers, ns.fetch_batch_size, ns.workers)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_consumers(point, Handler(ns.handler_ms, ns.jitter_ms), Path(ns.history_dir),
                                  plain_dsn(ns.dsn) if ns.dsn else None))
    return 0
