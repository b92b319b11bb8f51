"""``outbox-harness bench --checkers``: how long judging a history takes, and how much memory, as it grows.

A correct synthetic history is streamed to a file: a ``run`` header that names every guarantee a checker decides
(so :func:`harness.analysis.judge` runs them all), four workers, and per message what a healthy run records
(publishes of four messages per transaction, invoke and ok; per message a deliver invoke and ok and an ``acked``
settle, echoing the lease time and claim count), then the drain and the final read. Each size is judged the way
``outbox-harness check`` judges a saved run (:func:`harness.analysis.recheck`: read, index, check) in a fresh
process of its own, so each peak RSS is that size's alone; one run shows whether time and memory grow linearly.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from harness.adapter import Capabilities, ConsumerConfig, Timings
from harness.checkers import DECIDED_BY, CheckContext

SIZES = (1_000_000, 10_000_000)
WORKERS = 4
BATCH = 4  # messages per publish transaction, as the scenarios' workloads
DB_EPOCH = 1_700_000_000.0  # the database clock the synthetic lease times read
CONTEXT = CheckContext(ConsumerConfig(lease_ttl_seconds=3.0, max_deliveries=5),
                       Capabilities(dlq=True, max_deliveries=True, retry_schedule=True, lease_ttl=True,
                                    lease_times=True, settle_outcomes=True, notify=True, graceful_drain=True,
                                    metrics=True, connection_budget=True),
                       connection_budget=6, timings=Timings(reclaim_seconds=3.0))


def _line(t: float, process: str, type_: str, f: str, value: str) -> str:
    """One event as :meth:`harness.history.Event.to_json` writes it (same field order, no spaces)."""
    return f'{{"t":{t!r},"wall":{DB_EPOCH + t!r},"process":"{process}","type":"{type_}","f":"{f}","value":{value}}}\n'


def write_history(path: Path, events: int) -> int:
    """A correct history of about ``events`` events; returns how many it holds."""
    messages = max(BATCH, round((events - WORKERS - 3) / (3 + 2 / BATCH)) // BATCH * BATCH)
    header = {"scenario": {"name": "synthetic", "guarantees": list(DECIDED_BY)}, "impl": "synthetic",
              "context": CONTEXT.to_dict(), "notes": "", "seed": 0}
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        out.write(_line(0.0, "runner", "info", "run", json.dumps(header, separators=(",", ":"))))
        for w in range(1, WORKERS + 1):
            out.write(_line(0.001 * w, "runner", "info", "worker", f'{{"event":"started","process":"w{w}"}}'))
        written += 1 + WORKERS
        for b in range(messages // BATCH):
            written += _batch(out, 1.0 + 0.01 * b, [f"m{b * BATCH + i + 1}" for i in range(BATCH)])
        end = 2.0 + 0.01 * (messages // BATCH)
        out.write(_line(end, "runner", "ok", "drain", "{}"))
        out.write(_line(end + 0.1, "runner", "invoke", "read", "{}"))
        out.write(_line(end + 0.2, "runner", "ok", "read", '{"pending":[],"dead":[]}'))
        written += 3
    return written


def _batch(out: TextIO, t: float, mids: list[str]) -> int:
    """One publish transaction and the handling of its messages, one worker each, calls overlapping."""
    names = json.dumps(mids, separators=(",", ":"))
    out.write(_line(t, "publisher", "invoke", "publish", f'{{"mids":{names},"rollback":false,"probe":false}}'))
    out.write(_line(t + 0.0005, "publisher", "ok", "publish", f'{{"mids":{names},"probe":false}}'))
    events: list[tuple[float, str, str, str, str]] = []
    for i, mid in enumerate(mids):
        start = t + 0.001 + 0.0002 * i
        call = f'"lease_at":{DB_EPOCH + start - 0.0001!r},"delivery":1'
        worker = f"w{i % WORKERS + 1}"
        events += [(start, worker, "invoke", "deliver", f'{{"mid":"{mid}","intact":true,"key":null,{call}}}'),
                   (start + 0.004, worker, "ok", "deliver", f'{{"mid":"{mid}",{call}}}'),
                   (start + 0.0045, worker, "ok", "settle", f'{{"mid":"{mid}","outcome":"acked",{call}}}')]
    for e in sorted(events):
        out.write(_line(*e))
    return 2 + len(events)


def measure(path: Path) -> dict[str, Any]:
    """Judges one saved history as ``outbox-harness check`` does (:func:`harness.analysis.recheck`: the file streamed
    into the index, then every checker); wall and CPU time of each part, and this process's peak RSS."""
    from harness.analysis import judge  # noqa: PLC0415 - imported here so its import is not timed
    from harness.checkers import History  # noqa: PLC0415
    from harness.worker import memory_mb  # noqa: PLC0415

    t0, c0 = time.perf_counter(), time.process_time()
    history = History.read(path)
    t1 = time.perf_counter()
    verdicts, _ = judge(history)
    t2, c2 = time.perf_counter(), time.process_time()
    statuses: dict[str, int] = {}
    for v in verdicts:
        statuses[v.status] = statuses.get(v.status, 0) + 1
    return {"wall_s": round(t2 - t0, 2), "cpu_s": round(c2 - c0, 2), "index_s": round(t1 - t0, 2),
            "checkers_s": round(t2 - t1, 2), "peak_rss_mb": memory_mb()["peak_rss_mb"], "verdicts": statuses,
            "failed": sorted(v.guarantee for v in verdicts if v.status == "fail")}


def run(sizes: Sequence[int] = SIZES, *, workdir: Path | None = None, file: TextIO = sys.stdout) -> list[dict[str, Any]]:
    """Every size: write the history, judge it in a fresh process; prints one line each and a JSON summary."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="outbox-bench-checkers-", dir=workdir) as tmp:
        for size in sizes:
            path = Path(tmp) / f"history-{size}.jsonl"
            t0 = time.perf_counter()
            events = write_history(path, size)
            wrote = time.perf_counter() - t0
            child = subprocess.run([sys.executable, "-m", "harness.bench.checkers", "--measure", str(path)],
                                   check=True, capture_output=True, text=True)
            row = {"events": events, "bytes": path.stat().st_size, "write_s": round(wrote, 1),
                   **json.loads(child.stdout.strip().splitlines()[-1])}
            row["events_per_s"] = round(events / row["wall_s"]) if row["wall_s"] else None
            rows.append(row)
            path.unlink()
            print(f"{events:>12,} events  {row['wall_s']:>8.2f} s (read and index {row['index_s']:.2f} s, checkers"
                  f" {row['checkers_s']:.2f} s; CPU {row['cpu_s']:.2f} s)  {row['events_per_s'] or 0:>10,} events/s"
                  f"  peak RSS {row['peak_rss_mb']:>8,.0f} MB  verdicts {row['verdicts']}", file=file, flush=True)
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"×{b['events'] / a['events']:.1f} events: ×{b['wall_s'] / a['wall_s']:.2f} time,"
              f" ×{b['peak_rss_mb'] / a['peak_rss_mb']:.2f} peak RSS", file=file)
    print(json.dumps({"checkers": rows}), file=file)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--measure", type=Path, help="judge this history and print the figures as JSON (one size)")
    parser.add_argument("--events", type=int, action="append", help="history sizes (default: 1M and 10M)")
    args = parser.parse_args(argv)
    if args.measure is not None:
        print(json.dumps(measure(args.measure)))
        return 0
    rows = run(args.events or SIZES)
    return 1 if any(r["failed"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
