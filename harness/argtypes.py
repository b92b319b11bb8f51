"""Argument types for the command line: a value out of range is refused by the parser, before anything starts,
not after PostgreSQL is up or a whole run has gone by."""

from __future__ import annotations

import argparse
import math
import re
import tempfile
from collections.abc import Callable
from pathlib import Path


def _whole(least: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of at least {least}")
        return value

    return parse


def _finite(*, zero: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"{text!r}: give a finite number {'of at least 0' if zero else 'above 0'}")
        return value

    return parse


#: A count: a whole number of at least 1.
positive_int = _whole(1)
#: A count that may be 0.
non_negative_int = _whole(0)
#: A run's seed: a whole number of at least 0 (the one a run printed, to replay it).
seed = _whole(0)
#: A rate or a duration: a finite number above 0 (``float`` alone takes inf and nan).
positive_finite_float = _finite(zero=False)
#: A duration or a fraction that may be zero (``0`` means zero, not a default).
non_negative_finite_float = _finite(zero=True)


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

