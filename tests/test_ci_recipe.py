"""docs/ci.md, the GitHub Actions job a team pastes, stays runnable: every ``outbox-harness`` command in it is one
this version's parser accepts, the extras it installs exist, its exit-code ``case`` reads exactly the documented
codes (harness/exits.py), the report is uploaded whatever the outcome, and the README links it."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from harness.cli import build_parser
from harness.exits import EXIT_CODES

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ci.md"


def _workflow() -> str:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "docs/ci.md holds one workflow"
    return blocks[0]


def _run_scripts(workflow: str) -> list[str]:
    """The bodies of the ``run: |`` blocks (the lines indented deeper than their ``run:``)."""
    scripts, lines = [], workflow.splitlines()
    for i, line in enumerate(lines):
        if m := re.match(r"^(\s*)(?:- )?run: \|$", line):
            body = []
            for nxt in lines[i + 1:]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= len(m.group(1)):
                    break
                body.append(nxt.strip())
            scripts.append("\n".join(body))
    return scripts


def test_the_readme_links_the_recipe() -> None:
    assert "](docs/ci.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_harness_command_in_the_recipe_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # --reports-dir is created by the parser
    commands = [line for script in _run_scripts(_workflow()) for line in script.splitlines()
                if line.startswith("outbox-harness ")]
    assert commands, "the recipe runs the harness"
    for line in commands:
        ns = build_parser().parse_args(shlex.split(line)[1:])
        assert ns.command == "run" and ns.impl == ["mypkg.outbox_adapter:adapter"]


def test_the_recipe_installs_the_wheel_with_extras_that_exist() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    installs = re.findall(r'pip install "\$\(ls wheels/outbox_harness-\*\.whl\)\[([a-z,]+)\]"', _workflow())
    assert installs and all(set(group.split(",")) <= set(extras) for group in installs)
    assert "pip wheel --no-deps" in _workflow()


def test_the_exit_code_case_reads_the_documented_codes() -> None:
    arms = dict(re.findall(r"^\s*(\d+)\) echo \"(?:::error::)?(\w+)", _workflow(), re.M))
    assert {int(code): name for code, name in arms.items()} == {code: name for code, (name, _) in EXIT_CODES.items()}
    assert re.search(r"^\s*exit \$code$", _workflow(), re.M), "the step must fail with the harness's code"


def test_the_report_is_kept_whatever_the_outcome() -> None:
    upload = _workflow().split("uses: actions/upload-artifact@", 1)
    assert len(upload) == 2 and "if: always()" in upload[0].rsplit("- name:", 1)[1]
    assert re.search(r"path: \|\n\s+reports/\n\s+!reports/latest\n", upload[1])
