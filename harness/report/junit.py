"""junit.xml, so CI shows one red test per broken promise.

One testsuite per implementation, one testcase per (scenario, guarantee).
``unknown`` is reported as skipped with a message starting ``unknown:``: a
checker that could not decide must never be counted as a pass. A run cut
short gets an ``interrupted`` testcase in error, named after the scenario it
cut short, so CI never shows an incomplete run green.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from harness.report.results import Entry, by_guarantee, interruption_text, worst_verdicts
from harness.verdict import Verdict

# Characters XML 1.0 forbids; worker log lines can carry them.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(text: str) -> str:
    return _INVALID_XML.sub("\ufffd", text)


def _details(verdicts: list[Verdict]) -> str:
    return "\n".join(
        f"[{v.status}] {v.checker}: {v.summary}\n  {json.dumps(v.figures, default=str, sort_keys=True)}"
        for v in verdicts
    )


def _testcase(suite: ET.Element, e: Entry, gid: str, verdicts: list[Verdict]) -> str:
    status, deciders = worst_verdicts(verdicts)
    case = ET.SubElement(suite, "testcase", classname=f"{e.result.impl}.{e.result.scenario}", name=gid)
    message = _clean("; ".join(v.summary for v in deciders))
    if status == "fail":
        el = ET.SubElement(case, "failure", message=message, type=",".join(v.checker for v in deciders))
        el.text = _clean(_details(verdicts))
    elif status != "pass":
        el = ET.SubElement(case, "skipped", message=f"{status}: {message}")
        el.text = _clean(_details(verdicts))
    return status


def _interrupted(root: ET.Element, interrupted: dict[str, Any]) -> None:
    suite = ET.SubElement(root, "testsuite", name="interrupted", tests="1", failures="0", errors="1", skipped="0",
                          time="0")
    scenario = f"{interrupted['impl']}.{interrupted['scenario']}" if interrupted.get("scenario") else "run"
    case = ET.SubElement(suite, "testcase", classname=scenario, name="interrupted")
    ET.SubElement(case, "error", message=_clean(interruption_text(interrupted)),
                  type=interrupted.get("signal") or "stopped")


def write_junit(path: Path, run_id: str, entries: list[Entry], interrupted: dict[str, Any] | None = None) -> None:
    root = ET.Element("testsuites", name=f"outbox harness {run_id}")
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for impl in dict.fromkeys(e.result.impl for e in entries):
        mine = [e for e in entries if e.result.impl == impl]
        suite = ET.SubElement(root, "testsuite", name=impl)
        statuses = [_testcase(suite, e, gid, vs) for e in mine for gid, vs in by_guarantee(e.result).items()]
        counts = {
            "tests": len(statuses),
            "failures": statuses.count("fail"),
            "skipped": sum(s not in ("pass", "fail") for s in statuses),
        }
        for k, n in counts.items():
            suite.set(k, str(n))
            totals[k] += n
        suite.set("errors", "0")
        suite.set("time", f"{sum(e.result.duration_s for e in mine):.3f}")
    if interrupted is not None:
        _interrupted(root, interrupted)
        totals["tests"] += 1
    for k, n in totals.items():
        root.set(k, str(n))
    root.set("errors", "1" if interrupted is not None else "0")
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
