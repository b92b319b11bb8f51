"""How many rows a subscriber may claim now: the bound on rows it holds, and how far ahead it claims."""

from __future__ import annotations

import time

#: How often the rate rows are started at is measured, in seconds of claims.
PACE_SECONDS = 0.25


class Room:
    """Rows claimed and not finished (waiting, in a handler, or in a claim in flight) stay at most
    ``batch + workers``, claimed again once half a batch of that is free, so the next claim runs in
    the database while the workers finish the rows they have.

    A row's lease runs from its claim, so rows held in memory must start well within it. Every
    quarter second of claims the rate rows were started at is measured: if everything the subscriber
    may hold with one batch more would start within a quarter of the lease at that rate, it keeps that
    batch in hand and claims whole batches (half as many claims and acks per message, the next claim
    in flight while the last is handled). Slow handlers gain nothing from claiming ahead and keep the
    smaller bound.
    """

    def __init__(self, batch: int, workers: int, lease_ttl: float) -> None:
        self.batch = batch
        self.workers = workers
        self.lease_ttl = lease_ttl
        self.claiming = 0  # rows reserved by claims in flight
        self.started = 0  # rows handed to a handler so far
        self.ahead = 0  # room beyond batch + workers: 0, or one batch while handlers keep up
        self.min_claim = max(1, batch // 2)  # claims wait until this much room is free
        self._paced = (time.monotonic(), 0)  # (when, started then) of the last measurement

    def free(self, held: int) -> int:
        """Rows that may be claimed now, ``held`` being those claimed and not finished outside claims."""
        return self.batch + self.workers + self.ahead - held - self.claiming

    def pace(self) -> None:
        """Called before every claim; measures the start rate every ``PACE_SECONDS``."""
        now = time.monotonic()
        since, count = self._paced
        if now - since < PACE_SECONDS:
            return
        rate = (self.started - count) / (now - since)
        self._paced = (now, self.started)
        keeps_up = rate * self.lease_ttl / 4 >= 2 * self.batch + self.workers
        self.ahead = self.batch if keeps_up else 0
        self.min_claim = self.batch if keeps_up else max(1, self.batch // 2)
