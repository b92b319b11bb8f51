"""Smoke test of harness.bench: it runs end to end with small numbers and reports sane figures.
No timing thresholds here: those belong to the full-size run on a quiet machine."""

from __future__ import annotations

import io
import json

import asyncpg
import pytest

from harness.bench import DEFAULTS, IMPLS, print_bench, run_bench

KEYS = {"impl", "throughput_msgs_per_s", "floor_msgs_per_s", "ratio_to_floor", "notify_p50_ms", "notify_p99_ms",
        "config", "messages", "probes", "drain_seconds", "floor_seconds"}


def test_bench_smoke(postgres_server):
    result = run_bench(postgres_server.dsn, messages=5_000, probes=20)
    assert KEYS <= set(result)
    assert result["impl"] == "reference" and result["messages"] == 5_000 and result["probes"] == 20
    for key in ("throughput_msgs_per_s", "floor_msgs_per_s", "ratio_to_floor", "notify_p50_ms", "notify_p99_ms",
                "drain_seconds", "floor_seconds"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["notify_p50_ms"] <= result["notify_p99_ms"]
    assert result["config"]["max_workers"] == DEFAULTS.max_workers
    assert result["config"]["fetch_batch_size"] == DEFAULTS.fetch_batch_size

    out = io.StringIO()
    print_bench(result, file=out)
    lines = out.getvalue().rstrip("\n").split("\n")
    assert len(lines) > 5
    assert json.loads(lines[-1]) == json.loads(json.dumps(result))  # the last line is the whole result


async def test_bench_from_a_running_loop_and_options(postgres_server):
    """Callable from async code (runs on a helper thread); options reach the config; the
    benchmark's tables are dropped afterwards."""
    result = run_bench(postgres_server.dsn, messages=300, probes=3, max_workers=2, fetch_batch_size=50,
                       floor_loops=1, publish_chunk=100)
    assert result["config"]["max_workers"] == 2 and result["config"]["floor_batch"] == 50
    assert result["config"]["pool_size"] == 6 and result["config"]["floor_loops"] == 1
    conn = await asyncpg.connect(postgres_server.dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'bench\\_%'") == 0
    finally:
        await conn.close()


def test_bench_refuses_unknown_impl_and_bad_options(postgres_server):
    assert "reference" in IMPLS
    with pytest.raises(ValueError, match="unknown impl"):
        run_bench(postgres_server.dsn, impl="nope", messages=10)
    with pytest.raises(ValueError, match="messages"):
        run_bench(postgres_server.dsn, messages=0)
