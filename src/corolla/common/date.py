"""Wall-clock time as an aware UTC datetime."""

from __future__ import annotations

import datetime


def now() -> datetime.datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.datetime.now(tz=datetime.UTC)
