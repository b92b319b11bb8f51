"""The one index of a merged history that every checker reads, built in one pass.

Why: a long run has millions of events, and checkers that each re-scan them (and rebuild the deliveries) made
judging slow and held every event in memory. :class:`History` reads the events once, in order, and keeps only what
the checkers read: per message its publish outcome, first publish, commit time and counts (columns), per handler
call its times and outcome (columns, :mod:`harness.checkers._calls`), and the few low-volume events (the run header,
faults, worker notes, logs, metrics, samples, the drain and the final read) as they are. Views are computed once and
cached; :func:`harness.analysis.judge` builds one index per run and hands it to every checker.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from harness.checkers import _faults
from harness.checkers._calls import CORRUPT, NONE, PUBLISHED, Calls, Delivery, parse_lease_at
from harness.checkers._faults import BACKEND_ENDING, FaultWindow, ends_process, target
from harness.checkers._leases import claim_order
from harness.history import Event, read_events, read_raw

EPS = 0.001  # tolerance on database-clock gaps, seconds
EXAMPLES = 10  # offending items quoted in a verdict's figures
REMOVALS = ("acked", "dead_lettered")  # settle outcomes that remove the row

# Message flags: the publish outcomes, the runner's resolution of uncertain commits, and what deliveries showed.
OK, FAIL, INFO, FOUND, ABSENT, DELIVERED, REMOVED, REMOVED_TWICE = (1 << n for n in range(8))
_PUBLISHED = {"ok": OK, "fail": FAIL, "info": INFO}

T = TypeVar("T")

__all__ = ["BACKEND_ENDING", "EPS", "EXAMPLES", "Delivery", "FaultWindow", "FinalRead", "History", "examples",
           "index_deliveries", "parse_lease_at", "target"]


def examples(items: Iterable[Any]) -> list[Any]:
    out = []
    for item in items:
        if len(out) == EXAMPLES:
            break
        out.append(item)
    return out


@dataclass(frozen=True)
class FinalRead:
    """The tables after the drain: mids still pending, and mids in the DLQ (one entry per row)."""

    pending: list[str]
    dead: list[str]
    done: bool = True  # the read happened; without it nothing can be said of what the tables hold


class History:
    """A merged history, indexed for the checkers. Build it with :meth:`of` (events in ``Event.t`` order) or
    :meth:`read` (a saved history, streamed)."""

    def __init__(self) -> None:
        self.size = 0  # events read
        self.ordered = True  # events came in Event.t order
        self.min_t = float("inf")
        self.last_t: float | None = None  # the last event's
        self.run: Event | None = None  # the run header
        self.others: list[Event] = []  # every event but publish, claim, deliver and settle, in order
        # Messages, by number: name, flags, first publish invoke, last commit seen, deliver oks, calls, last call.
        self.mids: list[str] = []
        self._mid_ids: dict[str, int] = {}
        self.m_flags = bytearray()
        self.m_published = array("d")
        self.m_committed_at = array("d")  # the last publish ok / info or resolve that names it
        self.m_handled = array("I")  # deliver ok events
        self.m_calls = array("I")
        self._m_last = array("i")  # its latest call, -1 for none (calls chain back through Calls.prev)
        self._redelivered: list[int] = []  # messages with a second call, as they got it
        # Processes, by number.
        self.procs: list[str] = []
        self._proc_ids: dict[str, int] = {}
        self.proc_calls: list[int] = []
        self.proc_first_t: list[float] = []  # of its calls
        self.proc_last_t: list[float] = []
        self.delivering: set[str] = set()  # processes with any deliver event
        self.calls = Calls()
        self.all_lease_times = True  # every call carries a lease time (its own or its claim's)
        self.claimed_calls = 0  # calls dated by a claim the implementation reported (ctx.claimed)
        self.corrupt: list[str] = []  # deliver invokes without a mid or with a payload that failed its checksum
        self.poison: set[str] = set()  # published as poison, in transactions not rolled back on purpose
        self.probes: list[tuple[str, float]] = []  # idle single-message publishes: (mid, publish ok)
        self.lease_lost = 0  # settle fail lease_lost
        self._claims: dict[tuple[str, str], tuple[float, float | None]] = {}  # reported, not yet handled
        self._cache: dict[Any, Any] = {}
        self._source: Callable[[], Iterable[Event]] | None = None  # the events again, for :meth:`replay`

    # -- building ------------------------------------------------------------------------------------------------

    @classmethod
    def of(cls, history: History | Iterable[Event]) -> History:
        """The index of these events (taken in the order given, which must be ``Event.t`` order)."""
        if isinstance(history, History):
            return history
        h = cls()
        for e in history:
            h._add(e.t, e.process, e.type, e.f, e.value, e)
        if isinstance(history, list | tuple):
            h._source = lambda: history
        return h

    @classmethod
    def read(cls, path: Path) -> History:
        """A saved history, streamed from its file: only the low-volume lines become events, and none is held but
        those; sorted first if the file is not in ``Event.t`` order."""
        h = cls()
        for raw in read_raw(path):
            try:
                t, process, type_, f, _ = raw["t"], raw["process"], raw["type"], raw["f"], raw["wall"]
            except KeyError:  # not an event (as read_events skips it)
                continue
            h._add(t, process, type_, f, raw.get("value") or {}, raw)
        if not h.ordered:
            return cls.of(sorted(read_events(path), key=lambda e: e.t))
        h._source = lambda: read_events(path)
        return h

    def replay(self) -> Iterable[Event]:
        """Every event again, in order, for the rare reader that needs what the index does not keep (a failing
        verdict quoting the events of a message); a history streamed from a file is read once more."""
        if self._source is None:
            raise ValueError("this history was indexed from a one-shot stream: its events cannot be read again")
        return self._source()

    def _add(self, t: float, process: str, type_: str, f: str, value: dict[str, Any],
             source: Event | dict[str, Any]) -> None:
        """One event, as its fields (``source``: the event, or its decoded line, made an event only if kept)."""
        if self.last_t is not None and t < self.last_t:
            self.ordered = False
        if t < self.min_t:
            self.min_t = t
        self.last_t = t
        self.size += 1
        if f == "deliver":
            self.delivering.add(process)
            if type_ == "invoke":
                self._invoke(t, process, value)
            elif type_ == "ok" or type_ == "fail":
                self._end(t, process, type_, value)
        elif f == "settle":
            if type_ == "ok" or type_ == "fail":
                self._settle(t, process, type_, value)
        elif f == "publish":
            self._publish(t, type_, value)
        elif f == "claim":
            if type_ == "ok":
                lease_at = parse_lease_at(value.get("lease_at"))
                for m in value.get("mids") or ():
                    self._claims[(process, str(m))] = (t, lease_at)
        else:
            self._note(source if isinstance(source, Event) else Event.from_raw(source))

    def _mid(self, name: str) -> int:
        """The message's number, given one when first seen."""
        m = self._mid_ids.get(name)
        if m is None:
            m = self._mid_ids[name] = len(self.mids)
            self.mids.append(name)
            self.m_flags.append(0)
            self.m_published.append(NONE)
            self.m_committed_at.append(NONE)
            self.m_handled.append(0)
            self.m_calls.append(0)
            self._m_last.append(-1)
        return m

    def _proc(self, name: str) -> int:
        p = self._proc_ids.get(name)
        if p is None:
            p = self._proc_ids[name] = len(self.procs)
            self.procs.append(name)
            self.proc_calls.append(0)
            self.proc_first_t.append(float("inf"))
            self.proc_last_t.append(float("-inf"))
        return p

    def _invoke(self, t: float, process: str, value: dict[str, Any]) -> None:
        raw = value.get("mid")
        p = self._proc(process)
        m = -1 if raw is None else self._mid(str(raw))
        claim = self._claims.pop((process, str(raw)), None) if self._claims else None
        echo = parse_lease_at(value.get("lease_at"))
        lease_at = echo if echo is not None or claim is None else claim[1]
        if claim is not None:
            self.claimed_calls += 1
        if lease_at is None:
            self.all_lease_times = False
        flags = 0
        if raw is None or value.get("intact") is False:
            flags = CORRUPT
            self.corrupt.append(str(raw))
        else:
            self.m_flags[m] |= DELIVERED
        if m >= 0 and self.m_published[m] == self.m_published[m]:
            flags |= PUBLISHED
        prev = self._m_last[m] if m >= 0 else -1
        i = self.calls.invoke(p, m, prev, t, value, lease_at, echo, None if claim is None else claim[0], flags)
        self.proc_calls[p] += 1
        if t < self.proc_first_t[p]:
            self.proc_first_t[p] = t
        if t > self.proc_last_t[p]:
            self.proc_last_t[p] = t
        if m >= 0:
            self._m_last[m] = i
            self.m_calls[m] += 1
            if self.m_calls[m] == 2:
                self._redelivered.append(m)

    def _end(self, t: float, process: str, type_: str, value: dict[str, Any]) -> None:
        raw = value.get("mid")
        if raw is None:
            m = -1
        elif type_ == "ok":
            m = self._mid(str(raw))
            self.m_handled[m] += 1
        else:
            m = self._mid_ids.get(str(raw), -2)
        self.calls.end(self._proc(process), m, t, type_, value)

    def _settle(self, t: float, process: str, type_: str, value: dict[str, Any]) -> None:
        raw = value.get("mid")
        outcome = value.get("outcome")
        if type_ == "ok" and outcome in REMOVALS:
            r = self._mid_ids.get(str(raw))
            if r is None:
                r = self._mid(str(raw))
            self.m_flags[r] |= REMOVED_TWICE if self.m_flags[r] & REMOVED else REMOVED
        elif type_ == "fail" and outcome == "lease_lost":
            self.lease_lost += 1
        m = -1 if raw is None else self._mid_ids.get(str(raw), -2)
        self.calls.settle(self._proc(process), m, t, type_, value)

    def _publish(self, t: float, type_: str, value: dict[str, Any]) -> None:
        mids = value.get("mids") or ()
        if type_ == "invoke":
            for raw in mids:
                m = self._mid(str(raw))
                if self.m_published[m] != self.m_published[m]:
                    self.m_published[m] = t
            if not value.get("rollback"):
                self.poison.update(str(raw) for raw in value.get("poison") or ())
            return
        bit = _PUBLISHED.get(type_)
        if bit is None:
            return
        committed = bit != FAIL
        for raw in mids:
            m = self._mid(str(raw))
            self.m_flags[m] |= bit
            if committed:
                self.m_committed_at[m] = t
        if committed and not mids:
            self._committed_at(t, value)
        if bit == OK and value.get("probe") and mids:
            self.probes.append((str(mids[0]), t))

    def _committed_at(self, t: float, value: dict[str, Any]) -> None:
        for raw in value.get("mids") or value.get("committed") or ():
            self.m_committed_at[self._mid(str(raw))] = t

    def _note(self, e: Event) -> None:
        self.others.append(e)
        if e.f == "resolve" and e.type in ("ok", "info"):
            self._committed_at(e.t, e.value)
            if e.type == "info":
                for raw in e.value.get("committed") or ():
                    self.m_flags[self._mid(str(raw))] |= FOUND
                for raw in e.value.get("absent") or ():
                    self.m_flags[self._mid(str(raw))] |= ABSENT
        elif e.f == "run" and e.type == "info" and self.run is None:
            self.run = e
        if ends_process(e):
            p = self._proc_ids.get(target(e))
            if p is not None:
                self.calls.cut(p, e.t)

    # -- views -----------------------------------------------------------------------------------------------------

    def cached(self, key: Any, make: Callable[[], T]) -> T:
        """A view a checker derives from the index, computed once per index (e.g. the total-queue tally)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def events(self, f: str) -> list[Event]:
        """The low-volume events of one kind (``fault``, ``worker``, ``log``, ``metric``, ``sample``...), in order."""
        return self.cached(("events", f), lambda: [e for e in self.others if e.f == f])

    @property
    def faults(self) -> list[Event]:
        return self.events("fault")

    def windows(self, kind: str) -> list[FaultWindow]:
        """Windows of one fault kind that did not fail."""
        return self.cached(("windows", kind), lambda: _faults.windows(self.faults, kind))

    def kinds_of(self, category: str) -> list[str]:
        """Fault kinds of one category that ran in this history, in first-run order."""
        return self.cached(("kinds", category), lambda: _faults.kinds_of(self.faults, category))

    def windows_of(self, category: str) -> list[FaultWindow]:
        """Windows of every fault kind of one category, kind by kind in first-run order."""
        return [w for k in self.kinds_of(category) for w in self.windows(k)]

    def last_heal(self) -> tuple[float | None, bool]:
        """When the last fault healed, and whether every fault healed."""
        return self.cached("last_heal", lambda: _faults.last_heal(self.faults))

    def process_ends(self) -> dict[str, float]:
        """The last time a fault that ends a process took effect on it (``fault`` ok, ``ends_process``)."""
        def make() -> dict[str, float]:
            out: dict[str, float] = {}
            for e in self.faults:
                if e.type == "ok" and e.value.get("ends_process"):
                    out[target(e)] = max(out.get(target(e), e.t), e.t)
            return out
        return self.cached("process_ends", make)

    def backend_ends(self) -> list[tuple[float, float]]:
        """Windows (invoke to heal) of faults that may have ended backends: connections cut or the server crashed."""
        kinds = {k for c in BACKEND_ENDING for k in self.kinds_of(c)}
        return [(w.invoked, w.healed if w.healed is not None else float("inf")) for k in kinds for w in self.windows(k)]

    def listen_outages(self) -> list[FaultWindow]:
        """Windows in which the consumers' LISTEN was lost (faults of the ``wakeup`` category)."""
        return self.windows_of("wakeup")

    @property
    def final(self) -> FinalRead:
        """The last successful ``read`` of the tables; empty when the history holds none."""
        def make() -> FinalRead:
            last = None
            for e in self.events("read"):
                if e.type == "ok":
                    last = e
            if last is None:
                return FinalRead([], [], done=False)
            return FinalRead([str(m) for m in last.value.get("pending") or ()],
                             [str(m) for m in last.value.get("dead") or ()])
        return self.cached("final", make)

    def _drain(self) -> Event | None:
        return next((e for e in reversed(self.events("drain")) if e.type in ("ok", "fail")), None)

    @property
    def drained(self) -> bool:
        """The drain reached an empty outbox before its deadline (``drain`` ok); False when not recorded."""
        drain = self._drain()
        return drain is not None and drain.type == "ok"

    @property
    def drain_end(self) -> float | None:
        """When the drain ended (reached an empty outbox, or gave up at its deadline)."""
        drain = self._drain()
        return drain.t if drain is not None else None

    @property
    def skewed(self) -> set[str]:
        """Worker incarnations spawned with a faked wall clock."""
        return {str(e.value["process"]) for e in self.events("worker")
                if e.value.get("event") == "spawned" and e.value.get("clock_offset")}

    # -- handler calls ---------------------------------------------------------------------------------------------

    def delivery(self, i: int) -> Delivery:
        c = self.calls
        m = c.mid[i]
        if m < 0:
            return c.view(i, None, self.procs[c.proc[i]], None)
        return c.view(i, self.mids[m], self.procs[c.proc[i]], self.m_published[m])

    def deliveries(self) -> list[Delivery]:
        """Every call in invoke order (all of them: for short histories and tests)."""
        return [self.delivery(i) for i in range(len(self.calls))]

    @property
    def redeliveries(self) -> int:
        """Calls of a mid after its first."""
        return sum(self.m_calls[m] - 1 for m in self._redelivered)

    def _calls_of_mid(self, m: int) -> list[int]:
        """One message's calls in invoke order."""
        out = []
        i = self._m_last[m]
        while i >= 0:
            out.append(i)
            i = self.calls.prev[i]
        out.reverse()
        return out

    def group(self, mid: str) -> list[Delivery]:
        """The calls of one mid in claim order (:func:`harness.checkers._leases.claim_order`)."""
        m = self._mid_ids.get(mid)
        if m is None or not self.m_calls[m]:
            return []
        if self.m_calls[m] > 1:
            return self.cached(("group", m), lambda: claim_order([self.delivery(i) for i in self._calls_of_mid(m)]))
        return [self.delivery(self._m_last[m])]

    def redelivered(self) -> list[list[Delivery]]:
        """The calls of every mid called more than once, each in claim order, mids by their first call."""
        order = sorted(self._redelivered, key=lambda m: self._calls_of_mid(m)[0])
        return [self.group(self.mids[m]) for m in order]

    def committed_at(self, mid: str, default: float) -> float:
        """When the last publish ok / info or resolve that names the mid was recorded; ``default`` if none did."""
        m = self._mid_ids.get(mid)
        return default if m is None or self.m_committed_at[m] != self.m_committed_at[m] else self.m_committed_at[m]

    def first_call_t(self, mid: str) -> float | None:
        m = self._mid_ids.get(mid)
        return None if m is None or not self.m_calls[m] else self.calls.t[self._calls_of_mid(m)[0]]

    def calls_of(self, process: str) -> list[Delivery]:
        """One process's calls in invoke order."""
        p = self._proc_ids.get(process)
        if p is None or not self.proc_calls[p]:
            return []
        return [self.delivery(i) for i, q in enumerate(self.calls.proc) if q == p]

    def unfinished(self) -> list[Delivery]:
        """Calls with a mid that neither ended nor settled: killed in flight, or running when the history stops."""
        return [self.delivery(i) for i in self.calls.unfinished() if self.calls.mid[i] >= 0]


def index_deliveries(history: History | Iterable[Event]) -> list[Delivery]:
    """Every call of a history in invoke order, completions and settles matched (see :class:`Calls`)."""
    return History.of(history).deliveries()
