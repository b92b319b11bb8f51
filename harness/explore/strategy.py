"""Hypothesis strategies for whole scenarios: fault schedules, handler behaviour and workload shapes.

Every choice is drawn so that the simplest value comes first (one SIGKILL, no script, no poison, few messages),
because that is where Hypothesis shrinks to. A generated case stays short (about 10-40 s) and valid: steps that
would collide (two network faults at once, a kill of a paused worker, a second crash-restart) are dropped, and
the guarantees it checks are only those its faults and workload make decidable, paired as the catalogue's
scenarios pair them (:func:`guarantees_for`). A false "fail" on a correct implementation is the worst outcome
an explorer can have, so a guarantee that a combination could blur is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from harness.adapter import ConsumerConfig, RetryConfig
from harness.nemesis.base import Nemesis
from harness.nemesis.database import CrashRestart
from harness.nemesis.network import BlackHole, Latency, Partition, ResetPeer
from harness.nemesis.pause import Pause
from harness.nemesis.process import Kill
from harness.nemesis.worker_config import ClockSkew
from harness.scenario import RECLAIM, FaultStep, Scenario, Workload

#: Nemeses in shrinking order: a case shrinks toward a plain SIGKILL.
NEMESES: tuple[type[Nemesis], ...] = (Kill, Partition, Latency, Pause, CrashRestart, BlackHole, ResetPeer, ClockSkew)
NETWORK_PATHS = ("all", "w1", "publisher")
#: The longest a case may publish for, and the latest a fault may still be in place.
PUBLISH_S = 8.0
LAST_HEAL_S = 12.0
#: Retry schedules of the poison cases, as the catalogue's poison scenarios have them.
POISON_RETRY = RetryConfig(kind="exponential", initial_delay_seconds=0.3, multiplier=2.0, max_delay_seconds=5.0,
                           max_attempts=4, jitter_factor=0.2)
CAPPED_RETRY = RetryConfig(kind="constant", initial_delay_seconds=0.2, max_attempts=10)
MAX_DELIVERIES = 3
#: Names a case carries until the explorer numbers it.
NAME = "explore"


def _tenths(lo: float, hi: float) -> st.SearchStrategy[float]:
    """A time in seconds on a 0.1 s grid: readable in a reproducer, and it shrinks toward ``lo``."""
    return st.integers(round(lo * 10), round(hi * 10)).map(lambda n: n / 10)


@st.composite
def fault_steps(draw: st.DrawFn, *, ttl: float, workers: int, network: bool) -> FaultStep:
    """One fault with its timing, target and duration, within what its nemesis's ``build`` accepts."""
    kinds = [n for n in NEMESES if network or not n.needs_proxy]
    nemesis = draw(st.sampled_from(kinds))
    at = draw(_tenths(0.5, PUBLISH_S - 2))
    slots = [f"w{i + 1}" for i in range(workers)]
    if nemesis is Kill:
        name = draw(st.sampled_from([None, *slots]))
        return FaultStep(at=at, nemesis=Kill, params={} if name is None else {"name": name})
    if nemesis is Pause:  # past the lease (a zombie), or inside it
        hold = round(ttl * draw(st.sampled_from([1.2, 0.5, 2.0])), 1)
        return FaultStep(at=at, nemesis=Pause, params={"name": draw(st.sampled_from(slots))}, hold=hold)
    if nemesis is CrashRestart:
        return FaultStep(at=at, nemesis=CrashRestart, hold=draw(st.sampled_from([1.0, 0.5, 2.0])))
    if nemesis is ClockSkew:  # the catalogue's skew: five TTLs either way, from the start
        offset = 5 * ttl * draw(st.sampled_from([1, -1]))
        return FaultStep(at=draw(_tenths(0.0, 1.0)), nemesis=ClockSkew,
                         params={"name": slots[-1], "offset_seconds": offset}, hold=6.0)
    params: dict[str, Any] = {"target": draw(st.sampled_from(NETWORK_PATHS))}
    if nemesis is Latency:
        latency = draw(st.sampled_from([100, 50, 200]))
        params |= {"latency_ms": latency, "jitter_ms": draw(st.sampled_from([0, latency // 2]))}
    hold = 0.5 if nemesis is ResetPeer else draw(_tenths(0.5, 3.0))
    return FaultStep(at=at, nemesis=nemesis, params=params, hold=hold)


@dataclass(frozen=True)
class _Window:
    step: FaultStep

    @property
    def start(self) -> float:
        return self.step.at

    @property
    def end(self) -> float:
        return self.step.at + self.step.hold + (0.5 if self.step.nemesis.needs_proxy else 0.0)  # probes take time

    def overlaps(self, other: _Window) -> bool:
        return self.start <= other.end and other.start <= self.end


def compatible(steps: list[FaultStep]) -> list[FaultStep]:
    """The steps in time order, without those that would collide with an earlier one: two network faults at
    once (their toxics and probes share proxies), a second crash-restart or clock skew, a kill during a pause
    (a stopped worker killed, then resumed), two pauses of one worker. Ends by :data:`LAST_HEAL_S`."""
    kept: list[_Window] = []
    for step in sorted(steps, key=lambda s: (s.at, NEMESES.index(s.nemesis))):
        w = _Window(step)
        if w.end > LAST_HEAL_S or any(_collide(w, k) for k in kept):
            continue
        kept.append(w)
    return [w.step for w in kept]


def _collide(a: _Window, b: _Window) -> bool:
    kinds = {a.step.nemesis, b.step.nemesis}
    if kinds <= {CrashRestart} or kinds <= {ClockSkew}:
        return True  # one of each per case
    if not a.overlaps(b):
        return False
    if a.step.nemesis.needs_proxy and b.step.nemesis.needs_proxy:
        return True
    if kinds == {Kill, Pause} or ClockSkew in kinds and Pause in kinds:
        return True
    return kinds == {Pause} and a.step.params["name"] == b.step.params["name"]


def guarantees_for(faults: list[FaultStep], workload: Workload, handler: dict[str, Any],
                   config: ConsumerConfig) -> tuple[list[str], tuple[str, ...]]:
    """The guarantee ids a case can decide, and what it requires of the implementation.

    D1, D2, P1 and D3 hold under every fault the catalogue throws at them. P2 needs a crash, L4 a network
    fault, D4 a skewed clock (as in ``clock_skew``). D5 (reclaim within the lease bound) is judged only when
    SIGKILLs are the sole fault and handlers are quick, as in ``sigkill_storm``: a partition, a pause or a busy
    consumer delays a reclaim legitimately. D6 needs overlapping calls: scripted slow first deliveries or a
    pause. R1-R3 are judged on poison only in a case without faults and with quick handlers, as in the
    ``poison`` scenarios: a consumer whose slots are all held by slow handlers takes a due retry late."""
    kinds = {s.nemesis for s in faults}
    ids = ["D1", "D2", "P1", "D3"]
    requires: list[str] = []
    if kinds & {Kill, CrashRestart}:
        ids.append("P2")
    if any(n.needs_proxy for n in kinds):
        ids.append("L4")
    if ClockSkew in kinds:
        ids.append("D4")
        requires.append("lease_ttl")
    quick = handler.get("base_ms", 0) <= 100 and not handler.get("slow_fraction") and not workload.script
    if kinds == {Kill} and quick and not workload.poison:
        ids.append("D5")
        requires.append(RECLAIM)
    if workload.script or Pause in kinds:
        ids.append("D6")
        requires.append(RECLAIM)
    if workload.poison and not faults and quick:
        capped = config.max_deliveries is not None
        ids += ["R2" if capped else "R1", "R3"]
        requires += ["dlq", "max_deliveries" if capped else "retry_schedule"]
    return ids, tuple(dict.fromkeys(requires))


@st.composite
def scenarios(draw: st.DrawFn, *, network: bool = True) -> Scenario:
    """A whole case: consumer knobs, handler, workload and up to four faults; ``network``: Toxiproxy is there."""
    ttl = draw(st.sampled_from([2.0, 1.5, 3.0]))
    # The simplest case, where shrinking ends, is a busy one (three workers, 100 messages/s): a race that needs
    # contention shows in every replay of it, not in one of three.
    workers = draw(st.sampled_from([3, 2]))
    max_workers = 4
    base_ms = draw(st.sampled_from([40, 20, 100, 300]))
    handler: dict[str, Any] = {"base_ms": base_ms, "jitter_ms": base_ms // 2}
    if draw(st.booleans()):  # a tenth of the handlers outlive the lease
        handler |= {"slow_fraction": 0.1, "slow_s": round(1.2 * ttl, 1)}
    # Published at no more than 60 % of what the consumers can handle, so the backlog drains in seconds.
    capacity = workers * max_workers * 1000 / base_ms
    rate = min(draw(st.sampled_from([100, 60, 150])), int(0.6 * capacity))
    messages = min(draw(st.integers(200, 400)), int(rate * PUBLISH_S))
    script = draw(st.sampled_from(["none", "stale", "slow_second"]))
    scripts: dict[str, dict[str, Any]] = {
        "none": {},
        # slow_handlers: the first delivery outruns the lease, the second fails once.
        "stale": {"script_every": 5, "script": [{"ms": round(ttl * 1600)}, {"ms": 300, "fail": True}]},
        # paused_worker: every second delivery holds its lease a while, so a zombie's write lands on a live one.
        "slow_second": {"script_every": 1, "script": [{}, {"ms": round(ttl * 800)}]},
    }
    poison = draw(st.integers(0, 6))
    capped = poison > 0 and draw(st.booleans())
    workload = Workload(messages=messages, rate=rate, batch=draw(st.sampled_from([4, 1, 10])), poison=poison,
                        **scripts[script])
    config = ConsumerConfig(lease_ttl_seconds=ttl, max_fetch_interval=0.5, max_workers=max_workers,
                            fetch_batch_size=draw(st.sampled_from([20, 10, 50])), statement_timeout_seconds=2.0,
                            max_deliveries=MAX_DELIVERIES if capped else None,
                            retry=(CAPPED_RETRY if capped else POISON_RETRY) if poison else RetryConfig())
    faults = compatible(draw(st.lists(fault_steps(ttl=ttl, workers=workers, network=network), max_size=4)))
    guarantees, requires = guarantees_for(faults, workload, handler, config)
    return Scenario(name=NAME, guarantees=guarantees, config=config, workers=workers, handler=handler,
                    workload=workload, faults=faults, requires=requires, drain_deadline=30.0)
