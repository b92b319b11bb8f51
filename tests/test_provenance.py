"""The version a report names for the implementation under test."""

from __future__ import annotations

from importlib.metadata import version as dist_version
from types import SimpleNamespace

import pytest

from harness.adapter import load_adapter
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
