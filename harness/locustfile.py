"""Locust load for the reference outbox: publish in transactions, measure commit → handler latency.

Runs alone (``locust -f harness/locustfile.py``), or distributed with locust's own master/worker
protocol (``--master`` here, ``--worker --master-host HOST`` on this or other machines; ``--processes
N`` forks both). Every ``--outbox-*`` option below (environment variable ``OUTBOX_LOCUST_*``) is read
by the master and sent to its workers by locust itself, so a worker needs nothing but
``--master-host``; the database address must then be one the workers can reach.

Each user holds one psycopg 3 connection (psycopg works under locust's gevent; asyncpg does not)
and, at ``user-rate`` transactions per second (``constant_throughput``), writes ``batch`` business
rows and the same number of outbox rows in one transaction, the way the harness's own publisher
does. Locust's statistics get two request types:

- ``publish`` (name ``tx``): BEGIN → COMMIT returned, one request per transaction;
- ``deliver`` (name ``commit→handler``): per message, commit → the consumer's handler start,
  computed by the master from the consumer workers' history files (``worker-*.jsonl`` under
  ``history-dir``, on the master's host) and the commits its workers report. Only the first
  delivery counts; a message unseen after ``deliver-timeout`` seconds, or when the test stops, is a
  ``deliver`` failure with its age as response time, so overload cannot hide in the percentiles.

**The log.** Every process that publishes streams its records to the master over locust's message
channel (``outbox_log``, every 0.5 s): commits ``{"k":"c","t0","t","mids"}`` with monotonic times,
its CPU seconds ``{"k":"cpu","t","s","wait"}`` (used; waiting for a CPU) and clock anchors ``{"k":"clock",...}`` (monotonic before,
``clock_timestamp()``, monotonic after: :mod:`harness.sizing.clock`). With ``log`` set, the master
writes them, one file per process (``commits.<n>.jsonl``, first line ``{"k":"src",...}``), and its
own step switches, CPU and anchors in ``log`` itself. ``harness.sizing`` merges them onto the
database's clock, so workers on other hosts count the same as local ones.

The step shape ``StepLoadShape`` adds ``step-users`` users every ``step-seconds`` for ``steps``
steps, keeps 0 users for ``drain-seconds`` (late deliveries still count), waits until every
publishing process has reported 0 users (its last commits are in), and stops.
``OUTBOX_LOCUST_SHAPE=none`` (read at import, environment only) drives users with ``-u/-r/-t``.
``kill -USR1 <master pid>`` ends a shape test early the normal way (reports complete, every commit
logged, undelivered messages counted), unlike SIGTERM (no HTML report) or Ctrl-C.

Consumers run separately; see ``docs/sizing.md`` (``python -m harness.sizing consumers ...``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import re
import secrets
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import gevent
from locust import LoadTestShape, User, constant_throughput, events, task
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import CSV_STATS_INTERVAL_SEC

import psycopg  # after locust: psycopg picks a gevent-friendly wait function when select is patched

from harness import business
from harness.adapters.reference import TABLE
from harness.history import Tail
from harness.names import LOCUST_APP
from harness.payload import encode
from harness.sizing import clock, cpu
from outbox.sql import Statements

log = logging.getLogger("harness.locustfile")

DELIVER_NAME = "commit→handler"
LOG_MESSAGE = "outbox_log"
FLUSH_EVERY_S = 0.5  # records reach the master this often
ANCHOR_EVERY_S = 2.0
CLOSE_TIMEOUT_S = 15.0  # how long the shape waits for every process to report 0 users
SPAWN_RATE = 100.0  # locust warns above 100/s; users start and stop within a second


@dataclass(frozen=True)
class Option:
    name: str
    type: type
    default: Any
    help: str

    @property
    def dest(self) -> str:
        return f"outbox_{self.name}"

    @property
    def env(self) -> str:
        return f"OUTBOX_LOCUST_{self.name.upper()}"


OPTIONS = (
    Option("dsn", str, "", "postgresql:// DSN of the consumers' database (else DATABASE_URL)"),
    Option("queue", str, "sizing", "outbox queue (the consumers' queue)"),
    Option("table", str, TABLE, "outbox table"),
    Option("batch", int, 1, "messages per transaction"),
    Option("pad", int, 64, "payload padding, bytes"),
    Option("user_rate", float, 50.0, "transactions per second per user (constant_throughput)"),
    Option("app", str, LOCUST_APP, "application_name of the publisher connections"),
    Option("step_users", int, 2, "users added per step"),
    Option("step_seconds", float, 10.0, "seconds per step"),
    Option("steps", int, 6, "number of steps"),
    Option("drain_seconds", float, 3.0, "0-user tail after the last step, for late deliveries"),
    Option("history_dir", str, "", "directory of the consumer workers' worker-*.jsonl (on the master's host)"),
    Option("deliver_timeout", float, 60.0, "seconds after which an unseen message counts as undelivered"),
    Option("log", str, "", "the master's JSONL log; one commits.<n>.jsonl per publishing process beside it"),
)


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    for o in OPTIONS:
        parser.add_argument(f"--outbox-{o.name.replace('_', '-')}", dest=o.dest, type=o.type, default=o.default,
                            env_var=o.env, help=f"{o.help} (default: {o.default!r})", is_secret=o.name == "dsn")


def option(environment: Any, name: str) -> Any:
    """An ``--outbox-*`` value: the master's on a worker (locust sends them), else this process's."""
    parsed = environment.parsed_options
    value = getattr(parsed, f"outbox_{name}", None) if parsed is not None else None
    if value is None:  # environments built without locust's parser (tests, library use)
        spec = next(o for o in OPTIONS if o.name == name)
        value = spec.type(os.environ.get(spec.env, spec.default))
    return value


def dsn(environment: Any) -> str:
    value = option(environment, "dsn") or os.environ.get("DATABASE_URL")
    if not value:
        raise SystemExit("set OUTBOX_LOCUST_DSN (or --outbox-dsn, or DATABASE_URL) to the database the consumers read")
    return str(value).replace("postgresql+asyncpg://", "postgresql://", 1)


def pyformat(sql: str) -> str:
    """asyncpg's ``$n`` parameters → psycopg's named ``%(pn)s`` (a ``$n`` used twice stays one value)."""
    return re.sub(r"\$(\d+)\b", r"%(p\1)s", sql.replace("%", "%%"))


def insert_params(statements: Statements, queue: str, payloads: list[bytes], *, delay_seconds: float = 0.0,
                  headers: str = "{}") -> dict[str, Any]:
    """Parameters of ``Statements.insert`` by position (see its docstring), for :func:`pyformat` SQL."""
    args = (queue, payloads, [headers] * len(payloads), float(delay_seconds), statements.channel)
    return {f"p{i}": v for i, v in enumerate(args, 1)}


_prefix = (0, "")


def prefix() -> str:
    """Message-id prefix unique to this process and run (a ``--processes`` child forks after import)."""
    global _prefix
    if _prefix[0] != os.getpid():
        _prefix = (os.getpid(), f"L{os.getpid()}{secrets.token_hex(3)}x")
    return _prefix[1]


def _cpu_record(now: float) -> dict[str, Any]:
    """CPU seconds used, and seconds spent waiting for a CPU (Linux schedstat; absent elsewhere)."""
    t = os.times()
    record: dict[str, Any] = {"k": "cpu", "t": now, "s": t.user + t.system}
    if (wait := cpu.wait_seconds()) is not None:
        record["wait"] = wait
    return record


class Stream:
    """This process's records (commits, CPU seconds, clock anchors), handed to the hub every 0.5 s:
    over locust's message channel from a worker, directly in the master or a process running alone."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._greenlet: gevent.Greenlet | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._anchored = -math.inf

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def start(self, environment: Any) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._loop, environment)

    def _loop(self, environment: Any) -> None:
        while True:
            gevent.sleep(FLUSH_EVERY_S)
            self.flush(environment)

    def flush(self, environment: Any) -> None:
        now = time.monotonic()
        if now - self._anchored >= ANCHOR_EVERY_S:
            self._anchor(environment)
        self.records.append(_cpu_record(now))
        records, self.records = self.records, []
        runner = environment.runner
        data = {"src": f"{socket.gethostname()}/{os.getpid()}", "boot": clock.boot_id(),
                "users": runner.user_count if not isinstance(runner, MasterRunner) else 0, "records": records}
        if isinstance(runner, WorkerRunner):
            runner.send_message(LOG_MESSAGE, data)
        else:
            hub.accept(data, "local")

    def _anchor(self, environment: Any) -> None:
        self._anchored = time.monotonic()
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(dsn(environment), autocommit=True, connect_timeout=5,
                                             application_name=option(environment, "app"))
            conn = self._conn
            self.records.append(clock.take(lambda: conn.execute(clock.SQL).fetchone()[0]).to_record())  # type: ignore[index]
        except psycopg.Error as exc:
            log.warning("clock anchor failed: %s", exc)
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def stop(self, environment: Any) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None
            self.flush(environment)
        self._close()


class Deliveries:
    """Commits reported by every publishing process, matched to the consumer workers' deliver invokes.

    Commit and handler times are monotonic times of their own hosts; :class:`~harness.sizing.clock.Clocks`
    maps them onto the database clock when the hosts differ (on one host the mapping cancels out)."""

    def __init__(self, history_dir: Path | None, timeout: float, clocks: clock.Clocks) -> None:
        self.history_dir = history_dir
        self.timeout = timeout
        self.clocks = clocks
        self.boot = clock.boot_id()
        self.commits: dict[str, tuple[str, float]] = {}  # mid -> (boot, monotonic commit time), until delivered
        self.early: dict[str, float] = {}  # mid -> handler start seen before its commit was reported
        self.tails: dict[Path, Tail] = {}
        self.delivered = 0
        self._greenlet: gevent.Greenlet | None = None

    def committed(self, mids: list[str], boot: str, t: float) -> None:
        for mid in mids:
            self.commits[mid] = (boot, t)

    def latency(self, boot: str, t_commit: float, t_handler: float) -> float | None:
        if boot == self.boot:
            return t_handler - t_commit
        if not (self.clocks.known(boot) and self.clocks.known(self.boot)):
            return None
        return self.clocks.to_db(self.boot, t_handler) - self.clocks.to_db(boot, t_commit)

    def poll(self, fire: Any) -> None:
        """Reads what the workers appended since the last poll and fires one ``deliver`` per new mid."""
        if self.history_dir is None:
            return
        for path in sorted(self.history_dir.glob("worker-*.jsonl")):
            if path not in self.tails:
                self.tails[path] = Tail(path, f="deliver", type_="invoke")
            for event in self.tails[path].read():  # a line still being written waits for the next poll
                mid = event.mid
                if isinstance(mid, str) and mid.startswith("L"):
                    self._delivered(mid, event.t, fire)
        for mid, t in list(self.early.items()):  # deliveries that arrived before their commit's report
            if mid in self.commits:
                del self.early[mid]
                self._delivered(mid, t, fire)

    def _delivered(self, mid: str, t: float, fire: Any) -> None:
        commit = self.commits.get(mid)
        if commit is None:
            self.early.setdefault(mid, t)
            return
        latency = self.latency(commit[0], commit[1], t)
        if latency is None:  # that host has no clock anchor yet: try again at the next poll
            self.early.setdefault(mid, t)
            return
        del self.commits[mid]
        self.delivered += 1
        fire(request_type="deliver", name=DELIVER_NAME, response_time=max(0.0, latency) * 1000,
             response_length=0, exception=None, context={})

    def expire(self, fire: Any, *, older_than: float | None = None) -> int:
        """Reports messages committed ``older_than`` seconds ago and never seen delivered as failures."""
        now = time.monotonic()
        age = self.timeout if older_than is None else older_than
        # one constant message per cause: locust groups failures by their text
        why = f"not delivered within {self.timeout:g} s" if older_than is None else "not delivered by the end of the test"
        gone = []
        for mid, (boot, t) in self.commits.items():  # in the order reported: oldest first, give or take 0.5 s
            waited = self.latency(boot, t, now)
            if waited is None:
                continue
            if waited < age:
                break
            gone.append((mid, waited))
        for mid, waited in gone:
            del self.commits[mid]
            fire(request_type="deliver", name=DELIVER_NAME, response_time=waited * 1000, response_length=0,
                 exception=Undelivered(why), context={})
        for mid in [m for m, t in self.early.items() if now - t > self.timeout]:  # another run's message
            del self.early[mid]
        return len(gone)

    def start(self, fire: Any) -> None:
        if self.history_dir is None:
            log.info("no --outbox-history-dir on the master: no 'deliver' statistics (harness.sizing computes them)")
            return
        for path in self.history_dir.glob("worker-*.jsonl"):  # earlier runs' lines are not this test's
            self.tails[path] = Tail(path, f="deliver", type_="invoke", from_end=True)

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


class Hub:
    """Where every process's records end up (the master, or the one process running alone): one log
    file per publishing process, clock anchors, and the ``deliver`` statistics."""

    def __init__(self) -> None:
        self.clocks = clock.Clocks()
        self.deliveries: Deliveries | None = None
        self.path: Path | None = None
        self.files: dict[str, IO[str]] = {}
        self.reports: dict[str, tuple[int, float]] = {}  # source -> (users it reported, monotonic received)
        self.own = f"{socket.gethostname()}/{os.getpid()}"
        self.open = False

    def begin(self, environment: Any) -> None:
        path = option(environment, "log")
        self.path = Path(path) if path else None
        history = option(environment, "history_dir")
        self.deliveries = Deliveries(Path(history) if history else None, option(environment, "deliver_timeout"),
                                     self.clocks)
        self.open = True

    def _file(self, src: str, boot: str, node: str) -> IO[str] | None:
        if self.path is None:
            return None
        fh = self.files.get(src)
        if fh is None:
            name = self.path if src == self.own else self.path.with_name(
                f"{self.path.stem}.{len([s for s in self.files if s != self.own]) + 1}{self.path.suffix}")
            name.parent.mkdir(parents=True, exist_ok=True)
            fh = self.files[src] = open(name, "a", encoding="utf-8")  # noqa: SIM115 - closed in finish()
            fh.write(json.dumps({"k": "src", "src": src, "boot": boot, "node": node}) + "\n")
        return fh

    def accept(self, data: dict[str, Any], node: str, *, report: bool = True) -> None:
        """Writes one process's records; ``report``: its ``users`` count is current (for :meth:`quiet_since`)."""
        if not self.open:
            return
        src, boot = data["src"], data["boot"]
        fh = self._file(src, boot, node)
        for rec in data["records"]:
            if fh is not None:
                fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
            kind = rec.get("k")
            if kind == "clock":
                self.clocks.add(clock.Anchor.from_record(rec))
            elif kind == "c" and self.deliveries is not None and self.deliveries.history_dir is not None:
                self.deliveries.committed(rec["mids"], boot, rec["t"])
        if fh is not None:
            fh.flush()  # the sizing run follows the step switches as they happen
        if report:
            self.reports[src] = (int(data["users"]), time.monotonic())

    def write_own(self, record: dict[str, Any]) -> None:
        """The hub's own records (step switches, the end), in the main log."""
        self.accept({"src": self.own, "boot": clock.boot_id(), "users": 0, "records": [record]}, "local", report=False)

    def quiet_since(self, t: float) -> bool:
        """Every publishing process reported 0 users after ``t``: its last commits have arrived."""
        return all(users == 0 and at > t for users, at in self.reports.values())

    def finish(self, environment: Any) -> None:
        if not self.open:
            return
        if self.deliveries is not None:
            self.deliveries.stop(environment.events.request.fire)
        self.write_own({"k": "end", "t": time.monotonic(),
                        "delivered": self.deliveries.delivered if self.deliveries else 0})
        self.open = False
        for fh in self.files.values():
            fh.close()
        self.files.clear()


hub = Hub()
stream = Stream()
_mid_counter = itertools.count(1)
_stop_requested = False


def _on_log_message(environment: Any, msg: Any, **_: Any) -> None:
    hub.accept(msg.data, msg.node_id)


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    if not environment.stop_timeout:  # let a user finish its transaction when locust stops it
        environment.stop_timeout = 5.0
    runner = environment.runner
    if runner is not None and not isinstance(runner, WorkerRunner):
        runner.register_message(LOG_MESSAGE, _on_log_message)
        hub.begin(environment)  # before the shape's first tick, which precedes test_start

    def stop_gracefully() -> None:
        """SIGUSR1: end the test the normal way (reports complete, every commit logged, undelivered counted)."""
        global _stop_requested
        _stop_requested = True
        if environment.shape_class is None and environment.runner is not None:
            gevent.spawn(environment.runner.quit)

    gevent.signal_handler(signal.SIGUSR1, stop_gracefully)


@events.test_start.add_listener
def _on_start(environment: Any, **_: Any) -> None:
    if hub.deliveries is not None:
        hub.deliveries.start(environment.events.request.fire)
    if not isinstance(environment.runner, MasterRunner):
        try:  # the harness creates it too; --processes children may race here, which is harmless
            with psycopg.connect(dsn(environment), autocommit=True, application_name=option(environment, "app")) as c:
                c.execute(business.CREATE)
        except psycopg.Error as exc:
            log.warning("could not create harness_business: %s", exc)
    stream.start(environment)


@events.test_stop.add_listener
def _on_stop(environment: Any, **_: Any) -> None:
    stream.stop(environment)
    if not isinstance(environment.runner, WorkerRunner):
        hub.finish(environment)
        if environment.parsed_options is not None and getattr(environment.parsed_options, "csv_prefix", None):
            gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.2)  # locust writes no final CSV: let its writer see the above


class OutboxPublisher(User):
    """One connection; each task is one transaction: business rows + outbox rows (+ NOTIFY), COMMIT."""

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.queue = option(environment, "queue")
        self.batch = max(1, option(environment, "batch"))
        self.pad = option(environment, "pad")
        self.statements = Statements(option(environment, "table"))
        self.sql = pyformat(self.statements.insert)
        self.business_sql = pyformat(business.INSERT)
        self.app = option(environment, "app")
        self._pace = constant_throughput(option(environment, "user_rate"))
        self.conn: psycopg.Connection[Any] | None = None

    def wait_time(self) -> float:
        return float(self._pace(self))

    def on_start(self) -> None:
        with contextlib.suppress(psycopg.Error):  # the task reports the failure and retries
            self.connect()

    def connect(self) -> None:
        self.conn = psycopg.connect(dsn(self.environment), application_name=self.app, connect_timeout=5)

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
        mids = [f"{prefix()}{next(_mid_counter)}" for _ in range(self.batch)]
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
        stream.add({"k": "c", "t0": t0, "t": t, "mids": mids})
        fire(request_type="publish", name="tx", response_time=(t - t0) * 1000, response_length=len(mids),
             exception=None, context={})


def step_plan(environment: Any) -> list[tuple[int, float]]:
    """(users, offered messages/s) per step."""
    users = option(environment, "step_users")
    rate = option(environment, "user_rate") * max(1, option(environment, "batch"))
    return [(users * k, users * k * rate) for k in range(1, option(environment, "steps") + 1)]


if os.environ.get("OUTBOX_LOCUST_SHAPE", "step") == "step":

    class StepLoadShape(LoadTestShape):
        """``step-users`` more users every ``step-seconds``; a 0-user drain; every commit reported; stop.

        ``-t/--run-time`` still ends the test early when given; ``-u``/``-r`` are not used.
        """

        use_common_options = True

        def __init__(self) -> None:
            super().__init__()
            self.current = -1
            self.closing_since: float | None = None

        def _switch(self, index: int, users: int, offered: float) -> None:
            if index != self.current:
                self.current = index
                hub.write_own({"k": "step", "t": time.monotonic(), "step": index, "users": users, "offered": offered})

        def tick(self) -> tuple[int, float] | None:
            env = self.runner.environment if self.runner is not None else None
            if env is None:
                return None
            if self.closing_since is None:
                plan = step_plan(env)
                step_s, drain_s = option(env, "step_seconds"), option(env, "drain_seconds")
                limit = getattr(env.parsed_options, "run_time", None)
                now = self.get_run_time()
                k = int(now // step_s)
                if _stop_requested or (limit and now >= limit) or now >= len(plan) * step_s + drain_s:
                    self._switch(len(plan), 0, 0.0)  # a 0-user step ends the last load step's window
                    self.closing_since = time.monotonic()
                elif k < len(plan):
                    self._switch(k, *plan[k])
                    return plan[k][0], SPAWN_RATE
                else:
                    self._switch(len(plan), 0, 0.0)
                    return 0, SPAWN_RATE
            if hub.quiet_since(self.closing_since) or time.monotonic() - self.closing_since > CLOSE_TIMEOUT_S:
                return None
            return 0, SPAWN_RATE
