"""The real Toxiproxy server in front of the real embedded PostgreSQL: every network fault is seen by a client.

Nemeses are called through ``asyncio.to_thread``, as the runner calls them;
client-side checks use asyncpg connections opened before the fault, to show
that what the probe reports is also what an implementation would live through.
A fault's effect is shown by lower bounds (a toxic guarantees them); that it is
gone again, by polling until traffic is faster than the fault allows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from harness.history import HistoryWriter, read_events
from harness.nemesis.base import NETWORK, Env, FaultNotApplied
from harness.nemesis.network import Bandwidth, BlackHole, Latency, Partition, ResetPeer, select_one
from harness.provision import guard
from harness.provision.postgres import PostgresServer, ProvisioningError
from harness.provision.toxiproxy import (
    Proxy, ToxiproxyServer, ToxiproxyUnavailable, find_binary, provision_toxiproxy,
)
from harness.scenario import FaultStep
from harness.schedule import apply

#: What asyncpg raises on a connection cut under it (depending on whether it noticed before the query).
CONNECTION_BROKEN = (asyncpg.InterfaceError, asyncpg.ConnectionDoesNotExistError, ConnectionError)


@pytest.fixture(scope="module")
def toxiproxy_server() -> Iterator[ToxiproxyServer]:
    """A server of this module's own (the plugin's ``toxiproxy`` fixture turns unavailability into a handle)."""
    try:
        server = provision_toxiproxy()
    except ToxiproxyUnavailable as exc:
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture
def proxy(toxiproxy_server: ToxiproxyServer, postgres_server: PostgresServer) -> Iterator[Proxy]:
    p = toxiproxy_server.proxy("pg_test", postgres_server.host, postgres_server.port)
    yield p
    p.reset()


async def connect(proxy: Proxy, dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(proxy.dsn_for(dsn), timeout=5)


async def round_trip_ms(conn: asyncpg.Connection, timeout: float = 5.0) -> float:
    t0 = time.monotonic()
    assert await conn.fetchval("SELECT 1", timeout=timeout) == 1
    return (time.monotonic() - t0) * 1000


async def round_trip_below(conn: asyncpg.Connection, ms: float, deadline: float = 10.0) -> float:
    """Polls round trips until one takes less than ``ms`` (which a toxic still in place forbids)."""
    t0 = time.monotonic()
    while (took := await round_trip_ms(conn)) >= ms:
        assert time.monotonic() - t0 < deadline, f"no round trip under {ms} ms in {deadline} s (last {took:.1f} ms)"
    return took


def test_server_is_toxiproxy_we_started(toxiproxy_server: ToxiproxyServer) -> None:
    assert toxiproxy_server.pid is not None and guard.alive(toxiproxy_server.pid)
    assert toxiproxy_server.url == f"http://127.0.0.1:{toxiproxy_server.port}"
    assert toxiproxy_server.version.startswith("v2.") or toxiproxy_server.version == "git"


async def test_select_one_through_proxy(proxy: Proxy, postgres_server: PostgresServer) -> None:
    assert proxy.listen_host == "127.0.0.1" and proxy.listen_port != postgres_server.port
    conn = await connect(proxy, postgres_server.dsn)
    try:
        assert await conn.fetchval("SELECT inet_server_port()") == postgres_server.port
    finally:
        await conn.close()
    # Toxiproxy counts bytes as its link goroutines get to it: poll a moment rather than read once (a single read
    # right after the close found no counter yet, once in CI).
    deadline = time.monotonic() + 5.0
    while not (counted := _counted(proxy.stats())) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert counted, proxy.stats()


def _counted(stats: dict[str, dict[str, int]]) -> bool:
    return stats.get("upstream", {}).get("received", 0) > 0 and stats.get("downstream", {}).get("sent", 0) > 0


def test_proxy_of_same_name_replaces_the_old_one(toxiproxy_server: ToxiproxyServer,
                                                  postgres_server: PostgresServer) -> None:
    first = toxiproxy_server.proxy("pg_twice", postgres_server.host, postgres_server.port)
    first.add_toxic("latency", "slow", {"latency": 10})
    second = toxiproxy_server.proxy("pg_twice", postgres_server.host, postgres_server.port)
    assert second.toxics() == []
    select_one(second.dsn_for(postgres_server.dsn), timeout=5)  # traffic flows through the new one


async def test_partition(proxy: Proxy, postgres_server: PostgresServer) -> None:
    conn = await connect(proxy, postgres_server.dsn)
    fault = Partition(proxy, postgres_server.dsn)
    started = await asyncio.to_thread(fault.start)
    try:
        assert started["probe"] == "refused" and started["existing"] in ("closed", "reset")
        with pytest.raises(CONNECTION_BROKEN):
            await conn.fetchval("SELECT 1", timeout=2)
        with pytest.raises(OSError):
            await connect(proxy, postgres_server.dsn)
    finally:
        stopped = await asyncio.to_thread(fault.stop)
        conn.terminate()
    assert stopped["probe"] == "flowing"


async def test_black_hole(proxy: Proxy, postgres_server: PostgresServer) -> None:
    conn = await connect(proxy, postgres_server.dsn)
    fault = BlackHole(proxy, postgres_server.dsn, probe_timeout=0.5)
    started = await asyncio.to_thread(fault.start)
    try:
        assert started["probe"] == "timeout" and started["probe_ms"] >= 450
        with pytest.raises(TimeoutError):  # the connection is still open: the answer just never comes
            await conn.fetchval("SELECT 1", timeout=0.5)
    finally:
        stopped = await asyncio.to_thread(fault.stop)
        conn.terminate()
    assert stopped["probe"] == "flowing"


async def test_reset_peer(proxy: Proxy, postgres_server: PostgresServer) -> None:
    conn = await connect(proxy, postgres_server.dsn)
    fault = ResetPeer(proxy, postgres_server.dsn)
    started = await asyncio.to_thread(fault.start)
    try:
        assert started["probe"] == "reset"
        with pytest.raises(CONNECTION_BROKEN):
            await conn.fetchval("SELECT 1", timeout=2)
    finally:
        stopped = await asyncio.to_thread(fault.stop)
        conn.terminate()
    assert stopped["probe"] == "flowing"


async def test_latency(proxy: Proxy, postgres_server: PostgresServer) -> None:
    conn = await connect(proxy, postgres_server.dsn)
    try:
        before = min([await round_trip_ms(conn) for _ in range(3)])
        fault = Latency(proxy, postgres_server.dsn, latency_ms=100, jitter_ms=10)
        started = await asyncio.to_thread(fault.start)
        try:
            assert started["added_ms"] >= 100
            during = await round_trip_ms(conn)
            assert during - before >= 100  # the open connection is slowed too, not only new ones
        finally:
            stopped = await asyncio.to_thread(fault.stop)
        # each direction waited at least 90 ms under the toxic: a round trip under 100 ms shows it gone
        await round_trip_below(conn, 100)
    finally:
        await conn.close()
    assert stopped["probe"] == "flowing" and proxy.toxics() == []


async def test_bandwidth(proxy: Proxy, postgres_server: PostgresServer) -> None:
    fault = Bandwidth(proxy, postgres_server.dsn, rate_kb_s=200)
    started = await asyncio.to_thread(fault.start)
    stopped = await asyncio.to_thread(fault.stop)
    assert started["probe"] == "throttled" and started["bytes"] == 60_000
    assert started["up_ms"] >= 150 and started["down_ms"] >= 150
    assert stopped["probe"] == "flowing" and proxy.toxics() == []


async def test_a_fault_with_no_effect_is_not_applied(proxy: Proxy, postgres_server: PostgresServer) -> None:
    """Toxiproxy accepts a 0 ms latency toxic; the probe sees nothing, so the fault must not count."""
    with pytest.raises(FaultNotApplied, match="latency"):
        await asyncio.to_thread(Latency(proxy, postgres_server.dsn, latency_ms=0).start)
    assert proxy.toxics() == []  # removed again, not left behind half-applied


async def test_a_fault_on_a_dead_link_is_not_applied(toxiproxy_server: ToxiproxyServer,
                                                     postgres_server: PostgresServer) -> None:
    """With no traffic before the fault, a black hole cannot be told apart from the outage already there."""
    from harness.provision.ports import free_port

    dead = toxiproxy_server.proxy("pg_dead", "127.0.0.1", free_port())
    with pytest.raises(FaultNotApplied, match="did not flow"):
        await asyncio.to_thread(BlackHole(dead, postgres_server.dsn).start)
    assert dead.toxics() == []


def test_stop_kills_the_server_by_pid() -> None:
    try:
        server = provision_toxiproxy()
    except ToxiproxyUnavailable as exc:
        pytest.skip(str(exc))
    pid = server.pid
    assert pid is not None and guard.alive(pid)
    server.stop()
    assert not guard.alive(pid)
    server.stop()  # idempotent


def test_toxiproxy_url_is_used_and_left_running(toxiproxy_server: ToxiproxyServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOXIPROXY_URL", toxiproxy_server.url)
    given = provision_toxiproxy()
    assert given.pid is None and given.port == toxiproxy_server.port
    given.stop()
    assert toxiproxy_server.pid is not None and guard.alive(toxiproxy_server.pid)


def test_unreachable_toxiproxy_url_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.provision.ports import free_port

    monkeypatch.setenv("TOXIPROXY_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ProvisioningError, match="unset it") as info:
        provision_toxiproxy()
    assert not isinstance(info.value, ToxiproxyUnavailable)  # a wrong URL is an error, not a skip


def test_not_toxiproxy_binary_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOXIPROXY_SERVER_BIN", "/bin/true")
    with pytest.raises(ProvisioningError, match="not a toxiproxy-server"):
        find_binary()


def test_without_binary_or_go_the_reason_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.delenv("TOXIPROXY_SERVER_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToxiproxyUnavailable, match="Go is not installed.*go install github.com/Shopify/toxiproxy"):
        find_binary()


async def test_faults_are_recorded_in_the_history_as_the_checkers_read_them(
        proxy: Proxy, postgres_server: PostgresServer, tmp_path: Any) -> None:
    """Applied by the scheduler, as a scenario applies them, each network fault leaves invoke, ok (its
    category, the proxy and the probe that proves it took effect) and info (the probe that shows it healed)
    in the history: the recovery checker (L4) and the report read nothing else."""
    history = HistoryWriter(tmp_path / "history.jsonl", "runner")
    env = Env(postgres_server, postgres_server.dsn, supervisor=None, adapter=None, proxies={"w1": proxy},
              history=history, in_flight=lambda process: 0)
    steps = [(Partition, {"target": "w1"}), (Latency, {"target": "w1", "latency_ms": 50}),
             (ResetPeer, {"target": "w1"})]
    for nemesis, params in steps:
        await apply(FaultStep(at=0.0, nemesis=nemesis, hold=0.1, params=params), env)
    history.close()
    events = [e for e in read_events(tmp_path / "history.jsonl") if e.f == "fault"]
    assert [(e.value["kind"], e.type) for e in events] == [
        (n.kind, t) for n, _ in steps for t in ("invoke", "ok", "info")]
    assert {e.value["category"] for e in events} == {NETWORK}
    applied = {e.value["kind"]: e.value for e in events if e.type == "ok"}
    assert {(f["proxy"], f["target"]) for f in applied.values()} == {(proxy.name, "w1")}
    assert applied["partition"]["probe"] == "refused" and applied["reset_peer"]["probe"] == "reset"
    assert applied["latency"]["added_ms"] >= 50
    assert [e.value["probe"] for e in events if e.type == "info"] == ["flowing"] * len(steps)
    assert proxy.toxics() == []
