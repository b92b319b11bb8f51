"""Fixtures for the reference-outbox tests: real PostgreSQL, no mocks.

- ``dsn``: one fresh database per test module (on the session's embedded server);
- ``engine``: a module-wide SQLAlchemy async engine whose pool is large enough
  for every subscriber a test starts (``pool_size=24``);
- ``tables``: fresh, uniquely named outbox + dead-letter tables per test, with an
  :class:`outbox.Outbox` over them and small query helpers;
- ``engine_factory``: extra engines (own pool settings / application_name), disposed at teardown;
- ``db``: a raw asyncpg connection to the module's database;
- ``subscribers``: starts subscribers and always stops them at teardown;
- ``wait_until``: polls an (async) predicate with a deadline, for timing asserts
  with honest slack;
- ``workspace``: a TMPDIR of a harness command's own, for tests that run one in a subprocess.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from harness.adapter import load_adapter
from harness.provision.postgres import asyncpg_url
from harness.runner import run_scenario
from harness.scenario import Scenario
from harness.verdict import ScenarioResult
from outbox import Outbox, Subscriber, make_dlq_table, make_outbox_table
from tests.controls import REPO, describe

POOL_SIZE = 24
_serial = itertools.count(1)


def make_engine(dsn: str, **kwargs: Any) -> AsyncEngine:
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", POOL_SIZE)
        kwargs.setdefault("max_overflow", 0)
    return create_async_engine(asyncpg_url(dsn), **kwargs)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dsn(postgres_server: Any, request: pytest.FixtureRequest) -> str:
    module = request.module.__name__.rsplit(".", 1)[-1]
    name = "t_" + re.sub(r"[^a-z0-9_]", "_", module.lower())[:55]
    return await postgres_server.create_database(name)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(dsn: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(dsn, connect_args={"server_settings": {"application_name": "outbox_tests"}})
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def engine_factory(dsn: str) -> AsyncIterator[Callable[..., AsyncEngine]]:
    """``engine_factory(**create_async_engine_kwargs)`` → an extra engine on the module's database,
    disposed at teardown (default pool: ``pool_size=24, max_overflow=0``)."""
    made: list[AsyncEngine] = []

    def factory(**kwargs: Any) -> AsyncEngine:
        made.append(make_engine(dsn, **kwargs))
        return made[-1]

    try:
        yield factory
    finally:
        for eng in made:
            await eng.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


@dataclass
class Tables:
    """Fresh outbox + DLQ tables for one test, and the Outbox over them."""

    name: str
    dlq: str
    table: Table
    dlq_table: Table
    outbox: Outbox
    engine: AsyncEngine
    dsn: str
    metadata: MetaData = field(repr=False, default_factory=MetaData)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            return await raw.driver_connection.fetch(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        rows = await self.fetch(sql, *args)
        return rows[0][0] if rows else None

    async def execute(self, sql: str, *args: Any) -> None:
        async with self.engine.begin() as conn:
            raw = await conn.get_raw_connection()
            await raw.driver_connection.execute(sql, *args)

    async def rows(self) -> list[asyncpg.Record]:
        return await self.fetch(f"SELECT * FROM {self.name} ORDER BY id")

    async def dlq_rows(self) -> list[asyncpg.Record]:
        return await self.fetch(f"SELECT * FROM {self.dlq} ORDER BY id")

    async def count(self) -> int:
        return await self.fetchval(f"SELECT count(*) FROM {self.name}")

    async def dlq_count(self) -> int:
        return await self.fetchval(f"SELECT count(*) FROM {self.dlq}")

    async def publish(self, *payloads: Any, queue: str = "q", **kwargs: Any) -> list[int]:
        async with self.engine.begin() as conn:
            return await self.outbox.publish_batch(conn, list(payloads), queue=queue, **kwargs)


@pytest_asyncio.fixture(loop_scope="session")
async def tables(engine: AsyncEngine, dsn: str) -> AsyncIterator[Tables]:
    name = f"ob{next(_serial)}_{uuid.uuid4().hex[:8]}"
    md = MetaData()
    table = make_outbox_table(md, name)
    dlq_table = make_dlq_table(md, f"{name}_dlq")
    async with engine.begin() as conn:
        await conn.run_sync(md.create_all)
    t = Tables(name, f"{name}_dlq", table, dlq_table, Outbox(table, dlq_table=dlq_table), engine, dsn, md)
    try:
        yield t
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(md.drop_all)


@pytest_asyncio.fixture(loop_scope="session")
async def subscribers() -> AsyncIterator[Callable[..., Awaitable[Subscriber]]]:
    """``await subscribers(outbox, engine, queue=..., handler=..., **options)`` → a started Subscriber."""
    started: list[Subscriber] = []

    async def start(outbox: Outbox, engine: AsyncEngine, *, queue: str = "q", **options: Any) -> Subscriber:
        options.setdefault("graceful_timeout", 2.0)
        options.setdefault("min_fetch_interval", 0.02)
        options.setdefault("max_fetch_interval", 0.5)
        sub = outbox.subscriber(engine, queue=queue, **options)
        await sub.start()
        started.append(sub)
        return sub

    try:
        yield start
    finally:
        for sub in reversed(started):
            await sub.stop()


async def _wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.01,
                      message: str = "condition") -> float:
    """Polls ``predicate`` (sync or async) until truthy; returns the seconds it took."""
    t0 = time.monotonic()
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


@pytest.fixture
def wait_until() -> Callable[..., Awaitable[float]]:
    return _wait_until


# -- controls: an implementation of tests/ through a stock scenario -----------------------------------------------

@pytest.fixture(scope="module")
def workers_import_the_repo() -> Iterator[None]:
    """Workers run ``python -m harness.worker`` and import the implementation by spec string from a fresh
    interpreter: put the repo root on their PYTHONPATH (and on this process's sys.path), whatever directory pytest
    was started from."""
    old_env, old_path = os.environ.get("PYTHONPATH"), list(sys.path)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), old_env) if p)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_env
        sys.path[:] = old_path


@pytest.fixture
def run_impl(postgres_server: Any, tmp_path_factory: pytest.TempPathFactory, workers_import_the_repo: None,
             request: pytest.FixtureRequest) -> Callable[[str, Scenario, str], ScenarioResult]:
    """``run_impl(impl_spec, scenario, tag)``: the real harness (worker processes, nemeses, checkers) on the
    session's server and Toxiproxy; the scenario is renamed ``<name>__<tag>`` so it gets its own database."""
    def run(impl: str, scenario: Scenario, tag: str) -> ScenarioResult:
        adapter = load_adapter(impl)
        scenario = dataclasses.replace(scenario, name=f"{scenario.name}__{tag}")
        proxy = request.getfixturevalue("toxiproxy") if scenario.needs_proxy else None
        result = asyncio.run(run_scenario(scenario, adapter=adapter, impl_spec=impl, server=postgres_server,
                                          workdir=tmp_path_factory.mktemp(tag),
                                          toxiproxy=proxy.server if proxy is not None else None,
                                          toxiproxy_error=proxy.error if proxy is not None else None))
        print(describe(result))
        return result

    return run


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A TMPDIR of a harness run's own, outside pytest's private tmp tree: the embedded server's user must reach
    it, and what a run leaves behind shows there."""
    path = Path(tempfile.mkdtemp(prefix="harness-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
