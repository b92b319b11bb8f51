"""Locust load for the reference outbox: publish in transactions, measure commit → handler latency.

Each user holds one psycopg 3 connection (psycopg works under locust's gevent; asyncpg does not)
and, at ``OUTBOX_LOCUST_USER_RATE`` transactions per second (``constant_throughput``), writes
``OUTBOX_LOCUST_BATCH`` business rows and the same number of outbox rows in one transaction, the
way the harness's own publisher does. Two request types land in locust's statistics:

- ``publish`` (name ``tx``): BEGIN → COMMIT returned, one request per transaction;
- ``deliver`` (name ``commit→handler``): end-to-end latency of each message, from the monotonic time
  its COMMIT returned to the monotonic time a consumer worker started its handler. A background
  greenlet tails the workers' history files (``worker-*.jsonl`` under
  ``OUTBOX_LOCUST_HISTORY_DIR``, written by ``harness.worker``; ``time.monotonic()`` is shared by
  all processes of a host) and matches their ``deliver`` invoke events to this process's commits by
  message id. Only the first delivery of a message counts. A message not seen within
  ``OUTBOX_LOCUST_DELIVER_TIMEOUT`` seconds, or still unseen when the test stops, is reported as a
  ``deliver`` failure with its age as the response time, so overload cannot hide in the percentiles.

The step shape ``StepLoadShape`` adds ``OUTBOX_LOCUST_STEP_USERS`` users every
``OUTBOX_LOCUST_STEP_SECONDS`` for ``OUTBOX_LOCUST_STEPS`` steps, then keeps 0 users for
``OUTBOX_LOCUST_DRAIN_SECONDS`` (late deliveries still count) and stops. Set
``OUTBOX_LOCUST_SHAPE=none`` to drive users with ``-u``/``-r``/``-t`` instead.

``kill -USR1 <locust pid>`` ends the test early the normal way (the shape stops; reports are
complete and messages still undelivered are counted), unlike SIGTERM (no HTML report) or Ctrl-C.

When ``OUTBOX_LOCUST_LOG`` names a file, every commit (``{"k":"c","t0","t","mids"}``) and every
step change (``{"k":"step","t","step","users","offered"}``) is appended to it as JSON lines with
monotonic times; ``harness.sizing`` computes its figures from that log and the worker histories.

Consumers run separately; see ``docs/sizing.md`` (``python -m harness.sizing consumers ...``).

=============================== ============================================== ==================
variable                        meaning                                        default
=============================== ============================================== ==================
OUTBOX_LOCUST_DSN               postgresql:// DSN (else DATABASE_URL)          (required)
OUTBOX_LOCUST_QUEUE             outbox queue                                   sizing
OUTBOX_LOCUST_TABLE             outbox table                                   harness_outbox
OUTBOX_LOCUST_BATCH             messages per transaction                       1
OUTBOX_LOCUST_PAD               payload padding bytes                          64
OUTBOX_LOCUST_USER_RATE         transactions/s per user                        50
OUTBOX_LOCUST_STEP_USERS        users added per step                           2
OUTBOX_LOCUST_STEP_SECONDS      seconds per step                               10
OUTBOX_LOCUST_STEPS             number of steps                                6
OUTBOX_LOCUST_DRAIN_SECONDS     0-user tail after the last step                3
OUTBOX_LOCUST_SHAPE             step | none                                    step
OUTBOX_LOCUST_HISTORY_DIR       where worker-*.jsonl are written               (no deliver stats)
OUTBOX_LOCUST_DELIVER_TIMEOUT   seconds before a message counts as undelivered 60
OUTBOX_LOCUST_LOG               JSONL commit/step log for harness.sizing       (none)
OUTBOX_LOCUST_APP               application_name of publisher connections      harness-locust
=============================== ============================================== ==================
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import gevent
from locust import LoadTestShape, User, constant_throughput, events, task
from locust.runners import MasterRunner
from locust.stats import CSV_STATS_INTERVAL_SEC

import psycopg  # after locust: psycopg picks a gevent-friendly wait function when select is patched

from harness import business
from harness.adapters.reference import TABLE
from harness.history import Tail
from harness.names import LOCUST_APP
from harness.payload import encode
from outbox.sql import Statements

log = logging.getLogger("harness.locustfile")

DELIVER_NAME = "commit→handler"


def _env(name: str, default: str) -> str:
    return os.environ.get(f"OUTBOX_LOCUST_{name}", default)


def _int(name: str, default: int) -> int:
    return int(_env(name, str(default)))


def _float(name: str, default: float) -> float:
    return float(_env(name, str(default)))


def pyformat(sql: str) -> str:
    """asyncpg's ``$n`` parameters → psycopg's named ``%(pn)s`` (a ``$n`` used twice stays one value)."""
    return re.sub(r"\$(\d+)\b", r"%(p\1)s", sql.replace("%", "%%"))


def insert_params(statements: Statements, queue: str, payloads: list[bytes], *, delay_seconds: float = 0.0,
                  headers: str = "{}") -> dict[str, Any]:
    """Parameters of ``Statements.insert`` by position (see its docstring), for :func:`pyformat` SQL."""
    args = (queue, payloads, [headers] * len(payloads), float(delay_seconds), statements.channel)
    return {f"p{i}": v for i, v in enumerate(args, 1)}


def dsn() -> str:
    value = os.environ.get("OUTBOX_LOCUST_DSN") or os.environ.get("DATABASE_URL")
    if not value:
        raise SystemExit("set OUTBOX_LOCUST_DSN (or DATABASE_URL) to the database the consumers read")
    return value.replace("postgresql+asyncpg://", "postgresql://", 1)


class _Log:
    """Line-buffered JSONL; one per process (a forked --processes child gets a .<pid> suffix)."""

    def __init__(self) -> None:
        self._file: Any = None
        self._pid = 0

    def write(self, record: dict[str, Any]) -> None:
        path = _env("LOG", "")
        if not path:
            return
        if self._file is None or self._pid != os.getpid():
            self._pid = os.getpid()
            p = Path(path)
            if _ROOT_PID != self._pid:
                p = p.with_name(f"{p.name}.{self._pid}")
            p.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(p, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives with the process
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


_ROOT_PID = os.getpid()
_log = _Log()


class Deliveries:
    """Commit times of this process's messages, matched to the workers' deliver invokes."""

    def __init__(self, history_dir: Path | None, timeout: float) -> None:
        self.history_dir = history_dir
        self.timeout = timeout
        self.commits: dict[str, float] = {}  # mid -> monotonic commit time, until first delivery
        self.early: dict[str, float] = {}  # mid -> deliver t seen before its commit was recorded
        self.tails: dict[Path, Tail] = {}  # per worker history: deliver invokes not read yet
        self._prefix = (0, "")
        self.delivered = 0
        self._greenlet: gevent.Greenlet | None = None

    @property
    def prefix(self) -> str:
        """Unique to this process and run (a --processes child forks after import): L<pid><random>x."""
        if self._prefix[0] != os.getpid():
            self._prefix = (os.getpid(), f"L{os.getpid()}{secrets.token_hex(3)}x")
        return self._prefix[1]

    def skip_existing(self) -> None:
        """History written before this test started belongs to earlier runs."""
        if self.history_dir is not None:
            for path in self.history_dir.glob("worker-*.jsonl"):
                self.tails[path] = Tail(path, f="deliver", type_="invoke", from_end=True)

    def committed(self, mids: list[str], t: float) -> None:
        for mid in mids:
            self.commits[mid] = t

    def poll(self, fire: Any) -> None:
        """Reads what the workers appended since the last poll and fires one ``deliver`` per new mid."""
        if self.history_dir is None:
            return
        prefix = self.prefix
        for path in sorted(self.history_dir.glob("worker-*.jsonl")):
            if path not in self.tails:
                self.tails[path] = Tail(path, f="deliver", type_="invoke")
            for event in self.tails[path].read():  # a line still being written waits for the next poll
                mid = event.mid
                if isinstance(mid, str) and mid.startswith(prefix):
                    self._delivered(mid, event.t, fire)
        for mid, t in list(self.early.items()):  # deliveries that raced their commit's bookkeeping
            if mid in self.commits:
                del self.early[mid]
                self._delivered(mid, t, fire)

    def _delivered(self, mid: str, t: float, fire: Any) -> None:
        committed = self.commits.pop(mid, None)
        if committed is None:
            if mid not in self.early:
                self.early[mid] = t
            return
        self.delivered += 1
        fire(request_type="deliver", name=DELIVER_NAME, response_time=max(0.0, t - committed) * 1000,
             response_length=0, exception=None, context={})

    def expire(self, fire: Any, *, older_than: float | None = None) -> int:
        """Reports messages committed ``older_than`` seconds ago and never seen delivered as failures."""
        now = time.monotonic()
        cutoff = now - (self.timeout if older_than is None else older_than)
        gone = [(m, t) for m, t in self.commits.items() if t <= cutoff]
        # one constant message per cause: locust groups failures by their text
        why = f"not delivered within {self.timeout:g} s" if older_than is None else "not delivered by the end of the test"
        for mid, t in gone:
            del self.commits[mid]
            fire(request_type="deliver", name=DELIVER_NAME, response_time=(now - t) * 1000, response_length=0,
                 exception=Undelivered(why), context={})
        return len(gone)

    def start(self, fire: Any) -> None:
        if self.history_dir is None:
            log.warning("OUTBOX_LOCUST_HISTORY_DIR is not set: no end-to-end 'deliver' statistics")
            return

        self.skip_existing()

        def loop() -> None:
            while True:
                self.poll(fire)
                self.expire(fire)
                gevent.sleep(0.2)

        self._greenlet = gevent.spawn(loop)

    def stop(self, fire: Any) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None
            self.poll(fire)
            self.expire(fire, older_than=0.0)


class Undelivered(Exception):
    pass


_history = _env("HISTORY_DIR", "")
deliveries = Deliveries(Path(_history) if _history else None, _float("DELIVER_TIMEOUT", 60.0))
_mid_counter = itertools.count(1)


_stop_requested = False


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    if not environment.stop_timeout:  # let a user finish its transaction when locust stops it
        environment.stop_timeout = 5.0

    def stop_gracefully() -> None:
        """SIGUSR1: end the test the normal way (reports complete, undelivered messages counted)."""
        global _stop_requested
        _stop_requested = True
        if environment.shape_class is None and environment.runner is not None:
            gevent.spawn(environment.runner.quit)

    if not isinstance(environment.runner, MasterRunner) or environment.shape_class is not None:
        gevent.signal_handler(signal.SIGUSR1, stop_gracefully)


@events.test_start.add_listener
def _on_start(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, MasterRunner):
        return  # the master has no users, hence no commits to match
    try:  # the harness creates it too; --processes children may race here, which is harmless
        with psycopg.connect(dsn(), autocommit=True, application_name=_env("APP", LOCUST_APP)) as conn:
            conn.execute(business.CREATE)
    except psycopg.Error as exc:
        log.warning("could not create harness_business: %s", exc)
    deliveries.start(environment.events.request.fire)


@events.test_stop.add_listener
def _on_stop(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, MasterRunner):
        return
    t = time.monotonic()
    deliveries.stop(environment.events.request.fire)
    _log.write({"k": "end", "t": t, "delivered": deliveries.delivered})
    if environment.parsed_options is not None and getattr(environment.parsed_options, "csv_prefix", None):
        gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.2)  # locust writes no final CSV: let its writer see the above


class OutboxPublisher(User):
    """One connection; each task is one transaction: business rows + outbox rows (+ NOTIFY), COMMIT."""

    wait_time = constant_throughput(_float("USER_RATE", 50.0))

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.queue = _env("QUEUE", "sizing")
        self.batch = max(1, _int("BATCH", 1))
        self.pad = _int("PAD", 64)
        self.statements = Statements(_env("TABLE", TABLE))
        self.sql = pyformat(self.statements.insert)
        self.business_sql = pyformat(business.INSERT)
        self.conn: psycopg.Connection[Any] | None = None

    def on_start(self) -> None:
        with contextlib.suppress(psycopg.Error):  # the task reports the failure and retries
            self.connect()

    def connect(self) -> None:
        self.conn = psycopg.connect(dsn(), application_name=_env("APP", LOCUST_APP), connect_timeout=5)

    def on_stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    @task
    def publish(self) -> None:
        fire = self.environment.events.request.fire
        if self.conn is None or self.conn.closed:
            try:
                self.connect()
            except psycopg.Error as exc:
                fire(request_type="publish", name="tx", response_time=0, response_length=0, exception=exc, context={})
                return
        assert self.conn is not None
        mids = [f"{deliveries.prefix}{next(_mid_counter)}" for _ in range(self.batch)]
        payloads = [encode(m, pad=self.pad) for m in mids]
        conn = self.conn
        t0 = time.monotonic()
        try:  # not `with conn.transaction()`: its rollback on GreenletExit would hit a command in flight
            conn.execute(self.business_sql, {"p1": mids})
            conn.execute(self.sql, insert_params(self.statements, self.queue, payloads))
            conn.commit()
        except psycopg.Error as exc:
            fire(request_type="publish", name="tx", response_time=(time.monotonic() - t0) * 1000,
                 response_length=0, exception=exc, context={})
            if conn.broken:
                self.conn = None
                conn.close()
            else:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
            return
        except BaseException:  # locust killed this user mid-transaction: the server rolls back on close
            self.conn = None
            conn.close()
            raise
        t = time.monotonic()
        deliveries.committed(mids, t)
        _log.write({"k": "c", "t0": t0, "t": t, "mids": mids})
        fire(request_type="publish", name="tx", response_time=(t - t0) * 1000, response_length=len(mids),
             exception=None, context={})


def step_plan() -> list[tuple[int, float]]:
    """(users, offered messages/s) per step."""
    users = _int("STEP_USERS", 2)
    rate = _float("USER_RATE", 50.0) * max(1, _int("BATCH", 1))
    return [(users * k, users * k * rate) for k in range(1, _int("STEPS", 6) + 1)]


if _env("SHAPE", "step") == "step":

    class StepLoadShape(LoadTestShape):
        """``STEP_USERS`` more users every ``STEP_SECONDS``; then a 0-user drain; then stop.

        ``-t/--run-time`` still ends the test early when given; ``-u``/``-r`` are not used.
        """

        use_common_options = True

        def __init__(self) -> None:
            super().__init__()
            self.plan = step_plan()
            self.step_seconds = _float("STEP_SECONDS", 10.0)
            self.drain_seconds = _float("DRAIN_SECONDS", 3.0)
            self.current = -1

        def tick(self) -> tuple[int, float] | None:
            options = self.runner.environment.parsed_options if self.runner is not None else None
            limit = getattr(options, "run_time", None)
            if _stop_requested or (limit and self.get_run_time() >= limit):
                return None
            k = int(self.get_run_time() // self.step_seconds)
            if k < len(self.plan):
                users, offered = self.plan[k]
            elif self.get_run_time() < len(self.plan) * self.step_seconds + self.drain_seconds:
                users, offered = 0, 0.0
            else:
                return None
            if k != self.current and (k < len(self.plan) or self.current < len(self.plan)):
                self.current = min(k, len(self.plan))
                _log.write({"k": "step", "t": time.monotonic(), "step": self.current, "users": users,
                            "offered": offered})
            return users, 100.0  # locust warns above 100/s; users start and stop within a second
