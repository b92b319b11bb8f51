"""Views of a merged history shared by the checkers: deliveries, fault windows, clocks. One way to do each."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from harness.history import Event

EPS = 0.001  # tolerance on database-clock gaps, seconds
EXAMPLES = 10  # offending items quoted in a verdict's figures
_MATCH_KEYS = ("lease_at", "delivery")  # echoed by completions to tell concurrent calls of one mid apart


def parse_lease_at(raw: Any) -> float | None:
    """Epoch seconds from an ISO datetime string (naive means UTC) or a number; None if absent or unreadable."""
    if raw is None or isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, datetime):
        stamp = raw
    else:
        try:
            stamp = datetime.fromisoformat(str(raw))
        except ValueError:
            return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def target(event: Event) -> str:
    """The process an event is about: ``value["process"]`` for notes written by others, else the writer."""
    return str(event.value.get("process") or event.process)


@dataclass(eq=False)
class Delivery:
    """One handler call: its invoke, how it ended, and what the implementation did afterwards."""

    invoke: Event
    lease_at: float | None  # database clock, when the adapter reports it (with the call or with its claim)
    claim: Event | None = None  # the ``claim`` the implementation reported for this row before the call
    published: float | None = None  # the publish invoke of this mid: no lease of it can start earlier
    end: Event | None = None  # deliver ok | fail
    settle: Event | None = None  # settle ok | fail matched to this call
    cut_at: float | None = None  # the process died (killed, exited, restarted) with the call unfinished
    ambiguous: bool = False  # a completion or settle fitted several concurrent calls of this mid in this process

    @property
    def mid(self) -> str | None:
        return self.invoke.mid

    @property
    def process(self) -> str:
        return self.invoke.process

    @property
    def t(self) -> float:
        return self.invoke.t

    @property
    def failed(self) -> bool:
        return self.end is not None and self.end.type == "fail"

    @property
    def outcome(self) -> str | None:
        return self.settle.value.get("outcome") if self.settle is not None else None

    @property
    def finished_at(self) -> float | None:
        """Last thing known of the call on the monotonic clock; None while it may still run."""
        for event in (self.settle, self.end):
            if event is not None:
                return event.t
        return self.cut_at


def _same_call(invoke: Event, other: Event) -> bool:
    """Every discriminating key the completion carries agrees with the invoke (lease times compared parsed)."""
    for k in _MATCH_KEYS:
        theirs = other.value.get(k)
        if theirs is None:
            continue
        mine = invoke.value.get(k)
        if k == "lease_at":
            mine, theirs = parse_lease_at(mine), parse_lease_at(theirs)
        if mine != theirs:
            return False
    return True


def _process_ended(event: Event) -> bool:
    if event.f == "fault" and event.type == "ok":
        return bool(event.value.get("ends_process"))
    return event.f == "worker" and event.value.get("event") in ("exited", "died", "stopped", "started")


def index_deliveries(history: Iterable[Event]) -> list[Delivery]:
    """Deliveries in invoke order. Completions and settles match calls of the same (process, mid) whose
    lease_at/delivery they echo (if they carry any), the oldest first; a settle prefers calls that already ended,
    in the order they ended. Without echoes, concurrent calls of one mid in one process cannot be told apart:
    they are marked ambiguous. A SIGKILL, exit, death or restart of a process cuts its unfinished calls."""
    out: list[Delivery] = []
    running: dict[tuple[str, str | None], list[Delivery]] = defaultdict(list)  # no end yet
    unsettled: dict[tuple[str, str | None], list[Delivery]] = defaultdict(list)  # ended, no settle yet
    claims: dict[tuple[str, str], Event] = {}  # the latest claim of a mid by a process, not yet handled
    published: dict[str, float] = {}
    for e in history:
        key = (e.process, e.mid)
        if e.f == "publish" and e.type == "invoke":
            for m in e.value.get("mids") or ():
                published.setdefault(str(m), e.t)
        elif e.f == "claim" and e.type == "ok":
            for m in e.value.get("mids") or ():
                claims[(e.process, str(m))] = e
        elif e.f == "deliver" and e.type == "invoke":
            claim = claims.pop((e.process, str(e.mid)), None)
            lease_at = parse_lease_at(e.value.get("lease_at"))
            if lease_at is None and claim is not None:
                lease_at = parse_lease_at(claim.value.get("lease_at"))
            call = Delivery(e, lease_at, claim, published.get(str(e.mid)))
            out.append(call)
            running[key].append(call)
        elif e.f == "deliver" and e.type in ("ok", "fail"):
            d = _take(running[key], e)
            if d is not None:
                d.end = e
                if d.settle is None:
                    unsettled[key].append(d)
        elif e.f == "settle" and e.type in ("ok", "fail"):
            d = _take(unsettled[key], e) or _take([c for c in running[key] if c.settle is None], e)
            if d is not None:
                d.settle = e
        elif _process_ended(e):
            name = target(e)
            for k in [k for k in running if k[0] == name]:
                for cut in running.pop(k):
                    cut.cut_at = e.t
            for k in [k for k in unsettled if k[0] == name]:
                del unsettled[k]
    return out


def _take(calls: list[Delivery], event: Event) -> Delivery | None:
    """Removes and returns the oldest call the event matches; if several match, all are marked ambiguous."""
    matching = [d for d in calls if _same_call(d.invoke, event)]
    if not matching:
        return None
    if len(matching) > 1:
        for d in matching:
            d.ambiguous = True
    calls.remove(matching[0])
    return matching[0]


def by_mid(deliveries: Iterable[Delivery]) -> dict[str, list[Delivery]]:
    """Deliveries of each mid in claim order, by the best evidence every one of them carries: database-clock lease
    times, reported claims, the implementation's claim count (``delivery``), else handler starts. A prefetched
    row's handler may start after a later claim's, so handler starts come last."""
    groups: dict[str, list[Delivery]] = defaultdict(list)
    for d in deliveries:
        if d.mid is not None:
            groups[d.mid].append(d)
    for ds in groups.values():
        if all(d.lease_at is not None for d in ds):
            ds.sort(key=lambda d: (d.lease_at, d.t))
        elif all(d.claim is not None for d in ds):
            ds.sort(key=lambda d: (d.claim.t, d.t))  # type: ignore[union-attr]
        elif _distinct_counts(ds):
            ds.sort(key=lambda d: (d.invoke.value["delivery"], d.t))
    return dict(groups)


def _distinct_counts(ds: list[Delivery]) -> bool:
    counts = [d.invoke.value.get("delivery") for d in ds]
    return all(isinstance(c, int) and not isinstance(c, bool) for c in counts) and len(set(counts)) == len(counts)


def claimed_before(a: Delivery, b: Delivery) -> bool:
    """A's row was claimed before B's, by the best evidence both carry (as :func:`by_mid` orders them)."""
    if a.lease_at is not None and b.lease_at is not None:
        return a.lease_at < b.lease_at
    if a.claim is not None and b.claim is not None:
        return a.claim.t < b.claim.t
    if _distinct_counts([a, b]):
        return a.invoke.value["delivery"] < b.invoke.value["delivery"]
    return a.t < b.t


def gap(a: Delivery, b: Delivery, db_clock: bool) -> float:
    """Seconds from lease A to lease B: database clock if asked and both carry lease_at, else monotonic invokes."""
    if db_clock and a.lease_at is not None and b.lease_at is not None:
        return b.lease_at - a.lease_at
    return b.t - a.t


def uses_db_clock(deliveries: Iterable[Delivery], lease_times: bool) -> bool:
    """Lease gaps are judged by the database clock only when the adapter claims it and every delivery carries it."""
    return lease_times and all(d.lease_at is not None for d in deliveries)


def clock_note(db_clock: bool) -> str:
    return "" if db_clock else " (no DB-clock lease times: judged on the monotonic clock with scheduling slack)"


@dataclass(frozen=True)
class LeaseStart:
    """When a call's lease began, as far as the history tells, on the monotonic clock: within [lo, hi]."""

    lo: float
    hi: float
    source: str  # the evidence: "claim", "handler start", "handler start, possibly prefetched"


def lease_start(d: Delivery, slack: float, prefetch: bool) -> LeaseStart:
    """The bounds of a call's lease start without a database-clock lease time.

    A reported claim dates it within the claim statement's round trip (``slack``). Without a claim, the handler
    start bounds it from above; from below, by the scheduling slack when the implementation hands claimed rows
    straight to its handlers, or only by the message's publish when it may hold them in a prefetch buffer first
    (for as long as it likes)."""
    if d.claim is not None:
        return LeaseStart(d.claim.t - slack, d.claim.t, "claim")
    if prefetch:
        lo = d.published if d.published is not None else float("-inf")
        return LeaseStart(lo, d.t, "handler start, possibly prefetched")
    return LeaseStart(d.t - slack, d.t, "handler start")


@dataclass
class FaultWindow:
    """One fault from its invoke to its heal; ``applied`` is the ``fault`` ok that proves it took effect."""

    invoke: Event
    applied: Event | None = None
    healed: float | None = None  # fault info; None if it never healed in the history
    failed: bool = False  # fault fail: it could not be applied

    @property
    def invoked(self) -> float:
        return self.invoke.t

    @property
    def applied_at(self) -> float | None:
        return self.applied.t if self.applied is not None else None

    @property
    def figures(self) -> dict[str, Any]:
        """What the nemesis reported when it took effect, e.g. the process it signalled."""
        return self.applied.value if self.applied is not None else {}

    def active(self, t: float) -> bool:
        """Between taking effect and healing."""
        start = self.applied_at
        return start is not None and start <= t and (self.healed is None or t <= self.healed)


def fault_windows(history: Iterable[Event], kind: str) -> list[FaultWindow]:
    """Windows of one fault kind that did not fail; invoke, ok/fail and info pair up first in, first out."""
    opened: list[FaultWindow] = []
    for e in history:
        if e.f != "fault" or e.value.get("kind") != kind:
            continue
        if e.type == "invoke":
            opened.append(FaultWindow(e))
        elif e.type in ("ok", "fail"):
            w = next((w for w in opened if w.applied is None and not w.failed), None)
            if w is not None:
                w.applied, w.failed = (e, False) if e.type == "ok" else (None, True)
        else:
            w = next((w for w in opened if w.applied is not None and w.healed is None), None)
            if w is not None:
                w.healed = e.t
    return [w for w in opened if not w.failed]


def process_ends(history: Iterable[Event]) -> list[Event]:
    """Faults that took effect and ended a process (``fault`` ok of a nemesis declared ``ends_process``)."""
    return [e for e in history if e.f == "fault" and e.type == "ok" and e.value.get("ends_process")]


def examples(items: Iterable[Any]) -> list[Any]:
    return list(items)[:EXAMPLES]



def kinds_of(history: Iterable[Event], category: str) -> list[str]:
    """Fault kinds of one category (as their nemeses declared it) that ran in this history, in first-run order."""
    return list(dict.fromkeys(str(e.value.get("kind")) for e in history
                              if e.f == "fault" and e.type == "invoke" and e.value.get("category") == category))


# -- observations the runner recorded: the final read, the drain, the poison set -----------------------------

@dataclass(frozen=True)
class FinalRead:
    """The tables after the drain: mids still pending, and mids in the DLQ (one entry per row)."""

    pending: list[str]
    dead: list[str]
    done: bool = True  # the read happened; without it nothing can be said of what the tables hold


def final_read(history: Iterable[Event]) -> FinalRead:
    """The last successful ``read`` of the tables; empty when the history holds none."""
    last: Event | None = None
    for e in history:
        if e.f == "read" and e.type == "ok":
            last = e
    if last is None:
        return FinalRead([], [], done=False)
    return FinalRead([str(m) for m in last.value.get("pending") or ()], [str(m) for m in last.value.get("dead") or ()])


def last_heal(history: Iterable[Event]) -> tuple[float | None, bool]:
    """When the last fault healed, and whether every fault healed (a heal that raised did not)."""
    opened: dict[str, int] = defaultdict(int)
    last: float | None = None
    clean = True
    for e in history:
        if e.f != "fault":
            continue
        kind = str(e.value.get("kind"))
        if e.type == "ok":
            opened[kind] += 1
        elif e.type == "info":
            opened[kind] -= 1
            last = e.t
            clean = clean and not e.value.get("heal_error")
    return last, clean and all(n <= 0 for n in opened.values())


def drain_end(history: Iterable[Event]) -> float | None:
    """When the drain ended (reached an empty outbox, or gave up at its deadline)."""
    end = None
    for e in history:
        if e.f == "drain" and e.type in ("ok", "fail"):
            end = e.t
    return end


def drained(history: Iterable[Event]) -> bool:
    """The drain reached an empty outbox before its deadline (``drain`` ok); False when not recorded."""
    outcome = None
    for e in history:
        if e.f == "drain" and e.type in ("ok", "fail"):
            outcome = e.type
    return outcome == "ok"


def poison(history: Iterable[Event]) -> set[str]:
    """Mids published as poison (the handler always raises), in transactions not rolled back on purpose."""
    return {str(m) for e in history if e.f == "publish" and e.type == "invoke" and not e.value.get("rollback")
            for m in e.value.get("poison") or ()}


def skewed_workers(history: Iterable[Event]) -> set[str]:
    """Worker incarnations spawned with a faked wall clock."""
    return {str(e.value["process"]) for e in history
            if e.f == "worker" and e.value.get("event") == "spawned" and e.value.get("clock_offset")}


#: Fault categories that can end PostgreSQL backends (and with them the locks they hold).
BACKEND_ENDING = ("network", "crash")


def backend_ends(history: Iterable[Event]) -> list[tuple[float, float]]:
    """Windows (invoke to heal) of faults that may have ended backends: connections cut or the server crashed."""
    kinds = {k for c in BACKEND_ENDING for k in kinds_of(history, c)}
    return [(w.invoked, w.healed if w.healed is not None else float("inf"))
            for k in kinds for w in fault_windows(history, k)]


def listen_outages(history: Iterable[Event]) -> list[FaultWindow]:
    """Windows in which the consumers' LISTEN was lost (faults of the ``wakeup`` category)."""
    return [w for k in kinds_of(history, "wakeup") for w in fault_windows(history, k)]
