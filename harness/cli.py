"""``outbox-harness``: run the chaos suite, a conformance matrix, the benchmark, sizing runs.

Scenarios are pytest tests (:mod:`harness.suite`, inside the package, so an installed
wheel runs them); ``run`` and ``conformance`` call pytest with the harness plugin on
that module, so there is one way to run a scenario. Exit codes are the table of
:mod:`harness.exits`.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.adapter import ALIASES, AdapterLoadError, alias_help, load_adapter, unavailable
from harness.argtypes import duration, positive_finite_float, positive_int, seed, writable_dir
from harness.bench.config import DEFAULTS as BENCH
from harness.explore.cli import add_options as add_explore_options
from harness.exits import ERROR, EXIT_CODES, FINDINGS, INTERRUPTED, OK, USAGE
from harness.interrupt import SigtermAsInterrupt
from harness.messages import mask_dsn
from harness.provision.postgres import ProvisioningError, check_reachable, database_url, plain_dsn
from harness.sizing.cli import add_run_options

if TYPE_CHECKING:
    from harness.session import SessionOutcome

#: The suite's pytest module; pytest collects a file named on its command line whatever the file's name.
SUITE = Path(__file__).resolve().with_name("suite.py")


def _pytest(args: list[str]) -> tuple[int, SessionOutcome]:
    """pytest with the harness plugin; its exit code and what the session did."""
    import pytest  # noqa: PLC0415

    from harness.pytest_plugin import OUTCOME  # noqa: PLC0415
    from harness.session import SessionOutcome  # noqa: PLC0415

    class Capture:
        config: pytest.Config | None = None

        def pytest_configure(self, config: pytest.Config) -> None:
            self.config = config

    capture = Capture()
    code = int(pytest.main(args, plugins=[capture]))
    outcome = capture.config.stash.get(OUTCOME, None) if capture.config is not None else None
    return code, outcome or SessionOutcome()


def scenario_exit(pytest_code: int, outcome: SessionOutcome, *, findings_fail: bool) -> tuple[int, str]:
    """The exit code of a scenario session, and why when it is not OK."""
    import pytest  # noqa: PLC0415

    if outcome.aborted:
        return ERROR, outcome.aborted
    if pytest_code == pytest.ExitCode.INTERRUPTED:
        return INTERRUPTED, outcome.interrupted["reason"] if outcome.interrupted else "interrupted"
    if pytest_code == pytest.ExitCode.USAGE_ERROR:
        return USAGE, "pytest refused the command line"
    if pytest_code == pytest.ExitCode.NO_TESTS_COLLECTED:
        return ERROR, "no scenario collected: check -k and --scenarios"
    if pytest_code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        return ERROR, f"pytest ended with exit code {pytest_code}"
    if outcome.errors:
        return ERROR, f"the harness could not run {len(outcome.errors)} test(s): {', '.join(outcome.errors)}"
    if not outcome.ran:
        return ERROR, "no scenario ran: every selected scenario was skipped or not applicable"
    if outcome.findings and findings_fail:
        return FINDINGS, f"{len(outcome.findings)} scenario(s) failed a guarantee"
    return OK, ""


def _scenarios(ns: argparse.Namespace, impls: list[str], extra: list[str], *, findings_fail: bool) -> int:
    args = [str(ns.scenarios), "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning", "-v",
            "--live", "-rfs", f"--reports-dir={ns.reports_dir}",
            *(f"--impl={i}" for i in impls), *extra]
    if ns.k:
        args += ["-k", ns.k]
    if ns.seed is not None:
        args.append(f"--seed={ns.seed}")
    code, why = scenario_exit(*_pytest(args), findings_fail=findings_fail)
    if code != OK:
        print(f"outbox-harness {ns.command}: {why} (exit {code})", file=sys.stderr)
    return code


def cmd_run(ns: argparse.Namespace) -> int:
    """The chaos suite against one implementation; writes reports/<run-id>/ and prints the verdicts."""
    return _scenarios(ns, ns.impl or ["reference"], ["--allow-unknown"] if ns.allow_unknown else [],
                      findings_fail=True)


def cmd_conformance(ns: argparse.Namespace) -> int:
    """Several implementations on the same scenarios: a conformance matrix in the report.

    Undecided verdicts do not fail the run (a peer may not expose what a checker needs); fail
    verdicts are findings about an implementation, reported in the matrix, and do not fail the
    command unless --strict is given. A cell the harness could not run always does.
    """
    return _scenarios(ns, ns.impl or runnable_aliases(), ["--allow-unknown"], findings_fail=ns.strict)


def runnable_aliases(say: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> list[str]:
    """Every alias that can run here; each one left out is said, with why (a peer library not installed, a
    toolchain missing), so a matrix without it is never mistaken for a full one."""
    keep = []
    for alias in ALIASES:
        try:
            why = unavailable(load_adapter(alias))
        except AdapterLoadError as exc:
            why = str(exc)
        if why:
            say(f"outbox-harness conformance: leaving out {alias}: {why}")
        else:
            keep.append(alias)
    return keep


def cmd_check(ns: argparse.Namespace) -> int:
    """Judge a saved run again from its histories; exit 1 on a fail (or an unknown without --allow-unknown) and
    on a run that was cut short."""
    from harness.check import NotARunDirectory, check_run, stored_interruption  # noqa: PLC0415

    try:
        results, _ = check_run(Path(ns.run_dir), json_out=Path(ns.json) if ns.json else None,
                               html_out=Path(ns.html) if ns.html else None)
    except NotARunDirectory as exc:
        print(f"outbox-harness check: {exc}", file=sys.stderr)
        return USAGE
    statuses = {v.status for r in results for v in r.verdicts}
    incomplete = stored_interruption(Path(ns.run_dir)) is not None  # never a pass, whatever --allow-unknown says
    return FINDINGS if incomplete or "fail" in statuses or ("unknown" in statuses and not ns.allow_unknown) else OK


def cmd_bench(ns: argparse.Namespace) -> int:
    """Every --impl on the same workload, one PostgreSQL, a fresh database each; exit 1 if none was measured.
    With --checkers: the checkers on correct synthetic histories of each --events size, no database; exit 1 if a
    checker failed one."""
    if ns.checkers:
        from harness.bench.checkers import SIZES, run  # noqa: PLC0415

        return FINDINGS if any(r["failed"] for r in run(ns.events or SIZES)) else OK
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


def cmd_explore(ns: argparse.Namespace) -> int:
    from harness.explore.cli import main as explore_main  # noqa: PLC0415

    return explore_main(ns)

def cmd_soak(ns: argparse.Namespace) -> int:
    from harness.soak import run  # noqa: PLC0415

    return run(ns)


def cmd_size(ns: argparse.Namespace) -> int:
    from harness.sizing import main as sizing_main  # noqa: PLC0415

    return sizing_main(ns)


class _Version(argparse.Action):
    """``--version``, computed only when asked (it runs git)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version (and git commit) and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from harness.version import version  # noqa: PLC0415

        print(f"{parser.prog} {version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="outbox-harness", description=__doc__.split("\n")[0],
                                     epilog="exit codes: " + ", ".join(f"{c} {n}" for c, (n, _) in EXIT_CODES.items())
                                     + " (README, 'Exit codes')")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--impl", action="append",
                       help=f"an alias ({alias_help()}) or package.module:attribute (repeatable)")
        p.add_argument("--scenarios", type=Path, default=SUITE,
                       help="pytest path of the scenario tests (default: the packaged suite, %(default)s)")
        p.add_argument("--reports-dir", type=writable_dir, default="reports", help="(default: %(default)s)")
        p.add_argument("-k", help="pytest -k expression to pick scenarios")
        p.add_argument("--seed", type=seed, help="replay a run: the seed it printed (default: a new one per scenario)")

    run = sub.add_parser("run", help="run the chaos suite and write a report")
    common(run)
    run.add_argument("--allow-unknown", action="store_true")
    run.set_defaults(func=cmd_run, servers=("postgresql", "toxiproxy"))

    conf = sub.add_parser("conformance", help="run the suite against several implementations (matrix)")
    common(conf)
    conf.add_argument("--strict", action="store_true", help="exit non-zero when any implementation fails a guarantee")
    conf.set_defaults(func=cmd_conformance, servers=("postgresql", "toxiproxy"))

    check = sub.add_parser("check", help="judge a saved run again, offline, from its histories")
    check.add_argument("run_dir", metavar="RUN_DIR", help="a report directory, e.g. reports/latest")
    check.add_argument("--json", metavar="OUT", help="also write the verdicts in results.json's format to OUT")
    check.add_argument("--html", metavar="OUT", help="also write a report of the new verdicts to OUT (report.html's "
                       "format; its evidence links point into RUN_DIR)")
    check.add_argument("--allow-unknown", action="store_true", help="exit 0 when verdicts are only undecided")
    check.set_defaults(func=cmd_check)

    bench = sub.add_parser("bench", help="implementations side by side: drain throughput vs the raw-SQL floor, "
                                         "wake-up latency, consumer memory")
    bench.add_argument("--impl", action="append",
                       help="alias or package.module:attribute, repeatable, measured in order (default: reference)")
    bench.add_argument("--messages", type=positive_int, default=BENCH.messages,
                       help="messages to drain (default: %(default)s)")
    bench.add_argument("--probes", type=positive_int, default=BENCH.probes,
                       help="single messages for the wake-up latency (default: %(default)s)")
    bench.add_argument("--rounds", type=positive_int, default=BENCH.rounds,
                       help="drains per implementation, each between two floor drains (default: %(default)s)")
    bench.add_argument("--drain-cap", type=positive_finite_float, default=BENCH.drain_cap_seconds, metavar="SECONDS",
                       help="stop a drain still running after this long and report the rate it reached "
                            "(default: %(default)s)")
    bench.add_argument("--checkers", action="store_true",
                       help="instead: time every checker on correct synthetic histories (no database), one process"
                            " per size: events/s, wall and CPU time, peak RSS")
    bench.add_argument("--events", type=positive_int, action="append",
                       help="with --checkers: a history size in events, repeatable (default: 1,000,000 and"
                            " 10,000,000)")
    bench.set_defaults(func=cmd_bench, servers=("postgresql",))

    soak = sub.add_parser("soak", help="one implementation under steady load for a long time, faults repeating; "
                                       "judged at the end (README, 'Soak')")
    soak.add_argument("--impl", action="append", help=f"an alias ({alias_help()}) or package.module:attribute "
                                                      "(default: reference)")
    soak.add_argument("--duration", type=duration, required=True, help="how long to publish: 90s, 10m, 1h")
    soak.add_argument("--rate", type=positive_finite_float, required=True, help="messages per second")
    soak.add_argument("--faults", choices=("mixed", "none"), default="mixed",
                      help="the mixed scenario's faults in repeating rounds, or none (default: %(default)s)")
    soak.add_argument("--seed", type=seed, help="replay a run: the seed it printed")
    soak.add_argument("--reports-dir", type=writable_dir, default="reports", help="(default: %(default)s)")
    soak.set_defaults(func=cmd_soak, servers=("postgresql", "toxiproxy"))

    size = sub.add_parser("size", help="locust step-load sizing over a configuration grid")
    add_run_options(size)  # the options of python -m harness.sizing run, from one function
    size.set_defaults(func=cmd_size, servers=("postgresql",))

    explore = sub.add_parser("explore", help="generated fault schedules against one implementation; a failure is "
                                             "shrunk to a reproducer")
    add_explore_options(explore)
    explore.set_defaults(func=cmd_explore, servers=("postgresql", "toxiproxy"))

    return parser


def preflight(ns: argparse.Namespace) -> None:
    """What a command needs, checked before anything starts: each --impl loads, and the servers given by
    DATABASE_URL / TOXIPROXY_URL answer (the embedded ones are started later, by what needs them)."""
    for spec in getattr(ns, "impl", None) or []:
        if why := unavailable(load_adapter(spec)):
            raise AdapterLoadError(f"--impl {spec!r}: {why}")
    servers = () if getattr(ns, "checkers", False) else getattr(ns, "servers", ())  # bench --checkers: none
    if "postgresql" in servers and getattr(ns, "dsn", None):
        check_reachable(plain_dsn(ns.dsn), source="--dsn")
    elif "postgresql" in servers and (dsn := database_url()) is not None:
        check_reachable(dsn)
    if "toxiproxy" in servers and os.environ.get("TOXIPROXY_URL"):
        from harness.provision.toxiproxy import provision_toxiproxy  # noqa: PLC0415

        provision_toxiproxy()  # a given server is only checked, never started or stopped


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    name = f"outbox-harness {ns.command}"
    sigterm = SigtermAsInterrupt()
    try:
        with sigterm:
            preflight(ns)
            return int(ns.func(ns))
    except AdapterLoadError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return USAGE
    except ProvisioningError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return ERROR
    except KeyboardInterrupt:
        print(f"{name}: interrupted by {sigterm.signal_name}", file=sys.stderr)
        return INTERRUPTED
    except Exception:  # noqa: BLE001 - a crash of the harness is an error, never a finding
        print(f"{name}: the harness crashed:\n{mask_dsn(traceback.format_exc())}", file=sys.stderr)
        return ERROR


if __name__ == "__main__":
    sys.exit(main())
