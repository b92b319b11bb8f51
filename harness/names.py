"""Every name the harness gives things, in one place.

Connections carry an ``application_name`` so that ``pg_stat_activity`` tells the harness's
own backends apart by role (L2 samples consumers, budgets count publishers); databases,
tables, files and run ids follow one scheme so a report can be traced back to what ran.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

#: Prefix of every application_name the harness sets.
APP_PREFIX = "harness-"
#: LIKE pattern of consumer worker backends (``harness-w1#2``): what L2 and the LISTEN-loss nemesis look at.
WORKER_APP_LIKE = f"{APP_PREFIX}w%"
#: LIKE pattern of every backend the harness opened.
HARNESS_APP_LIKE = f"{APP_PREFIX}%"
PUBLISHER_APP = f"{APP_PREFIX}publisher"
LOCUST_APP = f"{APP_PREFIX}locust"
HOG_APP = f"{APP_PREFIX}hog"
SAMPLER_APP = f"{APP_PREFIX}sampler"

#: Temporary files and directories the harness creates start with this (registered with the guard, which
#: removes them if the harness dies without doing so).
TEMP_PREFIX = "outbox-harness-"


def worker_app(process: str) -> str:
    """application_name of a consumer incarnation, e.g. ``harness-w1#2``."""
    return f"{APP_PREFIX}{process}"


def slot_app_like(slot: str) -> str:
    """LIKE pattern of every incarnation of one worker slot (``harness-w1#%``)."""
    return f"{APP_PREFIX}{slot}#%"


def scenario_database(scenario: str) -> str:
    """A fresh database per scenario; PostgreSQL identifiers stop at 63 bytes."""
    return re.sub(r"\W", "_", f"scn_{scenario}")[:60]


def new_run_id() -> str:
    """UTC timestamp (sorts by time) plus a random suffix (two runs in one second do not collide)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
