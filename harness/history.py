"""The history: every operation the harness observed, as Jepsen-style events.

Each process (publisher, worker, nemesis, runner) appends JSON lines to its own
file with line-buffered writes, so a SIGKILL loses at most the line being
written. The runner merges the files into one list ordered by the monotonic
clock, which Linux shares between processes and libfaketime leaves alone
(``FAKETIME_DONT_FAKE_MONOTONIC=1``), so ordering survives clock-skew faults.

Event vocabulary (``f`` / ``type`` / notable ``value`` keys):

- ``publish``  invoke {mids, rollback} -> ok (committed) | fail (rolled back or
  refused before commit, definite) | info (commit outcome unknown)
- ``deliver``  invoke {mid, lease_at?, delivery?} -> ok (handler returned) |
  fail (handler raised on purpose, e.g. poison). A killed worker leaves the
  invoke without completion.
- ``settle``   ok {mid, outcome: acked|retry|dead_lettered|dropped} | fail
  {mid, outcome: lease_lost|error}; what the implementation did after the handler.
- ``fault``    invoke {kind, ...} when a nemesis starts, ok when it took
  effect, info {kind} when it healed, fail when it could not be applied.
- ``metric``   info {name, value, labels} from the implementation's recorder.
- ``log``      info {level, logger, message} for WARNING and above in workers.
- ``worker``   info {event: started|exited|refused, ...} lifecycle notes; the
  benchmark's no-op handler adds ready, progress and drained with its figures.
- ``sample``   info {backends: {application_name: n}} connection samples.
"""

from __future__ import annotations

import heapq
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from harness.messages import mask_dsn

EventType = Literal["invoke", "ok", "fail", "info"]


@dataclass(frozen=True, slots=True)
class Event:
    t: float  # time.monotonic(), shared by all processes on the host
    wall: float  # time.time() of the writing process (skewed under faketime)
    process: str
    type: EventType
    f: str
    value: dict[str, Any] = field(default_factory=dict)

    @property
    def mid(self) -> str | None:
        return self.value.get("mid")

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), default=str)

    @classmethod
    def from_json(cls, line: str) -> Event:
        return cls.from_raw(json.loads(line))

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> Event:
        """The event of one decoded line (KeyError if a field is missing)."""
        return cls(raw["t"], raw["wall"], raw["process"], raw["type"], raw["f"], raw.get("value") or {})


class HistoryWriter:
    """Appends events for one process; safe to use from a process that may be SIGKILLed."""

    def __init__(self, path: Path, process: str) -> None:
        self.path = Path(path)
        self.process = process
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives with the writer

    def record(self, type_: EventType, f: str, **value: Any) -> Event:
        event = Event(time.monotonic(), time.time(), self.process, type_, f, value)
        self._file.write(mask_dsn(event.to_json()) + "\n")  # a history is evidence: it outlives the run
        return event

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_events(path: Path, *, f: str | None = None, type_: EventType | None = None) -> Iterator[Event]:
    """Yields events of one file; a torn last line (SIGKILL mid-write) is skipped.

    With ``f`` and/or ``type_`` only those events: a fast path for large histories, where a line
    that cannot be one of them (as :meth:`Event.to_json` writes it) is not parsed at all; a line
    that may be one is parsed and checked like any other.
    """
    with open(path, encoding="utf-8") as fh:
        yield from _parse(fh, f, type_)


@dataclass(frozen=True)
class Saved:
    """A saved history's events, read from its file again on each pass: for a reader that makes a few passes over
    a long run's history (the report's counts and plots) without holding it in memory."""

    path: Path

    def __iter__(self) -> Iterator[Event]:
        return read_events(self.path)


class Tail:
    """Follows a history file another process is appending to: each :meth:`read` returns the events
    written since the previous one (only ``f`` / ``type_`` ones, as :func:`read_events`); a line
    still being written waits for the next read. ``from_end``: ignore what the file holds already."""

    def __init__(self, path: Path, *, f: str | None = None, type_: EventType | None = None,
                 from_end: bool = False) -> None:
        self.path = Path(path)
        self.f = f
        self.type_ = type_
        self.offset = 0
        if from_end:
            try:
                self.offset = self.path.stat().st_size
            except OSError:  # not written yet
                pass

    def read(self) -> list[Event]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:  # not written yet
            return []
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        return list(_parse(chunk[:end].decode("utf-8", "replace").splitlines(), self.f, self.type_))


#: Lines decoded together as one JSON array: one call into the decoder instead of one per line, about three times
#: faster on long histories.
_CHUNK = 4096


def _parse(lines: Iterable[str], f: str | None, type_: EventType | None) -> Iterator[Event]:
    # Event.to_json writes the fields in declaration order without spaces, "type" just before "f"
    wanted = {k: v for k, v in (("type", type_), ("f", f)) if v is not None}
    token = json.dumps(wanted, separators=(",", ":"))[1:-1]
    for raw in _objects(lines, token):
        try:
            event = Event.from_raw(raw)
        except KeyError:
            continue
        if (f is None or event.f == f) and (type_ is None or event.type == type_):
            yield event


def read_raw(path: Path) -> Iterator[dict[str, Any]]:
    """The decoded lines of one history file, as written, without an :class:`Event` for each: for a reader of long
    histories that keeps little of most lines (the checkers' index). A torn last line is skipped."""
    with open(path, encoding="utf-8") as fh:
        yield from _objects(fh, "")


#: Lines decoded together as one JSON array: one call into the decoder instead of one per line, about three times
#: faster on long histories.
_CHUNK = 4096


def _objects(lines: Iterable[str], token: str) -> Iterator[Any]:
    """The JSON values of the non-empty lines that contain ``token``, decoded a chunk at a time."""
    lines = iter(lines)
    while chunk := list(islice(lines, _CHUNK)):
        yield from _decode([s for line in chunk if (s := line.strip()) and token in s])


def _decode(lines: list[str]) -> list[Any]:
    """The values of these lines; a line that is not whole JSON (torn by a SIGKILL mid-write) is skipped."""
    try:
        values = json.loads("[" + ",".join(lines) + "]")
        if len(values) == len(lines):
            return values
    except json.JSONDecodeError:
        pass
    values = []  # a torn line: one by one, so that it spoils no other
    for line in lines:
        try:
            values.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return values


#: How far back in time a line may be written after a later one in the same file: threads of one process take
#: their timestamp before they write, microseconds apart.
REORDER_WINDOW_S = 1.0


class OutOfOrder(RuntimeError):
    """A history file was further out of order than :data:`REORDER_WINDOW_S`: the streamed merge cannot order it."""


def merge(paths: Iterable[Path]) -> Iterator[Event]:
    """One history ordered by the shared monotonic clock, streamed. A file is opened only once the merge reaches its
    first event, so a long run's many short-lived worker incarnations are not all read at once: about a chunk of
    events is held per process alive at that moment (within a file, lines written by its threads may be out of
    order by up to :data:`REORDER_WINDOW_S`; further, :class:`OutOfOrder` is raised rather than an event yielded
    out of order). Equal times keep the order of ``paths``."""
    paths = list(paths)
    last = float("-inf")
    waiting = sorted((t, i, Path(p)) for i, p in enumerate(paths) if (t := _first_t(Path(p))) is not None)
    waiting.reverse()  # the earliest last, to pop
    front: list[tuple[float, int, int, Event, Iterator[Event]]] = []  # (t, file, line, event, rest of its file)
    line = 0
    while waiting or front:
        while waiting and (not front or waiting[-1][0] <= front[0][0] + REORDER_WINDOW_S):
            _, i, path = waiting.pop()
            rest = _in_order(read_events(path))
            if (first := next(rest, None)) is not None:
                heapq.heappush(front, (first.t, i, line := line + 1, first, rest))
        if not front:
            continue
        _, i, _, event, rest = heapq.heappop(front)
        if event.t < last:
            raise OutOfOrder(f"an event of {paths[i]} at {event.t} came after one at {last}")
        last = event.t
        yield event
        if (following := next(rest, None)) is not None:
            heapq.heappush(front, (following.t, i, line := line + 1, following, rest))


def write_merged(paths: Iterable[Path], path: Path) -> None:
    """The merged history of ``paths`` into ``path``: streamed, or, should a file be out of order beyond what the
    stream can mend (a thread stalled for over a second between its timestamp and its write), fully sorted in
    memory, so the record is in time order whatever happened."""
    paths = list(paths)
    try:
        write_history(merge(paths), path)
    except OutOfOrder:
        write_history(merge_in_memory(paths), path)


def merge_in_memory(paths: Iterable[Path]) -> list[Event]:
    """Every event of ``paths`` sorted by time, held at once: the fallback when :func:`merge` meets disorder."""
    events = [e for p in paths if Path(p).exists() for e in read_events(Path(p))]
    events.sort(key=lambda e: e.t)
    return events


def _first_t(path: Path) -> float | None:
    """The time of a history file's first whole event (None: no file, or none yet)."""
    try:
        with open(path, encoding="utf-8") as fh:
            first = next((raw for raw in _objects(islice(fh, 16), "") if isinstance(raw, dict) and "t" in raw), None)
    except OSError:
        return None
    return None if first is None else float(first["t"])


def _in_order(events: Iterable[Event]) -> Iterator[Event]:
    """``events`` sorted, for a stream whose disorder stays within :data:`REORDER_WINDOW_S`."""
    held: list[tuple[float, int, Event]] = []
    for n, e in enumerate(events):
        heapq.heappush(held, (e.t, n, e))
        while held[0][0] < e.t - REORDER_WINDOW_S:
            yield heapq.heappop(held)[2]
    while held:
        yield heapq.heappop(held)[2]


def write_history(events: Iterable[Event], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for e in events:
            fh.write(e.to_json() + "\n")
