"""The nemesis contract: a fault with a start and a stop, each returning the figures that prove it.

A nemesis class declares what it is and what it needs, so nothing else has to know its name:

- ``kind``: the name its ``fault`` events carry in the history;
- ``category``: what the fault does (``CRASH`` ends processes or the server; ``NETWORK`` cuts or degrades
  the path to PostgreSQL; ...). The recovery checker (P2, L4) and the budget checker (L3) read the
  category from the history, never a list of kinds;
- ``ends_process``: its ``fault`` ok names a process that died with the fault (its calls in flight end);
- ``needs_proxy`` / ``controls_server``: a scenario that uses it needs Toxiproxy / the harness's own server.

``build(env, **params)`` binds the fault to a running scenario; the scenario itself only names the class
and its parameters (:class:`harness.scenario.FaultStep`), so a schedule is plain data.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from harness.sampler import ListenerWatch

if TYPE_CHECKING:
    from harness.adapter import Adapter
    from harness.history import HistoryWriter
    from harness.provision.postgres import PostgresServer
    from harness.provision.toxiproxy import Proxy
    from harness.supervisor import Supervisor

# Categories a nemesis declares.
CRASH = "crash"  # processes or the server die abruptly: durability (P2)
STOP = "stop"  # a process is asked to stop: graceful drain (L1)
NETWORK = "network"  # the path to PostgreSQL is cut or degraded: reconnection (L4)
CLOCK = "clock"  # a worker's wall clock is wrong: leases judged by the database clock (D4)
CAPACITY = "capacity"  # connections are scarce: a clear error and no loss (L3)
WAKEUP = "wakeup"  # LISTEN is lost: polling fallback (D8)
SCHEMA = "schema"  # the dead-letter table refuses writes: R4 divergence


class FaultNotApplied(RuntimeError):
    """The fault could not be applied or did not take effect; a scenario must not pass on it."""


#: How long a fault aimed "mid-handler" waits for its target to have a handler running.
BUSY_WAIT_S = 10.0


def wait_until_busy(busy: Callable[[], bool], what: str) -> None:
    """Blocks until ``busy()`` (a handler is running on the target), so the fault catches it in the middle of one;
    FaultNotApplied when none ran within BUSY_WAIT_S."""
    deadline = time.monotonic() + BUSY_WAIT_S
    while not busy():
        if time.monotonic() > deadline:
            raise FaultNotApplied(f"{what}: no handler was running within {BUSY_WAIT_S:.0f} s to catch it in the"
                                  " middle of")
        time.sleep(0.05)


@dataclass
class Env:
    """What a running scenario can act on; ``Nemesis.build`` receives it."""

    server: PostgresServer
    admin_dsn: str  # direct to the scenario database, never through a proxy
    supervisor: Supervisor
    adapter: Adapter
    proxies: dict[str, Proxy]  # each worker's path to PostgreSQL (w1, w2, ...) and the publisher's; empty without one
    history: HistoryWriter
    in_flight: Callable[[str], int]  # deliveries in flight on one worker incarnation
    progress: Callable[[str], None] = lambda line: None  # live progress for the terminal
    rng: random.Random = field(default_factory=random.Random)  # seeded by the run: targets replay
    listeners: ListenerWatch = field(default_factory=ListenerWatch)  # backends the sampler saw issue LISTEN


class Nemesis(Protocol):
    kind: ClassVar[str]
    category: ClassVar[str]
    ends_process: ClassVar[bool]
    needs_proxy: ClassVar[bool]
    controls_server: ClassVar[bool]

    @classmethod
    def build(cls, env: Env, **params: Any) -> Nemesis:
        """The fault bound to a running scenario."""

    def start(self) -> dict[str, Any]:
        """Applies the fault and returns figures that show it took effect."""

    def stop(self) -> dict[str, Any]:
        """Heals the fault and returns figures that show traffic flows again."""


class Fault:
    """Defaults for the declarations; a nemesis overrides what differs."""

    kind: ClassVar[str]
    category: ClassVar[str]
    ends_process: ClassVar[bool] = False
    needs_proxy: ClassVar[bool] = False
    controls_server: ClassVar[bool] = False

    def stop(self) -> dict[str, Any]:
        return {}
