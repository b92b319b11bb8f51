"""``outbox-harness soak``: a short soak with faults ends with every verdict decided and a report that ``check``
judges again the same; bad arguments are refused before anything starts; the progress figures come from the
history files; a SIGTERM stops every process and leaves a report marked interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness import exits
from harness.history import HistoryWriter, OutOfOrder, merge, read_events, write_merged
from harness.runner import RUNNER_HISTORY
from harness.scenarios.mixed import MIXED_NEMESIS
from harness.soak import CYCLE_S, FAULT_FREE, Tally, soak_scenario

ROOT = Path(__file__).resolve().parent.parent


def soak(tmp: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``outbox-harness soak ARGS`` with its own TMPDIR, so a server left behind would show there."""
    env = {**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, "PYTHONPATH": str(ROOT),
           "TMPDIR": str(tmp)}
    return subprocess.run([sys.executable, "-m", "harness.cli", "soak", "--reports-dir", str(tmp / "reports"),
                           *args], capture_output=True, text=True, timeout=timeout, check=False, env=env, cwd=tmp)


def left_behind(tmp: Path) -> list[Path]:
    """What the embedded server, Toxiproxy and the soak's work directory leave in TMPDIR when not cleaned up."""
    return [p for kind in ("pg", "toxiproxy", "soak") for p in tmp.glob(f"outbox-harness-{kind}-*")]


def running_workers(history: Path) -> list[int]:
    """Pids of the worker processes the history says were spawned that still run."""
    alive = []
    for e in read_events(history, f="worker"):
        if e.value.get("event") == "spawned":
            try:
                os.kill(int(e.value["pid"]), 0)
            except ProcessLookupError:
                continue
            alive.append(int(e.value["pid"]))
    return alive


def test_a_short_soak_with_faults_decides_every_verdict_and_rechecks(workspace: Path) -> None:
    done = soak(workspace, "--duration", "20s", "--rate", "30", "--seed", "11")
    out = done.stdout + done.stderr
    assert done.returncode == exits.OK, out[-4000:]
    assert "committed" in out and "lag" in out and "duplicates" in out, "no progress line"
    run_dir = workspace / "reports" / "latest"
    doc = json.loads((run_dir / "results.json").read_text())
    (scenario,) = doc["scenarios"]
    assert {v["status"] for v in scenario["verdicts"]} == {"pass"}, scenario["verdicts"]
    assert [v["guarantee"] for v in scenario["verdicts"]] == MIXED_NEMESIS.guarantees
    figures = doc["meta"]["soak"]
    assert figures["faults_applied"] == len(MIXED_NEMESIS.faults) and figures["fault_rounds"] == 1
    assert figures["committed"] > 0 and figures["delivered"] == figures["committed"]
    assert all(figures["harness_rss_mb"][k] > 0 for k in ("start", "peak", "end")), figures
    assert figures["judge_s"] >= 0 and figures["events"] > figures["committed"]
    assert not left_behind(workspace), "a server or the soak's work directory was left behind"
    assert not running_workers(run_dir / scenario["history"]), "a worker still runs"
    check = subprocess.run([sys.executable, "-m", "harness.cli", "check", str(run_dir)], capture_output=True,
                           text=True, timeout=60, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert check.returncode == exits.OK, check.stdout + check.stderr
    assert "verdicts as stored" in check.stdout


def test_sigterm_stops_a_soak_and_marks_its_report_interrupted(workspace: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, "PYTHONPATH": str(ROOT),
           "TMPDIR": str(workspace), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "soak", "--duration", "1h", "--rate", "20",
                             "--faults", "none", "--reports-dir", str(workspace / "reports")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=workspace, start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "committed" in line:  # the first progress line: the run is under way
                break
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == exits.INTERRUPTED
    doc = json.loads((workspace / "reports" / "latest" / "results.json").read_text())
    assert doc["status"] == "interrupted" and doc["interrupted"]["signal"] == "SIGTERM"
    assert doc["interrupted"]["scenario"] == "soak" and doc["meta"]["soak"]["committed"] > 0
    assert not left_behind(workspace), "a server or the soak's work directory was left behind"


BAD = [("--duration", "10"), ("--duration", "0s"), ("--duration", "-5m"), ("--duration", "1h30m"),
       ("--duration", "infs"), ("--rate", "0"), ("--rate", "-3"), ("--rate", "nan"), ("--rate", "inf"),
       ("--rate", "fast")]


@pytest.mark.parametrize(("option", "value"), BAD, ids=[" ".join(b) for b in BAD])
def test_a_bad_duration_or_rate_is_refused_by_the_parser(option: str, value: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import build_parser

    args = {"--duration": "10m", "--rate": "50", option: value}
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["soak", *(f"{k}={v}" for k, v in args.items())])
    assert info.value.code == exits.USAGE
    error = capsys.readouterr().err.splitlines()[-1]
    assert f"argument {option}" in error and repr(value) in error, error
    assert ("e.g. 90s, 10m, 1h" if option == "--duration" else "number") in error, error


@pytest.mark.parametrize("args", [["--duration", "5s", "--rate", "10"],
                                  ["--duration", "1m", "--rate", "10", "--impl", "reference", "--impl", "reference"]],
                         ids=["shorter than a fault round", "two impls"])
def test_a_soak_that_cannot_be_run_is_refused_before_anything_starts(tmp_path: Path, args: list[str]) -> None:
    done = soak(tmp_path, *args, timeout=60)
    assert done.returncode == exits.USAGE, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("outbox-harness soak: error: ") and ("--faults none" in line or "--impl once" in line)
    assert done.stdout == "" and not left_behind(tmp_path), "something started for a soak that cannot run"


def test_the_fault_rounds_repeat_within_the_duration() -> None:
    s = soak_scenario(95.0, 40.0, "mixed")
    span = max(f.at + f.hold for f in MIXED_NEMESIS.faults)
    assert len(s.faults) == 3 * len(MIXED_NEMESIS.faults)  # rounds at 0, 30 and 60 s; one at 90 s would end past 95 s
    assert [f.at for f in s.faults[len(MIXED_NEMESIS.faults):2 * len(MIXED_NEMESIS.faults)]] == \
        [f.at + CYCLE_S for f in MIXED_NEMESIS.faults]
    assert max(f.at + f.hold for f in s.faults) <= 95.0 and span < CYCLE_S
    assert s.workload.messages == 3800 and s.workload.rate == 40.0 and s.guarantees == MIXED_NEMESIS.guarantees
    calm = soak_scenario(95.0, 40.0, "none")
    assert calm.faults == [] and calm.guarantees == [g for g in MIXED_NEMESIS.guarantees if g in FAULT_FREE]
    assert not calm.needs_proxy and not calm.controls_server


def test_progress_figures_are_read_from_the_histories_as_they_grow(tmp_path: Path) -> None:
    runner = HistoryWriter(tmp_path / RUNNER_HISTORY, "runner")
    w1 = HistoryWriter(tmp_path / "worker-w1-1.jsonl", "w1#1")
    runner.record("ok", "publish", mids=["m1", "m2", "m3", "m4"])
    runner.record("fail", "publish", mids=["m5", "m6"], rollback=True)
    runner.record("info", "worker", event="spawned", process="w1#1", pid=os.getpid())
    for mid in ("m1", "m2"):
        w1.record("invoke", "deliver", mid=mid)
        w1.record("ok", "deliver", mid=mid)
    tally = Tally(tmp_path)
    tally.read()
    tally.sample_memory()
    assert (tally.committed, tally.delivered, tally.duplicates) == (4, 2, 0)
    assert "lag 2" in tally.line() and tally.workers_rss_mb.end and tally.harness_rss_mb.end
    w2 = HistoryWriter(tmp_path / "worker-w2-1.jsonl", "w2#1")  # an incarnation that appears mid-run
    w2.record("ok", "deliver", mid="m1")  # a duplicate
    w2.record("ok", "deliver", mid="m4")
    runner.record("info", "worker", event="died", process="w1#1", code=-9)
    tally.read()
    assert (tally.committed, tally.delivered, tally.duplicates) == (4, 3, 1)
    tally.sample_memory()
    assert tally.workers_rss_mb.end == tally.workers_rss_mb.start, "a dead worker's pid is still sampled"


def test_histories_are_merged_in_time_order_as_streams(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    lines = {a: [(1.0, "x"), (0.9995, "thread"), (3.0, "y")], b: [(2.0, "z"), (4.0, "w")]}
    for path, events in lines.items():
        path.write_text("".join(json.dumps({"t": t, "wall": t, "process": path.stem, "type": "info", "f": f,
                                            "value": {}}) + "\n" for t, f in events))
    merged = merge([a, b, tmp_path / "missing.jsonl"])
    assert not isinstance(merged, list), "the merge holds the whole history"
    assert [e.f for e in merged] == ["thread", "x", "z", "y", "w"]



def test_a_file_out_of_order_beyond_the_window_is_still_merged_in_time_order(tmp_path: Path) -> None:
    """A thread that stalled for seconds between taking its timestamp and writing its line: the stream cannot mend
    that, says so, and the record is sorted in memory instead of being written out of order."""
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    lines = {a: [(1.0, "x"), (5.0, "y"), (6.5, "z"), (2.0, "stalled")], b: [(3.0, "w")]}
    for path, events in lines.items():
        path.write_text("".join(json.dumps({"t": t, "wall": t, "process": path.stem, "type": "info", "f": f,
                                            "value": {}}) + "\n" for t, f in events))
    with pytest.raises(OutOfOrder):
        list(merge([a, b]))
    out = tmp_path / "history.jsonl"
    write_merged([a, b], out)
    assert [e.f for e in read_events(out)] == ["x", "stalled", "w", "y", "z"]
