"""One seed per run, and every random choice of the run drawn from it, so that a run replays (``--seed``).

Each consumer of randomness gets a stream of its own, derived from the run's seed and its name (the publisher's
rollbacks, the nemeses' targets, each worker incarnation's handler timing): one stream never shifts another, and
how the run's tasks interleave does not change what any of them draws.
"""

from __future__ import annotations

import hashlib
import random


def derive(seed: int, name: str) -> int:
    """The seed of the stream called ``name`` in the run seeded ``seed`` (stable across processes and versions)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "big")


def stream(seed: int, name: str) -> random.Random:
    return random.Random(derive(seed, name))
