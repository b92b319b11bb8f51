"""``outbox-harness explore``: its options, and the session around the search (servers up, search, replays,
reproducer, servers down by pid whatever happens)."""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from harness.argtypes import duration, positive_int, seed, writable_dir
from harness.exits import FINDINGS, OK, USAGE


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--impl", action="append",
                   help="the implementation: an alias or package.module:attribute (one; default: reference)")
    p.add_argument("--budget", type=duration, default=duration("30m"),
                   help="time for the search and its shrinking, with its unit: 90s, 30m, 1h (default: 30m); "
                        "the replays of a failure may run past it")
    p.add_argument("--seed", type=seed, help="seed of the search and of every run's random choices "
                                             "(default: a new one, printed)")
    p.add_argument("--reports-dir", type=writable_dir, default="reports",
                   help="reproducers go to DIR/explore/, the example database to DIR/explore/examples/ "
                        "(default: %(default)s)")
    p.add_argument("--replay", type=Path, metavar="FILE",
                   help="instead of searching: run a reproducer written by explore (its seed, --impl or its own)")
    p.add_argument("--replays", type=positive_int, default=3, help="runs of a found or --replay'd case (default: 3)")


def main(ns: argparse.Namespace) -> int:
    from harness.explore.reproducer import NotAReproducer, Reproducer, load, write  # noqa: PLC0415
    from harness.explore.search import Explorer, failed, slug, stderr_line  # noqa: PLC0415
    from harness.names import new_run_id  # noqa: PLC0415
    from harness.provision.postgres import provision  # noqa: PLC0415
    from harness.provision.toxiproxy import ToxiproxyUnavailable, provision_toxiproxy  # noqa: PLC0415

    if ns.impl and len(ns.impl) > 1:
        print("outbox-harness explore: error: give one --impl", file=sys.stderr)
        return USAGE
    replaying = None
    if ns.replay is not None:
        try:
            replaying = load(ns.replay)
        except NotAReproducer as exc:
            print(f"outbox-harness explore: error: {exc}", file=sys.stderr)
            return USAGE
    impl = ns.impl[0] if ns.impl else replaying.impl if replaying else "reference"
    run_seed = replaying.seed if replaying else ns.seed if ns.seed is not None else random.randrange(2**32)
    out = Path(ns.reports_dir) / "explore" / new_run_id()
    stderr_line(f"explore: {impl}, seed {run_seed}, runs in {out}")
    server = provision()
    toxiproxy = None
    try:
        try:
            toxiproxy = provision_toxiproxy()
        except ToxiproxyUnavailable as exc:
            stderr_line(f"explore: no network faults: {exc}")
        explorer = Explorer(impl, run_seed, out, server, toxiproxy, stderr_line)
        if replaying is not None:
            fails = sum(bool(failed(r)) for r in explorer.replay(replaying.scenario, ns.replays))
            print(f"explore --replay: {fails} of {ns.replays} runs failed")
            return FINDINGS if fails else OK
        finding = explorer.search(ns.budget, Path(ns.reports_dir) / "explore" / "examples")
        if finding is None:
            print(f"explore: {impl}: no failure in {explorer.cases} cases ({ns.budget / 60:.1f} min budget, "
                  f"seed {run_seed}; {explorer.errors} could not run)")
            return OK
        # Timing decides whether a race shows: when the shrunk case does not fail every replay, the case found
        # first (unshrunk, with more of everything) is tried, and the one that failed every time is kept.
        candidates = {"shrunk": finding.scenario, "first found": finding.first}
        tried: list[dict[str, object]] = []
        chosen = finding.scenario
        for label, scenario in candidates.items():
            if tried and scenario == chosen:
                continue
            fails = sum(bool(failed(r)) for r in explorer.replay(scenario, ns.replays))
            tried.append({"case": label, "replays_failed": fails, "replays": ns.replays})
            if fails == ns.replays:
                chosen = scenario
                break
        path = out / f"reproducer_{slug(impl)}.py"
        write(path, Reproducer(chosen, run_seed, impl), f"outbox-harness explore --impl {impl} --replay {path}")
        summary = {"impl": impl, "seed": run_seed, "cases": explorer.cases, "first_case": finding.first_case,
                   "first_after_s": round(finding.first_after_s, 1), "shrink_runs": finding.shrink_runs,
                   "shrink_steps": finding.shrink_steps, "flaky_shrink": finding.flaky, "replayed": tried,
                   "failed": failed(finding.result), "reproducer": str(path)}
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        replayed = "; ".join(f"{t['case']} case: {t['replays_failed']} of {t['replays']} replays failed" for t in tried)
        print(f"explore: {impl}: FAIL {'; '.join(failed(finding.result))}\n"
              f"  found at case {finding.first_case} after {finding.first_after_s / 60:.1f} min; "
              f"shrunk in {finding.shrink_steps} steps ({finding.shrink_runs} shrink runs"
              f"{', the last did not reproduce' if finding.flaky else ''}); {explorer.cases} runs in all\n"
              f"  {replayed}\n"
              f"  reproducer (seed {run_seed}): {path}\n"
              f"  replay: outbox-harness explore --impl {impl} --replay {path}")
        return FINDINGS
    finally:
        if toxiproxy is not None:
            toxiproxy.stop()
        server.stop()
