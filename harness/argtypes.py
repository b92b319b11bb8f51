"""Argument types for the command line: a value out of range is refused by the parser, before anything starts,
not after PostgreSQL is up or a whole run has gone by."""

from __future__ import annotations

import argparse
import math
import re
import tempfile
from pathlib import Path


def positive_int(text: str) -> int:
    """A count: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of at least 1")
    return value


def non_negative_int(text: str) -> int:
    """A count that may be 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of at least 0")
    return value


def seed(text: str) -> int:
    """A run's seed: a whole number of at least 0 (the one a run printed, to replay it)."""
    return non_negative_int(text)


def positive_finite_float(text: str) -> float:
    """A rate or a duration: a finite number above 0 (``float`` alone takes inf and nan)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number above 0")
    return value


def non_negative_finite_float(text: str) -> float:
    """A duration or a fraction that may be zero: a finite number of at least 0 (``0`` means zero, not a default)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number of at least 0")
    return value


_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([smh])")


def duration(text: str) -> float:
    """A length of time in seconds, written with its unit (``90s``, ``10m``, ``1.5h``): a bare number could be
    read as seconds or minutes, and a run an hour too long is a costly misreading."""
    match = _DURATION.fullmatch(text.strip().lower())
    seconds = float(match[1]) * _UNIT_S[match[2]] if match else 0.0
    if not seconds or not math.isfinite(seconds):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration above 0: give a number with its unit, "
                                         "s, m or h (e.g. 90s, 10m, 1h)")
    return seconds


def writable_dir(text: str) -> Path:
    """A directory the run can write into, created if missing; proven by writing a file in it."""
    path = Path(text)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} cannot be written ({exc.strerror or exc}); "
                                         "give a directory you can write to") from None
    return path
