"""A claimed message, and the database times the claim sends as microseconds since 1970."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def from_us(us: int) -> datetime:
    """A database time sent as microseconds since 1970 (see ``Statements.fetch``), as asyncpg would decode it."""
    return EPOCH + timedelta(microseconds=us)


@dataclass(slots=True)
class Message:
    id: int
    queue: str
    payload: bytes
    raw_headers: str
    token: uuid.UUID
    acquired_at: datetime  # lease start, database clock
    deliveries: int  # claims so far, this one included
    attempts: int  # failed handler runs so far
    created_us: int  # publish time, database clock, microseconds since 1970: decoded only if asked for

    @property
    def headers(self) -> dict[str, Any]:
        return json.loads(self.raw_headers)

    @property
    def created_at(self) -> datetime:
        return from_us(self.created_us)
