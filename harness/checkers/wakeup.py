"""D7, D8: idle wake-up is fast with LISTEN/NOTIFY, and bounded by polling when LISTEN is lost."""

from __future__ import annotations

from dataclasses import dataclass

from harness.checkers._index import FaultWindow, History, examples
from harness.checkers.context import CheckContext, checker
from harness.stats import percentile
from harness.verdict import Verdict

NAME = "wakeup"
D7_P50_MS, D7_P99_MS = 100, 500  # "milliseconds, not a polling interval"


@dataclass(frozen=True)
class Probe:
    mid: str
    published: float  # publish ok, monotonic
    delivered: float | None  # first deliver invoke, monotonic

    @property
    def latency(self) -> float | None:
        return None if self.delivered is None else self.delivered - self.published


def probes(h: History) -> list[Probe]:
    """Single-mid idle publishes marked probe, each with its first delivery."""
    return [Probe(mid, t, h.first_call_t(mid)) for mid, t in h.probes]


@checker(NAME, decides=("D7", "D8"))
def check_wakeup(h: History, ctx: CheckContext) -> list[Verdict]:
    """D7 wake-up latency, D8 polling fallback.

    Why: LISTEN/NOTIFY is the reason an idle outbox feels instant; losing it must degrade to polling at
    max_fetch_interval, not to silence. What the implementation logs about the loss is judged apart (O2)."""
    if not ctx.capabilities.notify:
        return [Verdict(g, NAME, "not_applicable", "the implementation has no LISTEN/NOTIFY wake-up")
                for g in ("D7", "D8")]
    found = probes(h)
    windows = h.listen_outages()
    return [_d7(found, windows, ctx), _d8(h.drained, found, windows, ctx)]


def _d7(found: list[Probe], windows: list[FaultWindow], ctx: CheckContext) -> Verdict:
    settle_back = ctx.config.max_fetch_interval + ctx.slack_seconds  # LISTEN comes back after a heal
    calm = [p for p in found if not any(
        w.invoked <= p.published and (w.healed is None or p.published <= w.healed + settle_back) for w in windows)]
    ms = [1000 * p.latency for p in calm if p.latency is not None]
    p50_max, p99_max = D7_P50_MS, D7_P99_MS
    figures = {"probes": len(calm), "delivered": len(ms), "undelivered": len(calm) - len(ms),
               "p50_ms": round(percentile(ms, 50), 1) if ms else None,
               "p99_ms": round(percentile(ms, 99), 1) if ms else None,
               "max_ms": round(max(ms), 1) if ms else None, "limits_ms": [p50_max, p99_max]}
    if len(ms) < 5:
        return Verdict("D7", NAME, "unknown", f"only {len(ms)} idle probes were delivered outside LISTEN outages",
                       figures)
    p50, p99 = percentile(ms, 50), percentile(ms, 99)
    if p50 > p50_max or p99 > p99_max:
        return Verdict("D7", NAME, "fail", f"idle wake-up took p50 {p50:.0f} ms / p99 {p99:.0f} ms, over"
                       f" {p50_max} / {p99_max} ms", figures)
    return Verdict("D7", NAME, "pass", f"idle wake-up p50 {p50:.0f} ms, p99 {p99:.0f} ms over {len(ms)} probes",
                   figures)


def _d8(drained: bool, found: list[Probe], windows: list[FaultWindow], ctx: CheckContext) -> Verdict:
    bound = ctx.config.max_fetch_interval + ctx.slack_seconds
    during = [p for p in found if any(w.active(p.published) for w in windows)]
    slow = [p for p in during if p.latency is not None and p.latency > bound]
    missing = [p for p in during if p.latency is None]
    latencies = [p.latency for p in during if p.latency is not None]
    figures = {"outages": len(windows), "probes": len(during), "max_latency_s": round(max(latencies), 3)
               if latencies else None, "bound_s": round(bound, 3), "too_slow": len(slow), "undelivered": len(missing),
               "examples": examples([{"mid": p.mid, "latency_s": round(p.latency or 0, 3)} for p in slow]
                                    + [{"mid": p.mid, "undelivered": True} for p in missing])}
    problems = []
    if slow:
        problems.append(f"{len(slow)} probes took longer than {bound:.2f} s")
    if missing and drained:
        problems.append(f"{len(missing)} probes were never delivered")
    if problems:
        return Verdict("D8", NAME, "fail", "while LISTEN was lost: " + "; ".join(problems), figures)
    if not during:
        return Verdict("D8", NAME, "unknown", "no probe was published while LISTEN was lost", figures)
    if missing:
        return Verdict("D8", NAME, "unknown", f"{len(missing)} probes undelivered and the drain did not finish",
                       figures)
    return Verdict("D8", NAME, "pass", f"{len(during)} probes during LISTEN outages all arrived within {bound:.2f} s"
                   f" by polling", figures)
