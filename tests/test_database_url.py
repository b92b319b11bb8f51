"""A DATABASE_URL the harness cannot use is one line that names the variable and the fix, found before
anything starts: a malformed URL, a closed port, a refused login. Never a pytest or asyncpg dump."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from harness import exits
from harness.provision import postgres as provisioning
from harness.provision.postgres import PostgresServer, ProvisioningError, with_database

ROOT = Path(__file__).resolve().parent.parent


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def bad_urls(postgres_server: PostgresServer) -> Iterator[dict[str, tuple[str, str]]]:
    """case -> (DATABASE_URL, what the one line must say); the wrong password is for a role that must give
    one (scram) on the session's server."""
    role = f"pw_{uuid.uuid4().hex[:8]}"
    hba = postgres_server.data_dir / "pg_hba.conf"
    original = hba.read_text()

    async def admin(*sql: str) -> None:
        conn = await asyncpg.connect(postgres_server.dsn)
        try:
            for statement in sql:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE ROLE {role} LOGIN PASSWORD 'right-one'"))
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + original)
    asyncio.run(admin("SELECT pg_reload_conf()"))
    try:
        yield {
            "not a port": ("postgresql://user:pw@127.0.0.1:notaport/db", "port"),
            "closed port": (f"postgresql://u:pw@127.0.0.1:{closed_port()}/postgres", "cannot reach PostgreSQL"),
            "wrong password": (f"postgresql://{role}:wrong-one@127.0.0.1:{postgres_server.port}/postgres",
                               "password authentication failed"),
            "no such database": (with_database(postgres_server.dsn, "no_such_db_here"), "no_such_db_here"),
        }
    finally:
        hba.write_text(original)
        asyncio.run(admin("SELECT pg_reload_conf()", f"DROP ROLE {role}"))


CASES = ["not a port", "closed port", "wrong password", "no such database"]


@pytest.mark.parametrize("case", CASES)
def test_provision_says_one_line_naming_the_variable_and_the_fix(bad_urls: dict[str, tuple[str, str]], case: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    url, says = bad_urls[case]
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ProvisioningError) as info:
        provisioning.provision()
    message = str(info.value)
    assert "\n" not in message and message.startswith("DATABASE_URL="), message
    assert says in message and "unset DATABASE_URL" in message, message


@pytest.mark.parametrize("case", CASES)
def test_the_cli_refuses_before_anything_starts(bad_urls: dict[str, tuple[str, str]], case: str,
                                               tmp_path: Path) -> None:
    url, says = bad_urls[case]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": url}
    done = subprocess.run([sys.executable, "-m", "harness.cli", "conformance", "-k", "sigkill",
                           "--reports-dir", str(tmp_path)], capture_output=True, text=True, timeout=120,
                          check=False, env=env)
    assert done.returncode == exits.ERROR, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout == "", "pytest ran although the server could not be had"
    (line,) = done.stderr.splitlines()
    assert "DATABASE_URL=" in line and says in line, line


def test_plain_pytest_stops_at_the_first_fixture_with_one_line(tmp_path: Path) -> None:
    url = f"postgresql://u:pw@127.0.0.1:{closed_port()}/postgres"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": url}
    done = subprocess.run([sys.executable, "-m", "pytest", "scenarios", "-p", "no:cacheprovider", "-k", "sigkill",
                           f"--reports-dir={tmp_path}"], capture_output=True, text=True, timeout=120, check=False,
                          env=env, cwd=ROOT)
    out = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, out[-3000:]
    assert out.count("cannot reach PostgreSQL") == 1, out[-3000:]
    assert "Traceback" not in out and "asyncpg" not in out and len(out.splitlines()) < 15, out
