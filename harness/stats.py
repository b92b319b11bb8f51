"""The one percentile the harness reports, so every figure in a report means the same thing."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in 0..100; ``inf`` entries count; NaN for no values.

    Nearest rank returns an observed value (never an interpolation between two), which is what a
    latency bound is checked against.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]
