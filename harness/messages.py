"""What a person reads when something goes wrong: one line, and never a password.

DSNs travel through errors, logs, histories and the files a run keeps as evidence; :func:`mask_dsn` is the
one place that hides their passwords, whatever text they sit in.
"""

from __future__ import annotations

import logging
import re
from typing import Any

#: ``user:password@`` anywhere (a URL, a urlsplit netloc in a traceback); quotes and spaces end it.
_USERINFO = re.compile(r"([^\s:/@'\"]*):([^\s/'\"]+)@")
MASK = "***"


def mask_dsn(text: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``, for every password in ``text``."""
    return _USERINFO.sub(rf"\1:{MASK}@", text) if "@" in text else text


def mask_all(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, tuples, strings) with :func:`mask_dsn` applied to every string."""
    if isinstance(value, str):
        return mask_dsn(value)
    if isinstance(value, dict):
        return {k: mask_all(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask_all(v) for v in value)
    return value


def one_line(exc: BaseException) -> str:
    """``TypeName: message`` on one line, passwords masked."""
    return mask_dsn(" ".join(f"{type(exc).__name__}: {exc}".split()))


class MaskingFormatter(logging.Formatter):
    """Log lines, tracebacks included, with DSN passwords masked."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_dsn(super().format(record))
