"""pytest plugin: fixtures for PostgreSQL (and, later, Toxiproxy, implementations, nemeses)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from harness.provision.postgres import PostgresServer, provision


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server per test session: ``DATABASE_URL`` or a fresh embedded one, always stopped."""
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    server = provision()
    try:
        yield server
    finally:
        server.stop()
