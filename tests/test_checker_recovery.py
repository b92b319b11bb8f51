"""The recovery checker (P2, L4) against hand-made histories: valid passes, broken fails, thin stays unknown."""

from __future__ import annotations

from harness.adapter import Timings
from harness.checkers import check_recovery, check_total_queue
from harness.verdict import Verdict
from tests.checker_histories import H, ctx


def verdicts(h: H) -> dict[str, Verdict]:
    return {v.guarantee: v for v in check_recovery(h.build(), ctx())}


def crash_history(lose: bool = False) -> H:
    h = H().publish(0.0, "m1", "m2").deliver(0.5, "m1")
    h.window(1.0, 2.0, "pg_crash_restart")
    if not lose:
        h.deliver(3.0, "m2")
    return h


def network_history(*, survivor_delivers: bool = True, tail: bool = True) -> H:
    h = H().publish(0.0, "m1", "m2", "m3")
    h.deliver(0.5, "m1", "w1#1").deliver(0.6, "m2", "w2#1")
    h.window(1.0, 3.0, "partition")
    h.kill(1.5, "w2#1").worker(1.51, "w2#1", "died", code=-9).worker(1.6, "w2#2", "started")
    if tail:
        h.deliver(4.0, "m3", "w1#1" if survivor_delivers else "w2#2")
    return h


def test_p2_passes_when_committed_messages_survive_a_crash() -> None:
    assert verdicts(crash_history())["P2"].status == "pass"


def test_p2_fails_when_a_committed_message_is_lost_across_a_crash() -> None:
    v = verdicts(crash_history(lose=True))["P2"]
    assert v.status == "fail" and v.figures["lost"] == 1


def test_p2_is_unknown_without_a_crash() -> None:
    assert verdicts(H().publish(0.0, "m1").deliver(0.5, "m1"))["P2"].status == "unknown"


def test_p2_is_unknown_when_the_outbox_did_not_drain() -> None:
    assert verdicts(crash_history().final(drained=False))["P2"].status == "unknown"


def test_l4_passes_when_a_surviving_worker_delivers_after_the_heal() -> None:
    v = verdicts(network_history())["L4"]
    assert v.status == "pass" and v.figures["delivered_again_after_heal"] == ["w1#1"]


def test_l4_fails_when_only_restarted_workers_deliver_after_the_heal() -> None:
    """w1#1 lived through the partition; after the heal only the restarted w2#2 delivers, and the connection
    samples never see w1#1 hold a backend again, for longer than the liveness bound."""
    h = network_history(survivor_delivers=False)
    for t in range(4, 40, 2):
        h.sample(float(t), **{"w2#2": 2})
    assert verdicts(h)["L4"].status == "fail"
    assert verdicts(network_history(survivor_delivers=False))["L4"].status == "unknown"  # no samples to tell


def test_l4_fails_on_loss_through_the_faults() -> None:
    h = H().publish(0.0, "m1", "m2").deliver(0.5, "m1", "w1#1").window(1.0, 2.0, "latency")
    assert verdicts(h)["L4"].status == "fail"


def test_l4_is_unknown_without_traffic_after_the_heal_or_without_a_fault() -> None:
    h = H().publish(0.0, "m1", "m2").deliver(0.5, "m1", "w1#1").deliver(0.6, "m2", "w1#1").window(1.0, 2.0, "latency")
    assert verdicts(h)["L4"].status == "unknown"
    assert verdicts(H().publish(0.0, "m1").deliver(0.5, "m1"))["L4"].status == "unknown"


# --- a consumer that never comes back after a proven heal: L4 and D1 decided by the liveness bound -------------

BOUND = ctx().liveness_bound  # 2 × (reclaim 3 + statement timeout 5 + reconnect 5 + fetch 1) + slack 1.5 = 29.5


def never_back(drain_end: float) -> H:
    """Both workers live through a partition healed at 3 s and never deliver again; m3, published after the heal,
    is still pending when the drain gives up at ``drain_end``."""
    h = H().publish(0.0, "m1", "m2").deliver(0.5, "m1", "w1#1").deliver(0.6, "m2", "w2#1")
    h.window(1.0, 3.0, "partition").publish(3.5, "m3")
    return h.final(pending=["m3"], drained=False, at=drain_end)


def test_silence_past_the_liveness_bound_after_a_proven_heal_fails_l4_and_d1() -> None:
    h = never_back(drain_end=3.5 + BOUND + 1)
    v = verdicts(h)["L4"]
    assert v.status == "fail" and v.figures["overdue"] == 1 and "liveness bound" in v.summary
    d1 = {x.guarantee: x for x in check_total_queue(h.build(), ctx())}["D1"]
    assert d1.status == "fail" and d1.figures["overdue_examples"] == ["m3"]


def test_silence_within_the_bound_is_still_undecided() -> None:
    h = never_back(drain_end=3.5 + BOUND - 5)
    assert verdicts(h)["L4"].status == "unknown"
    assert {x.guarantee: x.status for x in check_total_queue(h.build(), ctx())}["D1"] == "unknown"


def test_a_consumer_still_delivering_when_the_drain_ends_is_undecided() -> None:
    end = 3.5 + BOUND + 1
    h = never_back(drain_end=end).publish(end - 2, "m4").deliver(end - 1, "m4", "w1#1")
    assert verdicts(h)["L4"].status == "unknown"


def test_a_fault_that_never_healed_leaves_l4_undecided() -> None:
    h = H().publish(0.0, "m1").window(1.0, None, "partition").final(pending=["m1"], drained=False, at=100.0)
    assert verdicts(h)["L4"].status == "unknown"


def test_a_worker_cut_off_alone_must_come_back_itself() -> None:
    """Only w1's path was cut: w2 delivering after the heal says nothing of w1's reconnecting."""
    def cut_w1(w1_back: bool) -> H:
        h = H().publish(0.0, "m1", "m2", "m3", "m4").deliver(0.5, "m1", "w1#1").deliver(0.6, "m2", "w2#1")
        h.fault(0.99, "partition", "invoke").fault(1.0, "partition", "ok", target="w1").fault(3.0, "partition", "info")
        h.deliver(4.0, "m3", "w2#1")
        return h.deliver(4.2, "m4", "w1#1") if w1_back else h.deliver(4.2, "m4", "w2#1")

    assert verdicts(cut_w1(True))["L4"].status == "pass"
    silent = cut_w1(False)
    for t in range(4, 40, 2):  # connection samples: w2 holds backends, w1 none
        silent.sample(float(t), **{"w2#1": 2})
    v = verdicts(silent)["L4"]
    assert v.status == "fail" and v.figures["workers_through_faults"] == ["w1#1"]
    busy_elsewhere = cut_w1(False)
    for t in range(4, 40, 2):  # w1 reconnected (it holds a backend) but w2 took all the work
        busy_elsewhere.sample(float(t), **{"w1#1": 1, "w2#1": 2})
    assert verdicts(busy_elsewhere)["L4"].status == "pass"
    assert verdicts(cut_w1(False))["L4"].status == "unknown"  # no samples: watched 0 s


# --- a worker that exits by itself on a network fault: it did not reconnect, whatever else happened ------------

def test_a_worker_that_exits_by_itself_during_a_network_fault_fails_l4() -> None:
    h = network_history().worker(2.0, "w1#1", "died", code=1).worker(2.1, "w1#2", "started")
    v = verdicts(h)["L4"]
    assert v.status == "fail" and v.figures["died_by_themselves"] == ["w1#1 (exit 1)"], v.summary


def test_killed_workers_and_refusals_under_a_capacity_fault_are_not_deaths_of_their_own() -> None:
    """A SIGKILL by the harness, and a refusal to start while the pool is below its budget (an exit by design,
    judged by L3), are not a consumer giving up on the network."""
    h = network_history().window(1.65, 2.5, "pool_exhaustion")
    h.worker(1.7, "w2#2", "refused", message="pool below budget").worker(1.8, "w2#2", "died", code=3)
    assert verdict_l4(h).status == "pass"


def test_a_consumer_that_stops_on_a_connection_error_exited_by_itself() -> None:
    """An in-process adapter records the library's error as ``refused`` and exits 3; outside a capacity fault
    that is a consumer giving up, whatever it is called."""
    h = network_history().worker(2.0, "w1#1", "refused", message="ConnectorException: Database error.")
    h.worker(2.05, "w1#1", "died", code=3)
    v = verdict_l4(h)
    assert v.status == "fail" and v.figures["died_by_themselves"] == ["w1#1 (exit 3)"], v.summary


def verdict_l4(h: H) -> Verdict:
    return verdicts(h)["L4"]


# --- a message held by a dead worker, where the implementation declares no reclaim -------------------------------

def held_by_a_dead_worker(*, reclaim: bool) -> list[Verdict]:
    """w1#1 dies with m2 in hand during a partition; nothing delivers m2 again before the drain gives up, long past
    the liveness bound."""
    h = H().publish(0.0, "m1", "m2").deliver(0.5, "m1", "w2#1").deliver(0.6, "m2", "w1#1", took=None)
    h.window(1.0, 3.0, "partition").kill(1.5, "w1#1").fault(1.505, "sigkill", "info")
    h.worker(1.51, "w1#1", "died", code=-9)
    h.final(pending=["m2"], drained=False, at=3.0 + BOUND + 5)
    c = ctx() if reclaim else ctx(caps={"lease_ttl": False}, timings=Timings(reconnect_seconds=5.0))
    return [{v.guarantee: v for v in check_total_queue(h.build(), c)}["D1"],
            {v.guarantee: v for v in check_recovery(h.build(), c)}["L4"]]


def test_a_message_held_by_a_dead_worker_is_lost_where_a_reclaim_is_declared() -> None:
    d1, l4 = held_by_a_dead_worker(reclaim=True)
    assert d1.status == "fail" and l4.status == "fail", (d1.summary, l4.summary)


def test_without_a_declared_reclaim_a_dead_holder_leaves_d1_undecided() -> None:
    d1, l4 = held_by_a_dead_worker(reclaim=False)
    assert d1.status == "unknown" and "may be held by workers that died (e.g. m2" in d1.summary, d1.summary
    assert l4.status == "unknown"


def test_without_a_declared_reclaim_a_message_never_delivered_after_a_death_is_undecided_but_a_later_one_is_lost() -> None:
    """m2 was committed before w1#1 was killed and never delivered: w1#1 may have claimed it without calling its
    handler. m3, committed after every death and never delivered while the consumers idled past the bound, cannot be
    held by anyone gone: D1 fails on it alone."""
    c = ctx(caps={"lease_ttl": False}, timings=Timings(reconnect_seconds=5.0))
    h = H().publish(0.0, "m1", "m2").deliver(0.5, "m1", "w2#1")
    h.window(1.0, 3.0, "partition").kill(1.5, "w1#1").fault(1.505, "sigkill", "info")
    h.worker(1.51, "w1#1", "died", code=-9).worker(1.6, "w1#2", "spawned")
    h.final(pending=["m2"], drained=False, at=3.0 + BOUND + 5)
    d1 = {v.guarantee: v for v in check_total_queue(h.build(), c)}["D1"]
    assert d1.status == "unknown" and "e.g. m2" in d1.summary, d1.summary
    h.publish(4.0, "m3").final(pending=["m2", "m3"], drained=False, at=4.0 + BOUND + 5)
    d1 = {v.guarantee: v for v in check_total_queue(h.build(), c)}["D1"]
    assert d1.status == "fail" and d1.figures["overdue_examples"] == ["m3"], d1.summary


def test_a_restart_that_cannot_initialise_during_the_cut_is_not_a_worker_giving_up() -> None:
    """w2#2, spawned after w2#1 was killed, fails to start while the partition holds and never delivered: a fast
    start-up failure the supervisor retries, not a consumer that lived through the fault and gave up."""
    h = network_history().worker(2.5, "w2#2", "refused", message="initialization failed: connection reset")
    h.worker(2.6, "w2#2", "died", code=3)
    assert verdict_l4(h).status == "pass"
