"""``--impl`` specs that cannot give an adapter are refused with one AdapterLoadError naming --impl, the spec
and the fix, whatever went wrong: an import that raises, an attribute that is not an adapter, a factory that
raises."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness import cli
from harness.adapter import AdapterLoadError, load_adapter
from harness.cli import runnable_aliases
from harness.exits import USAGE

MODULES = {
    "raises_on_import": "raise RuntimeError('no config file')\n",
    "not_callable": "adapter = 42\n",
    "factory_raises": "def adapter():\n    raise KeyError('missing setting')\n",
    "factory_needs_args": "def adapter(dsn):\n    return None\n",
    "not_an_adapter": "def adapter():\n    return object()\n",
}


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, source in MODULES.items():
        (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in MODULES:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("spec,says", [
    ("nosuchimpl", "neither a known alias"),
    ("no_such_module_anywhere:adapter", "cannot import"),
    ("raises_on_import:adapter", "RuntimeError: no config file"),
    ("not_callable:adapter", "int"),
    ("factory_raises:adapter", "KeyError: 'missing setting'"),
    ("factory_needs_args:adapter", "TypeError"),
    ("not_an_adapter:adapter", "lacks adapter members"),
    ("harness.adapters.reference:no_such_attribute", "no attribute"),
])
def test_a_bad_impl_is_one_error_naming_impl_the_spec_and_the_fix(modules: None, spec: str, says: str) -> None:
    with pytest.raises(AdapterLoadError) as info:
        load_adapter(spec)
    message = str(info.value)
    assert message.startswith(f"--impl {spec!r}: "), message
    assert says in message, message
    assert "\n" not in message, message
    assert any(fix in message for fix in ("pass", "make", "fix", "install", "point", "add")), message


def test_without_go_river_is_left_out_of_conformance_and_refused_when_asked_for(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without Go or Node: the default conformance matrix leaves River and pg-boss out and says why;
    --impl river or pg-boss is a usage error naming the toolchain, before anything starts."""
    monkeypatch.setenv("OUTBOX_HARNESS_CACHE", str(tmp_path / "cache"))  # nothing built yet
    monkeypatch.setenv("PATH", str(tmp_path))  # no go, no node on it
    monkeypatch.delenv("OUTBOX_HARNESS_RIVER_BIN", raising=False)
    monkeypatch.delenv("OUTBOX_HARNESS_NODE", raising=False)
    said: list[str] = []
    kept = runnable_aliases(said.append)
    assert "river" not in kept and "pg-boss" not in kept and "reference" in kept
    assert any("leaving out river" in m and "Go is not installed" in m for m in said), said
    assert any("leaving out pg-boss" in m and "node is not installed" in m for m in said), said
    assert cli.main(["conformance", "--impl", "river", "-k", "sigkill_storm"]) == USAGE
    assert cli.main(["conformance", "--impl", "pg-boss", "-k", "sigkill_storm"]) == USAGE
