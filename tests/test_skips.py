"""A scenario that cannot run here (every verdict skipped or not applicable) is a pytest skip, with its reason;
``bin/test``, what CI runs, fails on it (``--fail-on-skip``) unless OUTBOX_HARNESS_ALLOW_SKIP=1 says a skip is
expected. Only scenario skips count: a test that skips for want of a Docker engine is not a scenario."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.provision.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.executable).parent.parent
#: pg_crash_restart crashes PostgreSQL: against a DATABASE_URL server it is skipped, never run.
SKIPPED = "pg_crash_restart"


def bin_test(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    full = {**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, "PYTHONPATH": str(ROOT),
            "VENV": str(VENV), **env}
    return subprocess.run([str(ROOT / "bin" / "test"), f"--reports-dir={tmp_path}", *args], capture_output=True,
                          text=True, timeout=300, check=False, env=full, cwd=ROOT)


@pytest.fixture
def given_server(postgres_server: PostgresServer) -> dict[str, str]:
    return {"DATABASE_URL": postgres_server.dsn}


def test_a_scenario_that_cannot_run_is_a_pytest_skip_with_its_reason(given_server: dict[str, str],
                                                                      tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **given_server}
    done = subprocess.run([sys.executable, "-m", "pytest", "scenarios", "-p", "no:cacheprovider", "-rs",
                           "-k", SKIPPED, f"--reports-dir={tmp_path}"], capture_output=True, text=True, timeout=300,
                          check=False, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "1 skipped" in done.stdout and "unset DATABASE_URL" in done.stdout, done.stdout[-3000:]


def test_bin_test_fails_on_a_skipped_scenario(given_server: dict[str, str], tmp_path: Path) -> None:
    done = bin_test("-k", SKIPPED, env=given_server, tmp_path=tmp_path)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout[-3000:] + done.stderr[-2000:]
    assert "unset DATABASE_URL" in done.stdout and "OUTBOX_HARNESS_ALLOW_SKIP=1" in done.stdout, done.stdout[-3000:]


def test_bin_test_allows_a_skipped_scenario_when_told_and_says_why(given_server: dict[str, str],
                                                                   tmp_path: Path) -> None:
    done = bin_test("-k", SKIPPED, env={**given_server, "OUTBOX_HARNESS_ALLOW_SKIP": "1"}, tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 skipped" in done.stdout and "unset DATABASE_URL" in done.stdout, done.stdout[-3000:]


def test_bin_test_does_not_count_a_test_that_is_not_a_scenario(tmp_path: Path) -> None:
    done = bin_test("-k", "docker", env={}, tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "skipped" in done.stdout, done.stdout[-3000:]
