"""Payloads the harness publishes: a message id plus a checksum, so corruption is visible (D2)."""

from __future__ import annotations

import json
import zlib


def encode(mid: str, *, pad: int = 0, poison: bool = False) -> bytes:
    body = {"mid": mid, "poison": poison, "pad": "x" * pad}
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True)
    return json.dumps({"body": raw, "crc": zlib.crc32(raw.encode())}, separators=(",", ":")).encode()


def decode(payload: bytes | str) -> tuple[str | None, bool, bool]:
    """Returns (mid, intact, poison); an unreadable payload gives (None, False, False)."""
    try:
        outer = json.loads(payload)
        raw = outer["body"]
        body = json.loads(raw)
        intact = zlib.crc32(raw.encode()) == outer["crc"]
        return str(body["mid"]), intact, bool(body.get("poison"))
    except (ValueError, KeyError, TypeError):
        return None, False, False
