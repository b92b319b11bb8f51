"""The version a report names for the implementation under test."""

from __future__ import annotations

import re
from importlib.metadata import version as dist_version
from types import SimpleNamespace

import pytest

from harness.adapter import load_adapter, unavailable
from harness.provenance import UNKNOWN, implementation_version
from harness.version import version


def test_the_reference_is_the_harness_at_its_commit() -> None:
    assert implementation_version(load_adapter("reference")) == f"outbox-harness {version()}"


def test_a_peer_adapter_names_the_library_it_drives() -> None:
    pytest.importorskip("pgqueuer")
    assert implementation_version(load_adapter("pgqueuer")) == f"pgqueuer {dist_version('pgqueuer')}"


def test_a_declared_version_wins_and_an_unknown_one_says_how_to_declare_it() -> None:
    assert implementation_version(SimpleNamespace(name="reference", version="mylib 2.3.1")) == "mylib 2.3.1"
    assert implementation_version(SimpleNamespace(name="nobody")) == UNKNOWN


def test_process_adapters_name_the_library_their_program_runs() -> None:
    """Not the harness's version: the Node packages installed from the lock file and the Go module go.mod pins."""
    expect = {"river": r"river v0\.51\.\d+ \(riverpgxv5 v0\.51\.\d+\)",
              "pg-boss": r"pg-boss 12\.\d+\.\d+ \(Node v\d+\.\d+\.\d+\)",
              "graphile-worker": r"graphile-worker 0\.18\.\d+ \(Node v\d+\.\d+\.\d+\)"}
    for alias, pattern in expect.items():
        adapter = load_adapter(alias)
        why = unavailable(adapter)
        if why and alias != "river":  # River's comes from go.mod, readable without Go
            pytest.skip(why)
        assert re.fullmatch(pattern, implementation_version(adapter)), (alias, implementation_version(adapter))
