"""Toxiproxy: the network between the implementation under test and PostgreSQL.

``TOXIPROXY_URL`` wins when set (a misconfigured URL is an error, not a skip:
the user asked for that server). Otherwise the real ``toxiproxy-server``
v2.12.0 is started on a free 127.0.0.1 port, found as ``TOXIPROXY_SERVER_BIN``,
``toxiproxy-server`` on PATH, or ``go install``'s ``server`` binary (built on
first use). When none can be had, :class:`ToxiproxyUnavailable` says why and
how to fix it; network scenarios are then reported "skipped" with that text,
never "pass". A server we started is stopped by pid, and
:mod:`harness.provision.guard` kills it (and removes its log) even if the harness is SIGKILLed.
Proxies listen on 127.0.0.1, so a ``TOXIPROXY_URL`` server must run on this
host (for a server in a container see :mod:`harness.provision.docker`).

The API is driven with the toxiproxy-python client, whose API address lives
in class attributes shared by the whole process; :func:`_api` sets it under a
lock before each use so two servers (or threads) never talk to the wrong one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import toxiproxy

from harness.names import TEMP_PREFIX
from harness.provision import guard
from harness.provision.ports import free_port
from harness.provision.postgres import ProvisioningError, with_host_port

VERSION = "v2.12.0"
GO_PACKAGE = "github.com/Shopify/toxiproxy/v2/cmd/server"
BUILD_TIMEOUT_S = 300.0
START_TIMEOUT_S = 10.0
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")  # the client puts names into URL paths unquoted
_METRIC = re.compile(r'^toxiproxy_proxy_(received|sent)_bytes_total\{(.*)\} (\S+)$')


class ToxiproxyUnavailable(ProvisioningError):
    """No Toxiproxy server can be had here; the message names the cause and the fix."""


_api_lock = threading.RLock()


@contextmanager
def _api(host: str, port: int) -> Iterator[toxiproxy.Toxiproxy]:
    """The client aimed at one server, held under a lock because its address is process-wide state."""
    with _api_lock:
        client = toxiproxy.Toxiproxy()
        client.update_api_consumer(host, port)
        yield client


def _get_version(url: str, timeout: float = 2.0) -> str:
    """``GET /version`` with a timeout (the client's ``version()`` has none and hides errors as ``None``)."""
    response = requests.get(f"{url}/version", timeout=timeout)
    response.raise_for_status()
    try:
        return str(response.json()["version"])
    except ValueError:  # servers before v2.6 answer plain text
        return response.text.strip()


@dataclass
class Proxy:
    """One TCP proxy; faults are toxics on it or its being disabled."""

    name: str
    listen_host: str
    listen_port: int
    upstream: str
    server: ToxiproxyServer
    _client: Any = field(repr=False)  # toxiproxy.Proxy

    def dsn_for(self, dsn: str) -> str:
        """``dsn`` rewritten to reach its server through this proxy."""
        return with_host_port(dsn, self.listen_host, self.listen_port)

    def enable(self) -> None:
        with _api(self.server.host, self.server.port):
            self._client.enable()

    def disable(self) -> None:
        """Closes every connection through the proxy and refuses new ones until :meth:`enable`."""
        with _api(self.server.host, self.server.port):
            self._client.disable()

    def add_toxic(self, toxic_type: str, name: str, attributes: dict[str, Any],
                  stream: str = "downstream", toxicity: float = 1.0) -> None:
        """Adds a toxic; it acts on open connections too, not only on new ones."""
        if stream not in ("downstream", "upstream"):
            raise ValueError(f"stream must be 'downstream' or 'upstream', not {stream!r}")
        with _api(self.server.host, self.server.port):
            self._client.add_toxic(type=toxic_type, name=name, attributes=attributes, stream=stream, toxicity=toxicity)

    def remove_toxic(self, name: str) -> None:
        with _api(self.server.host, self.server.port):
            self._client.destroy_toxic(name)

    def toxics(self) -> list[str]:
        with _api(self.server.host, self.server.port):
            return sorted(self._client.toxics())

    def reset(self) -> None:
        """Removes every toxic on this proxy and enables it (the server-wide ``/reset`` would touch other proxies)."""
        with _api(self.server.host, self.server.port):
            for name in self._client.toxics():
                self._client.destroy_toxic(name)
            self._client.enable()

    def stats(self) -> dict[str, dict[str, int]]:
        """Bytes received/sent per direction since the proxy was created, from ``/metrics``.

        The client has no metrics call, hence ``requests``. Empty when the
        server runs without ``-proxy-metrics`` (possible with ``TOXIPROXY_URL``).
        """
        response = requests.get(f"{self.server.url}/metrics", timeout=2.0)
        if response.status_code != 200:
            return {}
        out: dict[str, dict[str, int]] = {}
        for line in response.text.splitlines():
            match = _METRIC.match(line)
            if match is None:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            if labels.get("proxy") == self.name:
                per_direction = out.setdefault(labels.get("direction", "?"), {})
                per_direction[match.group(1)] = per_direction.get(match.group(1), 0) + int(float(match.group(3)))
        return out


@dataclass
class ToxiproxyServer:
    """A Toxiproxy API endpoint; ``pid`` is set only when the harness started the server."""

    url: str
    host: str
    port: int
    version: str
    pid: int | None = None
    # A server in a container (docker-compose, the docker provider) proxies from its own network:
    # proxies listen on 0.0.0.0 on published ports and reach PostgreSQL by its container address.
    published_ports: range | None = None
    upstream: str | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: Path | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path | None:
        """The log of a server the harness started; None for one given by ``TOXIPROXY_URL``."""
        return self._log

    def proxy(self, name: str, upstream_host: str, upstream_port: int) -> Proxy:
        """A fresh proxy ``name`` (an existing one is deleted) listening on a free 127.0.0.1 port.

        Port 0 lets the kernel pick the port when Toxiproxy binds, with no window
        for another process to take it as with a probed free port; the server
        reports the port, and keeps it across disable/enable.
        """
        if not _NAME.fullmatch(name):
            raise ValueError(f"proxy name {name!r}: use letters, digits, '_', '.', '-' (it goes into URL paths)")
        with _api(self.host, self.port) as api:
            existing = api.get_proxy(name)
            if existing is not None:
                existing.destroy()
            listen, upstream = "127.0.0.1:0", f"{upstream_host}:{upstream_port}"
            if self.published_ports is not None:
                used = {int(p.listen.rpartition(":")[2]) for p in api.proxies().values()}
                free = [p for p in self.published_ports if p not in used]
                if not free:
                    raise ProvisioningError(f"all published proxy ports {self.published_ports} are in use on {self.url}")
                listen, upstream = f"0.0.0.0:{free[0]}", self.upstream or upstream
            try:
                created = api.create(upstream=upstream, name=name, listen=listen)
            except KeyError as exc:  # the client builds a Proxy from the error body of a 500
                raise ProvisioningError(f"Toxiproxy at {self.url} did not create proxy {name!r}; see {self._log or 'its log'}") from exc
        host, _, port = created.listen.rpartition(":")
        if self.published_ports is not None:
            host = self.host  # reached through the container's published port
        return Proxy(name, host, int(port), created.upstream, self, created)

    def stop(self) -> None:
        """Stops the server by pid if the harness started it; a server given by ``TOXIPROXY_URL`` is left alone."""
        if self.pid is not None:
            guard.kill_and_forget(self.pid)
            self.pid = None
        if self._process is not None:
            self._process.wait(timeout=5)  # reaps it if the guard's waitpid did not
            self._process = None
        if self._log is not None:
            self._log.unlink(missing_ok=True)
            guard.forget_path(self._log)
            self._log = None

    def __enter__(self) -> ToxiproxyServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- finding, building and starting the binary -------------------------------------------

def _go_bin_dir() -> Path | None:
    """Where ``go install`` puts binaries (GOBIN, else GOPATH/bin); None without Go."""
    go = shutil.which("go")
    if go is None:
        return None
    proc = subprocess.run([go, "env", "GOBIN", "GOPATH"], capture_output=True, text=True, check=False, timeout=30)
    gobin, _, gopath = proc.stdout.partition("\n")
    if gobin.strip():
        return Path(gobin.strip())
    return Path(gopath.strip().split(os.pathsep)[0]) / "bin" if gopath.strip() else None


def _is_toxiproxy(binary: str) -> bool:
    try:
        proc = subprocess.run([binary, "-version"], capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return (proc.stdout + proc.stderr).startswith("toxiproxy-server version")


def _build() -> str:
    go = shutil.which("go")
    fix = f"install Go and run `go install {GO_PACKAGE}@{VERSION}`, or set TOXIPROXY_SERVER_BIN or TOXIPROXY_URL"
    if go is None:
        raise ToxiproxyUnavailable(f"no Toxiproxy server binary found and Go is not installed to build one; {fix}")
    try:
        proc = subprocess.run([go, "install", f"{GO_PACKAGE}@{VERSION}"], capture_output=True, text=True,
                              check=False, timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ToxiproxyUnavailable(f"`go install {GO_PACKAGE}@{VERSION}` took over {BUILD_TIMEOUT_S:.0f} s; {fix}") from exc
    bin_dir = _go_bin_dir()
    if proc.returncode != 0 or bin_dir is None or not (bin_dir / "server").exists():
        raise ToxiproxyUnavailable(f"building Toxiproxy failed ({proc.returncode}): {proc.stderr.strip()[-800:]}; {fix}")
    return str(bin_dir / "server")


def find_binary() -> str:
    """TOXIPROXY_SERVER_BIN, then ``toxiproxy-server`` on PATH, then Go's ``server``, built if missing."""
    explicit = os.environ.get("TOXIPROXY_SERVER_BIN")
    if explicit:
        if not _is_toxiproxy(explicit):
            raise ProvisioningError(f"TOXIPROXY_SERVER_BIN={explicit!r} is not a toxiproxy-server binary; fix or unset it")
        return explicit
    on_path = shutil.which("toxiproxy-server")
    if on_path is not None and _is_toxiproxy(on_path):
        return on_path
    bin_dir = _go_bin_dir()
    if bin_dir is not None and (bin_dir / "server").exists():
        if _is_toxiproxy(str(bin_dir / "server")):
            return str(bin_dir / "server")
        raise ToxiproxyUnavailable(f"{bin_dir / 'server'} is not Toxiproxy (building would overwrite it); "
                                   "set TOXIPROXY_SERVER_BIN to a toxiproxy-server binary")
    return _build()


def _module_version(binary: str) -> str | None:
    """The module version Go recorded in the binary (``go install`` builds answer "git" on /version)."""
    go = shutil.which("go")
    if go is None:
        return None
    proc = subprocess.run([go, "version", "-m", binary], capture_output=True, text=True, check=False, timeout=30)
    match = re.search(r"^\s+mod\s+github\.com/Shopify/toxiproxy/v2\s+(\S+)", proc.stdout, re.MULTILINE)
    return match.group(1) if match else None


def start_server(binary: str) -> ToxiproxyServer:
    """Starts ``binary`` on 127.0.0.1:free port and waits until ``/version`` answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    fd, log_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}toxiproxy-", suffix=".log")
    log = Path(log_name)
    guard.protect_path(log)
    with os.fdopen(fd, "wb") as log_file:
        process = subprocess.Popen(
            [binary, "-host", "127.0.0.1", "-port", str(port), "-proxy-metrics"],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
    guard.protect(process.pid)
    server = ToxiproxyServer(url, "127.0.0.1", port, "", process.pid, _process=process, _log=log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            server.version = _get_version(url, timeout=1.0)
            break
        except requests.RequestException:
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-1500:]
                server.stop()
                raise ProvisioningError(f"{binary} did not answer on {url} within {START_TIMEOUT_S:.0f} s "
                                        f"(exit {process.returncode}):\n{tail}") from None
            time.sleep(0.05)
    if server.version == "git":
        server.version = _module_version(binary) or server.version
    return server


def provision_toxiproxy() -> ToxiproxyServer:
    """``TOXIPROXY_URL`` when set (checked reachable), else a server the harness starts and stops."""
    url = os.environ.get("TOXIPROXY_URL")
    if not url:
        return start_server(find_binary())
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise ProvisioningError(f"TOXIPROXY_URL={url!r}: set it like http://127.0.0.1:8474")
    base = f"http://{parts.hostname}:{parts.port}"
    try:
        version = _get_version(base)
    except requests.RequestException as exc:
        raise ProvisioningError(f"cannot reach Toxiproxy at {base}/version: {exc}. Start that server, fix "
                                "TOXIPROXY_URL, or unset it to let the harness run its own.") from exc
    return ToxiproxyServer(base, parts.hostname, parts.port, version, published_ports=_published_ports(),
                           upstream=os.environ.get("TOXIPROXY_UPSTREAM") or None)


def _published_ports() -> range | None:
    """``TOXIPROXY_PROXY_PORTS=8666-8675``: the server runs in a container with these ports published."""
    raw = os.environ.get("TOXIPROXY_PROXY_PORTS")
    if not raw:
        return None
    first, _, last = raw.partition("-")
    try:
        return range(int(first), int(last or first) + 1)
    except ValueError as exc:
        raise ProvisioningError(f"TOXIPROXY_PROXY_PORTS={raw!r}: set it like 8666-8675") from exc
