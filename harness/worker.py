"""One consumer in its own OS process: ``python -m harness.worker --impl ... --spec spec.json``.

The worker loads the implementation through its adapter, runs one consumer
with a handler the harness controls (records every delivery, sleeps for the
scenario's duration, fails on poison), and appends every event to its own
history file. SIGTERM asks the consumer to drain and stop; SIGKILL is a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.adapter import ConsumerConfig, ConsumerContext, DeliveryInfo, load_adapter
from harness.deliveries import DeliveryCounter
from harness.history import HistoryWriter
from harness.names import worker_app
from harness.payload import decode, decode_script

EXIT_REFUSED = 3  # the consumer refused to start (e.g. a pool below its budget)


@dataclass(frozen=True)
class HandlerSpec:
    """How long the handler takes: ``base_ms`` ± ``jitter_ms``; a ``slow_fraction`` of calls, and the first
    ``slow_first`` calls of this process, take ``slow_s``. A scripted message overrides it (see harness.payload)."""

    base_ms: float = 1.0
    jitter_ms: float = 1.0
    slow_fraction: float = 0.0
    slow_s: float = 0.0
    slow_first: int = 0

    def duration(self, call: int) -> float:
        if call <= self.slow_first or (self.slow_fraction and random.random() < self.slow_fraction):
            return self.slow_s
        return max(0.0, self.base_ms + random.uniform(-self.jitter_ms, self.jitter_ms)) / 1000


@dataclass(frozen=True)
class WorkerSpec:
    impl: str
    dsn: str
    process: str
    history: str
    config: dict[str, Any]
    handler: dict[str, Any] = field(default_factory=dict)
    deliveries: str = ""  # directory of the shared delivery counts for scripted messages

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
        await asyncio.sleep(step["ms"] / 1000 if "ms" in step else handler_spec.duration(calls))
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

    ctx = ConsumerContext(dsn=spec.dsn, config=config, application_name=worker_app(spec.process),
                          handler=handler, stopping=stopping, settled=settled, metric=metric, claimed=claimed)
    history.record("info", "worker", event="started", process=spec.process, pid=os.getpid())
    try:
        adapter = load_adapter(spec.impl)
        await adapter.consume(ctx)
    except Exception as exc:  # noqa: BLE001 - recorded for the checkers, then a non-zero exit
        history.record("info", "worker", event="refused", process=spec.process,
                       message=f"{type(exc).__name__}: {exc}")
        history.close()
        return EXIT_REFUSED
    history.record("info", "worker", event="exited", process=spec.process)
    history.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", type=Path, required=True, help="WorkerSpec JSON written by the runner")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(run(WorkerSpec.load(args.spec)))


if __name__ == "__main__":
    sys.exit(main())
