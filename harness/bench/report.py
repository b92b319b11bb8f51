"""The benchmark's output: a side-by-side table, the machine and configuration, then the whole result as one JSON line."""

from __future__ import annotations

import json
from typing import Any


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _spread(r: dict[str, Any]) -> str:
    s = r.get("ratio_spread")
    return "-" if not s else f"{s['min']:.2f}-{s['max']:.2f}"


def _rss(r: dict[str, Any]) -> str:
    m = r.get("rss_mb")
    return "-" if not m else f"{m['start']:.0f}/{m['peak']:.0f}/{m['end']:.0f}"


def _machine(m: dict[str, Any]) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in m.get("server_settings", {}).items())
    return (f"machine: {m['cpus']} cores ({m['cpus_usable']} usable, {m['cpu_model']}), {m['memory_gib']} GiB, "
            f"load {m['load_at_start']} at start and {m.get('load_at_end', '-')} at end; Python {m['python']} on "
            f"{m['os']}; PostgreSQL {m['server_version']} on the same host ({settings})")


def print_bench(result: dict[str, Any], file: Any = None) -> None:
    """A side-by-side table (medians over the rounds, the ratio's range), notes, the machine and
    configuration, then (last line) the whole result as one JSON object."""
    header = ("impl", "rounds", "drain msg/s", "floor msg/s", "x floor", "range", "x ref", "CPU us/msg", "p50 ms",
              "p99 ms", "RSS MB start/peak/end", "notes")
    table = [header]
    footnotes: list[str] = []
    for r in result["impls"]:
        notes = list(r["notes"])
        if r["error"]:
            notes.insert(0, f"ERROR: {r['error']}")
        wake = "" if r["wakeup"] in (None, "notify") else f" ({r['wakeup']})"
        capped = "*" if r.get("capped") else ""
        table.append((r["impl"], str(r["rounds"]), _fmt(r["throughput_msgs_per_s"], ",.0f") + capped,
                      _fmt(r["floor_msgs_per_s"], ",.0f"), _fmt(r["ratio_to_floor"], ".3f") + capped, _spread(r),
                      _fmt(r["ratio_to_reference"], ".3f"), _fmt(r.get("cpu_us_per_msg"), ".1f"),
                      _fmt(r["notify_p50_ms"], ".2f") + wake,
                      _fmt(r["notify_p99_ms"], ".2f"), _rss(r), "; ".join(notes) or "-"))
        if r.get("capabilities_notes"):
            footnotes.append(f"{r['impl']}: {r['capabilities_notes']}")
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in table]
    cfg = result["config"]
    lines += ["", "medians over the rounds; range: lowest and highest round's ratio; each round's floor is the mean "
              "of the floor drains just before and after it; * stopped at the drain cap (the rate reached); CPU us/msg: "
              "the consumer process's own CPU time per message, which other load moves far less than a rate",
              f"{result['messages']:,} messages per drain; {result['seconds']:.0f} s in all"
              + (f"; floor not measured: {result['floor_error']}" if result.get("floor_error") else ""),
              _machine(result["machine"]),
              "config: " + ", ".join(f"{k}={v}" for k, v in cfg.items()), "", *footnotes]
    print("\n".join(lines), file=file)
    print(json.dumps(result, sort_keys=True), file=file)
