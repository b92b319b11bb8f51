"""pytest plugin: the harness as fixtures, so a scenario is a few lines of a test.

Fixtures: ``postgres_server`` (DATABASE_URL or embedded, one per session),
``toxiproxy`` (TOXIPROXY_URL or a server the harness starts; None with the
reason when it cannot be had), ``impl_spec`` (parametrized by ``--impl``) and
``run_scenario`` (runs a :class:`harness.runner.Scenario`, records the result
for the report and fails the test on any "fail" or "unknown" verdict).
At the end of the session the report is written to ``--reports-dir``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.adapter import alias_help, load_adapter
from harness.provision.postgres import PostgresServer, provision
from harness.verdict import ScenarioResult

RESULTS = pytest.StashKey[list[ScenarioResult]]()
REPORT_DIR = pytest.StashKey[Path]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("outbox-harness")
    group.addoption("--impl", action="append", default=[],
                    help=f"implementation under test: an alias ({alias_help()}) or package.module:attribute; "
                         "repeat for a conformance run")
    group.addoption("--reports-dir", default="reports", help="where scenario reports are written (default: reports)")
    group.addoption("--live", action="store_true", help="print each scenario's phases and faults as they happen")
    group.addoption("--time-scale", type=float, default=1.0,
                    help="run every scenario on a clock this many times slower (leases, handler and fault times, "
                         "drain deadlines; default 1)")
    group.addoption("--allow-unknown", action="store_true",
                    help="do not fail a scenario test whose verdicts are only undecided (conformance runs)")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RESULTS] = []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "impl_spec" in metafunc.fixturenames:
        impls = metafunc.config.getoption("impl") or ["reference"]
        metafunc.parametrize("impl_spec", impls, scope="session")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server per test session: ``DATABASE_URL`` or a fresh embedded one, always stopped."""
    server = provision()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class ToxiproxyHandle:
    server: Any | None  # harness.provision.toxiproxy.ToxiproxyServer
    error: str | None


@pytest.fixture(scope="session")
def toxiproxy() -> Iterator[ToxiproxyHandle]:
    """The real Toxiproxy server, or the reason it cannot be had (network scenarios then skip)."""
    from harness.provision.toxiproxy import ToxiproxyUnavailable, provision_toxiproxy  # noqa: PLC0415

    try:
        server = provision_toxiproxy()
    except ToxiproxyUnavailable as exc:
        yield ToxiproxyHandle(None, str(exc))
        return
    try:
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
        result = asyncio.run(run(scenario, adapter=adapter, impl_spec=impl_spec, server=postgres_server,
                                 workdir=workdir, toxiproxy=proxy.server, toxiproxy_error=proxy.error,
                                 progress=_live_printer(request.config),
                                 time_scale=request.config.getoption("time_scale")))
        request.config.stash[RESULTS].append(result)
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
        pytest.fail(f"{result.impl} / {result.scenario}:\n  " + "\n  ".join(lines), pytrace=False)
    if statuses and statuses <= {"skipped", "not_applicable"}:
        pytest.skip("; ".join(dict.fromkeys(v.summary for v in result.verdicts)))


def pytest_sessionfinish(session: pytest.Session) -> None:
    results = session.config.stash.get(RESULTS, [])
    if not results:
        return
    from harness.report import write_report  # noqa: PLC0415

    impls = sorted({r.impl for r in results})
    run_dir = write_report(results, reports_dir=Path(session.config.getoption("reports_dir")),
                           meta={"impls": impls, "command": "pytest"})
    session.config.stash[REPORT_DIR] = run_dir


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(RESULTS, [])
    if not results:
        return
    from harness.summary import verdict_table  # noqa: PLC0415

    terminalreporter.section("outbox-harness verdicts")
    for line in verdict_table(results):
        terminalreporter.write_line(line)
    run_dir = config.stash.get(REPORT_DIR, None)
    if run_dir is not None:
        terminalreporter.write_line(f"report: {run_dir / 'report.html'}")
