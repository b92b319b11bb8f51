"""What pyproject.toml declares matches what the code imports: an installed package finds every module it
imports (declared in the core dependencies or the extra of the feature that uses it), and nothing is declared
that no code uses."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
#: The project's own top-level names, and the test helpers tests import by module name.
OWN = {"harness", "outbox", "tests", "scenarios"} | {p.stem for p in (ROOT / "tests").glob("*.py")}


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement)[0]).lower()  # type: ignore[index]


def _imported(*dirs: str) -> set[str]:
    """Distributions whose modules the files under ``dirs`` import (anywhere in a file, lazily or not)."""
    modules: set[str] = set()
    for d in dirs:
        for path in (ROOT / d).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - OWN - {"__future__"}
    dists = packages_distributions()
    missing = sorted(m for m in third_party if m not in dists)
    assert not missing, f"imported but not installed here, so not checkable: {missing}"
    return {_name(d) for m in third_party for d in dists[m]}


def _declared(*extras: str) -> set[str]:
    reqs = list(PROJECT["dependencies"]) if not extras else []
    for extra in extras:
        reqs += PROJECT["optional-dependencies"][extra]
    return {_name(r) for r in reqs if not r.startswith("outbox-harness")}


def test_the_package_declares_what_it_imports_and_nothing_else() -> None:
    runtime = _declared() | _declared("harness", "load", "peers", "docker")
    assert _imported("harness", "outbox") == runtime


def test_the_test_extra_declares_what_the_tests_add() -> None:
    assert _declared("test") == _imported("tests", "scenarios") - _imported("harness", "outbox")


def test_the_license_is_an_spdx_expression_with_its_file() -> None:
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
