"""SIGKILL of the harness mid-run: the guard kills every process it started and removes what they left
(the embedded server's data directory, the Toxiproxy log), so nothing piles up run after run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.provision import guard
from harness.provision.toxiproxy import ToxiproxyUnavailable, find_binary
from tests.controls import processes_in

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def workspace() -> Iterator[Path]:
    """The run's TMPDIR and working directory: every process it starts works inside it."""
    path = Path(tempfile.mkdtemp(prefix="guard-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)



def leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("outbox-harness-*") if not p.name.startswith("outbox-harness-xdg-"))


def test_sigkill_of_the_harness_leaves_no_process_and_no_directory(workspace: Path) -> None:
    try:
        find_binary()
    except ToxiproxyUnavailable as exc:
        pytest.skip(str(exc))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(PYTHONPATH=str(ROOT), TMPDIR=str(workspace), PYTHONUNBUFFERED="1")
    log = workspace / "harness.out"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "-k", "partition_black_hole",
                                 "--reports-dir", str(workspace / "reports")], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=workspace, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "workers up" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        started = leftovers(workspace)
        assert any(n.startswith("outbox-harness-pg-") for n in started), started
        assert any(n.startswith("outbox-harness-toxiproxy-") for n in started), started
        assert len(processes_in(workspace)) >= 4  # server, Toxiproxy, workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 20
    while (processes_in(workspace) or leftovers(workspace)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_in(workspace) == [], "processes survived the harness"
    assert leftovers(workspace) == [], "the guard left these behind"


def test_a_path_given_back_is_not_removed(tmp_path: Path) -> None:
    """Paths are forgotten when their owner removes them itself; a forgotten path is never touched."""
    kept = tmp_path / "kept"
    kept.mkdir()
    guard.protect_path(kept)
    guard.forget_path(kept)
    code = ("import sys; from harness.provision import guard; guard.protect_path(sys.argv[1]); "
            "import os; os.kill(os.getpid(), 9)")
    gone = tmp_path / "gone"
    gone.mkdir()
    (gone / "data").write_text("x")
    subprocess.run([sys.executable, "-c", code, str(gone)], env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    deadline = time.monotonic() + 10
    while gone.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not gone.exists() and kept.exists()
