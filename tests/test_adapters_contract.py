"""Every shipped adapter honours the contract of harness/adapter.py against a real PostgreSQL.

- it loads through ``load_adapter`` and satisfies the ``Adapter`` protocol with honest declarations;
- ``create_schema`` drops and recreates the implementation's schema;
- a publish inside a harness transaction that rolls back leaves nothing behind (P1); an adapter with its own
  publisher (``Adapter.publisher``, a program in another language) runs the same transactions itself;
- a committed publish shows up pending in ``read_state``, payloads intact.

Peer adapters are skipped, with the reason, when their library is not installed.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from harness.adapter import ALIASES, Adapter, Capabilities, ConsumerConfig, PublishTx, RetryConfig, load_adapter
from harness.payload import decode, encode
from harness.provision.postgres import asyncpg_url

# (--impl spec, module its library is imported as; None when it needs nothing beyond the project)
SHIPPED = [
    ("reference", None),
    ("faststream-outbox", "faststream_outbox"),
    ("pgqueuer", "pgqueuer"),
    ("soniq", "soniq"),
    ("eventsource-py", "eventsource"),
    ("procrastinate", "procrastinate"),
    ("chancy", "chancy"),
    ("harness.adapters.example:adapter", None),
    ("tests.correct.prefetch:adapter", None),
    ("tests.correct.heartbeat:adapter", None),
    ("river", None),
    ("harness.adapters.go_example:adapter", None),
    ("pg-boss", None),
    ("graphile-worker", None),
]
# Adapters whose program is built with a toolchain the machine may lack (or given prebuilt by a variable).
TOOLCHAINS = {"river": ("go", "OUTBOX_HARNESS_RIVER_BIN"), "harness.adapters.go_example:adapter": ("go", ""),
              "pg-boss": ("node", "OUTBOX_HARNESS_NODE"), "graphile-worker": ("node", "OUTBOX_HARNESS_NODE")}
CONFIG = ConsumerConfig(queue="contract")


@pytest.fixture(params=SHIPPED, ids=[spec for spec, _ in SHIPPED])
def spec(request: pytest.FixtureRequest) -> str:
    name, library = request.param
    if library is not None:
        pytest.importorskip(library, reason=f"{library} is not installed (pip install '.[peers]')")
    if name in TOOLCHAINS:
        tool, prebuilt = TOOLCHAINS[name]
        if shutil.which(tool) is None and not (prebuilt and os.environ.get(prebuilt)):
            pytest.skip(f"{name}'s adapter program needs {tool} to build it (or {prebuilt})")
    return name


def test_every_alias_is_covered() -> None:
    assert set(ALIASES) <= {s for s, _ in SHIPPED}


def test_loads_and_satisfies_the_protocol(spec: str) -> None:
    adapter = load_adapter(spec)
    assert isinstance(adapter, Adapter)
    assert isinstance(adapter.name, str) and adapter.name
    assert isinstance(adapter.capabilities, Capabilities)
    budget = adapter.connection_budget(CONFIG)
    if adapter.capabilities.connection_budget:
        assert isinstance(budget, int) and budget >= 1, "a declared connection budget must be a positive int"
    else:
        assert budget is None, "no connection_budget capability, so no budget either"
    if adapter.dlq_table is not None:
        assert adapter.capabilities.dlq, "a dead-letter table without the dlq capability"
    missing = adapter.capabilities.missing("lease_ttl", "dlq", "notify")
    if missing:
        assert adapter.capabilities.notes, f"{spec} lacks {missing} but says nothing about it in notes"


async def _publish(adapter: Adapter, dsn: str, mids: Sequence[str], *, commit: bool, first: bool = False) -> None:
    """What the runner does: a business row and the outbox rows in one transaction it owns. With ``first``
    the publish is the transaction's first statement (as in the bench)."""
    own = getattr(adapter, "publisher", None)
    if callable(own):  # its own publisher runs the transaction, as the generator has it do
        publisher = own(dsn, CONFIG)
        try:
            out = await publisher.publish_tx(mids, [encode(m, pad=16) for m in mids], not commit, queue=CONFIG.queue,
                                             business=None if first else "contract_business")
        finally:
            await publisher.close()
        assert out.ok, f"the publisher failed: {out.error}"
        return
    engine = create_async_engine(asyncpg_url(dsn))
    try:
        async with engine.connect() as conn:
            tx, ptx = await PublishTx.begin(conn)
            if not first:
                await conn.exec_driver_sql("INSERT INTO contract_business (mid) SELECT unnest($1::text[])",
                                           (list(mids),))
            await adapter.publish(ptx, [encode(m, pad=16) for m in mids], CONFIG.queue)
            await (tx.commit() if commit else tx.rollback())
    finally:
        await engine.dispose()


async def _fresh(postgres_server, spec: str) -> tuple[Adapter, str]:
    adapter = load_adapter(spec)
    dsn = await postgres_server.create_database(("contract_" + re.sub(r"\W+", "_", spec))[:60])
    await adapter.create_schema(dsn, CONFIG)
    engine = create_async_engine(asyncpg_url(dsn))
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE contract_business (mid text PRIMARY KEY)")
    finally:
        await engine.dispose()
    return adapter, dsn


def _mids(payloads: Sequence[bytes]) -> list[str]:
    decoded = [decode(p) for p in payloads]
    assert all(intact for _, intact, _ in decoded), "payloads came back altered"
    return sorted(str(mid) for mid, _, _ in decoded)


async def test_rolled_back_publish_leaves_nothing_and_committed_one_is_pending(postgres_server, spec: str) -> None:
    adapter, dsn = await _fresh(postgres_server, spec)

    await _publish(adapter, dsn, ["r1", "r2"], commit=False)
    state = await adapter.read_state(dsn)
    assert state.pending == [] and state.dead == [], "a rolled-back publish left rows behind (P1)"

    await _publish(adapter, dsn, ["c1", "c2", "c3"], commit=True)
    await _publish(adapter, dsn, ["r3"], commit=False)
    state = await adapter.read_state(dsn)
    assert _mids(state.pending) == ["c1", "c2", "c3"]
    assert state.dead == []


async def test_publish_as_the_first_statement_still_joins_the_transaction(postgres_server, spec: str) -> None:
    adapter, dsn = await _fresh(postgres_server, spec)
    await _publish(adapter, dsn, ["f1", "f2"], commit=False, first=True)
    state = await adapter.read_state(dsn)
    assert state.pending == [] and state.dead == [], "published outside the harness's transaction (P1)"
    await _publish(adapter, dsn, ["f3"], commit=True, first=True)
    assert _mids((await adapter.read_state(dsn)).pending) == ["f3"]


async def test_create_schema_drops_what_was_there(postgres_server, spec: str) -> None:
    adapter, dsn = await _fresh(postgres_server, spec)
    await _publish(adapter, dsn, ["old"], commit=True)
    assert _mids((await adapter.read_state(dsn)).pending) == ["old"]
    await adapter.create_schema(dsn, CONFIG)
    state = await adapter.read_state(dsn)
    assert state.pending == [] and state.dead == []


@pytest.mark.parametrize(("retry", "max_deliveries", "calls", "budget"), [
    (RetryConfig(kind="none", max_attempts=10), None, 1, 1),
    (RetryConfig(kind="constant", max_attempts=5), None, 5, 5),
    (RetryConfig(max_attempts=10), 3, 10, 3),
    (RetryConfig(max_attempts=2), 6, 2, 2),
    (RetryConfig(max_attempts=0), None, 1, 1),
])
def test_call_budget_is_the_retry_policy_capped_by_max_deliveries(retry: RetryConfig, max_deliveries: int | None,
                                                                  calls: int, budget: int) -> None:
    """The one place the adapters of libraries with a single attempts counter (procrastinate, chancy, soniq) read
    how many handler calls a message gets."""
    cfg = ConsumerConfig(retry=retry, max_deliveries=max_deliveries)
    assert (cfg.retry.calls, cfg.call_budget) == (calls, budget)
