"""Range checks for numeric options, run when an object is built, never at the first fetch.

A check like ``value <= 0`` refuses neither NaN (every comparison with it is
false) nor infinity, and the server then refuses every statement that uses them
(``interval out of range``) long after start() returned. So each knob is checked
finite and in range, an int where it counts something (``True`` is not a count),
with one error naming the knob and the range.
"""

from __future__ import annotations

import math

from outbox.errors import OutboxConfigError

#: About 31 years. Far larger values overflow PostgreSQL's interval/timestamp range
#: (``now() +/- make_interval(secs => ...)``), an error on every statement instead of one here.
MAX_SECONDS = 1e9
#: PostgreSQL's integer: the most a count (workers, batch size, attempts) may sensibly be.
MAX_COUNT = 2**31 - 1


def check_number(name: str, value: object, low: float, high: float = math.inf, *, above: bool = False,
                 below: bool = False, integer: bool = False) -> None:
    """Passes a finite number from ``low`` to ``high`` (``above``/``below``: exclusive bounds), an int
    if ``integer``; anything else is an :class:`OutboxConfigError` naming ``name`` and the range."""
    ok = (not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
          and (isinstance(value, int) or math.isfinite(value))
          and (value > low if above else value >= low) and (value < high if below else value <= high))
    if not ok:
        bounds = f"{'>' if above else '>='} {_num(low)}"
        if high != math.inf:
            bounds += f" and {'<' if below else '<='} {_num(high)}"
        raise OutboxConfigError(f"{name} must be {'an int' if integer else 'a finite number'} {bounds}, got {value!r}")


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"
