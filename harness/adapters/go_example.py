"""The process contract's smallest program, ``examples/process-go``: a table outbox in Go, to copy.

Its Python side is nothing but declarations: how to start the program (built once into the cache) and what it
can honour. It links ``harnessproc`` from ``adapters/river`` for the harness's side of the contract (history,
handler, payloads, the publisher's line protocol); a program in another language writes those itself, as
``docs/adapters.md`` describes.
"""

from __future__ import annotations

from pathlib import Path

from harness.adapter import Capabilities, ConsumerConfig
from harness.adapters.gobuild import go_program
from harness.adapters.process import ProcessAdapter

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "examples" / "process-go"
HARNESSPROC = ROOT / "adapters" / "river" / "harnessproc"

CAPABILITIES = Capabilities(
    dlq=True, graceful_drain=True, connection_budget=True,
    notes=("naive table outbox in Go through the process contract: rows are locked (FOR UPDATE SKIP LOCKED) by an "
           "open transaction while handled, deleted after, a failure counted and the row dead after "
           "min(retry.max_attempts, max_deliveries) failures; no lease (a dead worker's rows are free when "
           "PostgreSQL ends its backend), no retry delay, crash reclaims not counted, no LISTEN/NOTIFY, no metrics"),
)


def program() -> list[str]:
    return [str(go_program(SOURCE, "process-example", HARNESSPROC))]


def _budget(config: ConsumerConfig) -> int:
    return config.max_workers  # the pgx pool's MaxConns: one connection per claiming loop


adapter = ProcessAdapter("go-example", CAPABILITIES, program, budget=_budget)
