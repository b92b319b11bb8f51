"""The Docker provider: PostgreSQL and Toxiproxy in containers, faulted like the local pair.

Skips with ``docker_available()``'s reason when no engine answers (as on the
project's own CI machines, where ``docker`` is only a client).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest
import requests

from harness.provision.docker import PROXY_PORTS, UPSTREAM, docker_available, start_docker_stack

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[str, str]]:
    ok, reason = docker_available()
    if not ok:
        pytest.skip(reason)
    dsn, url, stop = start_docker_stack()
    try:
        yield dsn, url
    finally:
        stop()


def test_postgres_through_containerised_toxiproxy(stack: tuple[str, str]) -> None:
    dsn, url = stack
    port = PROXY_PORTS[0]
    created = requests.post(f"{url}/proxies", json={"name": "pg", "listen": f"0.0.0.0:{port}", "upstream": UPSTREAM},
                            timeout=5)
    assert created.status_code == 201, created.text
    host = url.split("//", 1)[1].rsplit(":", 1)[0]

    async def through_proxy() -> int:
        from harness.provision.postgres import with_host_port

        conn = await asyncpg.connect(with_host_port(dsn, host, port), timeout=10)
        try:
            return int(await conn.fetchval("SELECT 1"))
        finally:
            await conn.close()

    assert asyncio.run(through_proxy()) == 1
