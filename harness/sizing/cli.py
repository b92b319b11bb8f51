"""The two ways in: ``outbox-harness size`` (:func:`main`) and ``python -m harness.sizing`` (:func:`cli`:
``run``, the same grid with more knobs, and ``consumers`` for driving locust by hand)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from harness.argtypes import non_negative_int, positive_finite_float, positive_int
from harness.names import new_run_id
from harness.provision.postgres import database_url, plain_dsn
from harness.sizing.analysis import recommend
from harness.sizing.plan import (
    DEFAULT_BOUND_S,
    FULL_GRID,
    FULL_PLAN,
    QUICK_GRID,
    QUICK_PLAN,
    TARGET_HEADROOM,
    GridPoint,
    Handler,
    LoadPlan,
    parse_points,
)
from harness.sizing.load import Engine
from harness.sizing.report import text_table, write_report
from harness.sizing.run import SizingRun, run_consumers, run_grid

#: The master's port when workers join from other hosts (locust's own default).
REMOTE_MASTER_PORT = 5557


def add_load_options(parser: argparse.ArgumentParser) -> None:
    """The load engine and the plan's cap; ``outbox-harness size`` and ``python -m harness.sizing run``."""
    g = parser.add_argument_group("load: a locust master and its workers (docs/sizing.md)")
    g.add_argument("--load-processes", type=non_negative_int, default=1,
                   help="locust workers on this host, beside the master; 0 with --remote-workers only "
                        "(default: %(default)s)")
    g.add_argument("--remote-workers", type=non_negative_int, default=0,
                   help="locust workers that join from other hosts with --master-host (default: %(default)s)")
    g.add_argument("--master-bind-host", default="127.0.0.1",
                   help="where the master listens for workers; 0.0.0.0 for other hosts (default: %(default)s)")
    g.add_argument("--master-port", type=positive_int, default=None,
                   help=f"the master's port (default: a free one; {REMOTE_MASTER_PORT} with --remote-workers)")
    g.add_argument("--max-rate", type=positive_finite_float, default=None,
                   help=f"the plan's cap in msg/s: it steps up to this unless the consumer side is the limit first "
                        f"(default: the plan's last step, raised to {TARGET_HEADROOM:g} × --target-rate)")


def engine_of(ns: argparse.Namespace) -> Engine:
    remote = int(getattr(ns, "remote_workers", 0) or 0)
    if remote and database_url() is None:
        raise SystemExit("--remote-workers: set DATABASE_URL to a PostgreSQL server the other hosts can reach "
                         "(the embedded one listens on 127.0.0.1 only)")
    local = getattr(ns, "load_processes", None)
    local = 1 if local is None else int(local)
    if local + remote < 1:
        raise SystemExit("--load-processes 0 needs --remote-workers: someone has to publish")
    port = getattr(ns, "master_port", None) or (REMOTE_MASTER_PORT if remote else 0)
    return Engine(local_workers=local, remote_workers=remote,
                  bind_host=getattr(ns, "master_bind_host", None) or "127.0.0.1", bind_port=port)


def main(ns: argparse.Namespace) -> int:
    """``outbox-harness size``: runs the grid, writes the report, prints the table and the path."""
    quick = bool(getattr(ns, "quick", False))
    grid = parse_points(getattr(ns, "point", None) or []) or (QUICK_GRID if quick else FULL_GRID)
    plan = QUICK_PLAN if quick else FULL_PLAN
    overrides = {k: getattr(ns, k) for k in ("user_rate", "batch", "step_users", "step_seconds", "steps")
                 if getattr(ns, k, None) is not None}
    if overrides:
        plan = LoadPlan(**{**asdict(plan), **overrides})
    target = getattr(ns, "target_rate", None)
    cap = getattr(ns, "max_rate", None) or (TARGET_HEADROOM * target if target else None)
    if cap:
        plan = plan.reaching(cap)
    engine = engine_of(ns)
    handler = Handler(getattr(ns, "handler_ms", None) or Handler.base_ms, getattr(ns, "jitter_ms", None) or Handler.jitter_ms)
    bound = getattr(ns, "bound", None) or DEFAULT_BOUND_S
    run_id = new_run_id()
    run = SizingRun(run_id=run_id, out_dir=Path(getattr(ns, "reports_dir", "reports")) / f"sizing-{run_id}", grid=grid,
                    plan=plan, handler=handler, bound_s=bound, target=target,
                    started=datetime.now(UTC).isoformat(timespec="seconds"), engine=engine)
    settle = 1.0 if quick else 2.0
    drain = 2.0 if quick else 10.0
    print(f"sizing {run_id}: {len(grid)} point(s), up to {plan.duration:.0f} s of load each from a locust master and "
          f"{engine.workers} worker(s), report in {run.out_dir}", flush=True)
    code = 0
    try:
        asyncio.run(run_grid(run, settle_s=settle, drain_timeout=drain, log=lambda m: print(m, flush=True)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        run.interrupted = True
        code = 130
        print("interrupted: every process started was stopped by pid; writing what was measured", flush=True)
    if run.target is not None:
        run.recommendation = recommend(run.results, run.target, bound_s=bound)
    write_report(run)
    print()
    print(text_table(run.results))
    if run.recommendation is not None:
        print(f"\nrecommendation for {run.recommendation.target:g} msg/s: {run.recommendation.message}")
    print(f"\nreport: {run.out_dir / 'sizing.html'}  (sizing.json, sizing.md, points/*/locust*.csv|html)")
    if code == 0 and any(r.error for r in run.results):
        code = 1
    return code


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.sizing", description="Sizing runs: locust step load "
                                     "over a (max_workers, fetch_batch_size, worker processes) grid.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="the sizing grid (what `outbox-harness size` runs), with more knobs")
    run.add_argument("--quick", action="store_true")
    run.add_argument("--target-rate", type=float)
    run.add_argument("--reports-dir", default="reports")
    run.add_argument("--point", action="append", help="max_workers:fetch_batch_size:processes (repeatable)")
    run.add_argument("--bound", type=float, help=f"p95 bound in seconds (default {DEFAULT_BOUND_S:g})")
    run.add_argument("--handler-ms", type=float)
    run.add_argument("--jitter-ms", type=float)
    for name, typ in (("user-rate", float), ("batch", int), ("step-users", int), ("step-seconds", float), ("steps", int)):
        run.add_argument(f"--{name}", type=typ)
    add_load_options(run)
    cons = sub.add_parser("consumers", help="start only the consumers (schema + workers) until Ctrl-C")
    cons.add_argument("--dsn", default=os.environ.get("DATABASE_URL"), help="default: DATABASE_URL, else embedded")
    cons.add_argument("--workers", type=int, default=1, help="worker processes")
    cons.add_argument("--max-workers", type=int, default=8)
    cons.add_argument("--fetch-batch-size", type=int, default=100)
    cons.add_argument("--handler-ms", type=float, default=Handler.base_ms)
    cons.add_argument("--jitter-ms", type=float, default=Handler.jitter_ms)
    cons.add_argument("--history-dir", default="out/consumers")
    ns = parser.parse_args(argv)
    if ns.command == "run":
        return main(ns)
    point = GridPoint(ns.max_workers, ns.fetch_batch_size, ns.workers)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_consumers(point, Handler(ns.handler_ms, ns.jitter_ms), Path(ns.history_dir),
                                  plain_dsn(ns.dsn) if ns.dsn else None))
    return 0
