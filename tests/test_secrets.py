"""The password of DATABASE_URL never leaves the process in clear: not in errors, not in pytest's dumps of
local variables, not in any file a run leaves behind (reports, histories, worker specs and logs)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.messages import mask_dsn
from harness.provision import postgres as provisioning
from harness.provision.postgres import PostgresServer, ProvisioningError, with_host_port

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "S3cret-pw-4711"


@pytest.mark.parametrize("text,masked", [
    ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgresql+asyncpg://u:p%40ss@h/db", "postgresql+asyncpg://u:***@h/db"),
    ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),  # an unencoded @ in the password
    ("postgresql://:pw@h/db", "postgresql://:***@h/db"),
    ("postgresql://u@h/db and postgresql://h/db", "postgresql://u@h/db and postgresql://h/db"),
    ("dsn = 'postgresql://a:x@h/d', other = 'postgresql://b:y@h/d'",
     "dsn = 'postgresql://a:***@h/d', other = 'postgresql://b:***@h/d'"),
    ("SplitResult(scheme='postgresql', netloc='u:pw@h:5432', path='/db')",
     "SplitResult(scheme='postgresql', netloc='u:***@h:5432', path='/db')"),
    ('{"t":1.5,"f":"log","value":{"message":"mail to a@b at 12:30"}}',
     '{"t":1.5,"f":"log","value":{"message":"mail to a@b at 12:30"}}'),
])
def test_mask_dsn(text: str, masked: str) -> None:
    assert mask_dsn(text) == masked


def test_provisioning_errors_mask_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for url in (f"postgresql://u:{PASSWORD}@127.0.0.1:{port}/db", f"postgresql://u:{PASSWORD}@h:notaport/db",
                f"mysql://u:{PASSWORD}@h/db"):
        monkeypatch.setenv("DATABASE_URL", url)
        with pytest.raises(ProvisioningError) as info:
            provisioning.provision()
        assert PASSWORD not in str(info.value) and "u:***@" in str(info.value)


def test_pytest_dumps_of_local_variables_mask_the_password(tmp_path: Path) -> None:
    (tmp_path / "test_dump.py").write_text(f'''
from urllib.parse import urlsplit


def connect(dsn):
    parts = urlsplit(dsn)
    print("connecting to", dsn)
    raise ConnectionRefusedError(f"cannot connect to {{dsn}}")


def test_connect():
    dsn = "postgresql://u:{PASSWORD}@127.0.0.1:1/db"
    connect(dsn)
''')
    done = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path), "-p", "no:cacheprovider", "-l",
                           "--tb=long"], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 1 and "ConnectionRefusedError" in out and "u:***@" in out, out[-3000:]
    assert PASSWORD not in out, out[-3000:]


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A TMPDIR of the run's own, so every file the run leaves can be read."""
    path = Path(tempfile.mkdtemp(prefix="secrets-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_no_file_a_run_leaves_holds_the_password(postgres_server: PostgresServer, workspace: Path) -> None:
    """A run against DATABASE_URL with a password (the session's server trusts it, so any password logs in):
    reports, histories, worker specs and logs are grepped for it."""
    url = with_host_port(postgres_server.dsn, "127.0.0.1", postgres_server.port).replace(
        "postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")
    reports = workspace / "reports"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": url, "TMPDIR": str(workspace)}
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "-k", "poison_max_deliveries",
                           "--reports-dir", str(reports)], capture_output=True, text=True, timeout=300,
                          check=False, env=env, cwd=workspace)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert PASSWORD not in done.stdout + done.stderr
    files = [p for p in workspace.rglob("*") if p.is_file()]
    specs = [p for p in files if p.name.endswith(".spec.json")]
    assert specs and any(p.name.endswith(".jsonl") for p in files) and (reports / "latest" / "results.json").exists()
    leaks = [str(p) for p in files if PASSWORD.encode() in p.read_bytes()]
    assert leaks == [], leaks
    assert "postgres:***@" in specs[0].read_text()  # the spec still says where the worker connects
