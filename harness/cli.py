"""``outbox-harness``: run the chaos suite, a conformance matrix, the benchmark, sizing runs.

Scenarios are pytest tests (``scenarios/``); ``run`` and ``conformance`` call
pytest with the harness plugin, so there is one way to run a scenario.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.adapter import ALIASES, alias_help
from harness.bench.config import DEFAULTS as BENCH

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def _pytest(args: list[str]) -> int:
    import pytest  # noqa: PLC0415

    return int(pytest.main(args))


def cmd_run(ns: argparse.Namespace) -> int:
    """The chaos suite against one implementation; writes reports/<run-id>/ and prints the verdicts."""
    args = [str(ns.scenarios), "-p", "no:cacheprovider", "-v", "--live", "-rfs", f"--reports-dir={ns.reports_dir}"]
    args += [f"--impl={i}" for i in (ns.impl or ["reference"])]
    if ns.k:
        args += ["-k", ns.k]
    if ns.allow_unknown:
        args.append("--allow-unknown")
    return _pytest(args)


def cmd_conformance(ns: argparse.Namespace) -> int:
    """Several implementations on the same scenarios: a conformance matrix in the report.

    Undecided verdicts do not fail the run (a peer may not expose what a checker needs); fail
    verdicts are findings about an implementation, reported in the matrix, and also do not fail
    the command unless --strict is given.
    """
    impls = ns.impl or list(ALIASES)
    args = [str(ns.scenarios), "-p", "no:cacheprovider", "-v", "--live", "-rfs", "--allow-unknown",
            f"--reports-dir={ns.reports_dir}"] + [f"--impl={i}" for i in impls]
    if ns.k:
        args += ["-k", ns.k]
    code = _pytest(args)
    return code if ns.strict else (0 if code in (0, 1) else code)


def cmd_check(ns: argparse.Namespace) -> int:
    """Judge a saved run again from its histories; exit 1 on a fail (or an unknown without --allow-unknown)."""
    from harness.check import NotARunDirectory, check_run  # noqa: PLC0415

    try:
        results, _ = check_run(Path(ns.run_dir), json_out=Path(ns.json) if ns.json else None)
    except NotARunDirectory as exc:
        print(f"outbox-harness check: {exc}", file=sys.stderr)
        return 2
    statuses = {v.status for r in results for v in r.verdicts}
    return 1 if "fail" in statuses or ("unknown" in statuses and not ns.allow_unknown) else 0


def cmd_bench(ns: argparse.Namespace) -> int:
    """Every --impl on the same workload, one PostgreSQL, a fresh database each; exit 1 if none was measured."""
    from harness.bench import print_bench, run_bench  # noqa: PLC0415
    from harness.provision.postgres import provision  # noqa: PLC0415

    server = provision()
    try:
        result = run_bench(server.dsn, messages=ns.messages, probes=ns.probes, rounds=ns.rounds,
                           drain_cap_seconds=ns.drain_cap, impls=ns.impl or ["reference"],
                           log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        server.stop()
    print_bench(result)
    return 0 if any(r["throughput_msgs_per_s"] for r in result["impls"]) else 1


def cmd_size(ns: argparse.Namespace) -> int:
    from harness.sizing import main as sizing_main  # noqa: PLC0415

    return sizing_main(ns)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="outbox-harness", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--impl", action="append",
                       help=f"an alias ({alias_help()}) or package.module:attribute (repeatable)")
        p.add_argument("--scenarios", type=Path, default=SCENARIOS, help="scenario directory (default: %(default)s)")
        p.add_argument("--reports-dir", default="reports")
        p.add_argument("-k", help="pytest -k expression to pick scenarios")

    run = sub.add_parser("run", help="run the chaos suite and write a report")
    common(run)
    run.add_argument("--allow-unknown", action="store_true")
    run.set_defaults(func=cmd_run)

    conf = sub.add_parser("conformance", help="run the suite against several implementations (matrix)")
    common(conf)
    conf.add_argument("--strict", action="store_true", help="exit non-zero when any implementation fails a guarantee")
    conf.set_defaults(func=cmd_conformance)

    check = sub.add_parser("check", help="judge a saved run again, offline, from its histories")
    check.add_argument("run_dir", metavar="RUN_DIR", help="a report directory, e.g. reports/latest")
    check.add_argument("--json", metavar="OUT", help="also write the verdicts in results.json's format to OUT")
    check.add_argument("--allow-unknown", action="store_true", help="exit 0 when verdicts are only undecided")
    check.set_defaults(func=cmd_check)

    bench = sub.add_parser("bench", help="implementations side by side: drain throughput vs the raw-SQL floor, "
                                         "wake-up latency, consumer memory")
    bench.add_argument("--impl", action="append",
                       help="alias or package.module:attribute, repeatable, measured in order (default: reference)")
    bench.add_argument("--messages", type=int, default=BENCH.messages, help="messages to drain (default: %(default)s)")
    bench.add_argument("--probes", type=int, default=BENCH.probes,
                       help="single messages for the wake-up latency (default: %(default)s)")
    bench.add_argument("--rounds", type=int, default=BENCH.rounds,
                       help="drains per implementation, each between two floor drains (default: %(default)s)")
    bench.add_argument("--drain-cap", type=float, default=BENCH.drain_cap_seconds, metavar="SECONDS",
                       help="stop a drain still running after this long and report the rate it reached "
                            "(default: %(default)s)")
    bench.set_defaults(func=cmd_bench)

    size = sub.add_parser("size", help="locust step-load sizing over a configuration grid")
    size.add_argument("--quick", action="store_true", help="a small grid for CI")
    size.add_argument("--target-rate", type=float, default=None, help="messages/s to recommend settings for")
    size.add_argument("--reports-dir", default="reports")
    size.set_defaults(func=cmd_size)

    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    return int(ns.func(ns))


if __name__ == "__main__":
    sys.exit(main())
