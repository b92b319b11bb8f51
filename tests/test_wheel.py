"""The package on its own: a wheel built from this tree, installed into a fresh virtual environment in another
directory, runs the suite from site-packages, where no ``scenarios/`` directory and no checkout exist, with the
command docs/ci.md gives teams, against an adapter of a team's own package.

The fresh environment gets the wheel alone (``--no-deps``); its dependencies come from this interpreter's
site-packages through a ``.pth`` line (directories a ``.pth`` line adds are not scanned for ``.pth`` files, so
this checkout's editable install stays out). ``harness`` and ``outbox`` are imported from the wheel's copy, which
the test checks before it runs a scenario.
"""

from __future__ import annotations

import email
import json
import os
import shlex
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tree(dest: Path) -> Path:
    """The files git would ship (tracked, or new and not ignored), copied: the build leaves the checkout alone."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel, and what the build printed."""
    src = _tree(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return next(out.glob("outbox_harness-*.whl")), done.stdout + done.stderr


@pytest.fixture(scope="module")
def venv(wheel: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel; dependencies through a .pth line to this interpreter's site-packages."""
    home = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True, timeout=120, env=_env())
    python = home / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # The wheel first: pip must not see this interpreter's packages (it would take the editable install of the
    # checkout for this one and skip it).
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel[0])], check=True, timeout=300, env=_env())
    Path(purelib, "shared_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return home


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATABASE_URL", "TOXIPROXY_URL")}


def test_the_wheel_declares_its_license_and_what_it_imports(wheel: tuple[Path, str]) -> None:
    path, build_log = wheel
    assert "deprecated" not in build_log.lower(), build_log[-3000:]
    with zipfile.ZipFile(path) as whl:
        info = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(whl.read(info))
        names = whl.namelist()
    assert meta["License-Expression"] == "MIT" and meta.get_all("License-File") == ["LICENSE"]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "harness/suite.py" in names and "harness/locustfile.py" in names


def test_the_installed_wheel_runs_the_ci_recipe_against_a_team_adapter(venv: Path, tmp_path: Path) -> None:
    """docs/ci.md's command, as a team's job runs it: the package from site-packages, the team's adapter from its
    own package (here one that re-exports the reference adapter), one scenario."""
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import harness, outbox; print(harness.__file__); "
                            "print(outbox.__file__)"], capture_output=True, text=True, check=True, cwd=tmp_path,
                           env=_env()).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where
    team = tmp_path / "team" / "mypkg"
    team.mkdir(parents=True)
    (team / "__init__.py").write_text("")
    (team / "outbox_adapter.py").write_text("from harness.adapters.reference import adapter\n")
    recipe = next(line.strip() for line in (ROOT / "docs" / "ci.md").read_text().splitlines()
                  if line.strip().startswith("outbox-harness run "))
    done = subprocess.run([str(venv / "bin" / "outbox-harness"), *shlex.split(recipe)[1:], "-k", "sigkill_storm"],
                          capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path,
                          env={**_env(), "PYTHONPATH": str(team.parent)})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    doc = json.loads((tmp_path / "reports" / "latest" / "results.json").read_text())
    assert doc["status"] == "pass" and [s["scenario"] for s in doc["scenarios"]] == ["sigkill_storm"]
    assert doc["scenarios"][0]["run"]["impl_spec"] == "mypkg.outbox_adapter:adapter"
