"""The ``outbox-harness`` command line: exit codes that tell a finding from a harness that could not run,
and refusals that come before anything starts, in one line that names the fix."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import exits

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``outbox-harness ARGS`` in a subprocess, with this checkout first on the path."""
    inherited = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    full_env = {**inherited, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          timeout=timeout, check=False, env=full_env, cwd=cwd or ROOT)


def closed_port_url(user: str = "u", password: str = "p") -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql://{user}:{password}@127.0.0.1:{port}/postgres"


# -- exit codes ------------------------------------------------------------------------------------


def test_readme_shows_the_exit_code_table() -> None:
    readme = (ROOT / "README.md").read_text()
    assert exits.markdown_table() in readme, "regenerate the README table with python -m harness.exits"


def test_conformance_with_an_unknown_impl_is_not_green(tmp_path: Path) -> None:
    done = cli("conformance", "--impl", "nosuchimpl", "-k", "sigkill", "--reports-dir", str(tmp_path))
    assert done.returncode != exits.OK, done.stdout[-2000:] + done.stderr[-2000:]


def test_conformance_without_a_server_is_an_error(tmp_path: Path) -> None:
    done = cli("conformance", "-k", "sigkill", "--reports-dir", str(tmp_path),
               env={"DATABASE_URL": closed_port_url()})
    assert done.returncode == exits.ERROR, done.stdout[-2000:] + done.stderr[-2000:]


def test_a_run_that_selects_nothing_is_an_error(tmp_path: Path) -> None:
    done = cli("run", "-k", "no_such_scenario", "--reports-dir", str(tmp_path))
    assert done.returncode == exits.ERROR, done.stdout[-2000:] + done.stderr[-2000:]
    assert "no scenario" in done.stderr


CRASHING_ADAPTER = '''
from harness.adapters.reference import adapter as reference


class Crashing:
    """The reference adapter whose create_schema raises: the harness cannot run the cell."""

    def __getattr__(self, name):
        return getattr(reference, name)

    async def create_schema(self, dsn, config):
        raise RuntimeError("the harness fell over")

    async def publish(self, tx, payloads, queue):
        await reference.publish(tx, payloads, queue)

    async def consume(self, ctx):
        await reference.consume(ctx)

    async def read_state(self, dsn):
        return await reference.read_state(dsn)

    def connection_budget(self, config):
        return reference.connection_budget(config)


adapter = Crashing()
'''


def test_a_cell_the_harness_could_not_run_fails_conformance(tmp_path: Path) -> None:
    """A verdict about a peer is a finding (exit 0 without --strict); a cell that crashed is not one."""
    (tmp_path / "crashing_adapter.py").write_text(CRASHING_ADAPTER)
    done = cli("conformance", "--impl", "crashing_adapter:adapter", "-k", "poison_max_deliveries",
               "--reports-dir", str(tmp_path / "reports"),
               env={"PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"})
    assert done.returncode == exits.ERROR, done.stdout[-3000:] + done.stderr[-2000:]
    assert "the harness fell over" in done.stdout


@pytest.mark.parametrize("pytest_code,findings,errors,ran,strict,expected", [
    (0, 0, 0, True, False, exits.OK),
    (1, 2, 0, True, False, exits.OK),  # conformance: what a peer broke is a finding in the report
    (1, 2, 0, True, True, exits.FINDINGS),
    (1, 2, 1, True, False, exits.ERROR),  # one cell could not run
    (0, 0, 0, False, False, exits.ERROR),  # every scenario skipped or not applicable: nothing ran
    (2, 0, 0, True, False, exits.INTERRUPTED),
    (3, 0, 0, True, False, exits.ERROR),  # pytest internal error
    (4, 0, 0, False, False, exits.USAGE),
    (5, 0, 0, False, False, exits.ERROR),  # no test collected
])
def test_exit_code_of_a_scenario_session(pytest_code: int, findings: int, errors: int, ran: bool,
                                         strict: bool, expected: int) -> None:
    from harness.cli import scenario_exit
    from harness.session import SessionOutcome
    from harness.verdict import ScenarioResult, Verdict

    status = "pass" if ran else "skipped"
    results = [ScenarioResult("s", "i", [Verdict("D1", "total_queue", status, "")], 1.0)]
    outcome = SessionOutcome(results=results, findings=["f"] * findings, errors=["e"] * errors)
    assert scenario_exit(pytest_code, outcome, findings_fail=strict)[0] == expected


def test_version_names_the_package_and_the_commit() -> None:
    done = cli("--version")
    assert done.returncode == 0, done.stderr
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    assert re.fullmatch(rf"outbox-harness \d+\.\d+\.\d+\S* \(git {commit}(, modified)?\)\n", done.stdout), done.stdout


# -- refused before anything starts ----------------------------------------------------------------

RAISES_ON_IMPORT = "raise RuntimeError('no config file')\n"


@pytest.mark.parametrize("command", [["run"], ["conformance"], ["bench", "--messages", "10", "--probes", "1"]])
@pytest.mark.parametrize("spec", ["nosuchimpl", "raises_on_import:adapter"])
def test_a_bad_impl_is_one_usage_error_before_anything_starts(tmp_path: Path, command: list[str], spec: str) -> None:
    (tmp_path / "raises_on_import.py").write_text(RAISES_ON_IMPORT)
    done = cli(*command, "--impl", "reference", "--impl", spec, cwd=tmp_path,
               env={"TMPDIR": str(tmp_path), "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"})
    assert done.returncode == exits.USAGE, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert f"--impl {spec!r}" in line
    assert not list(tmp_path.glob("outbox-harness-*-*")), "a server was started for a command that cannot run"


def test_plain_pytest_refuses_a_bad_impl_at_configure_time(tmp_path: Path) -> None:
    (tmp_path / "raises_on_import.py").write_text(RAISES_ON_IMPORT)
    env = {**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, "TMPDIR": str(tmp_path),
           "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    done = subprocess.run([sys.executable, "-m", "pytest", "scenarios", "-p", "no:cacheprovider", "-k", "sigkill",
                           "--impl", "raises_on_import:adapter", f"--reports-dir={tmp_path / 'reports'}"],
                          capture_output=True, text=True, timeout=120, check=False, env=env, cwd=ROOT)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout[-2000:] + done.stderr[-2000:]
    assert "--impl 'raises_on_import:adapter'" in done.stderr and "RuntimeError: no config file" in done.stderr
    assert "collected" not in done.stdout, "tests were collected before the --impl was checked"


# -- argument values -------------------------------------------------------------------------------

BAD_ARGUMENTS = [
    ["size", "--target-rate", "inf"], ["size", "--target-rate", "nan"], ["size", "--target-rate", "0"],
    ["size", "--target-rate", "-5"], ["size", "--target-rate", "fast"],
    ["size", "--load-processes", "-1"], ["size", "--remote-workers", "-2"], ["size", "--max-rate", "0"],
    ["size", "--master-port", "0"], ["size", "--batch", "0"],
    ["bench", "--messages", "0"], ["bench", "--messages", "-5"], ["bench", "--messages", "1e3"],
    ["bench", "--probes", "0"],
]


@pytest.mark.parametrize("argv", BAD_ARGUMENTS, ids=" ".join)
def test_values_out_of_range_are_refused_by_the_parser(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import build_parser

    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == exits.USAGE
    error = capsys.readouterr().err.splitlines()[-1]
    assert f"argument {argv[1]}" in error and repr(argv[2]) in error, error


@pytest.mark.parametrize("command", ["run", "conformance", "size"])
def test_a_reports_dir_that_cannot_be_written_is_refused_by_the_parser(tmp_path: Path, command: str,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import build_parser

    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--reports-dir", str(tmp_path / "a-file" / "reports")])
    assert info.value.code == exits.USAGE
    assert "argument --reports-dir" in capsys.readouterr().err
    assert build_parser().parse_args([command, "--reports-dir", str(tmp_path / "new" / "reports")])


def test_bench_refuses_zero_messages_before_postgres_starts(tmp_path: Path) -> None:
    done = cli("bench", "--messages", "0", env={"TMPDIR": str(tmp_path)}, cwd=tmp_path, timeout=60)
    assert done.returncode == exits.USAGE, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.glob("outbox-harness-*-*")), "PostgreSQL was started for a bench that cannot run"


def test_bench_checkers_needs_no_database(tmp_path: Path) -> None:
    done = cli("bench", "--checkers", "--events", "2000", "--events", "4000",
               env={"TMPDIR": str(tmp_path), "DATABASE_URL": closed_port_url()}, cwd=tmp_path, timeout=120)
    assert done.returncode == exits.OK, done.stdout[-2000:] + done.stderr[-2000:]
    rows = json.loads(done.stdout.splitlines()[-1])["checkers"]
    assert [r["failed"] for r in rows] == [[], []] and all(r["events_per_s"] and r["peak_rss_mb"] for r in rows)
    assert not list(tmp_path.glob("outbox-harness-*-*")), "PostgreSQL was started for the checkers"


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-2"])
def test_pytest_time_scale_out_of_range_is_a_usage_error(value: str) -> None:
    env = {**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "pytest", "scenarios", "-p", "no:cacheprovider", "-k", "sigkill",
                           f"--time-scale={value}", "--collect-only", "-q"], capture_output=True, text=True,
                          timeout=120, check=False, env=env, cwd=ROOT)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout[-2000:] + done.stderr[-2000:]
    assert "--time-scale" in done.stderr and "finite number above 0" in done.stderr
