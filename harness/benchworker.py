"""One benchmark consumer in its own OS process: ``python -m harness.benchworker --impl ... --dsn ...``.

Started by :mod:`harness.bench`. It loads the implementation through its adapter and runs
``adapter.consume`` with a no-op handler that only records what it was given, and reports on its
stdout as JSON lines (each line one object with an ``event`` key; anything else the libraries
print goes to stderr, so stdout carries nothing but these lines):

- ``ready``: the adapter is imported and ``consume`` is about to be called (``t``: time.monotonic,
  which on Linux is one clock for every process, so the bench compares it with its own);
  ``rss_mb`` is the resident set at that point (interpreter plus the library's imports);
- ``drain`` mode: ``done`` once every payload ``0 .. expect-1`` has been delivered at least once,
  with ``first`` / ``last`` delivery times and the peak RSS so far (``VmHWM``);
- ``probe`` mode: ``delivery`` for every delivery, with ``seq`` (the payload's sequence number)
  and ``t`` taken on the handler's first line;
- ``exit`` when ``consume`` has returned (after SIGTERM) or failed (``error``), with the delivery
  totals (``deliveries`` counts duplicates, ``unique`` does not) and the peak RSS of the whole life.

Payloads are :func:`payload` bytes: a zero-padded sequence number, then filler.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import signal
import sys
import time
from typing import Any, TextIO

from harness.adapter import ConsumerConfig, ConsumerContext, DeliveryInfo, load_adapter

SEQ_DIGITS = 10


def payload(seq: int, size: int = 64) -> bytes:
    head = str(seq).zfill(SEQ_DIGITS).encode()
    return head + b"x" * max(0, size - len(head))


def seq_of(data: bytes) -> int:
    try:
        return int(data[:SEQ_DIGITS])
    except ValueError:
        return -1


def memory_mb() -> dict[str, float]:
    """Resident set now and its peak (``VmRSS`` / ``VmHWM``), in MiB; ``ru_maxrss`` if /proc is absent."""
    out: dict[str, float] = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(rest.split()[0]) / 1024  # kB
    except OSError:
        pass
    if "VmHWM" not in out:
        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"rss_mb": round(out.get("VmRSS", out["VmHWM"]), 1), "peak_rss_mb": round(out["VmHWM"], 1)}


class Reporter:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, event: str, **fields: Any) -> None:
        self.out.write(json.dumps({"event": event, **fields}) + "\n")
        self.out.flush()


async def run(impl: str, dsn: str, mode: str, expect: int, config: ConsumerConfig, report: Reporter) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    seen = bytearray(expect)
    counts = {"deliveries": 0, "unique": 0}
    times: dict[str, float] = {}
    all_seen = asyncio.Event()

    async def drain_handler(data: bytes, _info: DeliveryInfo) -> None:
        now = time.monotonic()
        if "first" not in times:
            times["first"] = now
        counts["deliveries"] += 1
        seq = seq_of(data)
        if 0 <= seq < expect and not seen[seq]:
            seen[seq] = 1
            counts["unique"] += 1
            if counts["unique"] == expect:
                times["last"] = now
                all_seen.set()

    async def probe_handler(data: bytes, _info: DeliveryInfo) -> None:
        now = time.monotonic()
        counts["deliveries"] += 1
        report("delivery", seq=seq_of(data), t=now)

    def settled(_payload: bytes, _outcome: str, _info: DeliveryInfo | None = None) -> None:
        return None

    def metric(_name: str, _value: float, _labels: dict[str, str]) -> None:
        return None

    async def announce_done() -> None:
        await all_seen.wait()
        report("done", first=times["first"], last=times["last"], **counts, **memory_mb())

    try:
        adapter = load_adapter(impl)
    except Exception as exc:  # noqa: BLE001 - reported, then a non-zero exit
        report("exit", error=f"{type(exc).__name__}: {exc}", **counts, **memory_mb())
        return 3
    ctx = ConsumerContext(dsn=dsn, config=config, application_name=f"bench-{mode}", handler=(
        drain_handler if mode == "drain" else probe_handler), stopping=stopping, settled=settled, metric=metric)
    announcer = asyncio.create_task(announce_done()) if mode == "drain" else None
    report("ready", t=time.monotonic(), pid=os.getpid(), **memory_mb())
    try:
        await adapter.consume(ctx)
    except Exception as exc:  # noqa: BLE001 - reported, then a non-zero exit
        logging.getLogger("harness.benchworker").exception("consume failed")
        report("exit", error=f"{type(exc).__name__}: {exc}"[:500], **counts, **memory_mb())
        return 1
    finally:
        if announcer is not None:
            announcer.cancel()
    error = None if stopping.is_set() else "consume returned before it was asked to stop"
    report("exit", error=error, **counts, **memory_mb())
    return 0 if error is None else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--impl", required=True, help="adapter alias or package.module:attribute")
    parser.add_argument("--dsn", required=True, help="postgresql:// DSN of the implementation's database")
    parser.add_argument("--mode", choices=("drain", "probe"), required=True)
    parser.add_argument("--expect", type=int, default=0, help="drain: payloads 0..expect-1 to wait for")
    parser.add_argument("--config", required=True, help="ConsumerConfig as JSON (ConsumerConfig.to_dict())")
    args = parser.parse_args(argv)
    # stdout carries the report only: keep a private copy of it, then point fd 1 at stderr
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ConsumerConfig.from_dict(json.loads(args.config))
    return asyncio.run(run(args.impl, args.dsn, args.mode, args.expect, config, Reporter(out)))


if __name__ == "__main__":
    sys.exit(main())
