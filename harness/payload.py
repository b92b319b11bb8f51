"""Payloads the harness publishes: a message id plus a checksum, so corruption is visible (D2); numbered
filler for throughput runs.

A payload may carry a script: what the handler does on the message's first, second, ... delivery
(``{"ms": 4000}`` runs that long, ``"fail": true`` raises after it), whichever worker gets it. Deliveries are
counted by the harness itself (:mod:`harness.deliveries`), not by the implementation.
"""

from __future__ import annotations

import json
import zlib
from typing import Any


def encode(mid: str, *, pad: int = 0, poison: bool = False, script: list[dict[str, Any]] | None = None) -> bytes:
    body: dict[str, Any] = {"mid": mid, "poison": poison, "pad": "x" * pad}
    if script:
        body["script"] = script
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True)
    return json.dumps({"body": raw, "crc": zlib.crc32(raw.encode())}, separators=(",", ":")).encode()


def decode(payload: bytes | str) -> tuple[str | None, bool, bool]:
    """Returns (mid, intact, poison); an unreadable payload gives (None, False, False)."""
    mid, intact, poison, _ = decode_script(payload)
    return mid, intact, poison


def decode_script(payload: bytes | str) -> tuple[str | None, bool, bool, list[dict[str, Any]]]:
    """Returns (mid, intact, poison, script); an unreadable payload gives (None, False, False, [])."""
    try:
        outer = json.loads(payload)
        raw = outer["body"]
        body = json.loads(raw)
        intact = zlib.crc32(raw.encode()) == outer["crc"]
        return str(body["mid"]), intact, bool(body.get("poison")), list(body.get("script") or [])
    except (ValueError, KeyError, TypeError):
        return None, False, False, []


#: Digits of the sequence number at the head of a :func:`numbered` payload.
SEQ_DIGITS = 10


def numbered(seq: int, size: int = 64) -> bytes:
    """A throughput payload: a zero-padded sequence number, then filler up to ``size`` bytes.

    Cheap to tell apart in a handler that must cost next to nothing (:func:`seq_of`), unlike
    :func:`encode`, whose checksum is for correctness runs."""
    head = str(seq).zfill(SEQ_DIGITS).encode()
    return head + b"x" * max(0, size - len(head))


def seq_of(payload: bytes) -> int:
    """The sequence number of a :func:`numbered` payload; -1 for anything else."""
    try:
        return int(payload[:SEQ_DIGITS])
    except ValueError:
        return -1
