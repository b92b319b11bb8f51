"""Chaos and conformance harness for PostgreSQL transactional outboxes."""
