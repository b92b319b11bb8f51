"""The Python side of the process contract, against stand-in programs: what the publisher makes of a program
that refuses, answers, or dies mid-transaction (P1 must never count a transaction it cannot vouch for)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from harness.adapter import Capabilities, ConsumerConfig
from harness.adapters.process import ProcessAdapter, ProcessError, ProcessPublisher, ask

# A stand-in publisher: answers the open, then behaves as told by its argument for every publish.
PROGRAM = r"""
import json, os, sys
mode = sys.argv[1]
for line in sys.stdin:
    req = json.loads(line)
    if req["op"] == "open":
        print(json.dumps({"ok": mode != "refuse_open", "error": "no"}), flush=True)
    elif mode == "die":
        os._exit(1)
    elif mode == "unknown":
        print(json.dumps({"ok": False, "definite": False, "error": "commit lost"}), flush=True)
    else:
        print(json.dumps({"ok": True}), flush=True)
"""


def publisher(mode: str) -> ProcessPublisher:
    return ProcessPublisher([sys.executable, "-c", PROGRAM, mode], "postgresql://unused", ConsumerConfig())


@pytest.mark.parametrize(("mode", "rollback", "ok", "definite"), [
    ("answer", False, True, True),
    ("unknown", False, False, False),
    ("die", False, False, False),  # it may have sent COMMIT before dying
    ("die", True, False, True),  # asked to roll back: it never commits
    ("refuse_open", False, False, True),  # the transaction never began
])
def test_publish_outcomes(mode: str, rollback: bool, ok: bool, definite: bool) -> None:
    async def run() -> tuple[bool, bool]:
        pub = publisher(mode)
        try:
            out = await pub.publish_tx(["m1"], [b"x"], rollback, queue="q")
            again = await pub.publish_tx(["m2"], [b"y"], rollback, queue="q")  # restarted after a death
            assert (again.ok, again.definite) == (out.ok, out.definite)
            return out.ok, out.definite
        finally:
            await pub.close()

    assert asyncio.run(run()) == (ok, definite)


def test_a_failing_subcommand_says_why() -> None:
    with pytest.raises(ProcessError, match="boom"):
        asyncio.run(ask([sys.executable, "-c", 'print(\'{"ok": false, "error": "boom"}\'); raise SystemExit(1)'], {}))


def test_the_consumer_command_is_the_program_itself(tmp_path: Path) -> None:
    adapter = ProcessAdapter("p", Capabilities(), lambda: ["/opt/impl", "--flag"])
    assert adapter.command(tmp_path / "s.json") == ["/opt/impl", "--flag", "consume", str(tmp_path / "s.json")]
