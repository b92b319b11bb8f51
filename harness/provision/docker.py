"""Docker provider: PostgreSQL 17 and Toxiproxy 2.12.0 in containers, for machines with a Docker engine.

The default providers (embedded PostgreSQL, a local ``toxiproxy-server``) need
no engine; this one gives the same pair where installing binaries is not
wanted. Both containers share a private network, and testcontainers' Ryuk
reaper removes them if the harness dies without calling ``stop``.

Because Toxiproxy runs inside a container, its proxies differ from local ones:

- a proxy must listen on ``0.0.0.0:P`` with ``P`` in :data:`PROXY_PORTS`, the
  container ports published to the same port numbers on the Docker host, and
  clients reach it at ``<toxiproxy URL host>:P``;
- its upstream is :data:`UPSTREAM` (the PostgreSQL container on the private
  network), not the host address in the returned DSN.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack

POSTGRES_IMAGE = "postgres:17"
TOXIPROXY_IMAGE = "ghcr.io/shopify/toxiproxy:2.12.0"
TOXIPROXY_API_PORT = 8474
PROXY_PORTS = range(8666, 8676)
POSTGRES_ALIAS = "postgres"
UPSTREAM = f"{POSTGRES_ALIAS}:5432"


def docker_available() -> tuple[bool, str]:
    """Whether a Docker engine answers a ping, and if not, why and what to do."""
    try:
        from testcontainers.core.docker_client import DockerClient  # noqa: PLC0415 - optional extra
    except ImportError:
        return False, "testcontainers is not installed: pip install 'outbox-harness[docker]'"
    try:
        DockerClient().client.ping()
    except Exception as exc:  # noqa: BLE001 - docker-py raises DockerException, requests and socket errors alike
        return False, f"no Docker engine reachable ({type(exc).__name__}: {exc}); start Docker or set DOCKER_HOST"
    return True, "Docker engine reachable"


def start_docker_stack() -> tuple[str, str, Callable[[], None]]:
    """Starts the containers; returns the PostgreSQL DSN, the Toxiproxy API URL and a callable that removes them."""
    from testcontainers.community.postgres import PostgresContainer  # noqa: PLC0415 - optional extra
    from testcontainers.core.container import DockerContainer  # noqa: PLC0415
    from testcontainers.core.network import Network  # noqa: PLC0415
    from testcontainers.core.wait_strategies import HttpWaitStrategy  # noqa: PLC0415

    stack = ExitStack()  # removes, in reverse order, whatever started
    try:
        network = stack.enter_context(Network())
        postgres = PostgresContainer(POSTGRES_IMAGE, driver=None).with_network(network).with_network_aliases(POSTGRES_ALIAS)
        stack.enter_context(postgres)
        proxy = (DockerContainer(TOXIPROXY_IMAGE)
                 .with_command(["-host=0.0.0.0", "-proxy-metrics"])
                 .with_network(network)
                 .with_exposed_ports(TOXIPROXY_API_PORT)
                 .waiting_for(HttpWaitStrategy(TOXIPROXY_API_PORT, "/version")))
        for port in PROXY_PORTS:
            proxy.with_bind_ports(port, port)
        stack.enter_context(proxy)
        url = f"http://{proxy.get_container_host_ip()}:{proxy.get_exposed_port(TOXIPROXY_API_PORT)}"
        dsn = postgres.get_connection_url()
    except BaseException:
        stack.close()
        raise
    return dsn, url, stack.close
