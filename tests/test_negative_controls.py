"""Negative controls: each scenario catches the breakage it targets.

Every test runs a stock scenario (its definition is taken from the catalogue in
``harness/scenarios/`` as is, only renamed so it gets its own database) through the real harness
(worker processes, nemeses, checkers) against a deliberately broken variant
of the reference outbox from ``tests/broken/variants.py``, and asserts that
the guarantee the scenario targets gets a "fail" verdict. That the same
scenarios pass on the unbroken reference is shown by the scenario suite
(``pytest scenarios``), so it is not repeated here.

"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.scenario import Scenario
from harness.scenarios import by_name
from harness.verdict import ScenarioResult
from tests.controls import Run, describe, verdict

VARIANTS = "tests.broken.variants"


@pytest.fixture
def run_broken(run_impl: Callable[[str, Scenario, str], ScenarioResult]) -> Run:
    def run(variant: str, scenario: Scenario) -> ScenarioResult:
        impl = variant if variant == "reference" or ":" in variant else f"{VARIANTS}:{variant}"
        return run_impl(impl, scenario, f"neg_{variant.rpartition(':')[2]}")

    return run


def assert_caught(result: ScenarioResult, *guarantees: str) -> None:
    wrong = [g for g in guarantees if verdict(result, g).status != "fail"]
    assert not wrong, f"broken variant not caught on {wrong}:\n{describe(result)}"


# -- the controls -------------------------------------------------------------------------------------

def test_variants_load_in_a_worker_like_process(workers_import_the_repo: None, tmp_path: Path) -> None:
    """A worker imports the variant by spec string from a fresh interpreter; a typo here would only show
    up as workers refusing to start, so check it first and cheaply."""
    code = ("from harness.adapter import load_adapter\n"
            f"from {VARIANTS} import VARIANTS\n"
            f"print(','.join(load_adapter('{VARIANTS}:' + v).name for v in VARIANTS))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().split(",") == [f"broken:{v}" for v in __import__(VARIANTS, fromlist=["x"]).VARIANTS]


def test_ack_before_handler_loses_messages_under_sigkill(run_broken: Run) -> None:
    """D1, and P2 on worker crashes: the rows a kill catches between the delete and the handler are gone. (P2's
    other half, a PostgreSQL crash-restart, is the unlogged-table control below.)"""
    result = run_broken("ack_before_handler", by_name("sigkill_storm"))
    assert_caught(result, "D1", "P2")
    assert verdict(result, "D1").figures["lost"] > 0
    assert verdict(result, "P2").figures["lost"] == verdict(result, "D1").figures["lost"]


def test_ack_before_handler_loses_messages_under_connection_shortage(run_broken: Run) -> None:
    """L3: the worker crashed mid-handler while the server's slots are full takes the rows it had already
    deleted with it; lost under shortage is a definite failure, whatever errors were logged."""
    result = run_broken("ack_before_handler", by_name("max_connections"))
    assert_caught(result, "L3", "D1")
    assert verdict(result, "L3").figures["lost"] > 0


def test_worker_clock_lease_steals_live_leases_under_skew(run_broken: Run) -> None:
    result = run_broken("worker_clock_lease", by_name("clock_skew"))
    assert_caught(result, "D4", "D3")
    assert verdict(result, "D4").figures["stolen_with_skewed"] > 0


def test_non_atomic_dead_letter_loses_rows_on_dlq_drift(run_broken: Run) -> None:
    result = run_broken("non_atomic_dead_letter", by_name("dlq_drift"))
    assert_caught(result, "R3", "D1")
    assert verdict(result, "R3").figures["in_neither_table"] > 0


def test_tokenless_ack_removes_rows_leased_by_another(run_broken: Run) -> None:
    result = run_broken("tokenless_ack", by_name("slow_handlers"))
    assert_caught(result, "D6")
    assert verdict(result, "D6").figures["stale_removals"] > 0


def test_claim_without_skip_locked_double_claims(run_broken: Run) -> None:
    result = run_broken("no_skip_locked", by_name("sigkill_storm"))
    assert_caught(result, "D3")


def test_publish_outside_tx_leaks_rolled_back_messages(run_broken: Run) -> None:
    result = run_broken("publish_outside_tx", by_name("sigkill_storm"))
    assert_caught(result, "P1", "D2")
    assert verdict(result, "P1").figures["delivered_after_rollback"] > 0


def test_tokenless_ack_is_caught_by_a_paused_worker(run_broken: Run) -> None:
    """The paused-worker scenario is a detector too: a frozen worker that resumes and acks by id alone removes
    rows that another worker holds."""
    result = run_broken("tokenless_ack", by_name("paused_worker"))
    assert_caught(result, "D6")
    assert verdict(result, "D6").figures["stale_removals"] > 0


# -- broken twins of the independent correct outboxes (tests/correct/, tests/broken/prefetch_variants.py) ----------

TWINS = "tests.broken.prefetch_variants"


def test_worker_clock_prefetch_is_caught_by_its_reported_claims(run_broken: Run) -> None:
    """A prefetching outbox with no database-clock lease times, whose claims follow the worker's clock: its steals
    are definite from the claims it reports, though its handler starts alone could not date them."""
    result = run_broken(f"{TWINS}:worker_clock_prefetch", by_name("clock_skew"))
    assert_caught(result, "D4", "D3")
    assert verdict(result, "D4").figures["stolen_with_skewed"] > 0


def test_a_consumer_that_never_reconnects_fails_l4_and_d1_past_the_liveness_bound(run_broken: Run) -> None:
    result = run_broken(f"{TWINS}:never_reconnects", by_name("partition_black_hole"))
    assert_caught(result, "L4", "D1")
    assert verdict(result, "L4").figures["overdue"] > 0 and "liveness bound" in verdict(result, "L4").summary


def test_a_tokenless_heartbeat_outbox_is_caught_only_when_a_worker_is_cut_off(run_broken: Run) -> None:
    """Heartbeats keep a slow handler's lease, so slow handlers never produce a stale write; cutting one worker
    off alone (its heartbeats with it) does, and its completion by id removes a row another worker holds."""
    result = run_broken(f"{TWINS}:heartbeat_tokenless", by_name("zombie_worker"))
    assert_caught(result, "D6")
    slow = run_broken(f"{TWINS}:heartbeat_tokenless", by_name("slow_handlers"))
    assert verdict(slow, "D6").status == "unknown", describe(slow)


def test_tokenless_ack_is_caught_by_the_zombie_worker(run_broken: Run) -> None:
    result = run_broken("tokenless_ack", by_name("zombie_worker"))
    assert_caught(result, "D6")


# -- one control per guarantee no other control fails -------------------------------------------------------------

def test_reclaim_after_a_grace_period_is_late(run_broken: Run) -> None:
    """D5: a dead holder's rows must come back within [ttl, ttl + max_fetch_interval]; waiting graceful_timeout
    more is late, by the database clock. Late, never early: no live lease is taken (D3 holds)."""
    result = run_broken("grace_on_reclaim", by_name("sigkill_storm"))
    assert_caught(result, "D5")
    d5 = verdict(result, "D5").figures
    assert d5["too_late"] > 0 and d5["too_early"] == 0
    assert verdict(result, "D3").status == "pass", describe(result)


def test_notify_with_swapped_arguments_leaves_idle_wakeups_to_polling(run_broken: Run) -> None:
    """D7: pg_notify(payload, channel) wakes nobody; idle probes wait for the next poll."""
    result = run_broken("swapped_notify", by_name("listen_loss"))
    assert_caught(result, "D7")
    assert verdict(result, "D7").figures["p50_ms"] > 100


def test_an_unchecked_listen_connection_leaves_polling_slow_after_its_loss(run_broken: Run) -> None:
    """D8: a consumer that believes its killed LISTEN connection is alive stays on its slow safety poll."""
    result = run_broken("trusted_listen", by_name("listen_loss"))
    assert_caught(result, "D8")
    d8 = verdict(result, "D8").figures
    assert d8["too_slow"] > 0 and d8["max_latency_s"] > d8["bound_s"]


def test_a_warning_on_every_poll_floods_the_log(run_broken: Run) -> None:
    """O2: one WARNING per outage, not one per poll."""
    result = run_broken("noisy_poll", by_name("listen_loss"))
    assert_caught(result, "O2")
    assert verdict(result, "O2").figures["most_per_outage"] >= 4


def test_retry_delays_read_as_milliseconds_come_too_early(run_broken: Run) -> None:
    """R1: a retry due at once instead of after the strategy's delay, by the database clock."""
    result = run_broken("millisecond_retry", by_name("poison_retries"))
    assert_caught(result, "R1")
    assert verdict(result, "R1").figures["too_early"] > 0


def test_a_cap_on_failed_attempts_delivers_once_too_often(run_broken: Run) -> None:
    """R2: max_deliveries counts claims; capping on failed attempts lets each poison message through once more."""
    result = run_broken("attempts_cap", by_name("poison_max_deliveries"))
    assert_caught(result, "R2")
    r2 = verdict(result, "R2").figures
    assert r2["over_cap"] > 0 and r2["most_deliveries"] == r2["max_deliveries"] + 1


def test_nacked_terminal_counted_after_the_dlq_write_hides_the_drift(run_broken: Run) -> None:
    """R4: while the DLQ refuses inserts, nacked_terminal must run ahead of dlq_written; counted together after the
    write, neither moves. Nothing is lost (the statement still rolls back whole), so R3 holds."""
    result = run_broken("quiet_terminal", by_name("dlq_drift"))
    assert_caught(result, "R4")
    tested = [w for w in verdict(result, "R4").figures["windows"] if w["terminal_failures"]]
    assert tested and all(w["nacked_terminal"] == w["dlq_written"] == 0 for w in tested)
    assert verdict(result, "R3").status == "pass", describe(result)


def test_a_connection_per_worker_exceeds_the_declared_budget(run_broken: Run) -> None:
    """L2: the backends of one consumer, sampled by application_name, against the budget it declares."""
    result = run_broken("connection_per_worker", by_name("pool_exhaustion"))
    assert_caught(result, "L2")
    l2 = verdict(result, "L2").figures
    assert l2["over_budget"] > 0 and max(l2["peak_by_process"].values()) > l2["budget"]


def test_fetching_on_through_the_drain_is_caught_by_its_lease_times(run_broken: Run) -> None:
    """L1: after SIGTERM fetching stops at once. This consumer claims new rows all through its drain, but never
    later than graceful_timeout (1.5 s, no longer than the scheduling slack), so handler starts cannot show it; the
    database-clock lease times of its claims do."""
    result = run_broken("fetch_through_drain", by_name("graceful_drain"))
    assert_caught(result, "L1")
    l1 = verdict(result, "L1").figures
    assert l1["fetched_after_sigterm"] > 0 and l1["cut_off_lost"] == 0 and not l1["did_not_exit_in_time"]
    assert all(e["after_s"] <= 1.5 + 0.1 for e in l1["examples"] if "after_s" in e)


def test_an_unlogged_outbox_table_loses_the_backlog_in_a_crash_restart(run_broken: Run) -> None:
    """P2: PostgreSQL empties an UNLOGGED table when it recovers from a crash. The stock pg_crash_restart freezes its
    workers across the crash so that a backlog of committed, unhandled messages is in the table when it hits."""
    result = run_broken("unlogged_table", by_name("pg_crash_restart"))
    assert_caught(result, "P2", "D1")
    assert verdict(result, "P2").figures["lost"] > 0


def test_a_consumer_that_exits_on_a_broken_connection_fails_l4(run_broken: Run) -> None:
    """L4, by black-box evidence alone: the workers die by themselves in the resets (no fault killed them), while
    their leases bring every row back, so D1 holds and only the deaths tell."""
    result = run_broken("exit_on_connection_error", by_name("latency_resets"))
    assert_caught(result, "L4")
    assert "exited by themselves" in verdict(result, "L4").summary, describe(result)
    assert verdict(result, "D1").status == "pass", describe(result)


def test_a_zombie_write_behind_a_long_heartbeat_is_caught_only_by_a_stretched_scenario(run_broken: Run) -> None:
    """A heartbeat timeout of 6 s against the zombie scenario's 3 s lease: run at the scenario's own pace, the cut
    (3.5 s) ends before the zombie's rows could be taken over, so nothing shows; stretched to the timings the
    implementation declares, the cut outlasts its heartbeat timeout and the stale completion is caught."""
    result = run_broken(f"{TWINS}:fixed_timeout_tokenless", by_name("zombie_worker"))
    assert_caught(result, "D6")
    unstretched = run_broken(f"{TWINS}:fixed_timeout_tokenless_undeclared", by_name("zombie_worker"))
    assert verdict(unstretched, "D6").status in ("unknown", "pass"), describe(unstretched)
