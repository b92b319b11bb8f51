"""D5: a row whose worker was SIGKILLed mid-handler is delivered again, not early and not late."""

from __future__ import annotations

from harness.checkers._index import EPS, History, examples
from harness.checkers._leases import clock_note, gap, lease_start
from harness.checkers.context import CheckContext, checker
from harness.verdict import Verdict

NAME = "reclaim"


@checker(NAME, decides=("D5",))
def check_reclaim(h: History, ctx: CheckContext) -> list[Verdict]:
    """D5 bounded reclaim.

    Why: a lease that dies with its worker must be reclaimed, or the message waits forever (or is lost); it
    must not be reclaimed before the TTL, or a slow live handler would be raced. Only calls the kill caught in
    flight (invoke, no end nor settle, then a SIGKILL of that process) tell anything, so without one the
    verdict is unknown. The gap is lease to lease by the database clock when the adapter reports lease times."""
    reclaim = ctx.timings.reclaim_seconds
    if reclaim is None:
        return [Verdict("D5", NAME, "not_applicable", "the implementation has no lease TTL nor declared reclaim time")]
    kills = h.process_ends()
    in_tables = set(h.final.dead) | set(h.final.pending)
    killed = [d for d in h.unfinished() if kills.get(d.process, float("-inf")) > d.t]
    db_clock = ctx.capabilities.lease_times and h.all_lease_times
    ttl, cfg = reclaim, ctx.config  # the lease TTL, or the implementation's own reclaim time
    low = ttl - (EPS if db_clock else ctx.slack_seconds)
    high = ttl + ctx.timings.reclaim_window_seconds + cfg.max_fetch_interval + ctx.slack_seconds
    delays: list[float] = []
    early: list[dict[str, object]] = []
    late: list[dict[str, object]] = []
    never: list[str] = []
    undecided: list[str] = []
    doubtful: list[dict[str, object]] = []  # looks early or late, but the evidence cannot date the claims
    for d in killed:
        ds = h.group(str(d.mid))
        later = ds[ds.index(d) + 1:]
        if not later:
            # still pending, undrained, or gone terminal without a handler call: nothing to time, nothing lost
            accounted = d.mid in in_tables or not h.drained
            (undecided if accounted else never).append(str(d.mid))
            continue
        n = later[0]
        row: dict[str, object] = {"mid": d.mid, "killed": d.process, "next": n.process}
        if db_clock:
            delay = gap(d, n, True)
            delays.append(delay)
            row["delay_s"] = round(delay, 3)
            (early if delay < low else late if delay > high else []).append(row)
            continue
        # Without database-clock lease times: early only when every possible lease start says so; late only
        # when the next claim is dated from below (a prefetched row may have been claimed on time and waited).
        la, ln = (lease_start(x, ctx.slack_seconds, ctx.capabilities.prefetch) for x in (d, n))
        delay = ln.hi - la.hi
        delays.append(delay)
        row.update(delay_s=round(delay, 3), evidence=f"{la.source} / {ln.source}")
        if ln.hi < la.lo + ttl - EPS:
            early.append(row)
        elif delay < low or (delay > high and ln.source.endswith("prefetched")):
            doubtful.append(row)
        elif delay > high:
            late.append(row)
    figures = {
        "killed_in_flight": len(killed),
        "measured": len(delays),
        "delay_min_s": round(min(delays), 3) if delays else None,
        "delay_max_s": round(max(delays), 3) if delays else None,
        "bounds_s": [round(low, 3), round(high, 3)],
        "too_early": len(early),
        "too_late": len(late),
        "never_redelivered": len(never),
        "undecided": len(undecided),
        "undated": len(doubtful),
        "examples": examples(early + late + [{"mid": m, "never_redelivered": True} for m in never]),
    }
    note = clock_note(db_clock, h.claimed_calls > 0)
    if early or late or never:
        return [Verdict("D5", NAME, "fail", f"of {len(killed)} killed deliveries, {len(early)} were reclaimed too"
                        f" early, {len(late)} too late and {len(never)} never{note}", figures)]
    if not killed:
        return [Verdict("D5", NAME, "unknown", "the kill never caught a delivery in flight", figures)]
    if not delays:
        return [Verdict("D5", NAME, "unknown", "no killed delivery was handed out again to time", figures)]
    if doubtful:
        figures["examples"] = examples(doubtful)
        return [Verdict("D5", NAME, "unknown", f"{len(doubtful)} reclaims look outside [{low:.3f}, {high:.3f}] s by"
                        " handler starts, which cannot date the claims of an implementation that prefetches;"
                        " report claims (ctx.claimed) or database-clock lease times to decide", figures)]
    return [Verdict("D5", NAME, "pass", f"{len(delays)} killed deliveries were reclaimed within"
                    f" [{low:.3f}, {high:.3f}] s{note}", figures)]
