"""Checkers against hand-made histories: a valid one passes, each broken one fails, thin ones stay unknown."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.checkers import (
    REGISTRY,
    CheckContext,
    check_budget,
    check_dlq,
    check_drain,
    check_lease,
    check_reclaim,
    check_stale_ack,
    check_total_queue,
    check_wakeup,
    check_warnings,
    checker,
    checkers_for,
    run_checkers,
)
from harness.checkers.context import Registered
from harness.guarantees import BY_ID
from harness.adapter import Timings
from harness.checkers._index import index_deliveries, parse_lease_at
from harness.history import EventType
from harness.verdict import Verdict
from tests.checker_histories import DB_EPOCH, H, ctx, retry


def by_id(verdicts: list[Verdict]) -> dict[str, Verdict]:
    return {v.guarantee: v for v in verdicts}


def status(verdicts: list[Verdict], guarantee: str) -> str:
    return by_id(verdicts)[guarantee].status


# --- shared index ---------------------------------------------------------------------------------------------

def test_parse_lease_at_accepts_iso_and_epoch() -> None:
    iso = datetime.fromtimestamp(DB_EPOCH, UTC).isoformat()
    assert parse_lease_at(iso) == parse_lease_at(DB_EPOCH) == DB_EPOCH
    assert parse_lease_at(iso.replace("+00:00", "")) == DB_EPOCH  # naive means UTC
    assert parse_lease_at(None) is None and parse_lease_at("not a time") is None


def test_completions_match_the_call_they_echo() -> None:
    h = (H().publish(0, "m1")
         .deliver(1.0, "m1", "w1", took=4.0, settle="lease_lost", settle_type="fail", echo=True)
         .deliver(4.5, "m1", "w1", took=0.1, echo=True))
    slow, fresh = index_deliveries(h.build())
    assert slow.outcome == "lease_lost" and fresh.outcome == "acked"
    assert slow.end is not None and slow.end.t == 5.0


def test_a_kill_cuts_unfinished_calls() -> None:
    h = H().publish(0, "m1").deliver(1.0, "m1", "w1", took=None).kill(2.0, "w1").deliver(6.0, "m1", "w1")
    first, second = index_deliveries(h.build())
    assert first.cut_at == 2.0 and first.end is None
    assert second.end is not None and second.outcome == "acked"


# --- total queue: D1, D2, P1 ----------------------------------------------------------------------------------

def valid_queue() -> H:
    return (H().publish(0, "m1", "m2").publish(0.5, "r1", outcome="fail")
            .deliver(1, "m1").deliver(1.2, "m2"))


def test_total_queue_passes_a_valid_history() -> None:
    v = by_id(check_total_queue(valid_queue().build(), ctx()))
    assert [v[g].status for g in ("D1", "D2", "P1")] == ["pass", "pass", "pass"]
    assert v["D1"].figures["committed"] == 2


def test_duplicates_alone_do_not_fail_total_queue() -> None:
    h = valid_queue().deliver(5, "m1", "w2").deliver(6, "m1", "w3")
    v = by_id(check_total_queue(h.build(), ctx()))
    assert v["D1"].status == "pass" and v["D2"].status == "pass"
    assert v["D1"].figures["duplicates"] == 2 and v["D1"].figures["duplicated_examples"] == ["m1"]


@given(st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=20))
def test_any_number_of_duplicates_passes_d1(copies: list[int]) -> None:
    h = H().publish(0, *[f"m{i}" for i in range(len(copies))])
    for i, n in enumerate(copies):
        for k in range(n):
            h.deliver(1 + i + k * 0.01, f"m{i}", f"w{k}")
    v = by_id(check_total_queue(h.build(), ctx()))
    assert v["D1"].status == "pass" and v["D1"].figures["duplicates"] == sum(copies) - len(copies)


def test_lost_message_fails_d1() -> None:
    h = valid_queue().publish(2, "m3")
    v = by_id(check_total_queue(h.build(), ctx()))
    assert v["D1"].status == "fail" and v["D1"].figures["lost_examples"] == ["m3"]


def test_lost_candidate_while_undrained_is_unknown() -> None:
    h = valid_queue().publish(2, "m3")
    assert status(check_total_queue(h.final(pending=["m3"], drained=False).build(), ctx()), "D1") == "unknown"


def test_no_committed_message_is_unknown() -> None:
    v = by_id(check_total_queue(H().publish(0, "r1", outcome="fail").build(), ctx()))
    assert v["D1"].status == "unknown" and v["D2"].status == "unknown"


def test_dead_lettered_poison_is_not_lost() -> None:
    h = valid_queue().publish(2, "p1", poison=("p1",)).deliver(3, "p1", end="fail", settle="dead_lettered")
    assert status(check_total_queue(h.final(dead=["p1"]).build(), ctx()), "D1") == "pass"


def test_uncertain_publish_is_reported_never_failed() -> None:
    h = valid_queue().publish(2, "u1", outcome="info").publish(2.5, "u2", outcome="info").deliver(3, "u2")
    v = by_id(check_total_queue(h.build(), ctx()))
    assert v["D1"].status == "pass" and v["D2"].status == "pass"
    assert (v["D1"].figures["uncertain_recovered"], v["D1"].figures["uncertain_not_seen"]) == (1, 1)


def test_resolved_uncertain_publishes_count_as_committed_or_rolled_back() -> None:
    h = (valid_queue().publish(2, "u1", outcome="info").publish(2.5, "u2", outcome="info")
         .add(9, "runner", "info", "resolve", committed=["u1"], absent=["u2"]))
    v = by_id(check_total_queue(h.build(), ctx()))
    assert v["D1"].status == "fail" and v["D1"].figures["lost_examples"] == ["u1"]
    assert v["P1"].figures["rolled_back"] == 2 and v["D1"].figures["uncertain_publishes"] == 0


def test_phantom_after_rollback_fails_p1_and_d2() -> None:
    h = valid_queue().deliver(3, "r1")
    v = by_id(check_total_queue(h.build(), ctx()))
    assert v["P1"].status == "fail" and v["D2"].status == "fail"
    assert v["D2"].figures["phantom_examples"] == ["r1"]


def test_rolled_back_row_left_in_the_outbox_fails_p1() -> None:
    assert status(check_total_queue(valid_queue().final(pending=["r1"]).build(), ctx()), "P1") == "fail"


def test_corrupted_payload_fails_d2() -> None:
    h = valid_queue().deliver(3, "m2", "w2", intact=False).deliver(3.5, None, "w2")
    v = by_id(check_total_queue(h.build(), ctx()))
    assert v["D2"].status == "fail" and v["D2"].figures["corrupt"] == 2


def test_without_rollback_p1_is_unknown() -> None:
    h = H().publish(0, "m1").deliver(1, "m1")
    assert status(check_total_queue(h.build(), ctx()), "P1") == "unknown"


# --- lease: D3, D4 ----------------------------------------------------------------------------------------------

def reclaimed(gap: float, thief: str = "w2") -> H:
    return H().publish(0, "m1").deliver(1, "m1", "w1", took=None).kill(1.5, "w1").deliver(1 + gap, "m1", thief)


def test_lease_passes_a_reclaim_after_the_ttl() -> None:
    v = by_id(check_lease(reclaimed(3.2).build(), ctx()))
    assert v["D3"].status == "pass" and v["D3"].figures["redeliveries"] == 1
    assert v["D4"].status == "not_applicable"


def test_lease_without_redelivery_passes_but_says_so() -> None:
    v = by_id(check_lease(H().publish(0, "m1").deliver(1, "m1").build(), ctx()))
    assert v["D3"].status == "pass" and "no redelivery" in v["D3"].summary


def test_lease_with_no_delivery_is_unknown() -> None:
    assert status(check_lease(H().publish(0, "m1").build(), ctx()), "D3") == "unknown"


def test_stolen_live_lease_fails_d3() -> None:
    h = H().publish(0, "m1").deliver(1, "m1", "w1", took=5).deliver(2, "m1", "w2")
    v = by_id(check_lease(h.build(), ctx()))
    assert v["D3"].status == "fail"
    assert v["D3"].figures["examples"][0] == {"mid": "m1", "holder": "w1", "thief": "w2", "gap_s": 1.0,
                                              "evidence": "database-clock lease times"}


def test_failed_handler_releases_the_row_early() -> None:
    h = H().publish(0, "m1").deliver(1, "m1", "w1", end="fail", settle="retry").deliver(2.2, "m1", "w2")
    assert status(check_lease(h.build(), ctx()), "D3") == "pass"


def test_claim_before_the_failed_handler_ended_fails_d3() -> None:
    h = H().publish(0, "m1").deliver(1, "m1", "w1", took=2, end="fail", settle="retry").deliver(2, "m1", "w2")
    assert status(check_lease(h.build(), ctx()), "D3") == "fail"


def test_iso_lease_times_are_understood() -> None:
    iso = datetime.fromtimestamp(DB_EPOCH + 1, UTC).isoformat()
    late = datetime.fromtimestamp(DB_EPOCH + 4.5, UTC).isoformat()
    h = (H().publish(0, "m1").deliver(1, "m1", "w1", took=None, lease_at=iso).kill(1.5, "w1")
         .deliver(2, "m1", "w2", lease_at=late))  # monotonic gap 1 s, database gap 3.5 s
    assert status(check_lease(h.build(), ctx()), "D3") == "pass"


def test_stolen_lease_by_skewed_worker_fails_d4() -> None:
    h = H().publish(0, "m1", "m2").deliver(1, "m1", "w1", took=5).deliver(2, "m1", "w2").deliver(3, "m2", "w1")
    v = by_id(check_lease(h.worker(0.5, "w2", "spawned", clock_offset="+10s").build(), ctx()))
    assert v["D3"].status == "fail" and v["D4"].status == "fail"
    assert v["D4"].figures["stolen_with_skewed"] == 1


def test_skewed_worker_that_steals_nothing_passes_d4() -> None:
    v = by_id(check_lease(reclaimed(3.2, thief="w9").worker(0.5, "w9", "spawned", clock_offset="+10s").build(), ctx()))
    assert v["D4"].status == "pass" and v["D4"].figures["skewed_deliveries"] == 1


def test_skewed_worker_that_delivered_nothing_is_unknown() -> None:
    assert status(check_lease(reclaimed(3.2).worker(0.5, "w9", "spawned", clock_offset="-10s").build(), ctx()), "D4") == "unknown"


def test_lease_falls_back_to_the_monotonic_clock_leniently() -> None:
    lenient = check_lease(reclaimed(2.0).build(), ctx(caps={"lease_times": False}))
    assert status(lenient, "D3") == "pass" and "monotonic" in by_id(lenient)["D3"].summary
    assert status(check_lease(reclaimed(1.0).build(), ctx(caps={"lease_times": False})), "D3") == "fail"


NO_LEASE_TIMES = {"lease_times": False}
LOCKS: dict[str, Any] = {"caps": {"lease_ttl": False}, "timings": Timings()}  # row locks: no lease, no reclaim time
PREFETCH = {"lease_times": False, "prefetch": True}


def test_a_prefetched_row_that_only_looks_reclaimed_early_is_unknown() -> None:
    """Handler starts 0.5 s apart, but A's row may have sat in a prefetch buffer since its publish at 0."""
    h = H().publish(0, "m1").deliver(4, "m1", "w1", took=None, lease_at=None).kill(4.2, "w1")
    h.deliver(4.5, "m1", "w2", lease_at=None)
    v = by_id(check_lease(h.build(), ctx(caps=PREFETCH)))["D3"]
    assert v.status == "unknown" and v.figures["undecided"] == 1 and "prefetch" in v.summary
    assert status(check_lease(h.build(), ctx(caps=NO_LEASE_TIMES)), "D3") == "fail"  # handed straight to handlers


def test_a_prefetched_reclaim_within_the_lease_of_any_possible_claim_fails() -> None:
    """B started 2 s after the publish: whenever A's lease began, it was still live (TTL 3 s)."""
    h = H().publish(0, "m1").deliver(1, "m1", "w1", took=None, lease_at=None).kill(1.2, "w1")
    h.deliver(2, "m1", "w2", lease_at=None)
    assert status(check_lease(h.build(), ctx(caps=PREFETCH)), "D3") == "fail"


def test_reported_claims_decide_where_handler_starts_cannot() -> None:
    buffered = (H().publish(0, "m1").claim(1.0, "w1", "m1").deliver(3.0, "m1", "w1", took=None, lease_at=None)
                .kill(3.5, "w1").claim(4.1, "w2", "m1").deliver(4.2, "m1", "w2", lease_at=None))
    assert status(check_lease(buffered.build(), ctx(caps=PREFETCH)), "D3") == "pass"
    stolen = (H().publish(0, "m1").claim(1.0, "w1", "m1").deliver(3.0, "m1", "w1", took=None, lease_at=None)
              .claim(1.2, "w2", "m1").deliver(3.1, "m1", "w2", lease_at=None))
    v = by_id(check_lease(stolen.build(), ctx(caps=PREFETCH)))["D3"]
    assert v.status == "fail" and v.figures["examples"][0]["evidence"] == "claim / claim"


def test_a_verdict_says_which_clock_it_rests_on() -> None:
    """Claims, handler starts or the database clock: the summary names the evidence a timing verdict used."""
    claims = (H().publish(0, "m1").claim(1.0, "w1", "m1").deliver(3.0, "m1", "w1", took=None, lease_at=None)
              .kill(3.5, "w1").claim(4.1, "w2", "m1").deliver(4.2, "m1", "w2", lease_at=None))
    starts = (H().publish(0, "m1").deliver(1.0, "m1", "w1", took=None, lease_at=None).kill(1.5, "w1")
              .deliver(4.2, "m1", "w2", lease_at=None))
    db = H().publish(0, "m1").deliver(1.0, "m1", "w1", took=None).kill(1.5, "w1").deliver(4.2, "m1", "w2")
    summaries = [by_id(check_lease(h.build(), c))["D3"].summary
                 for h, c in ((claims, ctx(caps=PREFETCH)), (starts, ctx(caps=PREFETCH)), (db, ctx()))]
    assert "dated by the claims the implementation reported" in summaries[0]
    assert "judged on handler starts" in summaries[1]
    assert "DB-clock" not in summaries[2]


def test_a_claim_that_reports_the_database_lease_time_is_judged_by_it() -> None:
    h = (H().publish(0, "m1").claim(1.0, "w1", "m1", lease_at=DB_EPOCH + 1.0)
         .deliver(3.0, "m1", "w1", took=None, lease_at=None).kill(3.5, "w1")
         .claim(4.5, "w2", "m1", lease_at=DB_EPOCH + 4.5).deliver(4.6, "m1", "w2", lease_at=None))
    v = by_id(check_lease(h.build(), ctx()))["D3"]
    assert v.status == "pass" and "monotonic" not in v.summary


def test_overlapping_locks_across_a_network_fault_are_undecided() -> None:
    """A lock-based implementation loses its row lock when the fault ends its backend: not a definite steal."""
    h = (H().publish(0, "m1").deliver(1, "m1", "w1", took=3, settle=None).window(1.5, 2.5, "partition")
         .deliver(2.8, "m1", "w2"))
    assert status(check_lease(h.build(), ctx(**LOCKS)), "D3") == "unknown"


def test_without_leases_calls_of_one_row_must_not_overlap() -> None:
    overlap = H().publish(0, "m1").deliver(1, "m1", "w1", took=0.5, settle=None).deliver(1.3, "m1", "w2")
    after = H().publish(0, "m1").deliver(1, "m1", "w1", took=0.5, settle=None).deliver(1.6, "m1", "w2")
    assert status(check_lease(overlap.build(), ctx(**LOCKS)), "D3") == "fail"
    assert status(check_lease(after.build(), ctx(**LOCKS)), "D3") == "pass"


# --- reclaim: D5 ------------------------------------------------------------------------------------------------

def test_reclaim_within_bounds_passes() -> None:
    v = check_reclaim(reclaimed(3.5).build(), ctx())[0]
    assert v.status == "pass" and v.figures["delay_min_s"] == 3.5 and v.figures["bounds_s"] == [2.999, 5.5]


def test_too_early_reclaim_fails() -> None:
    v = check_reclaim(reclaimed(2.0).build(), ctx())[0]
    assert v.status == "fail" and v.figures["too_early"] == 1


def test_too_late_reclaim_fails() -> None:
    v = check_reclaim(reclaimed(9.0).build(), ctx())[0]
    assert v.status == "fail" and v.figures["too_late"] == 1


def test_reclaim_by_the_restarted_worker_of_the_same_name_counts() -> None:
    h = (H().publish(0, "m1").deliver(1, "m1", "w1", took=None).kill(1.5, "w1").worker(2, "w1", "started")
         .deliver(4.2, "m1", "w1"))
    assert check_reclaim(h.build(), ctx())[0].status == "pass"


def test_reclaim_when_the_supervisor_saw_the_death_before_the_kill_ok() -> None:
    h = (H().publish(0, "m1").deliver(1, "m1", "w1#1", took=None).worker(1.45, "w1#1", "died")
         .kill(1.5, "w1#1").deliver(4.2, "m1", "w2#1"))
    assert check_reclaim(h.build(), ctx())[0].status == "pass"


def test_kill_that_caught_nothing_in_flight_is_unknown() -> None:
    h = H().publish(0, "m1").deliver(1, "m1", "w1").kill(2, "w1")
    v = check_reclaim(h.build(), ctx())[0]
    assert v.status == "unknown" and "never caught" in v.summary


def test_killed_delivery_never_redelivered_fails_when_drained() -> None:
    h = H().publish(0, "m1").deliver(1, "m1", "w1", took=None).kill(1.5, "w1")
    assert check_reclaim(h.build(), ctx())[0].status == "fail"
    assert check_reclaim(h.final(pending=["m1"], drained=False).build(), ctx())[0].status == "unknown"


def test_prefetched_reclaims_are_dated_by_claims_or_left_undecided() -> None:
    """A row that waited in a prefetch buffer: handler starts 1 s apart (looks early), 9 s apart (looks late)."""
    early = (H().publish(0, "m1").deliver(4, "m1", "w1", took=None, lease_at=None).kill(4.2, "w1")
             .deliver(5, "m1", "w2", lease_at=None))
    late = (H().publish(0, "m1").deliver(1, "m1", "w1", took=None, lease_at=None).kill(1.2, "w1")
            .deliver(10, "m1", "w2", lease_at=None))
    for h in (early, late):
        v = check_reclaim(h.build(), ctx(caps=PREFETCH))[0]
        assert v.status == "unknown" and v.figures["undated"] == 1, v
        assert check_reclaim(h.build(), ctx(caps=NO_LEASE_TIMES))[0].status == "fail"
    dated = (H().publish(0, "m1").claim(1, "w1", "m1").deliver(1.5, "m1", "w1", took=None, lease_at=None)
             .kill(1.8, "w1").claim(4.5, "w2", "m1").deliver(10, "m1", "w2", lease_at=None))
    assert check_reclaim(dated.build(), ctx(caps=PREFETCH))[0].status == "pass"


def test_reclaim_not_applicable_without_a_reclaim_time() -> None:
    no_reclaim = ctx(caps={"lease_ttl": False}, timings=Timings())
    assert check_reclaim(reclaimed(3.5).build(), no_reclaim)[0].status == "not_applicable"


def test_reclaim_is_judged_against_a_declared_reclaim_time_and_window() -> None:
    """No lease TTL, but a sweeper that requeues a dead worker's rows 60 s after, within a 10 s tick."""
    sweep = ctx(caps={"lease_ttl": False}, timings=Timings(reclaim_seconds=60, reclaim_window_seconds=10))
    assert check_reclaim(reclaimed(65).build(), sweep)[0].status == "pass"
    assert check_reclaim(reclaimed(30).build(), sweep)[0].status == "fail"
    assert check_reclaim(reclaimed(80).build(), sweep)[0].status == "fail"


# --- stale ack: D6 ----------------------------------------------------------------------------------------------

def slow_then_reclaimed(stale_outcome: str, stale_type: EventType = "fail", holder: str = "w2") -> H:
    return (H().publish(0, "m1")
            .deliver(1, "m1", "w1", took=4.0, settle=stale_outcome, settle_type=stale_type, echo=True)
            .deliver(4.5, "m1", holder, took=0.1, echo=True))


def test_stale_ack_reported_as_lease_lost_passes() -> None:
    v = check_stale_ack(slow_then_reclaimed("lease_lost").build(), ctx())[0]
    assert v.status == "pass" and v.figures["lease_lost"] == 1 and v.figures["overlapping_calls"] == 1


def test_stale_ack_in_the_same_process_is_told_apart() -> None:
    assert check_stale_ack(slow_then_reclaimed("lease_lost", holder="w1").build(), ctx())[0].status == "pass"


def test_same_process_overlap_without_echo_is_not_blamed() -> None:
    h = (H().publish(0, "m1").deliver(1, "m1", "w1", took=4.0, settle="lease_lost", settle_type="fail")
         .deliver(4.5, "m1", "w1", took=0.1))  # the fast call's ok and ack come first: FIFO would swap them
    v = check_stale_ack(h.build(), ctx())[0]
    assert v.status == "unknown" and v.figures["unattributed_overlaps"] == 1


def test_ack_after_a_later_claim_fails() -> None:
    v = check_stale_ack(slow_then_reclaimed("acked", "ok").build(), ctx())[0]
    assert v.status == "fail" and v.figures["stale_removals"] == 1 and v.figures["removed_twice"] == 1


def test_double_removal_fails() -> None:
    h = H().publish(0, "m1").deliver(1, "m1", "w1").settle(1.5, "m1", "w1", "acked")
    v = check_stale_ack(h.build(), ctx())[0]
    assert v.status == "fail" and v.figures["removed_twice_examples"] == ["m1"]


def test_no_overlap_means_no_stale_ack_to_judge() -> None:
    v = check_stale_ack(reclaimed(3.5).build(), ctx())[0]
    assert v.status == "unknown" and "no stale ack" in v.summary


def test_without_settle_outcomes_and_without_a_failure_beside_a_zombie_d6_is_unknown() -> None:
    h = slow_then_reclaimed("lease_lost").build()
    v = check_stale_ack(h, ctx(caps={"settle_outcomes": False}))[0]
    assert v.status == "unknown" and "black-box" in v.summary


def zombie_completion(*, retried: bool) -> H:
    """w1's lease lapses while its handler runs on (1 to 6 s); w2 claims the row at 4.5 and its call fails (a
    scripted second delivery) with retries left. Only if the row is still there does a third call come."""
    h = (H().publish(0, "m1").deliver(1, "m1", "w1", took=5, settle=None)
         .deliver(4.5, "m1", "w2", took=0.3, end="fail", settle=None))
    return h.deliver(9, "m1", "w3", settle=None) if retried else h


def test_a_message_removed_by_a_lapsed_holder_fails_d6_black_box() -> None:
    caps = {"settle_outcomes": False}
    v = check_stale_ack(zombie_completion(retried=False).build(), ctx(caps=caps))[0]
    assert v.status == "fail" and v.figures["wrongly_removed_examples"][0]["lapsed_holder"] == "w1"
    v = check_stale_ack(zombie_completion(retried=True).build(), ctx(caps=caps))[0]
    assert v.status == "pass" and v.figures["failed_beside_a_lapsed_holder"] == 1
    kept = zombie_completion(retried=False).final(pending=["m1"], drained=False)
    assert check_stale_ack(kept.build(), ctx(caps=caps))[0].status == "pass"  # still there: the zombie removed nothing


# --- dlq: R1..R4 ------------------------------------------------------------------------------------------------

def poison(p: str = "p1", gaps: tuple[float, ...] = (1.0, 2.0), start: float = 1.0) -> H:
    """A poison message failing 1 + len(gaps) times, the last one terminal, and then in the DLQ."""
    h = H().publish(0, p, poison=(p,)).final(dead=[p])
    t = start
    for i in range(len(gaps) + 1):
        h.deliver(t, p, f"w{i}", took=0.05, end="fail", settle="retry" if i < len(gaps) else "dead_lettered")
        t += gaps[i] if i < len(gaps) else 0
    return h


def dlq_ctx(**overrides: Any) -> CheckContext:
    return ctx(**({"cfg": {"max_deliveries": 3}} | overrides))


def test_dlq_passes_a_valid_poison_history() -> None:
    v = by_id(check_dlq(poison().build(), dlq_ctx()))
    assert [v[g].status for g in ("R1", "R2", "R3", "R4")] == ["pass", "pass", "pass", "not_applicable"]
    assert v["R1"].figures["retry_gaps"] == 2 and v["R2"].figures["reached_cap"] == 1


def test_too_early_retry_fails_r1() -> None:
    v = by_id(check_dlq(poison(gaps=(1.0, 0.5)).build(), dlq_ctx()))
    assert v["R1"].status == "fail" and v["R1"].figures["too_early"] == 1
    assert v["R1"].figures["examples"][0]["failure"] == 2


def test_too_late_retry_fails_r1() -> None:
    v = by_id(check_dlq(poison(gaps=(1.0, 30.0)).build(), dlq_ctx()))
    assert v["R1"].status == "fail" and v["R1"].figures["too_late"] == 1


def test_a_late_looking_retry_of_a_prefetching_implementation_is_undecided() -> None:
    assert status(check_dlq(poison(gaps=(1.0, 30.0)).build(), dlq_ctx(caps=PREFETCH)), "R1") == "unknown"
    assert status(check_dlq(poison(gaps=(1.0, 30.0)).build(), dlq_ctx(caps=NO_LEASE_TIMES)), "R1") == "fail"


def test_r1_not_applicable_under_no_retry() -> None:
    assert status(check_dlq(poison().build(), dlq_ctx(cfg={"retry": retry(kind="none")})), "R1") == "not_applicable"


def test_over_cap_deliveries_fail_r2() -> None:
    v = by_id(check_dlq(poison(gaps=(1.0, 2.0, 4.0)).build(), dlq_ctx(cfg={"max_deliveries": 3,
                                                                          "retry": retry(max_attempts=5)})))
    assert v["R2"].status == "fail" and v["R2"].figures["examples"] == [{"mid": "p1", "deliveries": 4}]


def test_r2_not_applicable_without_a_cap() -> None:
    assert status(check_dlq(poison().build(), dlq_ctx(cfg={})), "R2") == "not_applicable"


def test_double_dlq_fails_r3() -> None:
    v = by_id(check_dlq(poison().final(dead=["p1", "p1"]).build(), dlq_ctx()))
    assert v["R3"].status == "fail" and v["R3"].figures["dead_lettered_twice"] == 1


def test_poison_in_both_tables_fails_r3() -> None:
    assert status(check_dlq(poison().final(pending=["p1"], dead=["p1"]).build(), dlq_ctx()), "R3") == "fail"


def test_poison_in_neither_table_fails_r3() -> None:
    v = by_id(check_dlq(poison().final(dead=[]).build(), dlq_ctx()))
    assert v["R3"].status == "fail" and v["R3"].figures["in_neither_table"] == 1


def test_poison_still_retrying_is_unknown_for_r3() -> None:
    v = check_dlq(poison().final(pending=["p1"], drained=False).build(), dlq_ctx())
    assert status(v, "R3") == "unknown"


def test_no_poison_leaves_dlq_unknown() -> None:
    v = by_id(check_dlq(H().publish(0, "m1").deliver(1, "m1").build(), ctx(cfg={"max_deliveries": 3})))
    assert [v[g].status for g in ("R1", "R2", "R3")] == ["unknown"] * 3


def drifted(nacked: float, written: float) -> H:
    """p1 goes terminal at its third failure while the DLQ write is broken (3.5 to 12): the move fails, the row is
    reclaimed after its lease and fails again, until after the heal it lands; counters as the worker reported."""
    h = (H().publish(0, "p1", poison=("p1",)).final(dead=["p1"]).deliver(1, "p1", "w0", end="fail", settle="retry")
         .deliver(2, "p1", "w0", end="fail", settle="retry"))
    for t in (4.0, 7.5, 11.0):
        h.deliver(t, "p1", "w0", end="fail", settle="error", settle_type="fail")
    h.deliver(14.5, "p1", "w0", end="fail", settle="dead_lettered").window(3.5, 12.0, "dlq_drift")
    h.metric(3.0, "w0", "nacked_terminal", 0).metric(3.0, "w0", "dlq_written", 0)
    return h.metric(11.5, "w0", "nacked_terminal", nacked).metric(11.5, "w0", "dlq_written", written)


def test_visible_divergence_passes_r4() -> None:
    v = by_id(check_dlq(drifted(3, 0).build(), dlq_ctx(cfg={})))
    assert v["R4"].status == "pass" and v["R1"].status == "pass"
    assert v["R4"].figures["windows"][0]["terminal_failures"] == 3


def test_invisible_divergence_fails_r4() -> None:
    v = by_id(check_dlq(drifted(3, 3).build(), dlq_ctx(cfg={})))
    assert v["R4"].status == "fail" and "not visible" in v["R4"].summary


def test_poison_not_dead_lettered_after_the_heal_fails_r4() -> None:
    v = by_id(check_dlq(drifted(3, 0).final(dead=[]).build(), dlq_ctx(cfg={})))
    assert v["R4"].status == "fail"


def test_drift_without_terminal_failure_is_unknown() -> None:
    h = poison().window(20.0, 25.0, "dlq_drift")
    assert status(check_dlq(h.build(), dlq_ctx(cfg={})), "R4") == "unknown"


# --- budget: L2, L3 ---------------------------------------------------------------------------------------------

def consumers() -> H:
    return H().publish(0, "m1").deliver(1, "m1", "w1").worker(0.5, "w2", "started")


def test_budget_within_limit_passes() -> None:
    v = by_id(check_budget(consumers().sample(1, w1=4, w2=5, publisher=9).build(), ctx()))
    assert v["L2"].status == "pass" and v["L2"].figures["peak_by_process"] == {"w1": 4, "w2": 5}
    assert v["L3"].status == "not_applicable"


def test_budget_samples_may_key_by_process_name() -> None:
    h = consumers().add(1, "runner", "info", "sample", backends={"w1": 7})
    assert status(check_budget(h.build(), ctx()), "L2") == "fail"


def test_budget_overrun_fails_l2() -> None:
    v = by_id(check_budget(consumers().sample(1, w1=3).sample(2, w1=6).build(), ctx()))
    assert v["L2"].status == "fail" and v["L2"].figures["examples"] == [{"process": "w1", "backends": 6}]


def test_budget_unknown_without_samples_and_na_without_budget() -> None:
    assert status(check_budget(consumers().build(), ctx()), "L2") == "unknown"
    assert status(check_budget(consumers().sample(1, w1=9).build(), ctx(connection_budget=None)), "L2") == \
        "not_applicable"


def exhausted(h: H) -> H:
    """The connection slots were filled by the hog from 0.2 s to 5 s."""
    return h.window(0.2, 5.0, "max_connections")


def test_exhaustion_reported_and_nothing_lost_passes_l3() -> None:
    h = consumers().log(0.8, "w1", "QueuePool limit of size 2 overflow 0 reached, connection timed out")
    assert status(check_budget(exhausted(h).build(), ctx()), "L3") == "pass"


def test_silent_exhaustion_is_unknown() -> None:
    v = by_id(check_budget(exhausted(consumers()).build(), ctx()))["L3"]
    assert v.status == "unknown" and "may not have bitten" in v.summary


def test_exhaustion_that_loses_a_message_fails_l3() -> None:
    h = consumers().publish(2, "m2").worker(3, "w3", "refused", message="FATAL: too many clients already")
    v = by_id(check_budget(exhausted(h).build(), ctx()))["L3"]
    assert v.status == "fail" and v.figures["clear_errors"] == 1


# --- drain: L1 --------------------------------------------------------------------------------------------------

def test_graceful_drain_passes() -> None:
    h = H().publish(0, "m1").deliver(10, "m1", "w1", took=2).sigterm(11, "w1").worker(12.5, "w1", "exited")
    v = check_drain(h.build(), ctx())[0]
    assert v.status == "pass" and v.figures["finished_in_time"] == 1


def test_drain_dates_the_stop_by_the_invoke_not_the_late_ok() -> None:
    h = (H().publish(0, "m1").deliver(10, "m1", "w1", took=2).sigterm(11, "w1", ok_at=12.6)
         .worker(12.5, "w1", "exited"))
    v = check_drain(h.build(), ctx())[0]
    assert v.status == "pass" and v.figures["in_flight"] == 1


def test_handler_started_after_sigterm_on_a_row_fetched_before_is_not_a_fetch() -> None:
    h = (H().publish(0, "m1", "m2").deliver(10, "m1", "w1").sigterm(11, "w1")
         .deliver(13, "m2", "w1", lease_at=DB_EPOCH + 10.5).worker(14, "w1", "exited"))
    v = check_drain(h.build(), ctx())[0]
    assert v.status == "pass" and v.figures["fetched_after_sigterm"] == 0 and v.figures["in_flight"] == 1


def test_claims_through_the_drain_fail_by_their_lease_times_within_the_slack() -> None:
    """A worker that keeps claiming after SIGTERM, every claim inside graceful_timeout (here no longer than the
    scheduling slack): the lease times date its claims after the signal, so it fails; a claim already in flight when
    the signal came (lease a few milliseconds after it) does not."""
    h = (H().publish(0, "m1", "m2", "m3").deliver(10, "m1", "w1").sigterm(11, "w1")
         .deliver(11.05, "m2", "w1", lease_at=DB_EPOCH + 11.01).deliver(12.2, "m3", "w1", lease_at=DB_EPOCH + 11.9)
         .worker(12.5, "w1", "exited"))
    v = check_drain(h.build(), ctx(cfg={"graceful_timeout": 1.5}))[0]
    assert v.status == "fail" and v.figures["fetched_after_sigterm"] == 1
    assert v.figures["examples"][0]["mid"] == "m3"
    in_flight = (H().publish(0, "m1", "m2").deliver(10, "m1", "w1").sigterm(11, "w1")
                 .deliver(11.05, "m2", "w1", lease_at=DB_EPOCH + 11.01).worker(12.5, "w1", "exited"))
    assert check_drain(in_flight.build(), ctx(cfg={"graceful_timeout": 1.5}))[0].status == "pass"


def test_drain_with_nothing_in_flight_passes_and_says_so() -> None:
    h = H().publish(0, "m1").deliver(1, "m1", "w1").sigterm(11, "w1").worker(11.2, "w1", "exited")
    v = check_drain(h.build(), ctx())[0]
    assert v.status == "pass" and "no handler was in flight" in v.summary


def test_fetching_after_sigterm_fails() -> None:
    h = (H().publish(0, "m1", "m2").deliver(10, "m1", "w1").sigterm(11, "w1").deliver(14, "m2", "w1")
         .worker(15, "w1", "exited"))
    v = check_drain(h.build(), ctx())[0]
    assert v.status == "fail" and v.figures["fetched_after_sigterm"] == 1


def test_not_exiting_in_time_fails() -> None:
    h = H().publish(0, "m1").deliver(1, "m1", "w1").sigterm(11, "w1")
    assert check_drain(h.build(), ctx())[0].figures["did_not_exit_in_time"] == ["w1"]
    late = H().publish(0, "m1").deliver(1, "m1", "w1").sigterm(11, "w1").worker(30, "w1", "exited")
    assert check_drain(late.build(), ctx())[0].status == "fail"


def test_cut_off_handler_that_comes_back_passes_and_one_that_vanishes_fails() -> None:
    cut = (H().publish(0, "m1").deliver(10, "m1", "w1", took=None).sigterm(11, "w1").worker(17, "w1", "exited"))
    assert check_drain(cut.build(), ctx())[0].status == "fail"
    back = cut.deliver(20, "m1", "w2")
    v = check_drain(back.build(), ctx())[0]
    assert v.status == "pass" and v.figures["cut_off"] == 1


def test_drain_without_sigterm_is_unknown() -> None:
    assert check_drain(H().publish(0, "m1").deliver(1, "m1").build(), ctx())[0].status == "unknown"


# --- wakeup: D7, D8 ---------------------------------------------------------------------------------------------

def probes(h: H, start: float, count: int, latency: float) -> H:
    for i in range(count):
        mid = f"q{start}-{i}"
        h.publish(start + 2 * i, mid, probe=True).deliver(start + 2 * i + 0.001 + latency, mid)
    return h


def test_fast_wakeup_passes_d7() -> None:
    v = by_id(check_wakeup(probes(H(), 0, 6, 0.02).build(), ctx()))
    assert v["D7"].status == "pass" and v["D7"].figures["p50_ms"] == 20.0
    assert v["D8"].status == "unknown"


def test_slow_wakeup_fails_d7() -> None:
    assert status(check_wakeup(probes(H(), 0, 6, 0.8).build(), ctx()), "D7") == "fail"


def test_few_probes_leave_d7_unknown() -> None:
    assert status(check_wakeup(probes(H(), 0, 4, 0.02).build(), ctx()), "D7") == "unknown"


def listen_lost(latency: float) -> H:
    h = probes(H(), 0, 6, 0.02).window(100, 120, "listen_loss")
    return probes(h, 105, 3, latency).log(100.5, "w1", "LISTEN connection lost, falling back to polling")


def test_polling_fallback_passes_d8_and_outage_probes_stay_out_of_d7() -> None:
    v = by_id(check_wakeup(listen_lost(0.9).build(), ctx()))
    assert v["D8"].status == "pass" and v["D8"].figures["probes"] == 3
    assert v["D7"].status == "pass" and v["D7"].figures["probes"] == 6


def test_slow_polling_fails_d8() -> None:
    assert status(check_wakeup(listen_lost(5.0).build(), ctx()), "D8") == "fail"


def test_a_warning_per_poll_fails_o2_and_leaves_d8_to_delivery() -> None:
    h = listen_lost(0.9)
    for t in (102, 104, 108):
        h.log(t, "w1", "could not LISTEN: connection refused")
    assert status(check_wakeup(h.build(), ctx()), "D8") == "pass"
    v = check_warnings(h.build(), ctx())[0]
    assert v.status == "fail" and v.figures["repeated"] == {"outage 1 / w1": 4}


def test_a_loss_and_a_recovery_line_pass_o2_and_three_lines_stay_undecided() -> None:
    """Two lines (lost, reconnected) are no flood; three in one short outage cannot be told from one per poll."""
    two = listen_lost(0.9).log(110, "w1", "LISTEN reconnected")
    v = check_warnings(two.build(), ctx())[0]
    assert v.status == "pass" and v.figures["most_per_outage"] == 2
    three = listen_lost(0.9).log(104, "w1", "reconnecting LISTEN").log(110, "w1", "LISTEN reconnected")
    assert check_warnings(three.build(), ctx())[0].status == "unknown"


def test_one_warning_per_worker_and_outage_passes_o2() -> None:
    h = listen_lost(0.9).log(101, "w2", "LISTEN connection lost")
    v = check_warnings(h.build(), ctx())[0]
    assert v.status == "pass" and v.figures["listen_warnings"] == 2


def test_silence_about_a_lost_listen_is_unknown_for_o2() -> None:
    h = probes(H(), 0, 6, 0.02).window(100, 120, "listen_loss")
    assert check_warnings(probes(h, 105, 3, 0.9).build(), ctx())[0].status == "unknown"
    assert check_warnings(probes(H(), 0, 6, 0.02).build(), ctx())[0].status == "unknown"
    assert check_warnings(h.build(), ctx(caps={"notify": False}))[0].status == "not_applicable"


def test_wakeup_not_applicable_without_notify() -> None:
    v = check_wakeup(listen_lost(0.9).build(), ctx(caps={"notify": False}))
    assert {x.status for x in v} == {"not_applicable"}


# --- registry ---------------------------------------------------------------------------------------------------

def test_run_checkers_runs_every_checker_in_order() -> None:
    verdicts = run_checkers(list(REGISTRY), valid_queue().build(), ctx())
    assert [v.guarantee for v in verdicts] == [g for entry in REGISTRY.values() for g in entry.decides]
    assert not [v for v in verdicts if "crashed" in v.summary], verdicts


def test_every_decided_guarantee_is_in_the_catalogue_and_decided_once() -> None:
    decided = [g for entry in REGISTRY.values() for g in entry.decides]
    assert len(decided) == len(set(decided))
    assert set(decided) <= set(BY_ID)


def test_checkers_follow_from_guarantees() -> None:
    assert checkers_for(["D3", "D1", "D4", "L4", "P1"]) == ["lease", "total_queue", "recovery"]
    assert checkers_for(["P3"]) == []  # decided by tests, not by a checker


def test_the_decorator_registers_a_checker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("harness.checkers.context.REGISTRY", dict(REGISTRY))
    from harness.checkers import context  # noqa: PLC0415

    @checker("always_unknown", decides=("O1",))
    def always_unknown(history: object, c: object) -> list[Verdict]:
        return [Verdict("O1", "always_unknown", "unknown", "nothing to see")]

    assert "always_unknown" in context.REGISTRY and "always_unknown" not in REGISTRY


def test_run_checkers_turns_a_crash_into_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(history: object, context: object) -> list[Verdict]:
        raise RuntimeError("bad history")

    monkeypatch.setitem(REGISTRY, "lease", Registered("lease", REGISTRY["lease"].decides, boom))
    verdicts = run_checkers(["lease"], [], ctx())
    assert [(v.guarantee, v.status) for v in verdicts] == [("D3", "unknown"), ("D4", "unknown")]
    with pytest.raises(KeyError):
        run_checkers(["nope"], [], ctx())


def test_a_declared_reclaim_time_stands_in_for_a_lease() -> None:
    """No lease TTL, but a heartbeat sweeper that frees a dead holder's rows after 55 s: a second claim 60 s later
    is no steal, one 10 s later is."""
    sweep = ctx(caps={"lease_ttl": False, "lease_times": False}, timings=Timings(reclaim_seconds=55))
    assert status(check_lease(reclaimed(60).build(), sweep), "D3") == "pass"
    assert status(check_lease(reclaimed(10).build(), sweep), "D3") == "fail"


def test_a_declared_reclaim_time_is_not_held_against_a_holder_whose_heartbeats_a_fault_may_have_cut() -> None:
    """The declared time counts from the holder's last heartbeat, taken to be at most one before its claim; a reset
    just before the claim may have stopped the heartbeats earlier (the fetch going on over another connection), so
    an early reclaim after it is undecided, not a steal. A lease TTL counts from the claim whatever the network does."""
    sweep = ctx(caps={"lease_ttl": False}, timings=Timings(reclaim_seconds=3))
    h = H().publish(0, "m1").window(0.4, 0.9, "reset_peer").deliver(1, "m1", "w2", took=0.02)
    h.deliver(1.4, "m1", "w2")  # the same worker fetches it again 0.4 s later: its heartbeat had lapsed
    assert status(check_lease(h.build(), sweep), "D3") == "unknown"
    assert status(check_lease(h.build(), ctx(cfg={"lease_ttl_seconds": 3.0})), "D3") == "fail"
