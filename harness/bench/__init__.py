"""Peer benchmark: outbox implementations side by side on one workload, against a raw-SQL floor.

One run, one PostgreSQL server. Every implementation, the reference included, is measured the same
way: through its adapter (:mod:`harness.adapter`), its consumer in its own process —
:mod:`harness.worker` under :class:`harness.supervisor.Supervisor`, as in chaos and sizing runs, never
restarted here — whose figures are read from its history (:mod:`harness.bench.consumer`).

(a) **drain throughput, interleaved with the floor** (:mod:`harness.bench.rounds`): ``messages``
    payloads are published once through ``adapter.publish`` in transactions of ``publish_chunk`` (a
    :class:`PublishTx`, as the runner publishes) into a template database, VACUUM ANALYZEd. Then
    ``rounds`` times: a floor drain, a drain by the implementation, ..., a floor drain (F I F I ... F),
    each of a fresh copy of its backlog (``CREATE DATABASE ... TEMPLATE``), so every round starts from
    the same bytes. A drain runs from the worker's ``ready`` (adapter imported, ``consume`` about to be
    called: pool set-up and start-up are included) until ``adapter.read_state`` shows nothing pending,
    polled once every payload has been delivered (acknowledgements included: a row handled but not yet
    deleted or marked done has not been drained). Each round's ratio is taken against the mean of the
    two floor drains around it, and an implementation is reported by the median ratio of its rounds with
    their range and quartiles: the machine may be shared, and a ratio of figures minutes apart is not
    stable. A drain still running after ``drain_cap_seconds`` is stopped and reports the delivery rate it
    had reached (from the handler's ``progress`` events), and is the last round of that implementation;
    no new round starts once its rounds took ``impl_budget_seconds``, so a slow peer costs bounded time.
(b) **the raw-SQL floor** (:mod:`harness.bench.floor`): the same number of rows in the reference
    schema, and ``floor_loops`` asyncpg loops, each on its own connection, claiming a batch
    (``fetch_batch_size``) with the reference's lease CTE (``Statements.fetch``) and deleting it in one
    token-guarded statement (``Statements.ack``): no handler, no framework. Its time includes
    connecting, as an implementation's includes its start-up.
(c) **idle wake-up latency**, in a fresh database of its own (so it is measured even when the
    drain failed): a fresh consumer process with the same no-op handler, one warm-up message,
    then ``probes`` single messages published one at a time, each once the previous one has left
    the state (the consumer is idle again). Latency runs from just before COMMIT (time.monotonic
    here) to the handler's ``deliver`` invoke (time.monotonic in the worker: one clock on Linux).
    ``max_fetch_interval`` is far longer than a probe, so polling cannot help an implementation
    that has a wake-up mechanism (``capabilities.notify``); one without is labelled ``polling`` and
    gets ``polling_probes`` probes, each of which may wait a whole ``max_fetch_interval``.
(d) **memory**: the consumer process's resident set at ``ready`` (interpreter plus the library's
    imports), at a tenth of the drain, at its end, and its peak (``VmHWM``), from the round whose peak
    was highest: a consumer whose memory grows with the number of messages shows it between the
    tenth and the end (``--messages 1000000`` makes it plain). Beside it, the consumer process's CPU
    time per message (user + system, ``ready`` to the last delivery): a cost that other load on a
    shared machine moves far less than a rate, and that says where a consumer spends its time.

Consumer configuration (``DEFAULTS``, one :class:`ConsumerConfig` for every implementation, each
adapter maps it to its library's own knobs): ``max_workers=16``, ``fetch_batch_size=500``,
``lease_ttl_seconds=60``, ``max_fetch_interval=30``, ``min_fetch_interval=0.05``, dead-lettering on,
default retry policy, pool = the adapter's own budget. 64-byte payloads; floor: 2 loops × 500 rows.
Chosen on a 2-core machine with PostgreSQL on the same host (a grid of max_workers 4..64 × batch
200..1000 at 100k messages for the reference): with a no-op handler a consumer is bound by
per-message Python work, so the choice mostly sets the floor's batch.

A failing implementation (import error, crash, a phase over its timeout) gets a row with its error
and no figure for what was not measured. ``print_bench(result)`` prints a table, the machine (cores,
CPU, load, PostgreSQL version and settings) and the configuration and, as its last line, one JSON
object: the first implementation's figures at the top level (``impl``, ``throughput_msgs_per_s``,
``floor_msgs_per_s``, ``ratio_to_floor``, ``ratio_spread``, ``notify_p50_ms``, ``notify_p99_ms``,
``rss_mb``, ...), every implementation's under ``impls`` (each round's under ``round_figures``), the
configuration and the machine.
"""

from harness.bench.config import DEFAULTS, BenchConfig, consumer_config
from harness.bench.report import print_bench
from harness.bench.run import arun_bench, run_bench

__all__ = ["DEFAULTS", "BenchConfig", "arun_bench", "consumer_config", "print_bench", "run_bench"]
