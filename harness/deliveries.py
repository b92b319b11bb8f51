"""Which delivery of a message this is, counted by the harness across every worker process on the host.

A scripted message behaves by its delivery number (the first runs past the lease, the second fails...). The
implementation's own count is not trusted for that: black-box evidence must not rest on what the implementation
says about itself. One file per message id in a directory the workers share; a byte appended under an exclusive
lock per call.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path


class DeliveryCounter:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def next(self, mid: str) -> int:
        """Counts one more delivery of ``mid`` and returns its number (1 for the first)."""
        path = self.directory / re.sub(r"[^A-Za-z0-9_.-]", "_", mid)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, b".")
            return os.fstat(fd).st_size
        finally:
            os.close(fd)
