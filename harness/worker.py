"""One consumer in its own OS process: ``python -m harness.worker --impl ... --spec spec.json``.

The worker loads the implementation through its adapter, runs one consumer
with a handler the harness controls (records every delivery, sleeps for the
scenario's duration, fails on poison), and appends every event to its own
history file. SIGTERM asks the consumer to drain and stop; SIGKILL is a crash.
For the benchmark ``HandlerSpec.noop`` swaps in :class:`Noop`, a handler that
records next to nothing, so the implementation is measured, not the harness.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import random
import resource
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.adapter import ConsumerConfig, ConsumerContext, DeliveryInfo, load_adapter
from harness.deliveries import DeliveryCounter
from harness.history import HistoryWriter
from harness.messages import MaskingFormatter
from harness.names import worker_app
from harness.payload import decode, decode_script, seq_of

EXIT_REFUSED = 3  # the consumer refused to start (e.g. a pool below its budget)
#: The DSN reaches the worker only through its environment: the spec file (kept as evidence) holds it masked.
DSN_ENV = "OUTBOX_HARNESS_DSN"


@dataclass(frozen=True)
class HandlerSpec:
    """How long the handler takes: ``base_ms`` ± ``jitter_ms``; a ``slow_fraction`` of calls, and the first
    ``slow_first`` calls of this process, take ``slow_s``. A scripted message overrides it (see harness.payload).

    ``noop``: no such handler, but :class:`Noop` (``expect``: numbered payloads to drain)."""

    base_ms: float = 1.0
    jitter_ms: float = 1.0
    slow_fraction: float = 0.0
    slow_s: float = 0.0
    slow_first: int = 0
    noop: bool = False
    expect: int = 0

    def duration(self, call: int, rng: random.Random) -> float:
        if call <= self.slow_first or (self.slow_fraction and rng.random() < self.slow_fraction):
            return self.slow_s
        return max(0.0, self.base_ms + rng.uniform(-self.jitter_ms, self.jitter_ms)) / 1000


@dataclass(frozen=True)
class WorkerSpec:
    impl: str
    dsn: str  # masked; the real one is in the DSN_ENV environment variable
    process: str
    history: str
    config: dict[str, Any]
    handler: dict[str, Any] = field(default_factory=dict)
    deliveries: str = ""  # directory of the shared delivery counts for scripted messages
    application_name: str = ""  # to set on every connection; "" means worker_app(process)
    seed: int | None = None  # of this incarnation's handler timing, derived from the run's seed; None: unseeded

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> WorkerSpec:
        return cls(**json.loads(path.read_text()))


class HandlerFailure(Exception):
    """Raised by the harness handler on purpose: a poison message, or a scripted failure."""


class HistoryLogHandler(logging.Handler):
    """WARNING and above from the implementation go into the history (D8 counts warnings)."""

    def __init__(self, history: HistoryWriter) -> None:
        super().__init__(logging.WARNING)
        self.history = history

    def emit(self, record: logging.LogRecord) -> None:
        self.history.record("info", "log", level=record.levelname, logger=record.name, message=record.getMessage())


def cpu_seconds() -> float:
    """User plus system CPU time of this process so far: per message, a cost that other load on the machine
    does not change the way it changes wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 4)


def memory_mb(pid: int | None = None) -> dict[str, float]:
    """Resident set now and its peak (``VmRSS`` / ``VmHWM``), in MiB, of this process or of ``pid``; for this
    process ``ru_maxrss`` if /proc is absent, for another {} when it cannot be read (it has exited)."""
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid or 'self'}/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(rest.split()[0]) / 1024  # kB
    except OSError:
        pass
    if "VmHWM" not in out:
        if pid is not None:
            return {}
        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"rss_mb": round(out.get("VmRSS", out["VmHWM"]), 1), "peak_rss_mb": round(out["VmHWM"], 1)}


class Noop:
    """The benchmark's handler: does nothing with a delivery but note it, and no claim, settlement or metric
    is recorded, so a run measures the implementation, not the harness. Payloads are
    :func:`harness.payload.numbered`.

    At the first delivery of a drain it freezes the garbage collector's view of everything allocated
    so far (``gc.freeze``): a full collection that walked every module the worker and the library
    imported would be charged to the messages (8-11 % of a drain's samples in the reference's worker).

    ``expect`` > 0 (drain throughput): nothing is recorded per delivery, only a ``worker`` event
    ``progress`` at every hundredth of ``expect`` delivered (``unique``; resident memory then: how memory
    grows with the number of messages, and the rate a drain stopped at its cap had reached) and one
    ``drained`` once every number ``0 .. expect-1`` has been delivered (``first`` / ``last`` handler
    start, ``time.monotonic``; peak memory and CPU time so far). ``expect`` 0 (wake-up latency): one ``deliver``
    invoke per delivery, its ``mid`` the payload's number. Either way ``worker`` events ``ready``
    (adapter loaded, ``consume`` about to be called; resident memory and CPU time then) and, with ``exited`` or
    ``refused``, the delivery totals (``deliveries`` counts duplicates, ``unique`` does not).
    """

    def __init__(self, expect: int, history: HistoryWriter, process: str) -> None:
        self.seen = bytearray(expect)
        self.history = history
        self.process = process
        self.deliveries = 0
        self.unique = 0
        self.first: float | None = None
        self.step = max(1, expect // 100)
        self.mark = 1  # the next unique count with something to record: the first, every step-th, the last

    async def handle(self, payload: bytes, _info: DeliveryInfo) -> None:
        self.deliveries += 1
        seq = seq_of(payload)
        seen = self.seen
        if not seen:
            self.history.record("invoke", "deliver", mid=str(seq))
            return
        if 0 <= seq < len(seen) and not seen[seq]:
            seen[seq] = 1
            self.unique += 1
            if self.unique == self.mark:
                self._marked()

    def _marked(self) -> None:
        unique, n = self.unique, len(self.seen)
        if self.first is None:
            self.first = time.monotonic()
            gc.freeze()  # imports and start-up, harness's and library's, live as long as the process
        if unique % self.step == 0:
            self.history.record("info", "worker", event="progress", process=self.process, unique=unique,
                                **memory_mb())
        if unique == n:
            self.history.record("info", "worker", event="drained", process=self.process, first=self.first,
                                last=time.monotonic(), **self.totals())
        self.mark = min(n, (unique // self.step + 1) * self.step)

    def totals(self) -> dict[str, Any]:
        return {"deliveries": self.deliveries, "unique": self.unique, "cpu_s": cpu_seconds(), **memory_mb()}


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    return None


def _call(info: DeliveryInfo) -> dict[str, Any]:
    return {"lease_at": info.lease_at.timestamp() if info.lease_at is not None else None, "delivery": info.delivery}


async def run(spec: WorkerSpec) -> int:
    history = HistoryWriter(Path(spec.history), spec.process)
    logging.getLogger().addHandler(HistoryLogHandler(history))
    handler_spec = HandlerSpec(**spec.handler)
    config = ConsumerConfig.from_dict(spec.config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    totals: dict[str, float] = {}

    calls = 0
    rng = random.Random(spec.seed)
    counter = DeliveryCounter(Path(spec.deliveries)) if spec.deliveries else None

    async def handler(payload: bytes, info: DeliveryInfo) -> None:
        nonlocal calls
        calls += 1
        mid, intact, poison, script = decode_script(payload)
        call = _call(info)  # echoed by completions: tells apart two calls of one mid in one process
        step: dict[str, Any] = {}
        if script and mid is not None and counter is not None:
            n = counter.next(mid)
            step = script[n - 1] if n <= len(script) else {}
            call["scripted"] = n
        history.record("invoke", "deliver", mid=mid, intact=intact, key=info.key, **call)
        await asyncio.sleep(step["ms"] / 1000 if "ms" in step else handler_spec.duration(calls, rng))
        if poison or step.get("fail"):
            why = "poison" if poison else "scripted"
            history.record("fail", "deliver", mid=mid, error=why, **call)
            raise HandlerFailure(f"{why} failure of {mid}")
        history.record("ok", "deliver", mid=mid, **call)

    def settled(payload: bytes, outcome: str, info: DeliveryInfo | None = None) -> None:
        kind = "fail" if outcome in ("lease_lost", "error") else "ok"
        history.record(kind, "settle", mid=decode(payload)[0], outcome=outcome, **(_call(info) if info else {}))

    def metric(name: str, value: float, labels: dict[str, str]) -> None:
        totals[name] = totals.get(name, 0.0) + value
        history.record("info", "metric", name=name, value=totals[name], labels=labels)

    def claimed(payloads: Sequence[bytes], lease_at: datetime | None = None) -> None:
        history.record("ok", "claim", mids=[decode(p)[0] for p in payloads],
                       **({"lease_at": lease_at.timestamp()} if lease_at is not None else {}))

    noop = Noop(handler_spec.expect, history, spec.process) if handler_spec.noop else None
    ctx = ConsumerContext(dsn=os.environ[DSN_ENV], config=config,
                          application_name=spec.application_name or worker_app(spec.process),
                          handler=handler if noop is None else noop.handle, stopping=stopping,
                          settled=settled if noop is None else _ignore, metric=metric if noop is None else _ignore,
                          claimed=claimed if noop is None else _ignore, records_settles=noop is None)
    figures = dict if noop is None else noop.totals  # delivery totals with the exit, for the benchmark
    history.record("info", "worker", event="started", process=spec.process, pid=os.getpid())
    try:
        adapter = load_adapter(spec.impl)
        if noop is not None:
            history.record("info", "worker", event="ready", process=spec.process, cpu_s=cpu_seconds(), **memory_mb())
        await adapter.consume(ctx)
    except Exception as exc:  # noqa: BLE001 - recorded for the checkers, then a non-zero exit
        history.record("info", "worker", event="refused", process=spec.process,
                       message=f"{type(exc).__name__}: {exc}", **figures())
        history.close()
        return EXIT_REFUSED
    history.record("info", "worker", event="exited", process=spec.process, **figures())
    history.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", type=Path, required=True, help="WorkerSpec JSON written by the runner")
    args = parser.parse_args(argv)
    log = logging.StreamHandler(sys.stderr)
    log.setFormatter(MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[log])
    return asyncio.run(run(WorkerSpec.load(args.spec)))


if __name__ == "__main__":
    sys.exit(main())
