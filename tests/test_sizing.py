"""Sizing analysis from synthetic numbers, and one short real run (one grid point, about 15 s).

The analysis tests build commits, step switches and delivery times by hand, so every figure they
check is known exactly. The locustfile is never imported here: importing locust monkey-patches the
interpreter for gevent, which the asyncio tests in the same session must not inherit.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import sizing
from harness.history import Event, HistoryWriter, Tail, read_events
from harness.sizing.analysis import Cpu
from harness.sizing.clock import Anchor, Clocks
from harness.sizing.cpu import TreeMeter
from harness.sizing.data import cores, cpu_meter, read_load_log
from harness.sizing import (
    Commit,
    GridPoint,
    Knee,
    PointResult,
    Step,
    StepFigures,
    check_budget,
    find_knee,
    recommend,
    step_figures,
)
from harness.stats import percentile
from tests.controls import processes_in

ROOT = Path(__file__).resolve().parent.parent


# -- helpers -------------------------------------------------------------------------

def load(start: float, seconds: float, rate: float, *, latency: float | None, prefix: str,
         deliver_rate: float | None = None) -> tuple[list[Commit], dict[str, float]]:
    """``rate`` msg/s committed one per transaction from ``start``; each delivered ``latency`` s later
    (``None``: never), or, with ``deliver_rate``, delivered in commit order at that rate (a backlog)."""
    commits, delivered = [], {}
    n = int(seconds * rate)
    next_free = start
    for i in range(n):
        t = start + i / rate
        mid = f"{prefix}{i}"
        commits.append(Commit(t - 0.002, t, (mid,)))
        if deliver_rate is not None:
            next_free = max(next_free, t) + 1 / deliver_rate
            delivered[mid] = next_free
        elif latency is not None:
            delivered[mid] = t + latency
    return commits, delivered


def fig(index: int, *, offered: float, published: float, delivered: float, p95_ms: float,
        sustained: bool) -> StepFigures:
    return StepFigures(index=index, users=index + 1, offered=offered, window_s=5.0, committed=int(published * 5),
                       publish_rate=published, delivery_rate=delivered, delivered_fraction=1.0, e2e_p50_ms=p95_ms / 2,
                       e2e_p95_ms=p95_ms, e2e_p99_ms=p95_ms, publish_p95_ms=4.0, sustained=sustained)


def result(point: GridPoint, rate: float, *, p95_ms: float = 50.0, lower: bool = False,
           samples: list[dict[str, int]] | None = None, max_connections: int = 200) -> PointResult:
    knee = Knee(rate, 1 if rate else None, "load" if lower else "consumer", lower, p95_ms, 5.0, None, rate)
    budget = check_budget(point, samples if samples is not None else [{"harness-w1#1": 3}],
                          max_connections=max_connections, reserved=3)
    return PointResult(point, [], knee, budget)


# -- percentile / step figures --------------------------------------------------------

def test_percentile_nearest_rank_and_infinity() -> None:
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile([1.0] * 95 + [math.inf] * 5, 95) == 1.0
    assert percentile([1.0] * 94 + [math.inf] * 6, 95) == math.inf
    assert math.isnan(percentile([], 95))


def test_step_figures_fast_slow_and_backlog() -> None:
    # step 0: 100 msg/s delivered 20 ms after commit; step 1: 300 msg/s, a tenth never delivered;
    # step 2: 200 msg/s delivered at 170 msg/s, under the bound only because the step is short.
    c0, d0 = load(100.0, 5, 100, latency=0.020, prefix="a")
    c1, d1 = load(105.0, 5, 300, latency=0.050, prefix="b")
    for m in list(d1)[::10]:
        del d1[m]
    c2, d2 = load(110.0, 5, 200, latency=None, prefix="c", deliver_rate=170)
    steps = [Step(0, 100.0, 2, 100.0), Step(1, 105.0, 4, 300.0), Step(2, 110.0, 6, 200.0), Step(3, 115.0, 0, 0.0)]
    figures = step_figures(c0 + c1 + c2, steps, {**d0, **d1, **d2}, bound_s=1.0, settle_s=1.0)

    assert [f.index for f in figures] == [0, 1, 2]  # the 0-user drain step is not a load step
    f0, f1, f2 = figures
    assert f0.window_s == pytest.approx(4.0)  # the first second of each step is skipped
    assert f0.publish_rate == pytest.approx(100, rel=0.02)
    assert f0.e2e_p95_ms == pytest.approx(20.0, abs=0.5)
    assert f0.publish_p95_ms == pytest.approx(2.0, abs=0.1)
    assert f0.sustained
    assert f1.e2e_p95_ms == math.inf and f1.delivered_fraction == pytest.approx(0.9, abs=0.01)
    assert not f1.sustained
    assert f2.e2e_p95_ms < 1000  # the latency bound alone would pass it ...
    assert f2.delivery_rate < 0.9 * f2.publish_rate and not f2.sustained  # ... the growing backlog does not


def test_knee_is_best_rate_before_the_first_failure() -> None:
    figures = [
        fig(0, offered=200, published=200, delivered=200, p95_ms=5, sustained=True),
        fig(1, offered=400, published=400, delivered=398, p95_ms=40, sustained=True),
        fig(2, offered=600, published=600, delivered=450, p95_ms=4000, sustained=False),
        fig(3, offered=800, published=800, delivered=800, p95_ms=10, sustained=True),  # after the knee: ignored
    ]
    knee = find_knee(figures)
    assert knee.sustainable_rate == 398 and knee.step == 1
    assert knee.limited_by == "consumer" and not knee.lower_bound
    assert knee.first_failed_step == 2 and knee.e2e_p95_ms == 40
    assert knee.peak_rate == 800


def test_knee_not_reached_is_a_lower_bound_publisher_or_load() -> None:
    ok = [fig(0, offered=500, published=500, delivered=500, p95_ms=3, sustained=True),
          fig(1, offered=1000, published=990, delivered=990, p95_ms=3, sustained=True)]
    knee = find_knee(ok)
    assert (knee.sustainable_rate, knee.limited_by, knee.lower_bound) == (990, "load", True)

    short = [*ok, fig(2, offered=1500, published=1100, delivered=1100, p95_ms=4, sustained=True),
             fig(3, offered=2000, published=1000, delivered=1000, p95_ms=4, sustained=True)]
    knee = find_knee(short)
    # the publisher fell behind: a lower bound, and its slump in the last step does not lower the figure
    assert (knee.sustainable_rate, knee.step, knee.limited_by, knee.lower_bound) == (1100, 2, "publisher", True)


def test_knee_when_the_first_step_already_fails() -> None:
    knee = find_knee([fig(0, offered=500, published=500, delivered=300, p95_ms=2500, sustained=False)])
    assert knee.sustainable_rate == 0 and knee.step is None and knee.limited_by == "consumer"
    assert knee.peak_rate == 300
    assert find_knee([]).limited_by == "none"


# -- which side limited a step, and the figures that show it -------------------------------

def busy(**kw: float | int | None) -> Cpu:
    base: dict[str, float | int | None] = {"publisher": 0.3, "publisher_max": 0.15, "publishers": 2, "consumers": 0.6,
                                           "consumers_max": 0.3, "database": 0.5, "harness": 0.02, "host_busy": 1.5,
                                           "host_cores": 2, "other": 0.1}
    return Cpu(**{**base, **kw})  # type: ignore[arg-type]


def test_a_failed_step_names_consumer_database_or_host_cpu() -> None:
    ok = fig(0, offered=1000, published=1000, delivered=1000, p95_ms=10, sustained=True)
    failed = fig(1, offered=2000, published=1990, delivered=1400, p95_ms=math.inf, sustained=False)
    failed.cpu = busy(consumers_max=0.97)  # a consumer process was CPU-bound
    knee = find_knee([ok, failed])
    assert (knee.limited_by, knee.sustainable_rate, knee.lower_bound) == ("consumer", 1000, False)
    assert "1990 published/s" in knee.evidence and "1400 delivered/s" in knee.evidence
    assert "busiest 97% of a core" in knee.evidence
    failed.cpu = busy()  # nothing saturated, CPU to spare: the configuration (max_workers × handler) is the limit
    assert find_knee([ok, failed]).limited_by == "consumer"
    failed.cpu = busy(database=1.9)  # the server used 1.9 of 2 cores
    assert find_knee([ok, failed]).limited_by == "database"
    failed.cpu = busy(host_busy=2.0, other=0.9, consumers_wait=0.5)  # nothing of ours saturated, the host was
    knee = find_knee([ok, failed])
    assert knee.limited_by == "host CPU"
    assert "waiting for a CPU up to 50% of the time" in knee.evidence and "other processes 0.90" in knee.evidence
    assert "host's CPUs were saturated" in knee.evidence


def test_a_publisher_that_fell_short_is_named_with_its_cpu() -> None:
    steps = [fig(0, offered=2000, published=2000, delivered=2000, p95_ms=10, sustained=True),
             fig(1, offered=4000, published=3000, delivered=3000, p95_ms=12, sustained=True)]
    steps[1].cpu = busy(publisher_max=0.98, publisher=1.9)
    knee = find_knee(steps)
    assert (knee.limited_by, knee.lower_bound, knee.max_offered, knee.max_published) == ("publisher", True, 4000, 3000)
    assert "3000 published/s (75% of offered)" in knee.evidence and "busiest 98% of a core" in knee.evidence
    steps[1].cpu = busy(publisher_max=0.2)
    assert "no locust process was CPU-bound" in find_knee(steps).evidence


def test_recommend_never_rests_on_a_publisher_limited_point() -> None:
    small = result(GridPoint(2, 20, 1), 3000, lower=True)  # cheapest, but its figure is the publisher's
    small.knee = Knee(3000, 1, "publisher", True, 20.0, 5.0, None, 3000)
    large = result(GridPoint(8, 100, 2), 2700)  # ≥ 2000 with 30 % headroom
    rec = recommend([small, large], 2000)
    assert rec.point == GridPoint(8, 100, 2)
    rec = recommend([small], 2000)
    assert rec.point is None and "publisher" in rec.message and "--load-processes" in rec.message


def test_plan_reaches_a_cap_with_at_most_max_steps() -> None:
    plan = sizing.LoadPlan(user_rate=25.0, batch=10, step_users=2, steps=4)  # 500 msg/s per step
    assert plan.reaching(1500) is plan  # never shorter than it is
    assert plan.reaching(6000).offered()[-1] == 6000 and plan.reaching(6000).steps == 12
    wide = plan.reaching(50_000, max_steps=20)  # 100 steps of 500 would be too many: bigger steps
    assert wide.steps <= 20 and wide.offered()[-1] >= 50_000 and wide.step_users == 10


# -- one clock for several hosts, merged logs ------------------------------------------------

def test_clocks_map_each_boot_through_its_best_anchor() -> None:
    clocks = Clocks([Anchor("a", 10.0, 1010.005, 10.010), Anchor("a", 20.0, 1020.0005, 20.001),  # rtt 10 ms, 1 ms
                     Anchor("b", 500.0, 1700.002, 500.004)])
    assert clocks.to_db("a", 30.0) == pytest.approx(1030.0)  # through the 1 ms anchor: offset 1000
    assert clocks.uncertainty("a") == pytest.approx(0.0005)
    assert clocks.to_db("b", 510.0) == pytest.approx(1710.0)
    assert clocks.drift("a") == pytest.approx(0.0) and not clocks.known("c")
    with pytest.raises(KeyError):
        clocks.to_db("c", 1.0)


def write_log(path: Path, src: str, boot: str, records: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in [{"k": "src", "src": src, "boot": boot}, *records]))


def test_load_logs_of_two_hosts_merge_onto_the_runs_clock(tmp_path: Path) -> None:
    """The master and worker 1 share the run's boot; worker 2's host runs 1000 s ahead (monotonic)."""
    here, there = "boot-here", "boot-there"
    write_log(tmp_path / "commits.jsonl", "m/1", here, [
        {"k": "step", "t": 100.0, "step": 0, "users": 2, "offered": 100.0}, {"k": "cpu", "t": 100.0, "s": 1.0},
        {"k": "cpu", "t": 110.0, "s": 1.5}, {"k": "end", "t": 112.0}])
    write_log(tmp_path / "commits.1.jsonl", "h/2", here, [
        {"k": "c", "t0": 101.0, "t": 101.01, "mids": ["a1", "a2"]},
        {"k": "cpu", "t": 100.0, "s": 0.0, "wait": 0.0}, {"k": "cpu", "t": 110.0, "s": 2.0, "wait": 1.0}])
    write_log(tmp_path / "commits.2.jsonl", "x/3", there, [
        {"k": "clock", "boot": there, "before": 1100.0, "db": 4100.001, "after": 1100.002},  # = here 100
        {"k": "c", "t0": 1102.0, "t": 1102.01, "mids": ["b1"]},
        {"k": "cpu", "t": 1100.0, "s": 0.0}, {"k": "cpu", "t": 1110.0, "s": 5.0}])
    clocks = Clocks([Anchor(here, 100.0, 4100.001, 100.002)])  # the run's own anchor: db = mono + 4000
    log = read_load_log(tmp_path, clocks, here)
    by_mid = {c.mids: c for c in log.commits}
    assert by_mid[("a1", "a2")].t == pytest.approx(101.01)  # same boot: untouched
    assert by_mid[("b1",)].t == pytest.approx(102.01)  # 1102.01 + 3000 on the db clock − 4000
    assert [s.t for s in log.steps] == [100.0] and log.end == 112.0 and log.boots == {here, there}
    assert log.local == {"m/1", "h/2"} and set(log.publishers) == {"h/2", "x/3"}
    assert cores(log.publishers["x/3"], 100.0, 110.0) == pytest.approx(0.5)
    assert cores(log.master, 102.0, 108.0) == pytest.approx(0.05)
    window = cpu_meter(log, [
        {"t": 100.0, "host_busy": 0.0, "host_total": 0.0, "cores": 2, "consumers": {"7": 0.0}, "consumers_wait": {"7": 0.0},
         "database": 0.0, "harness": 0.0},
        {"t": 110.0, "host_busy": 15.0, "host_total": 20.0, "cores": 2, "consumers": {"7": 4.0},
         "consumers_wait": {"7": 3.0}, "database": 6.0, "harness": 0.5}])(100.0, 110.0)
    assert window.publisher == pytest.approx(0.7) and window.publisher_max == pytest.approx(0.5)
    assert (window.consumers, window.consumers_wait, window.database) == (0.4, 0.3, 0.6)
    assert window.host_busy == 1.5 and window.host_cores == 2 and window.publisher_wait == pytest.approx(0.1)
    # what no process of the run used on this host: 1.5 − consumers − database − harness − master − local publisher
    assert window.other == pytest.approx(1.5 - 0.4 - 0.6 - 0.05 - 0.05 - 0.2)
    with pytest.raises(RuntimeError, match="no clock anchor"):
        read_load_log(tmp_path, Clocks(), here)  # worker 2's times cannot be placed without the run's anchor


def test_cores_needs_samples_covering_the_window() -> None:
    series = [(0.0, 0.0), (1.0, 0.5), (2.0, 1.5)]
    assert cores(series, 0.5, 1.5) == pytest.approx(0.75)  # linear between samples
    assert cores(series, 1.0, 2.5) == pytest.approx(1.0)  # clamped to the samples, still half the window
    assert cores(series, 5.0, 6.0) is None and cores([], 0.0, 1.0) is None


# -- docker compose ------------------------------------------------------------------------

def test_compose_file_for_distributed_locust_parses() -> None:
    """Syntax and shape only: no Docker engine runs here, so the file is not started by any test."""
    import yaml  # noqa: PLC0415 (only this test reads YAML)

    doc = yaml.safe_load((ROOT / "docker-compose.locust.yml").read_text())
    master, worker = doc["services"]["master"], doc["services"]["worker"]
    assert "--master" in master["command"] and "--worker" in worker["command"]
    assert worker["command"][worker["command"].index("--master-host") + 1] == "${LOCUST_MASTER_HOST:-master}"
    for service in (master, worker):
        assert any("harness/locustfile.py" in str(part) for part in service["command"])
    assert "OUTBOX_LOCUST_DSN" in str(master["environment"])


# -- connection budget -----------------------------------------------------------------

def test_budget_within_formulas() -> None:
    point = GridPoint(max_workers=4, fetch_batch_size=50, processes=2)
    samples = [{"harness-w1#1": 3, "harness-w2#1": 6, "harness-locust": 8}, {"harness-w1#1": 6, "harness-w2#1": 5}]
    b = check_budget(point, samples, max_connections=100, reserved=3)
    assert (b.pool_formula, b.listen_formula, b.per_process_formula, b.total_formula) == (5, 1, 6, 12)
    assert (b.per_process_peak, b.total_peak, b.publisher_peak, b.samples) == (6, 11, 8, 2)
    assert b.ok and b.flags() == []


def test_budget_flags_overruns() -> None:
    point = GridPoint(max_workers=2, fetch_batch_size=20, processes=2)  # 4 per process, 8 in total
    samples = [{"harness-w1#1": 5, "harness-w2#1": 4}]  # one process over max_workers + 2
    b = check_budget(point, samples, max_connections=200, reserved=3)
    assert b.process_overrun and b.total_overrun and not b.server_short
    assert not b.ok
    assert any("process overrun: 5 > 4" in f for f in b.flags()) and any("total overrun: 9 > 8" in f for f in b.flags())


def test_budget_flags_a_server_too_small_for_the_formula() -> None:
    point = GridPoint(max_workers=16, fetch_batch_size=100, processes=4)  # 4 × 18 = 72
    b = check_budget(point, [{"harness-w1#1": 3, "harness-locust": 20}], max_connections=80, reserved=3)
    assert not b.process_overrun and not b.total_overrun
    assert b.server_short and not b.ok  # 80 - 3 < 72 + 20
    assert "max_connections 80" in b.flags()[0]


# -- recommendation --------------------------------------------------------------------

def test_recommend_smallest_configuration_that_sustains_the_target() -> None:
    small = result(GridPoint(2, 20, 1), 200)
    medium = result(GridPoint(4, 50, 1), 650)
    large = result(GridPoint(8, 100, 2), 1400, lower=True)
    rec = recommend([large, small, medium], 500)
    assert rec.point == GridPoint(4, 50, 1) and rec.rate == 650
    assert "max_workers=4" in rec.message and "max_connections ≥ 6" in rec.message
    rec = recommend([large, small, medium], 1000)
    assert rec.point == GridPoint(8, 100, 2)  # a lower bound above the target proves the target


def test_recommend_none_when_no_point_reaches_the_target() -> None:
    rec = recommend([result(GridPoint(2, 20, 1), 200), result(GridPoint(4, 50, 1), 650)], 5000)
    assert rec.point is None
    assert "none of the measured points" in rec.message and "mw=4 fb=50 p=1" in rec.message


def test_recommend_skips_points_over_their_budget_or_bound() -> None:
    over = result(GridPoint(2, 20, 1), 900, samples=[{"harness-w1#1": 7}])  # 7 > 2 + 2
    slow = result(GridPoint(4, 20, 1), 900, p95_ms=1500)
    fine = result(GridPoint(8, 100, 1), 900)
    assert not over.budget.ok
    assert recommend([over, slow, fine], 600).point == GridPoint(8, 100, 1)  # 900 ≥ 600 with 30 % headroom
    rec = recommend([over], 600)
    assert rec.point is None and "overran" in rec.message


# -- worker histories -------------------------------------------------------------------

def test_read_events_filter_parses_what_it_keeps(tmp_path: Path) -> None:
    path = tmp_path / "worker-w1-1.jsonl"
    with HistoryWriter(path, "w1#1") as history:
        history.record("info", "worker", event="started")
        history.record("invoke", "deliver", mid="m1")
        history.record("ok", "deliver", mid="m1")
    with open(path, "a", encoding="utf-8") as fh:
        # the fast path's text in a value: parsed, and not taken for a deliver invoke
        fh.write(Event(2.0, 2.0, "w1#1", "info", "log", {"type": "invoke", "f": "deliver"}).to_json() + "\n")
        fh.write('{"t": 9, "wall": 9, "process": "w1#1", "type":"invoke","f":"deliver"')  # torn last line
    assert [(e.type, e.f) for e in read_events(path)] == [("info", "worker"), ("invoke", "deliver"),
                                                          ("ok", "deliver"), ("info", "log")]
    assert [e.mid for e in read_events(path, f="deliver", type_="invoke")] == ["m1"]
    assert [e.type for e in read_events(path, f="deliver")] == ["invoke", "ok"]


def test_tail_returns_each_complete_line_once(tmp_path: Path) -> None:
    path = tmp_path / "worker-w1-1.jsonl"
    tail = Tail(path, f="deliver", type_="invoke")
    assert tail.read() == []  # not written yet
    history = HistoryWriter(path, "w1#1")
    history.record("invoke", "deliver", mid="m1")
    history.record("ok", "deliver", mid="m1")
    assert [e.mid for e in tail.read()] == ["m1"]
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(Event(1.0, 1.0, "w1#1", "invoke", "deliver", {"mid": "m2"}).to_json()[:20])  # being written
    assert tail.read() == []
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(Event(1.0, 1.0, "w1#1", "invoke", "deliver", {"mid": "m2"}).to_json()[20:] + "\n")
    assert [e.mid for e in tail.read()] == ["m2"] and tail.read() == []
    history.close()
    assert Tail(path, from_end=True).read() == []


# -- rendering --------------------------------------------------------------------------

def test_report_files_are_self_contained(tmp_path: Path) -> None:
    figures = [fig(0, offered=200, published=200, delivered=200, p95_ms=5, sustained=True),
               fig(1, offered=400, published=400, delivered=300, p95_ms=math.inf, sustained=False)]
    r = PointResult(GridPoint(2, 20, 1), figures, find_knee(figures),
                    check_budget(GridPoint(2, 20, 1), [{"harness-w1#1": 5}], max_connections=200))
    run = sizing.SizingRun("test", tmp_path / "sizing-test", [r.point], sizing.QUICK_PLAN, sizing.Handler(), 1.0, 500.0,
                           results=[r])
    run.recommendation = recommend(run.results, 500)
    out = sizing.write_report(run)
    page = (out / "sizing.html").read_text()
    assert page.count("<svg") == 4 and "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    assert "none of the measured points" in page and "OVERRUN" in page
    data = json.loads((out / "sizing.json").read_text())
    assert data["points"][0]["sustainable_rate"] == 200 and data["points"][0]["budget"]["process_overrun"]
    assert data["points"][0]["steps"][1]["e2e_p95_ms"] == "inf"
    assert "| mw=2 fb=20 p=1 |" in (out / "sizing.md").read_text()


def test_locustfile_publish_sql_is_derived_from_statements() -> None:
    """In a fresh interpreter: importing locust patches it for gevent."""
    code = (
        "from harness.locustfile import pyformat, insert_params\n"
        "from outbox.sql import Statements\n"
        "s = Statements('harness_outbox')\n"
        "sql = pyformat(s.insert)\n"
        "assert '$' not in sql and sql.count('%(p1)s') == 2, sql\n"
        "p = insert_params(s, 'q', [b'a', b'b'])\n"
        "assert p == {'p1': 'q', 'p2': [b'a', b'b'], 'p3': ['{}', '{}'], 'p4': 0.0, 'p5': s.channel}, p\n"
        "assert pyformat('SELECT 1 % $1') == 'SELECT 1 %% %(p1)s'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, "OUTBOX_LOCUST_SHAPE": "none"})
    assert proc.returncode == 0, proc.stderr[-2000:]


# -- one real point, distributed ----------------------------------------------------------


@pytest.fixture
def workspace() -> Iterator[Path]:
    """The run's TMPDIR and working directory (the embedded server's data directory lands inside)."""
    path = Path(tempfile.mkdtemp(prefix="sizing-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def sizing_run(workspace: Path, *args: str) -> subprocess.Popen[str]:
    if importlib.util.find_spec("locust") is None:  # importing locust here would gevent-patch this process
        pytest.skip("locust is not installed: pip install '.[load]'")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(workspace), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "harness.sizing", "run", "--quick", "--point", "4:50:1",
                             "--load-processes", "2", "--step-seconds", "4", "--step-users", "2", "--user-rate", "25",
                             "--batch", "2", "--reports-dir", str(workspace / "reports"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=workspace,
                            start_new_session=True)


def test_distributed_point_end_to_end(workspace: Path) -> None:
    """A locust master and 2 workers over loopback, 2 steps × 4 s against 1 consumer process: both
    workers' commit logs merged, CPU and limit figures per step, every process stopped by pid."""
    proc = sizing_run(workspace, "--steps", "2", "--target-rate", "40")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    (report,) = (workspace / "reports").glob("sizing-*")
    assert str(report / "sizing.html") in out and "limited by" in out
    point_dir = report / "points" / "mw4-fb50-p1"
    for name in ("locust_stats.csv", "locust.html", "locust.log", "locust-w1.log", "locust-w2.log", "commits.jsonl.gz",
                 "commits.1.jsonl.gz", "commits.2.jsonl.gz", "worker-w1-1.jsonl.gz"):
        assert (point_dir / name).exists(), name
    data = json.loads((report / "sizing.json").read_text())
    assert data["engine"]["local_workers"] == 2
    (p,) = data["points"]
    assert p["error"] is None
    assert p["published"] > 0 and p["delivered"] == p["published"]
    assert p["clock"]["publishers"] == 2 and p["clock"]["hosts"] == 1 and p["clock"]["uncertainty_ms"] == 0
    assert len(p["steps"]) == 2 and all(s["sustained"] for s in p["steps"])
    for s in p["steps"]:  # 2 users, then 4: 100 then 200 msg/s, both workers publishing
        assert s["cpu"]["publishers"] == 2 and s["cpu"]["publisher"] > 0 and s["cpu"]["consumers"] > 0
        assert s["cpu"]["database"] is not None and s["cpu"]["host_busy"] > 0
    assert p["steps"][1]["publish_rate"] > 150
    # the plan's cap (200 msg/s) was reached: "load"; on a busy machine locust may fall short: "publisher"
    assert p["limited_by"] in ("load", "publisher") and "step 1: 200 msg/s offered" in p["limit_evidence"]
    assert p["locust"]["publish"]["requests"] > 0 and p["locust"]["deliver"]["requests"] > 0
    rec = data["recommendation"]
    assert 4 <= p["handler_p99_ms"] < 100  # the 5 ± 1 ms stand-in handler, measured from the worker histories
    if p["limited_by"] == "load":
        assert rec["config"]["max_workers"] == 4, rec["message"]
        assert rec["lease_ttl_seconds_min"] == pytest.approx(2 * (50 // 4 + 1 + 1) * p["handler_p99_ms"] / 1000,
                                                             rel=0.01)
    else:  # never on a figure the publisher capped
        assert rec["config"] is None and "publisher" in rec["message"], rec["message"]
    history = [json.loads(line) for line in (point_dir / "history-runner.jsonl").read_text().splitlines()]
    (spawned,) = [e["value"] for e in history if e["f"] == "locust" and e["value"].get("event") == "spawned"]
    (exited,) = [e["value"] for e in history if e["f"] == "locust" and e["value"].get("event") == "exited"]
    assert len(spawned["workers"]) == 2 and exited["code"] == 0 and exited["workers"] == [0, 0]
    # The database-clock mapping used across hosts agrees here with the exact one-host answer: every
    # locust worker's best anchor and the run's own map the shared monotonic clock to the same database time.
    ours = Clocks(Anchor(**{k: v for k, v in e["value"].items()}) for e in history if e["f"] == "clock")
    for n in (1, 2):
        with gzip.open(point_dir / f"commits.{n}.jsonl.gz", "rt") as fh:
            theirs = Clocks(Anchor.from_record(r) for r in map(json.loads, fh) if r["k"] == "clock")
        ((boot, anchor),) = theirs.best.items()
        assert abs(anchor.offset - ours.best[boot].offset) <= anchor.rtt / 2 + ours.best[boot].rtt / 2 + 1e-3
    deadline = time.monotonic() + 10  # the guard process exits once the run closed its pipe
    while processes_in(workspace) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_in(workspace) == [], "processes survived the run"


def test_sigkill_of_a_sizing_run_leaves_no_load_process(workspace: Path) -> None:
    """The locust master and workers are registered with the guard like every other process."""
    proc = sizing_run(workspace, "--steps", "20")
    try:
        deadline = time.monotonic() + 60
        while not list(workspace.glob("reports/sizing-*/points/*/commits.2.jsonl")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.2)
        running = processes_in(workspace)
        assert len(running) >= 5  # harness, consumer, server, locust master, 2 locust workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 30
    while processes_in(workspace) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_in(workspace) == [], "processes survived the harness"


def test_backlog_limit_for_stopping_early() -> None:
    assert sizing.backlog_limit(800.0, 1.0) == 800  # bound × the rate offered now
    assert sizing.backlog_limit(2500.0, 0.5) == 1250


def test_tree_meter_never_goes_down_when_children_exit() -> None:
    """A parent whose children burn CPU and exit one after another: its tree total only grows."""
    # Idle before the first child and after the last is reaped, so the first and last readings bracket all
    # four children's CPU even on a busy machine (read too late or too early, the bound below was flaky).
    code = ("import os, time\n"
            "time.sleep(0.4)\n"
            "for _ in range(4):\n"
            "    if os.fork() == 0:\n"
            "        end = time.process_time() + 0.15\n"
            "        while time.process_time() < end: pass\n"
            "        os._exit(0)\n"
            "    os.wait()\n"
            "    time.sleep(0.1)\n"
            "time.sleep(0.4)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    meter = TreeMeter(proc.pid)
    readings = []
    while proc.poll() is None:
        if (r := meter.read()) is not None:
            readings.append(r)
        time.sleep(0.02)
    cpu = [c for c, _ in readings]
    waits = [w for _, w in readings]
    assert cpu == sorted(cpu) and waits == sorted(waits)
    assert 0.4 <= cpu[-1] - cpu[0] < 1.0  # about 4 × 0.15 s of children's CPU, counted once


# -- advice a production owner can act on ----------------------------------------------------

def test_the_recommendation_keeps_headroom_and_says_why() -> None:
    exact = result(GridPoint(2, 20, 1), 500)  # sustains the target, nothing more
    roomy = result(GridPoint(4, 50, 1), 700)
    rec = recommend([exact, roomy], 500)
    assert rec.point == GridPoint(4, 50, 1), rec.message
    assert f"{sizing.HEADROOM:.0%} headroom" in rec.message and "650" in rec.message  # 1.3 × 500
    assert "burst" in rec.message and "replica" in rec.message  # why
    assert recommend([exact], 500).point is None


def test_the_recommendation_states_the_lease_against_the_measured_handler_p99() -> None:
    point = result(GridPoint(4, 40, 1), 700)
    point.handler_p99_ms = 250.0
    rec = recommend([point], 500)
    # a claimed row waits behind ⌈40 / 4⌉ = 10 handlers of its batch, then runs its own: 11 × 250 ms, doubled
    assert rec.lease_ttl_s == pytest.approx(5.5)
    assert "lease_ttl_seconds ≥ 5.5 s" in rec.message and "handler p99 250 ms" in rec.message
    slow = result(GridPoint(4, 40, 1), 700)
    slow.handler_p99_ms = 4000.0
    assert "too short" in recommend([slow], 500).message  # 88 s > the reference's default of 60 s


def test_the_recommendation_says_what_a_connection_pooler_changes() -> None:
    rec = recommend([result(GridPoint(4, 50, 1), 700)], 500)
    assert "LISTEN" in rec.message and "session" in rec.message and "listen_connect_args" in rec.message


def test_handler_times_are_read_from_the_worker_histories(tmp_path: Path) -> None:
    from harness.sizing.data import handler_durations

    path = tmp_path / "worker-w1-1.jsonl"
    path.write_text("".join(Event(t, t, "w1#1", kind, "deliver", {"mid": mid}).to_json() + "\n" for t, kind, mid in [
        (1.0, "invoke", "m1"), (1.1, "invoke", "m2"), (1.15, "ok", "m2"), (1.25, "fail", "m1"), (2.0, "invoke", "m3")]))
    assert sorted(round(d, 3) for d in handler_durations([path])) == [0.05, 0.25]  # m3 never finished


SIZE_ARGS = ["--point", "4:50:1", "--handler-ms", "0", "--jitter-ms", "0", "--bound", "0.5", "--user-rate", "10",
             "--batch", "1", "--step-users", "1", "--step-seconds", "2", "--steps", "2", "--target-rate", "100",
             "--headroom", "0.5", "--dsn", "postgresql://u@127.0.0.1:5/db"]


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings} - {"-h", "--help"}


def test_size_and_sizing_run_share_one_parser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.cli import build_parser
    from harness.sizing.cli import build_parser as sizing_parser
    from harness.sizing.cli import plan_run

    monkeypatch.chdir(tmp_path)
    size = build_parser()._subparsers._group_actions[0].choices["size"]  # type: ignore[union-attr]
    run = sizing_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    assert _option_strings(size) == _option_strings(run)
    for ns in (build_parser().parse_args(["size", *SIZE_ARGS]), sizing_parser().parse_args(["run", *SIZE_ARGS])):
        planned = plan_run(ns)
        assert planned.grid == [GridPoint(4, 50, 1)] and planned.bound_s == 0.5 and planned.headroom == 0.5
        assert (planned.handler.base_ms, planned.handler.jitter_ms) == (0.0, 0.0)  # zero means zero
        assert (planned.plan.user_rate, planned.plan.batch, planned.plan.steps) == (10.0, 1, 2)
        assert planned.dsn == "postgresql://u@127.0.0.1:5/db"


@pytest.mark.parametrize("argv", [["--point", "4:50"], ["--point", "0:50:1"], ["--handler-ms", "-1"],
                                  ["--handler-ms", "nan"], ["--bound", "0"], ["--headroom", "-0.1"], ["--steps", "0"]])
def test_sizing_values_out_of_range_are_usage_errors(argv: list[str], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.cli import build_parser
    from harness.sizing.cli import build_parser as sizing_parser

    monkeypatch.chdir(tmp_path)
    for parser, command in ((build_parser(), "size"), (sizing_parser(), "run")):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([command, *argv])
        assert exc.value.code == 2, command


def test_a_target_stretches_the_plan_to_what_a_recommendation_must_sustain(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.sizing.cli import build_parser, plan_run
    from harness.sizing.plan import OFFER_MARGIN

    monkeypatch.chdir(tmp_path)
    ns = build_parser().parse_args(["run", "--quick", "--target-rate", "5000"])
    planned = plan_run(ns)
    assert planned.need == pytest.approx(5000 * (1 + sizing.HEADROOM))
    assert planned.plan.offered()[-1] >= OFFER_MARGIN * planned.need  # 7,800 msg/s: beyond the quick plan's 4,000
    kept = plan_run(build_parser().parse_args(["run", "--quick", "--target-rate", "5000", "--steps", "3"]))
    assert kept.plan.steps == 3  # a --steps given is the plan's length
    raised = plan_run(build_parser().parse_args(["run", "--quick", "--steps", "3", "--max-rate", "2000"]))
    assert raised.plan.offered()[-1] >= 2000
    assert plan_run(build_parser().parse_args(["run", "--quick", "--max-rate", "100"])).plan.steps == 20  # never lowered


@pytest.mark.parametrize("argv", [["--load-processes", "0"], ["--remote-workers", "2"]])
def test_load_options_that_do_not_go_together_are_usage_errors(argv: list[str], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from harness.exits import USAGE
    from harness.sizing.cli import build_parser

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert sizing.main(build_parser().parse_args(["run", "--quick", *argv])) == USAGE
    assert "error: --" in capsys.readouterr().err
    assert not list(tmp_path.glob("reports/sizing-*"))  # refused before anything ran or was written
