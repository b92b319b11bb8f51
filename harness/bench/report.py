"""The benchmark's output: a side-by-side table, then the whole result as one JSON line."""

from __future__ import annotations

import json
from typing import Any


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_bench(result: dict[str, Any], file: Any = None) -> None:
    """A side-by-side table, notes, then (last line) the whole result as one JSON object."""
    header = ("impl", "drain msg/s", "x floor", "x ref", "p50 ms", "p99 ms", "RSS MB", "notes")
    table = [header]
    footnotes: list[str] = []
    for r in result["impls"]:
        notes = list(r["notes"])
        if r["error"]:
            notes.insert(0, f"ERROR: {r['error']}")
        wake = "" if r["wakeup"] in (None, "notify") else f" ({r['wakeup']})"
        table.append((r["impl"], _fmt(r["throughput_msgs_per_s"], ",.0f"), _fmt(r["ratio_to_floor"], ".2f"),
                      _fmt(r["ratio_to_reference"], ".2f"), _fmt(r["notify_p50_ms"], ".2f") + wake,
                      _fmt(r["notify_p99_ms"], ".2f"), _fmt(r["peak_rss_mb"], ".0f"), "; ".join(notes) or "-"))
        if r.get("capabilities_notes"):
            footnotes.append(f"{r['impl']}: {r['capabilities_notes']}")
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in table]
    floor = result.get("floor_msgs_per_s")
    floor_text = (f"{floor:,.0f} msg/s ({result['floor_seconds']:.2f} s)" if floor
                  else f"not measured: {result.get('floor_error')}")
    cfg = result["config"]
    lines += ["", f"raw-SQL floor: {floor_text}; {result['messages']:,} messages, {cfg['probes']} probes",
              "config: " + ", ".join(f"{k}={v}" for k, v in cfg.items()), "", *footnotes]
    print("\n".join(lines), file=file)
    print(json.dumps(result, sort_keys=True), file=file)
