"""Smoke tests of harness.bench: it runs end to end with small numbers and reports sane figures.
No timing thresholds here: those belong to the full-size run on a quiet machine."""

from __future__ import annotations

import io
import json

import asyncpg
import pytest

from harness.bench import DEFAULTS, print_bench, run_bench
from harness.payload import numbered, seq_of

TOP_KEYS = {"impl", "throughput_msgs_per_s", "floor_msgs_per_s", "ratio_to_floor", "notify_p50_ms", "notify_p99_ms",
            "peak_rss_mb", "config", "messages", "probes", "drain_seconds", "floor_seconds", "impls"}
FIGURES = ("throughput_msgs_per_s", "ratio_to_floor", "ratio_to_reference", "notify_p50_ms", "notify_p99_ms",
           "peak_rss_mb", "drain_seconds", "delivery_msgs_per_s")


def _check_row(row: dict, probes: int) -> None:
    assert row["error"] is None, row["error"]
    for key in FIGURES:
        assert isinstance(row[key], float) and row[key] > 0, key
    assert row["notify_p50_ms"] <= row["notify_p99_ms"]
    assert row["probes"] == probes and row["wakeup"] == "notify" and row["duplicates"] == 0


def _last_line(result: dict) -> tuple[list[str], dict]:
    out = io.StringIO()
    print_bench(result, file=out)
    lines = out.getvalue().rstrip("\n").split("\n")
    return lines, json.loads(lines[-1])


def test_payload_carries_its_sequence_number():
    assert seq_of(numbered(12_345)) == 12_345 and len(numbered(7)) == 64 and seq_of(b"junk") == -1


def test_bench_smoke(postgres_server):
    result = run_bench(postgres_server.dsn, messages=3_000, probes=20)
    assert TOP_KEYS <= set(result)
    assert result["impl"] == "reference" and result["messages"] == 3_000 and result["probes"] == 20
    assert isinstance(result["floor_msgs_per_s"], float) and result["floor_msgs_per_s"] > 0
    assert len(result["impls"]) == 1
    _check_row(result["impls"][0], 20)
    for key in ("impl", *FIGURES):  # the single-impl contract: the figures at the top level
        assert result[key] == result["impls"][0][key], key
    assert result["ratio_to_reference"] == 1.0
    assert result["config"]["max_workers"] == DEFAULTS.max_workers
    assert result["config"]["fetch_batch_size"] == DEFAULTS.fetch_batch_size

    lines, last = _last_line(result)
    assert len(lines) > 4 and any(line.startswith("reference ") for line in lines)
    assert last == json.loads(json.dumps(result))  # the last line is the whole result


async def test_two_impls_side_by_side_and_a_failing_one(postgres_server):
    """Several implementations in one run (the reference twice), from a running loop (a helper
    thread), options reaching the config; an implementation that cannot load gets a row with its
    error and no figures; every benchmark database is dropped afterwards."""
    result = run_bench(postgres_server.dsn, impls=["reference", "reference", "no.such.module:adapter"],
                       messages=1_000, probes=5, max_workers=4, fetch_batch_size=100, publish_chunk=300)
    assert [r["impl"] for r in result["impls"]] == ["reference", "reference", "no.such.module:adapter"]
    for row in result["impls"][:2]:
        _check_row(row, 5)
    assert result["impls"][0]["ratio_to_reference"] == 1.0  # the first reference row is the yardstick
    assert result["throughput_msgs_per_s"] == result["impls"][0]["throughput_msgs_per_s"]
    failed = result["impls"][2]
    assert "cannot import" in failed["error"]
    assert all(failed[k] is None for k in ("throughput_msgs_per_s", "ratio_to_floor", "notify_p50_ms", "peak_rss_mb"))
    assert result["config"]["max_workers"] == 4 and result["config"]["floor_batch"] == 100

    lines, last = _last_line(result)
    assert set(last) >= TOP_KEYS and len(last["impls"]) == 3
    assert any("ERROR: " in line and "no.such.module" in line for line in lines)

    conn = await asyncpg.connect(postgres_server.dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname LIKE 'bench\\_%'") == 0
    finally:
        await conn.close()


def test_bench_refuses_bad_options(postgres_server):
    with pytest.raises(ValueError, match="messages"):
        run_bench(postgres_server.dsn, messages=0)
    with pytest.raises(ValueError, match="impls"):
        run_bench(postgres_server.dsn, impls=[], messages=10)
