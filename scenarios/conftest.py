"""Scenarios use the outbox-harness pytest plugin (installed with the package as a pytest11 entry point)."""
