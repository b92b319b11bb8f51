"""The checkers' one-pass index: a saved history streamed from its file judges as the events do."""

from __future__ import annotations

import random
from pathlib import Path

from harness.analysis import judge, recheck
from harness.checkers import History
from harness.checkers._index import Delivery, index_deliveries
from harness.history import Event, read_events, write_history
from tests.checker_histories import H, ctx


def recorded(lose: bool = False) -> list[Event]:
    """A run header and a history with a kill, a reclaim, a poison message and a stale ack."""
    h = (H().publish(0.0, "m1", "m2", "m3").publish(0.2, "p1", poison=("p1",))
         .deliver(0.5, "m1", "w1", took=None).kill(1.0, "w1").deliver(3.6, "m1", "w2")
         .deliver(0.6, "m2", "w2", took=4.0, settle="lease_lost", settle_type="fail", echo=True)
         .deliver(3.7, "m2", "w3", echo=True)
         .deliver(0.7, "p1", "w3", end="fail", settle="dead_lettered").final(dead=["p1"]))
    if not lose:
        h.deliver(0.8, "m3", "w1")
    header = Event(-1.0, 0.0, "runner", "info", "run", {
        "scenario": {"name": "tiny", "guarantees": ["D1", "D2", "P1", "D3", "D5", "D6", "R3"]}, "impl": "reference",
        "context": ctx().to_dict(), "notes": "", "seed": 7})
    return [header, *h.build()]


def described(d: Delivery) -> tuple[object, ...]:
    marks = tuple((m.t, m.type, m.outcome) if m is not None else None for m in (d.end, d.settle))
    return (d.i, d.mid, d.process, d.t, d.lease_at, d.claim_t, d.published, d.count, d.cut_at, d.ambiguous, marks)


def test_a_streamed_history_judges_as_its_events(tmp_path: Path) -> None:
    for lose in (False, True):
        events = recorded(lose)
        write_history(events, tmp_path / "h.jsonl")
        streamed = History.read(tmp_path / "h.jsonl")
        assert streamed.ordered and streamed.size == len(events)
        assert judge(streamed) == judge(events)
        assert [described(d) for d in index_deliveries(streamed)] == [described(d) for d in index_deliveries(events)]
    assert any(v.status == "fail" and "evidence" in v.figures for v in judge(streamed)[0])  # read again to quote


def test_a_file_out_of_order_is_sorted_before_it_is_indexed(tmp_path: Path) -> None:
    events = recorded(lose=True)
    shuffled = events[:]
    random.Random(3).shuffle(shuffled)
    write_history(shuffled, tmp_path / "h.jsonl")
    assert not History.of(shuffled).ordered
    assert History.read(tmp_path / "h.jsonl").ordered
    assert recheck(tmp_path / "h.jsonl").verdicts == judge(events)[0]


def test_a_torn_line_spoils_no_other(tmp_path: Path) -> None:
    events = recorded()
    path = tmp_path / "h.jsonl"
    write_history(events, path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:5]) + lines[5][:20] + "\n" + "".join(lines[5:]) + lines[-1][:30])
    assert list(read_events(path)) == events
