"""pytest plugin: the harness as fixtures, so a scenario is a few lines of a test.

Fixtures: ``postgres_server`` (DATABASE_URL or embedded, one per session),
``toxiproxy`` (TOXIPROXY_URL or a server the harness starts; None with the
reason when it cannot be had), ``impl_spec`` (parametrized by ``--impl``) and
``run_scenario`` (runs a :class:`harness.runner.Scenario`, records the result
for the report and fails the test on any "fail" or "unknown" verdict).
At the end of the session the report is written to ``--reports-dir``.

What the session did is kept by kind (:class:`harness.session.SessionOutcome`): the CLI's exit code
rests on it. A session cut short (Ctrl-C, SIGTERM, a server lost mid-run) still writes its report, marked
interrupted and naming the scenario it cut short, never "pass". Under ``--fail-on-skip`` (bin/test) a
scenario that cannot run here fails. Reports are masked: no DSN password in a traceback or its locals.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

from harness import interrupt
from harness.adapter import AdapterLoadError, alias_help, load_adapter, unavailable
from harness.argtypes import positive_finite_float, seed
from harness.messages import mask_all
from harness.provision.postgres import PostgresServer, ProvisioningError, provision
from harness.session import Running, SessionOutcome
from harness.verdict import ScenarioResult

OUTCOME = pytest.StashKey[SessionOutcome]()
#: ``OUTBOX_HARNESS_ALLOW_SKIP=1``: a skipped scenario is expected here, even under ``--fail-on-skip``.
ALLOW_SKIP = "OUTBOX_HARNESS_ALLOW_SKIP"
R = TypeVar("R", pytest.TestReport, pytest.CollectReport)


class GuaranteeFailed(pytest.fail.Exception):
    """A scenario test failed by its verdicts: a finding, not a harness error."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("outbox-harness")
    group.addoption("--impl", action="append", default=[],
                    help=f"implementation under test: an alias ({alias_help()}) or package.module:attribute; "
                         "repeat for a conformance run")
    group.addoption("--reports-dir", default="reports", help="where scenario reports are written (default: reports)")
    group.addoption("--live", action="store_true", help="print each scenario's phases and faults as they happen")
    group.addoption("--time-scale", type=positive_finite_float, default=1.0,
                    help="run every scenario on a clock this many times slower (leases, handler and fault times, "
                         "drain deadlines; default 1)")
    group.addoption("--seed", type=seed, default=None,
                    help="seed every scenario's random choices with this (rollbacks, fault targets, handler "
                         "timing), to replay a run; default: a new seed per scenario, printed with --live and "
                         "stored in the history and results.json")
    group.addoption("--allow-unknown", action="store_true",
                    help="do not fail a scenario test whose verdicts are only undecided (conformance runs)")
    group.addoption("--fail-on-skip", action="store_true",
                    help=f"fail a scenario that cannot run here instead of skipping it (bin/test sets it); "
                         f"{ALLOW_SKIP}=1 allows the skip")


def pytest_configure(config: pytest.Config) -> None:
    for spec in config.getoption("impl"):  # a bad --impl is a usage error, before any server starts
        try:
            why = unavailable(load_adapter(spec))
        except AdapterLoadError as exc:
            raise pytest.UsageError(str(exc)) from None
        if why:
            raise pytest.UsageError(f"--impl {spec!r}: {why}")
    config.stash[OUTCOME] = outcome = SessionOutcome()
    outcome.sigterm.install()


def pytest_unconfigure(config: pytest.Config) -> None:
    if OUTCOME in config.stash:
        config.stash[OUTCOME].sigterm.restore()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "impl_spec" in metafunc.fixturenames:
        impls = metafunc.config.getoption("impl") or ["reference"]
        metafunc.parametrize("impl_spec", impls, scope="session")


def _abort(config: pytest.Config, exc: ProvisioningError) -> NoReturn:
    """Ends the session with the one line that names the cause and the fix (no traceback, no dump)."""
    config.stash[OUTCOME].aborted = str(exc)
    pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)


@contextlib.contextmanager
def _log_kept(config: pytest.Config, factory: pytest.TempPathFactory, name: str, log: Path | None) -> Iterator[None]:
    """While a server runs the report takes its live log; as it stops, a copy (stopping removes the log)."""
    logs = config.stash[OUTCOME].server_logs
    logs[name] = log
    try:
        yield
    finally:
        if log is not None and log.is_file():
            logs[name] = factory.getbasetemp() / f"{name}.log"
            shutil.copyfile(log, logs[name])


@pytest.fixture(scope="session")
def postgres_server(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One server per test session: ``DATABASE_URL`` or a fresh embedded one, always stopped."""
    try:
        server = provision()
    except ProvisioningError as exc:
        _abort(pytestconfig, exc)
    try:
        with _log_kept(pytestconfig, tmp_path_factory, "postgresql", server.log_path):
            yield server
    finally:
        server.stop()


@dataclass
class ToxiproxyHandle:
    server: Any | None  # harness.provision.toxiproxy.ToxiproxyServer
    error: str | None


@pytest.fixture(scope="session")
def toxiproxy(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToxiproxyHandle]:
    """The real Toxiproxy server, or the reason it cannot be had (network scenarios then skip)."""
    from harness.provision.toxiproxy import ToxiproxyUnavailable, provision_toxiproxy  # noqa: PLC0415

    try:
        server = provision_toxiproxy()
    except ToxiproxyUnavailable as exc:
        yield ToxiproxyHandle(None, str(exc))
        return
    except ProvisioningError as exc:  # TOXIPROXY_URL given but unusable: an error, not a skip
        _abort(pytestconfig, exc)
    try:
        with _log_kept(pytestconfig, tmp_path_factory, "toxiproxy", server.log_path):
            yield ToxiproxyHandle(server, None)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def scenario_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scenarios")


@pytest.fixture
def run_scenario(request: pytest.FixtureRequest, postgres_server: PostgresServer,
                 impl_spec: str, scenario_workdir: Path) -> Callable[..., ScenarioResult]:
    from harness.runner import run_scenario as run  # noqa: PLC0415
    from harness.scenario import Scenario  # noqa: PLC0415

    def runner(scenario: Scenario, *, check: bool = True) -> ScenarioResult:
        adapter = load_adapter(impl_spec)
        # Toxiproxy is started only once a scenario needs it.
        proxy = request.getfixturevalue("toxiproxy") if scenario.needs_proxy else ToxiproxyHandle(None, None)
        workdir = scenario_workdir / re.sub(r"\W+", "_", impl_spec) / scenario.name
        outcome = request.config.stash[OUTCOME]
        outcome.running = Running(adapter.name, scenario.name, request.node.nodeid)
        try:
            result = interrupt.run(run(scenario, adapter=adapter, impl_spec=impl_spec, server=postgres_server,
                                     workdir=workdir, toxiproxy=proxy.server, toxiproxy_error=proxy.error,
                                     progress=_live_printer(request.config), seed=request.config.getoption("seed"),
                                     time_scale=request.config.getoption("time_scale")))
        except Exception:
            outcome.running = None  # a crash, not an interrupt: the test fails and says why
            raise
        outcome.running = None
        outcome.results.append(result)
        for v in result.verdicts:  # pytest's own --junitxml carries the verdicts too
            request.node.user_properties.append((v.guarantee, f"{v.status} ({v.checker}): {v.summary}"))
        if check:
            assert_held(result, allow_unknown=request.config.getoption("allow_unknown"))
        return result

    return runner


def _live_printer(config: pytest.Config) -> Callable[[str], None] | None:
    if not config.getoption("live"):
        return None
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")

    def write(line: str) -> None:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(line)

    return write


def assert_held(result: ScenarioResult, *, allow_unknown: bool = False) -> None:
    """Fails on "fail" (and on "unknown" unless allowed); skips when nothing applied."""
    lines = [f"{v.guarantee} {v.status}: {v.summary}" for v in result.verdicts]
    statuses = {v.status for v in result.verdicts}
    if "fail" in statuses or ("unknown" in statuses and not allow_unknown):
        raise GuaranteeFailed(f"{result.impl} / {result.scenario}:\n  " + "\n  ".join(lines), pytrace=False)
    if statuses and statuses <= {"skipped", "not_applicable"}:
        pytest.skip("; ".join(dict.fromkeys(v.summary for v in result.verdicts)))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.skipped and "run_scenario" in getattr(item, "fixturenames", ()):
        _scenario_skipped(item, report)
    if report.failed:
        finding = call.excinfo is not None and call.excinfo.errisinstance(GuaranteeFailed)
        outcome = item.config.stash[OUTCOME]
        (outcome.findings if finding else outcome.errors).append(item.nodeid)
    return _masked(item.config, report)


def _fail_on_skip(config: pytest.Config) -> bool:
    return bool(config.getoption("fail_on_skip")) and os.environ.get(ALLOW_SKIP) != "1"


def _scenario_skipped(item: pytest.Item, report: pytest.TestReport) -> None:
    """Records why a scenario could not run; under ``--fail-on-skip`` (CI) that is a failure, not a skip."""
    longrepr = report.longrepr
    reason = (longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)).removeprefix("Skipped: ")
    item.config.stash[OUTCOME].skipped.append((item.nodeid, reason))
    if _fail_on_skip(item.config):
        report.outcome = "failed"
        report.longrepr = (f"scenario skipped: {reason}\n--fail-on-skip: a scenario that cannot run here fails "
                           f"the run; set {ALLOW_SKIP}=1 if this skip is expected")


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, pytest.CollectReport,
                                                                          pytest.CollectReport]:
    return _masked(collector.config, (yield))


def _masked(config: pytest.Config, report: R) -> R:
    """The report with every DSN password masked: tracebacks show arguments and (-l) local variables.

    Rebuilt through pytest's own (xdist) serialization, so the traceback keeps its structure and colours."""
    if report.longrepr is None and not report.sections:
        return report
    data = config.hook.pytest_report_to_serializable(config=config, report=report)
    masked = mask_all(data)
    return report if masked == data else config.hook.pytest_report_from_serializable(config=config, data=masked)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Writes the report: what ran, and, when the session was cut short, what it cut short."""
    outcome = session.config.stash[OUTCOME]
    outcome.interrupted = interrupted = outcome.cut_short(exitstatus)
    if not outcome.results and (interrupted is None or interrupted["scenario"] is None):
        return
    from harness.report import write_report  # noqa: PLC0415

    outcome.report_dir = write_report(outcome.results, reports_dir=Path(session.config.getoption("reports_dir")),
                                      interrupted=interrupted, server_logs=outcome.server_logs)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    outcome = config.stash[OUTCOME]
    if outcome.skipped:
        terminalreporter.section("outbox-harness scenarios that could not run")
        allowed = "" if _fail_on_skip(config) or not config.getoption("fail_on_skip") else f" (allowed: {ALLOW_SKIP}=1)"
        for test, reason in outcome.skipped:
            terminalreporter.write_line(f"{test}: {reason}{allowed}")
    if outcome.report_dir is None:
        return
    from harness.summary import interrupted_line, verdict_table  # noqa: PLC0415

    terminalreporter.section("outbox-harness verdicts")
    for line in verdict_table(outcome.results):
        terminalreporter.write_line(line)
    if outcome.interrupted is not None:
        terminalreporter.write_line(interrupted_line(outcome.interrupted), red=True, bold=True)
    terminalreporter.write_line(f"report: {outcome.report_dir / 'report.html'}")
