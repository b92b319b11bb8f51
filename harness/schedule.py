"""The fault schedule: each :class:`~harness.scenario.FaultStep` on its own clock, so faults overlap as written.

Every fault is recorded in the history as it happens: ``fault`` invoke when it starts, ok with the figures
that prove it took effect (plus its nemesis's declared category, and ``ends_process`` for faults that end a
process), info when it healed, fail when it could not be applied or healed. Checkers read nothing else.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from harness.nemesis.base import Env, FaultNotApplied
from harness.scenario import FaultStep


async def run_schedule(steps: list[FaultStep], env: Env) -> None:
    """Runs every step at its time after now, concurrently."""
    t0 = time.monotonic()

    async def one(step: FaultStep) -> None:
        await asyncio.sleep(max(0.0, t0 + step.at - time.monotonic()))
        await apply(step, env)

    await asyncio.gather(*(one(s) for s in steps))


async def apply(step: FaultStep, env: Env, during: Callable[[], Awaitable[Any]] | None = None) -> None:
    """Applies one step now, holds it (running ``during`` and the inner steps meanwhile), then heals it."""
    cls = step.nemesis
    tags = {"kind": cls.kind, "category": cls.category}
    try:
        nemesis = cls.build(env, **step.params)
    except FaultNotApplied as exc:
        env.history.record("fail", "fault", **tags, error=str(exc))
        return
    env.history.record("invoke", "fault", **tags)
    try:
        figures = await asyncio.to_thread(nemesis.start)
    except FaultNotApplied as exc:
        env.history.record("fail", "fault", **tags, error=str(exc))
        return
    env.history.record("ok", "fault", **tags, **({"ends_process": True} if cls.ends_process else {}), **figures)
    env.progress(f"fault {cls.kind} applied {json.dumps(figures, default=str)[:120]}")
    jobs: list[Awaitable[Any]] = [asyncio.sleep(step.hold)]
    if during is not None:
        jobs.append(during())
    if step.inner:
        jobs.append(run_schedule(step.inner, env))
    await asyncio.gather(*jobs)
    try:
        healed = await asyncio.to_thread(nemesis.stop)
    except FaultNotApplied as exc:
        healed = {"heal_error": str(exc)}
    env.history.record("info", "fault", **tags, **healed)
    env.progress(f"fault {cls.kind} healed")
