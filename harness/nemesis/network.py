"""Network faults on a Toxiproxy proxy, each proven by probing through that proxy.

Toxiproxy accepting an API call is not evidence that traffic changed, so every
``start()`` probes through the proxy and raises :class:`FaultNotApplied` when
the probe sees no effect (and the fault is removed again); every ``stop()``
heals and waits for a ``SELECT 1`` through the proxy. Most probes are a raw
PostgreSQL round trip that needs no credentials: an SSLRequest, which a server
answers with one byte. Only :class:`Bandwidth` needs real queries, to move a
known number of bytes.

A nemesis is built with the proxy and a DSN of the database behind it (direct
or already through the proxy: :meth:`Proxy.dsn_for` rewrites either).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any

import asyncpg

from harness.nemesis.base import NETWORK, Env, Fault, FaultNotApplied, wait_until_busy
from harness.provision.toxiproxy import Proxy

SSL_REQUEST = struct.pack("!ii", 8, 80877103)
#: An added delay below this cannot be told from scheduling noise on a busy host.
MIN_EFFECT_MS = 5.0
HEAL_DEADLINE_S = 5.0
BOTH = ("upstream", "downstream")


def _ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 1)


def pg_ping(host: str, port: int, timeout: float) -> tuple[str, float]:
    """One SSLRequest round trip: ("answered" | "refused" | "reset" | "closed" | "timeout", ms)."""
    t0 = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(max(0.001, timeout - (time.monotonic() - t0)))
            sock.sendall(SSL_REQUEST)
            reply = sock.recv(1)
    except ConnectionRefusedError:
        return "refused", _ms(t0)
    except ConnectionResetError:
        return "reset", _ms(t0)
    except TimeoutError:
        return "timeout", _ms(t0)
    except OSError as exc:
        return type(exc).__name__, _ms(t0)
    return ("answered" if reply in (b"S", b"N") else "closed"), _ms(t0)


def select_one(dsn: str, timeout: float) -> float:
    """Connect and ``SELECT 1``; returns the milliseconds taken, raises if it could not."""

    async def go() -> None:
        conn = await asyncpg.connect(dsn, timeout=timeout)
        try:
            await conn.fetchval("SELECT 1", timeout=timeout)
        finally:
            await conn.close(timeout=timeout)

    t0 = time.monotonic()
    asyncio.run(asyncio.wait_for(go(), timeout))
    return _ms(t0)


class NetworkFault(Fault):
    """One fault on one proxy: toxics added by ``start()`` and removed by ``stop()``, or a hook override."""

    category = NETWORK
    needs_proxy = True

    @classmethod
    def build(cls, env: Env, target: str = "all", busy: bool = False, **params: Any) -> NetworkFault | Together:
        """The fault on one path to PostgreSQL (``target``: a worker such as ``w1``, or ``publisher``), or on every
        path at once (``all``): each worker and the publisher reach the server through a proxy of their own.
        ``busy``: wait (up to :data:`~harness.nemesis.base.BUSY_WAIT_S`) until the target worker has a handler running, so the cut catches it
        mid-handler."""
        if not env.proxies:
            raise FaultNotApplied(f"{cls.kind} needs a Toxiproxy proxy in front of PostgreSQL")
        names = list(env.proxies) if target == "all" else [target]
        if unknown := [n for n in names if n not in env.proxies]:
            raise FaultNotApplied(f"{cls.kind}: no path named {unknown[0]!r}; paths: {', '.join(env.proxies)}")
        faults = {n: cls(env.proxies[n], env.admin_dsn, **params).aimed_at(n) for n in names}
        if target == "all":
            return Together(faults)
        fault = faults[target]
        if busy:
            if target not in env.supervisor.slots:
                raise FaultNotApplied(f"{cls.kind}: busy needs a worker target, not {target!r}")
            fault.wait_for = lambda: env.in_flight(env.supervisor.slots[target].process) > 0
        return fault

    def aimed_at(self, target: str) -> NetworkFault:
        self.target = target
        return self

    def __init__(self, proxy: Proxy, dsn: str, *, probe_timeout: float = 1.0) -> None:
        self.proxy = proxy
        self.dsn = proxy.dsn_for(dsn)
        self.probe_timeout = probe_timeout
        self.params: dict[str, Any] = {}
        self.target = proxy.name  # which path it cuts, as the history names it
        self.wait_for: Callable[[], bool] | None = None  # a condition to wait for before applying
        self._toxics: list[tuple[str, str, dict[str, Any]]] = []  # (type, stream, attributes)
        self._added: list[str] = []

    def ping(self, timeout: float | None = None) -> tuple[str, float]:
        return pg_ping(self.proxy.listen_host, self.proxy.listen_port, timeout or self.probe_timeout)

    def min_ping(self, tries: int = 3, timeout: float | None = None) -> tuple[str, float]:
        """The fastest of a few pings: noise only ever adds time, so the minimum is the honest figure."""
        pings = [self.ping(timeout) for _ in range(tries)]
        return min(pings, key=lambda p: (p[0] != "answered", p[1]))

    def start(self) -> dict[str, Any]:
        """Applies the fault; any failure (a probe, the Toxiproxy API) is FaultNotApplied, with the fault removed."""
        if self.wait_for is not None:
            wait_until_busy(self.wait_for, f"{self.kind} on {self.target}")
        try:
            before = self._probe_before()
            try:
                self._apply()
                after = self._probe_after(before)
            except BaseException:
                with suppress(Exception):  # the first error is the one to report
                    self._remove()
                raise
        except FaultNotApplied:
            raise
        except Exception as exc:
            raise FaultNotApplied(f"{self.kind} on {self.proxy.name}: {type(exc).__name__}: {exc}") from exc
        return {"proxy": self.proxy.name, "target": self.target, **self.params, **before, **after}

    def stop(self) -> dict[str, Any]:
        """Heals, then waits for a SELECT 1 through the proxy; FaultNotApplied if traffic does not come back."""
        try:
            self._remove()
        except Exception as exc:
            raise FaultNotApplied(f"{self.kind} on {self.proxy.name}: heal failed: {type(exc).__name__}: {exc}") from exc
        t0 = time.monotonic()
        attempts, last = 0, ""
        while time.monotonic() - t0 < HEAL_DEADLINE_S:
            attempts += 1
            try:
                query_ms = select_one(self.dsn, timeout=2.0)
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                time.sleep(0.1)
                continue
            return {"proxy": self.proxy.name, "probe": "flowing", "probe_ms": query_ms,
                    "healed_after_ms": _ms(t0), "attempts": attempts}
        raise FaultNotApplied(f"{self.kind} on {self.proxy.name}: no SELECT 1 through the proxy within "
                              f"{HEAL_DEADLINE_S:.0f} s of healing ({attempts} attempts; last: {last})")

    # -- hooks -----------------------------------------------------------------------
    def _probe_before(self) -> dict[str, Any]:
        """A baseline: a fault can only be shown on traffic that flowed before it."""
        outcome, ms = self.min_ping()
        if outcome != "answered":
            raise FaultNotApplied(f"{self.kind}: traffic did not flow through {self.proxy.name} before the fault ({outcome})")
        return {"baseline_ms": ms}

    def _apply(self) -> None:
        for toxic_type, stream, attributes in self._toxics:
            name = f"{self.kind}_{stream}"
            self.proxy.add_toxic(toxic_type, name, attributes, stream=stream)
            self._added.append(name)

    def _remove(self) -> None:
        while self._added:
            self.proxy.remove_toxic(self._added.pop())

    def _probe_after(self, before: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _expect(self, wanted: str, outcome: str, ms: float) -> dict[str, Any]:
        if outcome != wanted:
            raise FaultNotApplied(f"{self.kind} on {self.proxy.name}: probe {outcome} after {ms} ms, expected {wanted}")
        return {"probe": outcome, "probe_ms": ms}


class Partition(NetworkFault):
    """Proxy disabled: open connections are closed, new ones refused (a partition the client notices)."""

    kind = "partition"

    def __init__(self, proxy: Proxy, dsn: str, *, probe_timeout: float = 1.0) -> None:
        super().__init__(proxy, dsn, probe_timeout=probe_timeout)
        self._held: socket.socket | None = None

    def _apply(self) -> None:
        # A connection opened (and used) before the fault, to show that open ones are cut too.
        self._held = socket.create_connection((self.proxy.listen_host, self.proxy.listen_port), self.probe_timeout)
        self._held.sendall(SSL_REQUEST)
        self._held.recv(1)
        self.proxy.disable()

    def _remove(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None
        self.proxy.enable()

    def _probe_after(self, before: dict[str, Any]) -> dict[str, Any]:
        figures = self._expect("refused", *self.ping())
        assert self._held is not None
        try:
            existing = "closed" if self._held.recv(1) == b"" else "open"
        except ConnectionResetError:
            existing = "reset"
        except TimeoutError:
            existing = "open"
        if existing == "open":
            raise FaultNotApplied(f"partition on {self.proxy.name}: a connection opened before it stayed open")
        return {**figures, "existing": existing}


class BlackHole(NetworkFault):
    """``timeout`` toxics with timeout 0 both ways: connections stay open, every byte vanishes.

    Removing them closes the connections they held (Toxiproxy's cleanup), as a
    stateful firewall that forgot them would.
    """

    kind = "black_hole"

    def __init__(self, proxy: Proxy, dsn: str, *, stream: str = "both", probe_timeout: float = 1.0) -> None:
        """``stream``: ``both``, or one direction only (``upstream``: client to server; ``downstream``)."""
        super().__init__(proxy, dsn, probe_timeout=probe_timeout)
        streams = BOTH if stream == "both" else (stream,)
        if not set(streams) <= set(BOTH):
            raise ValueError(f"stream must be 'both', 'upstream' or 'downstream', not {stream!r}")
        self.params = {"stream": stream}
        self._toxics = [("timeout", s, {"timeout": 0}) for s in streams]

    def _probe_after(self, before: dict[str, Any]) -> dict[str, Any]:
        return self._expect("timeout", *self.ping())


class ResetPeer(NetworkFault):
    """``reset_peer``: the connection is reset (RST) ``timeout_ms`` after data arrives on ``stream``.

    Downstream (the default) lets a query reach the server and resets the
    connection instead of delivering the answer: the client cannot know whether
    its commit happened. Upstream resets before the query leaves.
    """

    kind = "reset_peer"

    def __init__(self, proxy: Proxy, dsn: str, *, timeout_ms: int = 0, stream: str = "downstream",
                 probe_timeout: float = 1.0) -> None:
        super().__init__(proxy, dsn, probe_timeout=probe_timeout)
        self.params = {"timeout_ms": timeout_ms, "stream": stream}
        self._toxics = [("reset_peer", stream, {"timeout": timeout_ms})]

    def _probe_after(self, before: dict[str, Any]) -> dict[str, Any]:
        return self._expect("reset", *self.ping(self.params["timeout_ms"] / 1000 + self.probe_timeout))


class Latency(NetworkFault):
    """``latency`` toxics both ways: every chunk waits ``latency_ms`` ± ``jitter_ms`` in each direction.

    Verified when a round trip is slower than the baseline by at least one
    direction's minimum delay (it crosses two) and by more than noise.
    """

    kind = "latency"

    def __init__(self, proxy: Proxy, dsn: str, *, latency_ms: int, jitter_ms: int = 0,
                 probe_timeout: float = 1.0) -> None:
        super().__init__(proxy, dsn, probe_timeout=probe_timeout)
        self.params = {"latency_ms": latency_ms, "jitter_ms": jitter_ms}
        self._toxics = [("latency", stream, {"latency": latency_ms, "jitter": jitter_ms}) for stream in BOTH]

    def _probe_after(self, before: dict[str, Any]) -> dict[str, Any]:
        latency, jitter = self.params["latency_ms"], self.params["jitter_ms"]
        outcome, ms = self.min_ping(timeout=2 * (latency + jitter) / 1000 + self.probe_timeout)
        figures = self._expect("answered", outcome, ms)
        added = round(ms - before["baseline_ms"], 1)
        required = max(latency - jitter, MIN_EFFECT_MS)
        if added < required:
            raise FaultNotApplied(f"latency on {self.proxy.name}: round trip {ms} ms, {added} ms over the "
                                  f"{before['baseline_ms']} ms baseline; needed at least {required} ms more")
        return {**figures, "added_ms": added}


class Bandwidth(NetworkFault):
    """``bandwidth`` toxics both ways: at most ``rate_kb_s`` kilobytes (1000 B) per second per direction.

    Verified by moving a payload sized to take about 0.3 s at that rate up and
    down through the proxy; rates too high to slow such a payload measurably
    are refused as not applied.
    """

    kind = "bandwidth"
    TARGET_S = 0.3
    MAX_PAYLOAD = 4 * 1024 * 1024
    MIN_TRANSFER_EFFECT_MS = 50.0

    def __init__(self, proxy: Proxy, dsn: str, *, rate_kb_s: int, probe_timeout: float = 1.0) -> None:
        super().__init__(proxy, dsn, probe_timeout=probe_timeout)
        self.params = {"rate_kb_s": rate_kb_s}
        self._toxics = [("bandwidth", stream, {"rate": rate_kb_s}) for stream in BOTH]
        self.payload = int(min(max(rate_kb_s, 1) * 1000 * self.TARGET_S, self.MAX_PAYLOAD))

    def _transfer(self, timeout: float) -> tuple[float, float]:
        """Milliseconds to send ``payload`` bytes up, then to receive as many down, on one connection."""

        async def go() -> tuple[float, float]:
            conn = await asyncpg.connect(self.dsn, timeout=timeout)
            try:
                t0 = time.monotonic()
                await conn.fetchval("SELECT length($1::text)", "x" * self.payload, timeout=timeout)
                up = _ms(t0)
                t0 = time.monotonic()
                await conn.fetchval("SELECT repeat('x', $1::int)", self.payload, timeout=timeout)
                return up, _ms(t0)
            finally:
                await conn.close(timeout=timeout)

        return asyncio.run(go())

    def _probe_before(self) -> dict[str, Any]:
        up, down = self._transfer(timeout=10.0)
        return {**super()._probe_before(), "baseline_up_ms": up, "baseline_down_ms": down}

    def _probe_after(self, before: dict[str, Any]) -> dict[str, Any]:
        expected = self.payload / max(self.params["rate_kb_s"], 1)  # bytes / (bytes per ms)
        up, down = self._transfer(timeout=3 * expected / 1000 + 10.0)
        added = {"up": up - before["baseline_up_ms"], "down": down - before["baseline_down_ms"]}
        required = max(0.5 * expected, self.MIN_TRANSFER_EFFECT_MS)
        slow = [d for d, ms in added.items() if ms < required]
        if slow:
            raise FaultNotApplied(f"bandwidth on {self.proxy.name}: {self.payload} B took {up} ms up and {down} ms "
                                  f"down ({before['baseline_up_ms']} / {before['baseline_down_ms']} ms before); "
                                  f"{', '.join(slow)} not slowed by {required:.0f} ms")
        return {"probe": "throttled", "bytes": self.payload, "up_ms": up, "down_ms": down,
                "expected_ms": round(expected, 1)}


class Together:
    """One network fault on every path at once (all workers and the publisher): a partition of the whole site.

    The paths are cut and healed in parallel, so the whole takes as long as one path (a schedule's other faults
    keep their timing); if one cannot be applied, those that were are healed before the error goes up."""

    def __init__(self, faults: dict[str, NetworkFault]) -> None:
        self.faults = faults

    def _each(self, call: Callable[[NetworkFault], dict[str, Any]]) -> dict[str, dict[str, Any] | FaultNotApplied]:
        with ThreadPoolExecutor(max_workers=len(self.faults)) as pool:
            futures = {target: pool.submit(call, fault) for target, fault in self.faults.items()}
        out: dict[str, dict[str, Any] | FaultNotApplied] = {}
        for target, future in futures.items():
            error = future.exception()
            if error is not None and not isinstance(error, FaultNotApplied):
                raise error
            out[target] = error if isinstance(error, FaultNotApplied) else future.result()
        return out

    def start(self) -> dict[str, Any]:
        results = self._each(lambda fault: fault.start())
        failed = {t: r for t, r in results.items() if isinstance(r, FaultNotApplied)}
        if failed:
            applied = [self.faults[t] for t in results if t not in failed]
            for fault in applied:
                with suppress(FaultNotApplied):
                    fault.stop()
            raise FaultNotApplied("; ".join(str(e) for e in failed.values()))
        return {"target": "all", "paths": results}

    def stop(self) -> dict[str, Any]:
        results = self._each(lambda fault: fault.stop())
        failed = [str(r) for r in results.values() if isinstance(r, FaultNotApplied)]
        if failed:
            raise FaultNotApplied("; ".join(failed))
        return {"target": "all", "paths": results}
