"""Handler calls: stored as columns while a history is indexed, handed to checkers as :class:`Delivery` views.

Why columns: a run of millions of messages has millions of calls, and checkers look closely at only a few of them
(redeliveries, killed calls, poison). A call costs about 55 bytes in arrays, against about a kilobyte as events and
objects; a :class:`Delivery` is made only where a checker asks for one.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any


NONE = math.nan  # an absent time in a float column
NO_COUNT = -(2**63)  # an absent (or non-integer) claim count
# Call flags: how it ended and settled, whether a completion fitted several calls, a payload that could not be read,
# and whether its message's publish was seen before it (then it bounds the call's lease start from below).
END_FAIL, SETTLE_FAIL, AMBIGUOUS, CORRUPT, PUBLISHED = (1 << n for n in range(5))


def parse_lease_at(raw: Any) -> float | None:
    """Epoch seconds from an ISO datetime string (naive means UTC) or a number; None if absent or unreadable."""
    if type(raw) is float:  # what the harness's workers write
        return raw
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


def _opt(x: float) -> float | None:
    return None if x != x else x  # NaN is the columns' None


class Mark:
    """How a call ended (deliver ok | fail) or was settled (settle ok | fail, with the outcome)."""

    __slots__ = ("t", "type", "outcome")

    def __init__(self, t: float, type_: str, outcome: Any = None) -> None:
        self.t = t
        self.type = type_
        self.outcome = outcome


class Delivery:
    """One handler call: when it was invoked, how it ended, and what the implementation did afterwards.
    Two views of the same call are equal (``i`` is its place in invoke order)."""

    __slots__ = ("i", "mid", "process", "t", "lease_at", "claim_t", "published", "count", "end", "settle", "cut_at",
                 "ambiguous")

    def __init__(self, i: int, mid: str | None, process: str, t: float, lease_at: float | None,
                 claim_t: float | None, published: float | None, count: int | None, end: Mark | None,
                 settle: Mark | None, cut_at: float | None, ambiguous: bool) -> None:
        self.i = i
        self.mid = mid
        self.process = process
        self.t = t
        self.lease_at = lease_at  # database clock, when the adapter reports it (with the call or with its claim)
        self.claim_t = claim_t  # the ``claim`` the implementation reported for this row before the call
        self.published = published  # the publish invoke of this mid: no lease of it can start earlier
        self.count = count  # the implementation's claim count (``delivery``), when it reports one
        self.end = end  # deliver ok | fail
        self.settle = settle  # settle ok | fail matched to this call
        self.cut_at = cut_at  # the process died (killed, exited, restarted) with the call unfinished
        self.ambiguous = ambiguous  # a completion or settle fitted several concurrent calls of this mid

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Delivery) and other.i == self.i

    def __hash__(self) -> int:
        return self.i

    def __repr__(self) -> str:
        return f"Delivery({self.mid!r}, {self.process!r}, t={self.t}, outcome={self.outcome!r})"

    @property
    def failed(self) -> bool:
        return self.end is not None and self.end.type == "fail"

    @property
    def outcome(self) -> Any:
        return self.settle.outcome if self.settle is not None else None

    @property
    def finished_at(self) -> float | None:
        """Last thing known of the call on the monotonic clock; None while it may still run."""
        for mark in (self.settle, self.end):
            if mark is not None:
                return mark.t
        return self.cut_at


class Calls:
    """Every handler call of a history in invoke order, as columns, with completions and settles matched to them
    as they come.

    A completion or settle matches a call of the same (process, mid) whose lease_at / delivery it echoes (if it
    carries any), the oldest first; a settle prefers calls that already ended, in the order they ended. Without
    echoes, concurrent calls of one mid in one process cannot be told apart: they are marked ambiguous. A SIGKILL,
    exit, death or restart of a process cuts its unfinished calls (:meth:`cut`)."""

    def __init__(self) -> None:
        self.mid = array("i")  # message number (the index's), -1 for none
        self.proc = array("i")  # process number
        self.t = array("d")
        self.lease_at = array("d")
        self.count = array("q")
        self.end_t = array("d")
        self.settle_t = array("d")
        self.outcome = array("I")  # into :attr:`outcomes`; 0 for none
        self.flags = bytearray()
        self.prev = array("i")  # the same message's previous call, -1 for none
        self.claim_t: dict[int, float] = {}  # the few calls with a reported claim
        self.cut_at: dict[int, float] = {}  # the few calls a process end cut
        self.outcomes: list[Any] = [None]
        self._outcome_codes: dict[tuple[type, Any], int] = {}
        # Calls that a completion or settle may still match: process -> mid -> call numbers.
        self._running: dict[int, dict[int, list[int]]] = {}  # no end yet
        self._unsettled: dict[int, dict[int, list[int]]] = {}  # ended, no settle yet
        self._echo: dict[int, tuple[float | None, Any]] = {}  # what each of those calls may be echoed by

    def __len__(self) -> int:
        return len(self.t)

    def invoke(self, proc: int, mid: int, prev: int, t: float, value: dict[str, Any], lease_at: float | None,
               echo_lease: float | None, claim_t: float | None, flags: int) -> int:
        i = len(self.t)
        raw_count = value.get("delivery")
        self.mid.append(mid)
        self.proc.append(proc)
        self.t.append(t)
        self.lease_at.append(NONE if lease_at is None else lease_at)
        self.count.append(raw_count if type(raw_count) is int and NO_COUNT < raw_count < 2**63 else NO_COUNT)
        self.end_t.append(NONE)
        self.settle_t.append(NONE)
        self.outcome.append(0)
        self.flags.append(flags)
        self.prev.append(prev)
        if claim_t is not None:
            self.claim_t[i] = claim_t
        self._echo[i] = (echo_lease, raw_count)
        _push(self._running, proc, mid, i)
        return i

    def end(self, proc: int, mid: int, t: float, type_: str, value: dict[str, Any]) -> None:
        """A deliver ok | fail: the oldest running call of (process, mid) it echoes ends."""
        i = self._take(self._running.get(proc, {}), mid, value)
        if i is None:
            return
        self.end_t[i] = t
        if type_ == "fail":
            self.flags[i] |= END_FAIL
        if self.settle_t[i] != self.settle_t[i]:
            _push(self._unsettled, proc, mid, i)
        else:
            del self._echo[i]

    def settle(self, proc: int, mid: int, t: float, type_: str, value: dict[str, Any]) -> None:
        """A settle ok | fail: the oldest ended, unsettled call it echoes, else the oldest running unsettled one."""
        i = self._take(self._unsettled.get(proc, {}), mid, value)
        if i is None:
            candidates = [c for c in self._running.get(proc, {}).get(mid, ()) if self.settle_t[c] != self.settle_t[c]]
            i = self._take({mid: candidates}, mid, value)
            if i is None:
                return
        else:
            del self._echo[i]
        self.settle_t[i] = t
        if type_ == "fail":
            self.flags[i] |= SETTLE_FAIL
        self.outcome[i] = self._code(value.get("outcome"))

    def _code(self, outcome: Any) -> int:
        key: tuple[type, Any] | None = (type(outcome), outcome)
        try:
            code = self._outcome_codes.get(key)
        except TypeError:  # an unhashable outcome: kept as it is
            key = code = None
        if code is None:
            code = len(self.outcomes)
            self.outcomes.append(outcome)
            if key is not None:
                self._outcome_codes[key] = code
        return code

    def cut(self, proc: int, t: float) -> None:
        """The process ended: its unfinished calls are cut there, and nothing of it will settle any more."""
        for calls in self._running.pop(proc, {}).values():
            for i in calls:
                self.cut_at[i] = t
                self._echo.pop(i, None)
        for calls in self._unsettled.pop(proc, {}).values():
            for i in calls:
                self._echo.pop(i, None)

    def _take(self, calls_by_mid: dict[int, list[int]], mid: int, value: dict[str, Any]) -> int | None:
        """Removes and returns the oldest call the event echoes; if several fit, all are marked ambiguous."""
        calls = calls_by_mid.get(mid)
        if not calls:
            return None
        lease = value.get("lease_at")
        lease = NONE if lease is None else parse_lease_at(lease)  # NONE: the event does not echo it
        count = value.get("delivery")
        if len(calls) == 1:  # the common case: one call of this mid in flight in this process
            i = calls[0]
            if not self._echoes(i, lease, count):
                return None
            del calls_by_mid[mid]
            return i
        matching = [i for i in calls if self._echoes(i, lease, count)]
        if not matching:
            return None
        if len(matching) > 1:
            for i in matching:
                self.flags[i] |= AMBIGUOUS
        calls.remove(matching[0])
        if not calls:
            del calls_by_mid[mid]
        return matching[0]

    def _echoes(self, i: int, lease: float | None, count: Any) -> bool:
        mine_lease, mine_count = self._echo[i]
        if lease is not None and lease == lease and mine_lease != lease:
            return False
        if lease is None and mine_lease is not None:  # echoed a lease time that cannot be read
            return False
        return count is None or mine_count == count

    def view(self, i: int, mid: str | None, process: str, published: float | None) -> Delivery:
        end = self.end_t[i]
        settle = self.settle_t[i]
        flags = self.flags[i]
        count = self.count[i]
        return Delivery(
            i, mid, process, self.t[i], _opt(self.lease_at[i]), self.claim_t.get(i),
            published if flags & PUBLISHED else None, None if count == NO_COUNT else count,
            None if end != end else Mark(end, "fail" if flags & END_FAIL else "ok"),
            None if settle != settle else Mark(settle, "fail" if flags & SETTLE_FAIL else "ok",
                                               self.outcomes[self.outcome[i]]),
            self.cut_at.get(i), bool(flags & AMBIGUOUS))

    def corrupt(self, i: int) -> bool:
        return bool(self.flags[i] & CORRUPT)

    def unfinished(self) -> Iterator[int]:
        """Calls that neither ended nor settled (killed in flight, or still running when the history stops)."""
        settle_t = self.settle_t
        for i, end in enumerate(self.end_t):
            if end != end and settle_t[i] != settle_t[i]:
                yield i


def _push(calls: dict[int, dict[int, list[int]]], proc: int, mid: int, i: int) -> None:
    by_mid = calls.get(proc)
    if by_mid is None:
        by_mid = calls[proc] = {}
    pending = by_mid.get(mid)
    if pending is None:
        by_mid[mid] = [i]
    else:
        pending.append(i)
