"""Smoke tests of harness.bench: it runs end to end with small numbers and reports sane figures.
No timing thresholds here: those belong to the full-size run on a quiet machine."""

from __future__ import annotations

import io
import json

import asyncpg
import pytest

from harness.bench import DEFAULTS, print_bench, run_bench
from harness.bench.rounds import bracket, spread, summarise
from harness.payload import numbered, seq_of

TOP_KEYS = {"impl", "throughput_msgs_per_s", "floor_msgs_per_s", "ratio_to_floor", "ratio_spread", "notify_p50_ms",
            "notify_p99_ms", "peak_rss_mb", "rss_mb", "config", "machine", "messages", "probes", "rounds",
            "drain_seconds", "floor_seconds", "impls"}
FIGURES = ("throughput_msgs_per_s", "floor_msgs_per_s", "ratio_to_floor", "ratio_to_reference", "notify_p50_ms",
           "notify_p99_ms", "peak_rss_mb", "drain_seconds", "delivery_msgs_per_s")


def _check_row(row: dict, probes: int, rounds: int) -> None:
    assert row["error"] is None, row["error"]
    for key in FIGURES:
        assert isinstance(row[key], float) and row[key] > 0, key
    assert row["notify_p50_ms"] <= row["notify_p99_ms"]
    assert row["probes"] == probes and row["wakeup"] == "notify" and row["duplicates"] == 0
    assert row["rounds"] == rounds == len(row["round_figures"]) and not row["capped"]
    s = row["ratio_spread"]
    assert s["min"] <= s["p25"] <= s["median"] == row["ratio_to_floor"] <= s["p75"] <= s["max"]
    rss = row["rss_mb"]
    assert 0 < rss["start"] <= rss["peak"] and 0 < rss["end"] <= rss["peak"] and rss["peak"] == row["peak_rss_mb"]
    for r in row["round_figures"]:  # each round against the mean of the floors either side of it
        assert r["ratio_to_floor"] == pytest.approx(r["throughput_msgs_per_s"] / r["floor_msgs_per_s"], abs=1e-3)


def _last_line(result: dict) -> tuple[list[str], dict]:
    out = io.StringIO()
    print_bench(result, file=out)
    lines = out.getvalue().rstrip("\n").split("\n")
    return lines, json.loads(lines[-1])


def test_payload_carries_its_sequence_number():
    assert seq_of(numbered(12_345)) == 12_345 and len(numbered(7)) == 64 and seq_of(b"junk") == -1


def test_rounds_are_summarised_by_median_and_range():
    rounds = []
    for k, (tput, before, after) in enumerate([(50.0, 100.0, 100.0), (30.0, 100.0, 50.0), (90.0, 50.0, 100.0)]):
        r = {"throughput_msgs_per_s": tput, "capped": False, "notes": ["same"], "duplicates": k,
             "rss_mb": {"start": 50.0, "tenth": 51.0, "end": 52.0, "peak": 52.0 + k}}
        bracket(r, before, after)
        rounds.append(r)
    assert [r["floor_msgs_per_s"] for r in rounds] == [100.0, 75.0, 75.0]
    row = summarise(rounds, messages=1000)
    assert row["ratio_to_floor"] == 0.5 and row["ratio_spread"]["min"] == 0.4 and row["ratio_spread"]["max"] == 1.2
    assert row["throughput_msgs_per_s"] == 50.0 and row["floor_msgs_per_s"] == 75.0 and row["floor_seconds"] == 13.333
    assert row["rss_mb"]["peak"] == row["peak_rss_mb"] == 54.0 and row["duplicates"] == 3 and row["notes"] == ["same"]
    assert spread([3.0, 1.0, 2.0, 5.0, 4.0]) == {"median": 3.0, "p25": 2.0, "p75": 4.0, "min": 1.0, "max": 5.0}


def test_bench_smoke(postgres_server):
    result = run_bench(postgres_server.dsn, messages=3_000, probes=20, rounds=2)
    assert TOP_KEYS <= set(result)
    assert result["impl"] == "reference" and result["messages"] == 3_000 and result["probes"] == 20
    assert len(result["impls"]) == 1
    _check_row(result["impls"][0], 20, 2)
    for key in ("impl", *FIGURES):  # the single-impl contract: the figures at the top level
        assert result[key] == result["impls"][0][key], key
    assert result["ratio_to_reference"] == 1.0
    assert result["config"]["max_workers"] == DEFAULTS.max_workers
    assert result["config"]["fetch_batch_size"] == DEFAULTS.fetch_batch_size
    assert result["config"]["rounds"] == 2 and result["machine"]["cpus"] >= 1
    assert result["machine"]["server_version"]

    lines, last = _last_line(result)
    assert len(lines) > 4 and any(line.startswith("reference ") for line in lines)
    assert any(line.startswith("machine: ") for line in lines)
    assert last == json.loads(json.dumps(result))  # the last line is the whole result


async def test_two_impls_side_by_side_and_a_failing_one(postgres_server):
    """Several implementations in one run (the reference twice), from a running loop (a helper
    thread), options reaching the config; an implementation that cannot load gets a row with its
    error and no figures; every benchmark database is dropped afterwards."""
    result = run_bench(postgres_server.dsn, impls=["reference", "reference", "no.such.module:adapter"],
                       messages=1_000, probes=5, rounds=1, max_workers=4, fetch_batch_size=100, publish_chunk=300)
    assert [r["impl"] for r in result["impls"]] == ["reference", "reference", "no.such.module:adapter"]
    for row in result["impls"][:2]:
        _check_row(row, 5, 1)
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


def test_a_drain_past_its_cap_reports_the_rate_it_reached(postgres_server):
    """A consumer too slow for the cap (one worker, batches of one) is stopped there, once: its row has the
    rate reached, marked capped, and no further round."""
    result = run_bench(postgres_server.dsn, messages=6_000, probes=2, rounds=3, drain_cap_seconds=1.5,
                       max_workers=1, fetch_batch_size=1)
    row = result["impls"][0]
    assert row["error"] is None, row["error"]
    assert row["capped"] and row["rounds"] == 1 and 0 < row["round_figures"][0]["delivered"] < 6_000
    assert row["throughput_msgs_per_s"] > 0 and any("cap" in n for n in row["notes"])


def test_bench_refuses_bad_options(postgres_server):
    with pytest.raises(ValueError, match="messages"):
        run_bench(postgres_server.dsn, messages=0)
    with pytest.raises(ValueError, match="rounds"):
        run_bench(postgres_server.dsn, rounds=0, messages=10)
    with pytest.raises(ValueError, match="impls"):
        run_bench(postgres_server.dsn, impls=[], messages=10)
