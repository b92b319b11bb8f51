"""Errors the reference outbox raises; each message names the problem and the fix."""

from __future__ import annotations


class OutboxError(Exception):
    """Base class for every error of the reference outbox."""


class OutboxConfigError(OutboxError, ValueError):
    """A bad table name, queue name, option or pool size, found before any row is touched."""


class PayloadError(OutboxError, TypeError):
    """A payload or headers value of the wrong type; nothing was written."""


class PayloadTooLargeError(PayloadError, ValueError):
    """A payload above ``max_payload_bytes``; nothing was written."""


class SchemaValidationError(OutboxError):
    """``validate_schema`` found drift; ``issues`` lists every problem by kind."""

    def __init__(self, issues: list) -> None:
        self.issues = issues
        super().__init__("schema drift: " + "; ".join(str(i) for i in issues))
