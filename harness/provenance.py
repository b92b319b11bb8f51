"""Which implementation version a run tested, for its history header and its report.

A verdict is about one version of one library, so the report must say which. An adapter may declare it
(``version``); the peer adapters shipped here drive a library of another distribution, whose installed version is
the one under test; any other adapter is taken to be its own distribution's (the reference outbox ships with the
harness, so its version is the harness's, git commit included).
"""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, packages_distributions, version as dist_version
from typing import Any

from harness.version import DISTRIBUTION, version as harness_version

#: Shipped peer adapter (by ``Adapter.name``) -> the distribution of the library it drives.
LIBRARIES = {"faststream-outbox": "faststream-outbox", "pgqueuer": "pgqueuer", "soniq": "soniq",
             "eventsource-py": "eventsource-py", "procrastinate": "procrastinate", "chancy": "chancy"}
UNKNOWN = "unknown (declare `version` on the adapter)"


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return packages_distributions()


def implementation_version(adapter: Any) -> str:
    """The version under test: the adapter's ``version``, else its library's, else its own distribution's."""
    declared = getattr(adapter, "version", None)
    if declared:
        return str(declared)
    dist = LIBRARIES.get(adapter.name)
    if dist is None:
        owners = _distributions().get(type(adapter).__module__.split(".")[0], [])
        dist = owners[0] if owners else None
    if dist == DISTRIBUTION:
        return f"{DISTRIBUTION} {harness_version()}"
    if dist is None:
        return UNKNOWN
    try:
        return f"{dist} {dist_version(dist)}"
    except PackageNotFoundError:
        return UNKNOWN
