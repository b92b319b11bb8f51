"""Exit codes of every ``outbox-harness`` command, in one table (the README's "Exit codes" section is this table).

A broken promise of an implementation and a harness that could not run are different answers, and CI must
tell them apart: neither may ever look like a pass. ``python -m harness.exits`` prints the README table.
"""

from __future__ import annotations

OK = 0
FINDINGS = 1
USAGE = 2  # argparse's own code for a bad command line
ERROR = 3
INTERRUPTED = 130  # 128 + SIGINT, the shell's convention

#: code -> (name, what it means for each command)
EXIT_CODES: dict[int, tuple[str, str]] = {
    OK: ("ok", "run, soak, check: every guarantee held. explore: no generated case failed within the budget. "
               "conformance: every cell ran (what a peer broke is in the report; see --strict). bench, size: every "
               "implementation / grid point was measured"),
    FINDINGS: ("findings", "run, soak, check, conformance --strict: a guarantee failed, or stayed undecided without "
                           "--allow-unknown. explore: a generated case failed (its reproducer is written); --replay: a "
                           "replay failed. check: the saved run was cut short (its report is marked "
                           "interrupted). bench: no implementation could be measured (--checkers: a checker failed "
                           "the correct synthetic history). size: a grid point could not be measured"),
    USAGE: ("usage", "any command: a bad command line: an unknown option, a value out of range "
                     "(--messages 0, --target-rate nan), a --reports-dir that cannot be written, an --impl "
                     "that does not load; size: options that do not go together (--load-processes 0 without "
                     "--remote-workers); soak: a --duration shorter than one round of faults, --impl twice; check: a RUN_DIR "
                     "that is not a report"),
    ERROR: ("error", "run, conformance, soak, bench, size: the harness could not run: DATABASE_URL or TOXIPROXY_URL "
                     "malformed or unreachable, the embedded server did not start, no scenario collected or "
                     "run, a crash of the harness itself (its traceback is printed)"),
    INTERRUPTED: ("interrupted", "any command: Ctrl-C or SIGTERM; processes are stopped, and a report written "
                                 "is marked interrupted, never pass"),
}


def markdown_table() -> str:
    rows = ["| code | name | meaning |", "| --- | --- | --- |"]
    rows += [f"| {code} | {name} | {meaning} |" for code, (name, meaning) in EXIT_CODES.items()]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
